"""``rasterization()``: the one entry point that renders Gaussians, a drop-in for gsplat 1.5.3's.

Stages (each a public function with a Triton kernel and a PyTorch twin, see docs/architecture.md):
``fully_fused_projection`` -> (``spherical_harmonics``) -> ``intersect_tiles`` (``isect_tiles`` +
``isect_offset_encode``) -> ``rasterize_to_pixels``.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple, Optional

import torch
from torch import Tensor

from . import graphs, shapes
from .backend import resolve_backend
from .kernels._triton import float32_contiguous
from .kernels.composite import composite_checked
from .kernels.intersect import intersect_checked, send_count_to_host
from .kernels.projection import project_checked
from .kernels.spherical_harmonics import spherical_harmonics

RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")
RASTERIZE_MODES = ("classic", "antialiased")


def _reject_unsupported(**options: Any) -> None:
    """gsplat options we do not implement: fail loudly rather than render something else."""
    unsupported = {
        "distributed": lambda v: v,
        "sparse_grad": lambda v: v,
        "with_ut": lambda v: v,
        "with_eval3d": lambda v: v,
        "camera_model": lambda v: v != "pinhole",
        "radial_coeffs": lambda v: v is not None,
        "tangential_coeffs": lambda v: v is not None,
        "thin_prism_coeffs": lambda v: v is not None,
        "ftheta_coeffs": lambda v: v is not None,
        "rolling_shutter": lambda v: getattr(v, "name", v) not in (None, "GLOBAL"),
        "viewmats_rs": lambda v: v is not None,
    }
    for name, is_set in unsupported.items():
        if is_set(options[name]):
            raise NotImplementedError(
                f"instant4d.rasterization does not support {name}={options[name]!r} "
                "(pinhole cameras, single process, dense gradients only)"
            )


def rasterization(
    means: Tensor,  # [..., N, 3]
    quats: Optional[Tensor],  # [..., N, 4]
    scales: Optional[Tensor],  # [..., N, 3]
    opacities: Tensor,  # [..., N]
    colors: Tensor,  # [..., (C,) N, D] or [..., (C,) N, K, 3]
    viewmats: Tensor,  # [..., C, 4, 4]
    Ks: Tensor,  # [..., C, 3, 3]
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    sh_degree: Optional[int] = None,
    packed: bool = True,
    tile_size: int = 16,
    backgrounds: Optional[Tensor] = None,  # [..., C, D]
    render_mode: str = "RGB",
    sparse_grad: bool = False,
    absgrad: bool = False,
    rasterize_mode: str = "classic",
    channel_chunk: int = 32,
    distributed: bool = False,
    camera_model: str = "pinhole",
    segmented: bool = False,
    covars: Optional[Tensor] = None,  # [..., N, 3, 3]
    with_ut: bool = False,
    with_eval3d: bool = False,
    radial_coeffs: Optional[Tensor] = None,
    tangential_coeffs: Optional[Tensor] = None,
    thin_prism_coeffs: Optional[Tensor] = None,
    ftheta_coeffs: Any = None,
    rolling_shutter: Any = None,
    viewmats_rs: Optional[Tensor] = None,
    *,
    max_intersections: Optional[int] = None,
    deterministic: bool = False,
    backend: Optional[str] = None,
    cuda_graphs: bool = True,
) -> tuple[Tensor, Tensor, dict]:
    """Render B scenes of N Gaussians from C cameras each (gsplat 1.5.3's ``rasterization``).

    Inputs are post-activation: ``scales`` linear, ``opacities`` in [0, 1], ``quats`` wxyz (normalised
    inside); ``viewmats`` map world to camera (OpenCV axes), ``Ks`` are pixel intrinsics. ``colors``
    are D feature channels, per Gaussian or per (camera, Gaussian), or SH coefficients [..., N, K, 3]
    when ``sh_degree`` is set (colour = max(SH(dir) + 0.5, 0), dir = mean - camera centre).

    ``render_mode``: "RGB"; "D" accumulated depth sum_i w_i z_i; "ED" expected depth D / alpha;
    "RGB+D" / "RGB+ED" append the depth as the last channel. ``rasterize_mode="antialiased"``
    multiplies opacities by sqrt(det(S) / det(S + eps2d I)). ``packed`` compacts the per-(image,
    Gaussian) data to the visible pairs (less memory); ``absgrad`` makes the backward pass also store
    ``meta["means2d"].absgrad``. ``backend`` is "auto" | "triton" | "torch" (see instant4d.backend).

    ``max_intersections`` (unpacked only) bounds the (tile, Gaussian) buffers so that the call never
    waits for the GPU and can be captured in a CUDA graph (see ``instant4d.graphs``):
    ``meta["n_isects"]`` then holds the real count on the device, and if it exceeds the bound the
    images are NaN (re-render with a larger bound); they are never silently incomplete.

    ``deterministic=True`` (unpacked only) makes gradients bit-identical run to run: the compositing
    backward sums per-intersection records in sorted order instead of using float atomics.

    ``cuda_graphs``: calls that repeat (same shapes and options; CUDA, unpacked, small enough, see
    ``instant4d.graphs.RasterizationGraphs``) are replayed from CUDA graphs, forward and backward (inputs
    read in place or copied in, gradients handed out as the graphs' buffers, busy while kept): most of a
    small call's host time goes, the graphs keep their pools between calls (a backward graph writes over the
    outputs of calls that drop them before their backward), and results equal the eager path's to float
    rounding (the bounded intersection buffers' kernels).

    Returns ``render_colors [..., C, H, W, X]``, ``render_alphas [..., C, H, W, 1]`` and ``meta``
    (gsplat's keys: radii, means2d, depths, conics, opacities, tiles_per_gauss, isect_ids,
    flatten_ids, isect_offsets, batch/camera/gaussian ids when packed, sizes). ``meta["means2d"]``
    receives gradients after ``retain_grad()``, as densification strategies expect.
    """
    _reject_unsupported(
        distributed=distributed, sparse_grad=sparse_grad, with_ut=with_ut, with_eval3d=with_eval3d,
        camera_model=camera_model, radial_coeffs=radial_coeffs, tangential_coeffs=tangential_coeffs,
        thin_prism_coeffs=thin_prism_coeffs, ftheta_coeffs=ftheta_coeffs, rolling_shutter=rolling_shutter,
        viewmats_rs=viewmats_rs,
    )
    # the stages' tensor arguments (quats and scales are unused when covars is given)
    tensors = (means, quats if covars is None else None, scales if covars is None else None, opacities, colors,
               viewmats, Ks, backgrounds, covars)
    graph_key = None
    if (cuda_graphs and not packed and max_intersections is None and not deterministic and not absgrad
            and graphs.may_serve(means, viewmats, width, height)):
        graph_key = graphs.call_key(tensors, (width, height, near_plane, far_plane, radius_clip, eps2d, sh_degree,
                                              tile_size, render_mode, rasterize_mode, channel_chunk, backend))
        if graph_key is not None:
            replayed = graphs.RASTERIZATION_GRAPHS.replay(graph_key, tensors)
            if replayed is not None:
                return replayed
    if render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    if rasterize_mode not in RASTERIZE_MODES:
        raise ValueError(f"rasterize_mode must be one of {RASTERIZE_MODES}, got {rasterize_mode!r}")
    shapes.check_image_size(width, height)
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size <= 0:
        raise ValueError(f"tile_size must be a positive int, got {tile_size!r}")
    if isinstance(channel_chunk, bool) or not isinstance(channel_chunk, int) or channel_chunk <= 0:
        raise ValueError(f"channel_chunk must be a positive int, got {channel_chunk!r}")
    if max_intersections is not None and packed:
        raise ValueError("max_intersections needs packed=False (packing itself waits for the GPU)")
    if deterministic and packed:
        raise ValueError("deterministic=True needs packed=False (the packed gathers' backward adds with atomics)")

    if not isinstance(means, Tensor) or means.dim() < 2 or means.shape[-1] != 3:
        raise ValueError(f"means must be a tensor of shape [..., N, 3], got {getattr(means, 'shape', means)!r}")
    # one dtype, float32 or float64 (the projection's rule)
    shapes.check_tensor("means", means, tuple(means.shape), dtypes=(torch.float32, torch.float64))
    device = means.device
    same = dict(dtypes=(means.dtype,), device=device)
    batch_dims = tuple(means.shape[:-2])
    n = means.shape[-2]
    shapes.check_tensor("viewmats", viewmats, batch_dims + (None, 4, 4), **same)
    n_cameras = viewmats.shape[-3]
    shapes.check_tensor("Ks", Ks, batch_dims + (n_cameras, 3, 3), **same)
    shapes.check_tensor("opacities", opacities, batch_dims + (n,), **same)
    if covars is None:
        if quats is None or scales is None:
            raise ValueError("quats and scales are required unless covars is given")
        shapes.check_tensor("quats", quats, batch_dims + (n, 4), **same)
        shapes.check_tensor("scales", scales, batch_dims + (n, 3), **same)
    else:
        shapes.check_tensor("covars", covars, batch_dims + (n, 3, 3), **same)
        quats = scales = None
    n_batch = len(batch_dims)
    if sh_degree is None:
        if colors.dim() == n_batch + 2:
            shapes.check_tensor("colors", colors, batch_dims + (n, None), device=device)
        else:
            shapes.check_tensor("colors", colors, batch_dims + (n_cameras, n, None), device=device)
    else:
        if not isinstance(sh_degree, int) or not 0 <= sh_degree <= 3:
            raise ValueError(f"sh_degree must be None or an int in 0..3, got {sh_degree!r}")
        per_camera = colors.dim() == n_batch + 4
        lead = batch_dims + ((n_cameras,) if per_camera else ())
        shapes.check_tensor("colors", colors, lead + (n, None, 3), device=device)
        if (sh_degree + 1) ** 2 > colors.shape[-2]:
            raise ValueError(
                f"sh_degree={sh_degree} needs {(sh_degree + 1) ** 2} SH coefficients, colors has {colors.shape[-2]}")
    channels_in = 3 if sh_degree is not None else colors.shape[-1]
    if channels_in == 0:
        raise ValueError("colors must have at least one channel")
    if backgrounds is not None:
        # colour modes need one background value per channel; depth-only modes ignore backgrounds (as gsplat)
        channels_expected = channels_in if render_mode.startswith("RGB") else None
        shapes.check_tensor("backgrounds", backgrounds, batch_dims + (n_cameras, channels_expected), device=device)

    # the stages' own checks are those above, so they are called unchecked, with one backend for all
    backend = resolve_backend(backend, means, quats, scales, opacities, colors, viewmats, Ks, backgrounds, covars)
    options = RenderOptions(width, height, near_plane, far_plane, radius_clip, eps2d, sh_degree, packed, tile_size,
                            render_mode, rasterize_mode, channel_chunk, absgrad, deterministic, backend)
    graphed = graph_key is not None and backend == "triton"  # (the graphs capture our kernels only)
    if graphed:
        replayed = graphs.RASTERIZATION_GRAPHS.capture(graph_key, functools.partial(_render, options=options), tensors)
        if replayed is not None:
            return replayed
    render_colors, render_alphas, meta = _render(*tensors, options=options, max_intersections=max_intersections)
    if graphed:
        graphs.RASTERIZATION_GRAPHS.note_gradients(graph_key, render_colors, render_alphas, meta)
    return render_colors, render_alphas, meta


class RenderOptions(NamedTuple):
    """rasterization()'s arguments other than tensors, checked, with the backend resolved."""
    width: int
    height: int
    near_plane: float
    far_plane: float
    radius_clip: float
    eps2d: float
    sh_degree: Optional[int]
    packed: bool
    tile_size: int
    render_mode: str
    rasterize_mode: str
    channel_chunk: int
    absgrad: bool
    deterministic: bool
    backend: str


def _render(means, quats, scales, opacities, colors, viewmats, Ks, backgrounds, covars, *, options: RenderOptions,
            max_intersections: Optional[int], count_signal=None) -> tuple[Tensor, Tensor, dict]:
    """rasterization() on checked inputs. ``count_signal`` = (pinned host tensor [1], CUDA event): the
    intersection count is copied there and the event recorded as soon as the count is known (what a
    CUDA-graph replay waits for, see instant4d.graphs)."""
    (width, height, near_plane, far_plane, radius_clip, eps2d, sh_degree, packed, tile_size, render_mode,
     rasterize_mode, channel_chunk, absgrad, deterministic, backend) = options
    device = means.device
    batch_dims = tuple(means.shape[:-2])
    n = means.shape[-2]
    n_cameras = viewmats.shape[-3]
    covars_upper = None if covars is None else covars[..., [0, 0, 0, 1, 1, 2], [0, 1, 2, 1, 2, 2]]  # [..., N, 6]
    n_batches = math.prod(batch_dims)
    n_images = n_batches * n_cameras
    proj = project_checked(means, covars_upper, quats, scales, viewmats, Ks, width, height, eps2d, near_plane,
                           far_plane, radius_clip, packed, rasterize_mode == "antialiased", opacities, backend)
    meta: dict[str, Any] = {}
    if packed:
        batch_ids, camera_ids, gaussian_ids, radii, means2d, depths, conics, compensations = proj
        opacities = opacities.reshape(n_batches, n)[batch_ids, gaussian_ids]  # [nnz]
        image_ids = batch_ids * n_cameras + camera_ids
    else:
        radii, means2d, depths, conics, compensations = proj
        opacities = _per_camera(opacities, -2, n_cameras)  # [..., C, N]
        batch_ids = camera_ids = gaussian_ids = image_ids = None
    if compensations is not None:
        opacities = opacities * compensations
    if backend == "triton":  # (several cameras: the intersection and the compositing read one copy)
        opacities = float32_contiguous(opacities)
    meta.update(batch_ids=batch_ids, camera_ids=camera_ids, gaussian_ids=gaussian_ids, radii=radii,
                means2d=means2d, depths=depths, conics=conics, opacities=opacities)

    colors = _colors_per_image(colors, means, viewmats, radii, sh_degree, packed, batch_dims, n_cameras,
                               batch_ids, camera_ids, gaussian_ids, backend)
    if render_mode in ("RGB+D", "RGB+ED"):
        colors = torch.cat((colors, depths[..., None].to(colors.dtype)), dim=-1)
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, torch.zeros_like(backgrounds[..., :1])], dim=-1)
    elif render_mode in ("D", "ED"):
        colors = depths[..., None]
        if backgrounds is not None:
            backgrounds = torch.zeros(batch_dims + (n_cameras, 1), device=device, dtype=backgrounds.dtype)

    tile_width = math.ceil(width / tile_size)
    tile_height = math.ceil(height / tile_size)
    tiles_per_gauss, isect_ids, flatten_ids, isect_offsets, n_isects = intersect_checked(
        means2d, radii, depths, tile_size, tile_width, tile_height, packed, n_images, image_ids, gaussian_ids,
        max_intersections, conics, opacities, backend)
    if count_signal is not None:
        send_count_to_host(n_isects, *count_signal)
    n_isects = None if max_intersections is None else n_isects
    if batch_dims:  # [I, TH, TW] -> [..., C, TH, TW]
        isect_offsets = isect_offsets.reshape(batch_dims + (n_cameras, tile_height, tile_width))
    meta.update(tile_width=tile_width, tile_height=tile_height, tiles_per_gauss=tiles_per_gauss,
                isect_ids=isect_ids, flatten_ids=flatten_ids, isect_offsets=isect_offsets, width=width,
                height=height, tile_size=tile_size, n_batches=n_batches, n_cameras=n_cameras, n_isects=n_isects)

    # Channels beyond channel_chunk are composited in chunks to bound the per-program register tile;
    # every chunk walks the same intersections, so only the first chunk's alphas are kept.
    chunks = [slice(i, i + channel_chunk) for i in range(0, colors.shape[-1], channel_chunk)]

    def composite(chunk: slice) -> tuple[Tensor, Tensor]:
        whole = len(chunks) == 1  # (then no slicing op: each costs the host a few us)
        return composite_checked(
            means2d, conics, colors if whole else colors[..., chunk], opacities, width, height, tile_size,
            isect_offsets, flatten_ids, backgrounds if backgrounds is None or whole else backgrounds[..., chunk],
            None, packed, absgrad, n_isects, deterministic, backend)

    results = [composite(chunk) for chunk in chunks]
    render_colors = results[0][0] if len(results) == 1 else torch.cat([r[0] for r in results], dim=-1)
    render_alphas = results[0][1]
    if render_mode in ("ED", "RGB+ED"):
        render_colors = torch.cat(
            [render_colors[..., :-1], render_colors[..., -1:] / render_alphas.clamp(min=1e-10)], dim=-1)
    return render_colors, render_alphas, meta


