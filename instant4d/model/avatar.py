"""``Avatar``: the canonical Gaussians of one face plus everything needed to animate and render them.

Per frame: the motion code and head pose deform every Gaussian (``kernels/deform.py``: a fused Triton
kernel on CUDA, its PyTorch twin elsewhere), then ``instant4d.rasterization`` draws them. The source
photo is never encoded again.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Sequence

import torch

from ..backend import resolve_backend
from ..camera import intrinsics, orbit_viewmat
from .encoder import CanonicalGaussians, Encoder, EncoderConfig
from .media import InputError
from .motion import COMPONENTS, HeadPose, MotionCode

FORMAT = "instant4d.avatar"
FORMAT_VERSION = 1
# Tiles of 8x8 pixels for the avatar's frames: its splats are 1-2 px wide, so a 16x16 tile tests each
# against ~4x the pixels it touches. Same image (max difference 4e-7); H200, 512x512 frame, CUDA graph
# (scripts/gpu_avatar_profile.py, 2026-11-26): grid 256 229 -> 203 us, grid 384 384 -> 279 us (the
# compositing kernel 173 -> 69 us there); CPU twin 0.81 -> 0.71 s (grid 256), 1.44 -> 1.05 s (384).
RENDER_TILE_SIZE = 8


@dataclass(frozen=True)
class View:
    """A camera on a sphere around the head (degrees; ``distance``/``fov_degrees`` None = the
    avatar's source camera). Yaw > 0 moves the camera towards the subject's left."""

    yaw: float = 0.0
    pitch: float = 0.0
    distance: float | None = None
    fov_degrees: float | None = None

    def cameras(self, config: EncoderConfig, size: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(viewmat [4, 4], K [3, 3]) for a square image of ``size`` pixels."""
        distance = config.distance if self.distance is None else self.distance
        fov = config.fov_degrees if self.fov_degrees is None else self.fov_degrees
        return orbit_viewmat(self.yaw, self.pitch, distance, device=device), intrinsics(fov, size, size, device=device)


@dataclass
class VideoReport:
    """What ``render_video`` did: frames written, and driving frames with no face (the last good code
    was held for them)."""

    path: Path
    frames: int
    frames_without_face: int


class Avatar:
    """An animatable 3D Gaussian head. Build with ``Avatar.from_image(photo)`` (``instant4d[face]``),
    ``Avatar.sample()`` (the bundled portrait) or ``Avatar.load(path)``."""

    def __init__(self, gaussians: CanonicalGaussians, config: EncoderConfig = EncoderConfig(), encoder: str = Encoder.name):
        self.gaussians = gaussians
        self.config = config
        self.encoder = encoder

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_image(cls, image, encoder: Encoder | None = None) -> "Avatar":
        """One feed-forward pass of ``encoder`` (default: ``Encoder()``) over a portrait."""
        return (encoder or Encoder())(image)

    @classmethod
    def sample(cls, config: EncoderConfig = EncoderConfig()) -> "Avatar":
        """The avatar of the bundled public-domain portrait (``assets/README.md``), encoded from its
        shipped face observation: needs only the core dependencies."""
        from .face import FaceObservation, sample_observation_path

        encoder = Encoder(config)
        return cls(encoder.encode(FaceObservation.load(sample_observation_path())), config, encoder.name)

    @property
    def num_gaussians(self) -> int:
        return self.gaussians.means.shape[0]

    @property
    def device(self) -> torch.device:
        return self.gaussians.means.device

    def to(self, device=None, dtype=None) -> "Avatar":
        moved = {
            f.name: getattr(self.gaussians, f.name).to(device=device, dtype=dtype) for f in fields(CanonicalGaussians)
        }
        return Avatar(CanonicalGaussians(**moved), self.config, self.encoder)

    # ------------------------------------------------------------------ animation
    def deform(
        self, motion: MotionCode | Sequence[MotionCode] | None = None, pose: HeadPose | None = None, backend: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(means [B, N, 3], quats [B, N, 4], opacities [B, N]) for B motion codes; ``pose``, when
        given, replaces the codes' head poses."""
        codes, poses = self.code_tensors(motion, pose)
        return self.deform_tensors(codes, poses, backend)

    def code_tensors(self, motion=None, pose: HeadPose | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes [B, K], poses [B, 7]) on the avatar's device."""
        motions = [MotionCode()] if motion is None else [motion] if isinstance(motion, MotionCode) else list(motion)
        dtype, device = self.gaussians.means.dtype, self.device
        codes = torch.stack([m.to_tensor(dtype, device) for m in motions])
        poses = torch.stack([(pose or m.pose).to_tensor(dtype, device) for m in motions])
        return codes, poses

    def deform_tensors(self, codes: torch.Tensor, poses: torch.Tensor, backend: str | None = None):
        from ..kernels.deform import deform_gaussians

        g = self.gaussians
        return deform_gaussians(g.means, g.quats, g.opacities, g.basis, g.opacity_basis, g.rigid, g.pivot, codes, poses, backend=backend)

    def render(
        self,
        pose: HeadPose | None = None,
        motion: MotionCode | None = None,
        size: int = 512,
        view: View = View(),
        background=(1.0, 1.0, 1.0),
        backend: str | None = None,
        return_alpha: bool = False,
    ):
        """image: [size, size, 3] in [0, 1] of the avatar with ``motion`` (default neutral) and head
        ``pose`` (default: the code's), seen from ``view``; with ``return_alpha``, also alpha [size, size]."""
        codes, poses = self.code_tensors(motion, pose)
        images, alphas = self.renderer(size, view, background, backend)(codes, poses)
        return (images[0], alphas[0]) if return_alpha else images[0]

    def renderer(self, size: int = 512, view: View = View(), background=(1.0, 1.0, 1.0), backend: str | None = None,
                 deform=None, rasterize=None, cuda_graph: bool = False, tile_size: int = RENDER_TILE_SIZE):
        """The per-frame function ``(codes [B, K], poses [B, 7]) -> (images [B, H, W, 3], alphas [B, H, W])``
        with the cameras prepared once: deformation, then rasterization. ``deform`` / ``rasterize``
        swap in other implementations with the same signatures (the GPU comparison uses gsplat's).
        ``cuda_graph`` (CUDA, our kernels) replays each frame from a CUDA graph (instant4d.graphs): the
        returned images are then overwritten by the next frame unless cloned."""
        from ..kernels.deform import deform_gaussians
        from ..render import rasterization

        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ValueError(f"size must be a positive int, got {size!r}")
        g = self.gaussians
        dtype = g.means.dtype
        viewmat, K = view.cameras(self.config, size, device=self.device)
        viewmats, Ks = viewmat[None].to(dtype), K[None].to(dtype)
        backgrounds = torch.as_tensor(background, dtype=dtype, device=self.device).reshape(1, 3)
        if deform is None:
            def deform(*inputs):
                return deform_gaussians(*inputs, backend=backend)
        rasterizer_swapped = rasterize is not None
        if rasterize is None:
            def rasterize(*inputs, **options):
                return rasterization(*inputs, **options, backend=backend)

        def frame(codes: torch.Tensor, poses: torch.Tensor, **options):
            # colours in [0, 1] over a background in [0, 1] composite into [0, 1]: no clamp needed
            means, quats, opacities = deform(g.means, g.quats, g.opacities, g.basis, g.opacity_basis, g.rigid, g.pivot, codes, poses)
            images, alphas, counts = [], [], []
            for b in range(codes.shape[0]):  # one camera per frame: [1, H, W, .] each
                colors, alpha, meta = rasterize(
                    means[b], quats[b], g.scales, opacities[b], g.colors, viewmats, Ks, size, size,
                    backgrounds=backgrounds, packed=False, tile_size=tile_size, **options,
                )  # fmt: skip
                images.append(colors)
                alphas.append(alpha[..., 0])
                counts.append(meta.get("n_isects"))
            if len(images) == 1:  # batch 1, the real-time case: no copies
                outputs = images[0], alphas[0]
            else:
                outputs = torch.cat(images), torch.cat(alphas)
            return (outputs, counts[0] if len(counts) == 1 else torch.cat(counts)) if options else outputs

        if not cuda_graph:
            return frame
        from ..graphs import CudaGraphFrame

        if rasterizer_swapped or resolve_backend(backend, g.means) != "triton":
            raise ValueError("cuda_graph=True needs CUDA tensors and instant4d's Triton kernels")
        return CudaGraphFrame(frame)

    def render_video(
        self,
        driver,
        output,
        size: int = 512,
        orbit: float = 0.0,
        fps: float | None = None,
        relative: bool = True,
        background=(1.0, 1.0, 1.0),
        progress: bool = True,
        backend: str | None = None,
    ) -> VideoReport:
        """Drive the avatar by a video file (any length, streamed), an image, a preset name, or an
        iterable of ``MotionCode``s, and write an mp4 frame by frame. ``orbit``: the camera swings
        between -orbit and +orbit degrees of yaw over a four-second period."""
        from .drive import driving_codes
        from .media import VideoWriter

        codes, total, rate = driving_codes(driver, relative=relative)
        fps = fps or rate
        held = None
        lost = 0
        output = Path(output)
        with VideoWriter(output, fps) as writer, _progress(total, f"rendering {output.name}", progress) as bar:
            for index, code in enumerate(codes):
                if code is None:
                    lost += 1
                    code = held or MotionCode()
                held = code
                view = View(yaw=orbit * math.sin(2 * math.pi * index / (4 * fps))) if orbit else View()
                with torch.no_grad():
                    writer.write(self.render(motion=code, size=size, view=view, background=background, backend=backend))
                bar.update(1)
        if lost:
            warnings.warn(f"no face in {lost} of {writer.frames} driving frames; held the last good expression for them")
        return VideoReport(output, writer.frames, lost)

    # ------------------------------------------------------------------ files
    def save(self, path) -> None:
        """Write the avatar as safetensors (tensors + the encoder's settings as metadata)."""
        from safetensors.torch import save_file

        tensors = {f.name: getattr(self.gaussians, f.name).detach().float().cpu().contiguous() for f in fields(CanonicalGaussians)}
        metadata = {
            "format": FORMAT,
            "version": str(FORMAT_VERSION),
            "encoder": self.encoder,
            "config": json.dumps(asdict(self.config)),
            "components": json.dumps(list(COMPONENTS)),
        }
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata=metadata)

    @classmethod
    def load(cls, path, device=None) -> "Avatar":
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such avatar file")
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                metadata = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in f.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise InputError(f"{path}: not a readable avatar file ({exc})") from exc
        if metadata.get("format") != FORMAT:
            raise InputError(f"{path}: not an instant4d avatar (format {metadata.get('format')!r})")
        version = int(metadata.get("version", "0"))
        if version > FORMAT_VERSION:
            raise InputError(
                f"{path}: saved by a newer instant4d (avatar format {version}; this version reads up to "
                f"{FORMAT_VERSION}); upgrade with: pip install -U instant4d"
            )
        if json.loads(metadata.get("components", "[]")) != list(COMPONENTS):
            raise InputError(f"{path}: its expression components differ from this version's {list(COMPONENTS)}")
        missing = [f.name for f in fields(CanonicalGaussians) if f.name not in tensors]
        if missing:
            raise InputError(f"{path}: avatar file lacks tensors {missing}")
        config = EncoderConfig(**json.loads(metadata.get("config", "{}")))
        gaussians = CanonicalGaussians(**{f.name: tensors[f.name].to(device) for f in fields(CanonicalGaussians)})
        return cls(gaussians, config, metadata.get("encoder", Encoder.name))

    def export_ply(self, path, motion: MotionCode | None = None, pose: HeadPose | None = None) -> None:
        """Write the (neutral, or posed) Gaussians in the standard 3DGS PLY layout."""
        from .ply import write_ply

        with torch.no_grad():
            means, quats, opacities = self.deform(motion, pose)
        g = self.gaussians
        write_ply(path, means[0], quats[0], g.scales, opacities[0], g.colors)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def _progress(total: int | None, description: str, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="frame")