def _per_camera(x: Tensor, dim: int, n_cameras: int) -> Tensor:
    """x with a camera axis inserted at dim (negative), broadcast to n_cameras: for one camera only the
    view, so that the backward has no broadcast to sum over."""
    x = x.unsqueeze(dim)
    if n_cameras == 1:
        return x
    shape = list(x.shape)
    shape[dim] = n_cameras
    return x.expand(shape)


def _colors_per_image(colors, means, viewmats, radii, sh_degree, packed, batch_dims, n_cameras, batch_ids,
                      camera_ids, gaussian_ids, backend) -> Tensor:
    """Colours per (image, Gaussian): [..., C, N, D], or [nnz, D] when packed."""
    n = means.shape[-2]
    n_batches = math.prod(batch_dims)
    per_camera = colors.dim() == len(batch_dims) + (3 if sh_degree is None else 4)
    if packed:
        if per_camera:
            colors = colors.reshape((n_batches, n_cameras, n) + colors.shape[-(1 if sh_degree is None else 2):])
            colors = colors[batch_ids, camera_ids, gaussian_ids]
        else:
            colors = colors.reshape((n_batches, n) + colors.shape[-(1 if sh_degree is None else 2):])
            colors = colors[batch_ids, gaussian_ids]
    elif not per_camera:
        colors = _per_camera(colors, -3 if sh_degree is None else -4, n_cameras)
    if sh_degree is None:
        return colors
    camera_centres = torch.linalg.inv_ex(viewmats).inverse[..., :3, 3]  # [..., C, 3] (inv_ex: no wait on the device)
    if packed:
        dirs = (means.reshape(n_batches, n, 3)[batch_ids, gaussian_ids]
                - camera_centres.reshape(n_batches, n_cameras, 3)[batch_ids, camera_ids])  # [nnz, 3]
    else:
        dirs = means[..., None, :, :] - camera_centres[..., None, :]  # [..., C, N, 3]
    visible = (radii > 0).all(dim=-1)
    return torch.clamp_min(spherical_harmonics(sh_degree, dirs, colors, masks=visible, backend=backend) + 0.5, 0.0)
