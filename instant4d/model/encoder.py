"""The encoder: one aligned face photo -> the canonical avatar (Gaussians each carrying appearance
and a motion basis), in one feed-forward pass with no per-person optimisation.

The default, ``Encoder`` with ``EncoderConfig()``, lifts the photo with the fitted face mesh (no learned
weights exist to ship yet; a distilled neural encoder will subclass ``Encoder`` and override
``encode``):

1. The source camera is the avatar's frontal camera (``camera.orbit_viewmat(0)``, ``fov_degrees``);
   the aligned crop fills its image. Landmarks are unprojected with MediaPipe's depth (head centre at
   the world origin's depth).
2. Depth per pixel of a ``resolution``^2 grid: the mesh's depth inside its triangles; elsewhere (hair,
   ears, neck, eye and mouth openings) a head-shaped ellipsoid fitted to the face plus the mesh's
   offset from it, extrapolated by pull-push filling (outside the face from the mesh's outline alone, so
   the surface keeps receding past the outline instead of folding forward) and faded out with the
   distance from the face.
   The surface is continuous, so turning the head does not open cracks.
3. One Gaussian per pixel of the person mask, at the unprojected pixel centre, coloured by the pixel,
   flat along the local surface (its axes are the surface tangents of one grid step, times
   ``splat_scale``), nearly opaque; behind it a sparser backing layer, and the head closed behind the
   photo (``back_of_head``): walls along the rays behind the person's outline and the back half of the
   head proxy, so a turned head shows its side instead of the background.
4. The motion basis of each Gaussian: the procedural rig of ``basis.py`` evaluated at its position;
   the jaw weight comes from the mesh triangle it lies in (so the lips part cleanly), the rigid-head
   weight fades from 1 above the chin to 0 on the neck.
5. The mouth interior: a grid of Gaussians behind the lips (dark cavity, upper teeth fixed to the
   head, lower teeth and tongue riding the jaw), transparent at rest and made opaque by ``jaw_open``
   through the opacity basis, so an opening mouth reveals it instead of stretching the lips.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import basis as expression
from . import landmarks as lm
from .face import FaceObservation, observe
from .geometry import matrix_to_quaternion

ENCODER_NAME = "mesh-lifting"
BACKING_DEPTH = 1.5  # the backing layer's least distance behind the surface, in grid steps
BACKING_SCALE = 0.8  # its splats' sigma per (doubled) grid step: alpha >= 0.997 between them
BACKING_MAX_SLOPE = 1.0  # no backing off the face where the surface recedes faster (45 degrees)
SKIRT_STEP = 4.0  # depth between the skirt's splats behind a silhouette edge, in grid steps
REVEAL_RATE = 4.0  # opacity change per unit of jaw_open: the mouth interior is opaque from jaw_open 0.25


@dataclass(frozen=True)
class EncoderConfig:
    """Settings of the default (mesh-lifting) encoder."""

    resolution: int = 384  # Gaussian grid side: at most resolution^2 Gaussians for the photo (docs/avatar.md)
    fov_degrees: float = 20.0  # vertical field of view of the source (and default render) camera
    distance: float = 2.7  # source camera distance from the origin
    splat_scale: float = 0.6  # in-plane Gaussian sigma / grid spacing
    thickness: float = 0.3  # Gaussian sigma along the surface normal / in-plane sigma
    min_mask: float = 0.3  # person-mask value below which a pixel gets no Gaussian
    mouth_interior: bool = True
    sharpen: float = 0.5  # unsharp-mask amount compensating the Gaussians' blur
    backing: bool = True  # a sparser layer of wider splats behind the surface: no see-through gaps
    back_of_head: bool = True  # close the head behind the photo: skirts behind its outline, a back surface

    @property
    def focal_fraction(self) -> float:
        """focal length / image side."""
        return 0.5 / math.tan(math.radians(self.fov_degrees) / 2)


@dataclass
class CanonicalGaussians:
    """The encoder's output: the neutral avatar and its motion basis (see ``kernels/deform.py``)."""

    means: torch.Tensor  # [N, 3]
    quats: torch.Tensor  # [N, 4] wxyz
    scales: torch.Tensor  # [N, 3]
    opacities: torch.Tensor  # [N]
    colors: torch.Tensor  # [N, 3]
    basis: torch.Tensor  # [N, K, 3] displacement per unit of each expression component
    opacity_basis: torch.Tensor  # [N, K] opacity change per unit of each component
    rigid: torch.Tensor  # [N] how much each Gaussian follows the head pose
    pivot: torch.Tensor  # [3] the head's centre of rotation
    landmarks: torch.Tensor  # [478, 3] the source face's landmarks in world units


@dataclass(frozen=True)
class FaceFrame:
    """The similarity (world = scale * rotation @ canonical + translation) that best aligns the
    reference face (upright, frontal) to a face, on landmarks that expressions barely move."""

    scale: float
    rotation: np.ndarray  # [3, 3]
    translation: np.ndarray  # [3]

    @classmethod
    def fit(cls, marks: np.ndarray) -> "FaceFrame":
        from .geometry import procrustes
        from .motion import default_reference

        rigid = list(lm.RIGID)
        return cls(*procrustes(default_reference()[rigid], marks[rigid]))

    def to_canonical(self, points: np.ndarray) -> np.ndarray:
        return (points - self.translation) @ self.rotation / self.scale

    def to_world(self, points: np.ndarray) -> np.ndarray:
        return self.scale * points @ self.rotation.T + self.translation

    def vectors_to_world(self, vectors: np.ndarray) -> np.ndarray:
        return self.scale * vectors @ self.rotation.T


def world_landmarks(observation: FaceObservation, config: EncoderConfig = EncoderConfig()) -> np.ndarray:
    """landmarks [478, 3] of an observation, unprojected into the world of the source camera."""
    points = observation.landmarks.astype(np.float64)
    return _unproject(points[:, 0], points[:, 1], _world_depth(points[:, 2], observation.size, config), observation.size, config)


def _world_depth(z_pixels: np.ndarray, size: int, config: EncoderConfig) -> np.ndarray:
    # MediaPipe's z is in image-width units around the head centre; a pixel at the origin's depth spans
    # distance / focal world units
    return z_pixels * config.distance / (config.focal_fraction * size)


def _unproject(u: np.ndarray, v: np.ndarray, z_world: np.ndarray, size: int, config: EncoderConfig) -> np.ndarray:
    focal = config.focal_fraction * size
    depth = config.distance + z_world
    return np.stack([(u - size / 2) * depth / focal, (v - size / 2) * depth / focal, z_world], -1)


class Encoder:
    """Image -> canonical avatar. ``Encoder()(photo)`` needs ``instant4d[face]`` for the face mesh;
    ``Encoder().encode(observation)`` needs only the core dependencies."""

    name = ENCODER_NAME

    def __init__(self, config: EncoderConfig = EncoderConfig()):
        self.config = config

    def __call__(self, image):
        from .avatar import Avatar

        return Avatar(self.encode(observe(image)), self.config, encoder=self.name)

    def encode(self, observation: FaceObservation) -> CanonicalGaussians:
        config, size, res = self.config, observation.size, self.config.resolution
        marks = world_landmarks(observation, config)
        frame = FaceFrame.fit(marks)  # the rig works on an upright, frontal copy of the face
        canon_marks = frame.to_canonical(marks)
        h = expression.face_scale(canon_marks)
        step = size / res
        grid_u, grid_v = np.meshgrid((np.arange(res) + 0.5) * step, (np.arange(res) + 0.5) * step)

        # 1. depth: mesh inside its triangles, head proxy + extrapolated mesh offset elsewhere
        triangles = mesh_triangles()
        pixel_marks = observation.landmarks[:, :2] / step
        jaw_marks = expression.landmark_jaw_weight(canon_marks)
        attributes = np.stack([marks[:, 2], jaw_marks], -1)
        mesh_values, covered = rasterize_triangles(pixel_marks, triangles, attributes, res)
        head = HeadProxy.fit(marks)
        proxy = head.front_depth(grid_u, grid_v, size, config)
        offset = np.where(covered, mesh_values[..., 0] - proxy, 0.0)
        fill = pull_push(offset[..., None], covered.astype(np.float64))[..., 0]
        # outside the face the offset is carried out from the mesh's outline alone: the outline lies far
        # behind the proxy, and an average over the whole mesh would bring the surface forward again
        # just past it, a fold that a turned head shows as a soft, see-through seam along its far cheek
        face = covered | rasterize_polygon(pixel_marks[list(lm.FACE_OVAL)], res)  # the mesh, holes filled
        outline = covered & ~_erode(face)
        fill = np.where(face, fill, pull_push(offset[..., None], outline.astype(np.float64))[..., 0])
        near_face = np.where(covered, 1.0, np.clip(2.0 * _smooth(covered.astype(np.float64), max(res // 16, 1)), 0.0, 1.0))
        depth = proxy + fill * near_face  # = the mesh's depth where it covers
        points = _unproject(grid_u, grid_v, depth, size, config)  # [R, R, 3]

        # 2. who is drawn, in what colour, how the jaw moves it
        mask = _resize(observation.mask[..., None].astype(np.float64), res)[..., 0]
        mask = np.where(covered, 1.0, mask)
        colors = _resize(observation.image.astype(np.float64) / 255.0, res)
        if config.sharpen:
            colors = np.clip(colors + config.sharpen * (colors - _box_blur(colors)), 0.0, 1.0)
        mouth_hole = rasterize_polygon(pixel_marks[list(lm.MOUTH_OPENING)], res)
        jaw_outside = expression.jaw_weight(frame.to_canonical(points.reshape(-1, 3)), canon_marks).reshape(res, res)
        jaw = np.where(covered, mesh_values[..., 1], jaw_outside * near_face)
        # inside the mouth opening (teeth in a smiling photo): the upper half stays, the lower half
        # rides the jaw, so the lips and teeth part where they meet
        upper = _curve(pixel_marks[list(lm.UPPER_LIP_INNER)], grid_u / step)
        lower = _curve(pixel_marks[list(lm.LOWER_LIP_INNER)], grid_u / step)
        jaw = np.where(mouth_hole, (grid_v / step > (upper + lower) / 2).astype(np.float64), jaw)
        pixel_world = config.distance / (config.focal_fraction * res)

        # 3. flat Gaussians along the surface: the front layer, narrow enough to keep the photo sharp
        gaussians = _surface_splats(points, mask, colors, jaw, config, config.splat_scale, pixel_world)
        if config.backing:
            # the backing layer: one splat per 2x2 block, twice as wide, pushed back along the rays by
            # more than the surface recedes under its footprint, so it never sorts in front of the front
            # layer and only shows where the front splats leave a gap (between them, alpha ~ 0.95);
            # behind the lips it fades out as the jaw opens, so that the lips part cleanly
            slope = np.abs(np.stack(np.gradient(depth), -1)).max(-1)  # world depth per grid step
            slope = F.max_pool2d(torch.as_tensor(slope)[None, None], 5, stride=1, padding=2)[0, 0].numpy()
            steep = slope > BACKING_MAX_SLOPE * pixel_world
            behind = _resize(np.stack([depth + BACKING_DEPTH * pixel_world + 5 * slope, mask, jaw, steep & (near_face < 0.5)], -1), res // 2)
            half = (np.arange(res // 2) + 0.5) * 2 * step
            half_u, half_v = np.meshgrid(half, half)
            lips = rasterize_polygon(pixel_marks[list(lm.LIPS_OUTER)] / 2, res // 2)
            # only inside the person (one block from the mask's edge: the skirts behind the outline hide
            # what peeks out there) and off the steep folds of hair and neck (steeper than
            # BACKING_MAX_SLOPE, away from the face): a splat pushed far back there would peek out of
            # the silhouette as a halo when the head turns
            inside = -F.max_pool2d(-torch.as_tensor(behind[..., 1])[None, None], 3, stride=1, padding=1)[0, 0].numpy()
            solid = (inside > 0.9) & (behind[..., 3] == 0)
            back = _surface_splats(
                _unproject(half_u, half_v, behind[..., 0], size, config), np.where(solid, behind[..., 1], 0.0),
                _resize(colors, res // 2), behind[..., 2], config, BACKING_SCALE, 2 * pixel_world,
                reveal=np.where(lips, -REVEAL_RATE, 0.0),
            )  # fmt: skip
            gaussians = {k: np.concatenate([gaussians[k], back[k]]) for k in gaussians}
        if config.back_of_head:
            # the head is closed behind the photo: the back half of the head proxy (never in front of the
            # surface) and walls from the person's outline back to it, coloured like the outline, so a
            # turned head shows its side instead of the background the person mask left out
            proxy_back = head.back_depth(grid_u, grid_v, size, config)
            back_depth = np.maximum(proxy_back, depth + BACKING_DEPTH * pixel_world)
            skirt = _skirt_splats(grid_u, grid_v, depth, back_depth, mask, colors, jaw, size, config, pixel_world)
            solid, outline = _outline(mask)
            in_head = (solid & (proxy_back > head.centre[2]))[1::2, 1::2]
            cap = _surface_splats(
                _unproject(grid_u, grid_v, back_depth, size, config)[1::2, 1::2], in_head.astype(np.float64),
                pull_push(colors, outline.astype(np.float64))[1::2, 1::2], np.zeros(in_head.shape), config,
                BACKING_SCALE, 2 * pixel_world,
            )  # fmt: skip
            gaussians = {k: np.concatenate([gaussians[k], skirt[k], cap[k]]) for k in gaussians}
        if config.mouth_interior:
            interior = _mouth_interior(canon_marks, pixel_world / frame.scale)
            interior["means"] = frame.to_world(interior["means"])
            interior["scales"] = interior["scales"] * frame.scale
            interior["quats"][:] = matrix_to_quaternion(frame.rotation)
            gaussians = {k: np.concatenate([gaussians[k], interior[k]]) for k in gaussians}
        count = len(gaussians["means"])
        canon_means = frame.to_canonical(gaussians["means"])
        basis = frame.vectors_to_world(expression.expression_basis(canon_marks, canon_means, jaw=gaussians["jaw"]))
        opacity_basis = np.zeros((count, len(expression.COMPONENTS)))
        opacity_basis[:, expression.JAW_OPEN] = gaussians["reveal"]

        chin = canon_marks[lm.CHIN]
        rigid = 1.0 - _smoothstep((canon_means[:, 1] - (chin[1] + 0.05 * h)) / (0.3 * h))
        centre = canon_marks[list(lm.CHEEK_EXTREMES)].mean(0)
        pivot = frame.to_world(np.array([[centre[0], chin[1] + 0.1 * h, centre[2]]]))[0]

        def t(x):
            return torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)

        return CanonicalGaussians(
            means=t(gaussians["means"]),
            quats=t(gaussians["quats"]),
            scales=t(gaussians["scales"]),
            opacities=t(gaussians["opacities"]),
            colors=t(gaussians["colors"]),
            basis=t(basis),
            opacity_basis=t(opacity_basis),
            rigid=t(rigid),
            pivot=t(pivot),
            landmarks=t(marks),
        )


def _surface_splats(points, mask, colors, jaw, config: EncoderConfig, splat_scale: float, spacing: float, reveal=None) -> dict:
    """One Gaussian per grid cell [R, R] whose person-mask value clears ``config.min_mask``: at
    ``points``, flat along the surface (axes = the grid's tangents x ``splat_scale``), nearly opaque;
    ``reveal`` [R, R]: opacity change per unit of jaw_open (default 0)."""
    frames, lengths = _tangent_frames(np.gradient(points, axis=1), np.gradient(points, axis=0), max_length=8 * spacing)
    scales = np.stack([lengths[..., 0], lengths[..., 1], config.thickness * lengths.min(-1)], -1) * splat_scale
    keep = mask > config.min_mask
    return {
        "means": points[keep],
        "quats": matrix_to_quaternion(frames[keep]),
        "scales": scales[keep],
        "opacities": 0.99 * _smoothstep((mask[keep] - config.min_mask) / 0.3),
        "colors": colors[keep],
        "jaw": jaw[keep],
        "reveal": np.zeros(int(keep.sum())) if reveal is None else reveal[keep],
    }


def _outline(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(solid, edge) [R, R]: cells well inside the person (mask > 0.9) and those of them on its outline
    (a 4-neighbour not solid; the image border is no outline)."""
    solid = mask > 0.9
    return solid, solid & ~_erode(solid)


def _erode(cells: np.ndarray) -> np.ndarray:
    """[R, R] bool: the cells whose 3x3 neighbourhood (within the grid) lies wholly in ``cells``."""
    return -F.max_pool2d(-torch.as_tensor(cells, dtype=torch.float64)[None, None], 3, stride=1, padding=1)[0, 0].numpy() > 0.5


def _skirt_splats(grid_u, grid_v, depth, until, mask, colors, jaw, size: int, config: EncoderConfig, spacing: float) -> dict:
    """Walls behind the person's outline: from each outline cell (see ``_outline``), splats along its camera ray every ``SKIRT_STEP`` grid steps back to that depth, flat
    in the plane of the ray and the outline, coloured like the outline. Hidden behind the outline from
    the source camera; when the head or the camera turns, they close the gap between the near cheek and
    whatever the photo showed behind it (background that the person mask left out)."""
    solid, edge = _outline(mask)
    fill = pull_push(colors, (solid & ~edge).astype(np.float64))  # colours of the solid cells, carried outwards
    d_step = SKIRT_STEP * spacing
    layers = int(np.ceil((until[edge] - depth[edge]).max() / d_step)) if edge.any() else 0
    cell_depth = depth[edge][:, None] + d_step * (np.arange(layers) + 1)[None, :]  # [E, L]
    keep = cell_depth <= until[edge][:, None] + d_step

    def per_cell(values):
        return np.broadcast_to(values[edge][:, None], keep.shape + values.shape[2:])[keep]

    means = _unproject(per_cell(grid_u), per_cell(grid_v), cell_depth[keep], size, config)
    # frame: the ray, the outline's tangent (across the mask's gradient), their normal
    grad_v, grad_u = np.gradient(_box_blur(mask[..., None].astype(np.float64))[..., 0])
    tangent = per_cell(np.stack([-grad_v, grad_u, np.zeros_like(grad_u)], -1))
    frames, _ = _tangent_frames(means + np.array([0.0, 0.0, config.distance]), tangent, max_length=1.0)
    count = len(means)
    return {
        "means": means,
        "quats": matrix_to_quaternion(frames),
        "scales": np.tile(np.array([0.6 * d_step, 0.8 * spacing, 0.3 * spacing]), (count, 1)),
        "opacities": np.full(count, 0.99),
        "colors": per_cell(fill),
        "jaw": per_cell(jaw),
        "reveal": np.zeros(count),
    }


def mesh_triangles() -> np.ndarray:
    """triangles: [T, 3] of the face mesh, shipped in ``assets/face_mesh_triangles.npy`` (derived from
    MediaPipe's tessellation edges: every 3-clique of the edge graph)."""
    from pathlib import Path

    return np.load(Path(__file__).resolve().parent.parent / "assets" / "face_mesh_triangles.npy")


def rasterize_triangles(vertices: np.ndarray, triangles: np.ndarray, attributes: np.ndarray, size: int):
    """(values [size, size, D], covered [size, size]): barycentric interpolation of per-vertex
    ``attributes`` [V, D] over triangles with ``vertices`` [V, 2] in grid units, at pixel centres.
    Where triangles overlap, the one nearest the camera (smallest attribute 0, the depth) wins."""
    values = np.zeros((size, size, attributes.shape[1]))
    nearest = np.full((size, size), np.inf)
    for tri in triangles:
        a, b, c = vertices[tri]
        lo = np.floor(np.minimum(np.minimum(a, b), c)).astype(int).clip(0, size - 1)
        hi = np.ceil(np.maximum(np.maximum(a, b), c)).astype(int).clip(0, size - 1)
        if (hi < lo).any():
            continue
        xs, ys = np.meshgrid(np.arange(lo[0], hi[0] + 1) + 0.5, np.arange(lo[1], hi[1] + 1) + 0.5)
        det = (b[1] - c[1]) * (a[0] - c[0]) + (c[0] - b[0]) * (a[1] - c[1])
        if abs(det) < 1e-12:
            continue
        w0 = ((b[1] - c[1]) * (xs - c[0]) + (c[0] - b[0]) * (ys - c[1])) / det
        w1 = ((c[1] - a[1]) * (xs - c[0]) + (a[0] - c[0]) * (ys - c[1])) / det
        w2 = 1 - w0 - w1
        inside = (w0 >= -1e-9) & (w1 >= -1e-9) & (w2 >= -1e-9)
        value = w0[..., None] * attributes[tri[0]] + w1[..., None] * attributes[tri[1]] + w2[..., None] * attributes[tri[2]]
        window = (slice(lo[1], hi[1] + 1), slice(lo[0], hi[0] + 1))
        better = inside & (value[..., 0] < nearest[window])
        nearest[window] = np.where(better, value[..., 0], nearest[window])
        values[window] = np.where(better[..., None], value, values[window])
    return values, np.isfinite(nearest)


def rasterize_polygon(vertices: np.ndarray, size: int) -> np.ndarray:
    """inside: [size, size] bool, for a star-shaped polygon [P, 2] in grid units (fan from its centroid)."""
    fan = np.concatenate([vertices, vertices.mean(0, keepdims=True)])
    centre = len(vertices)
    triangles = np.array([[i, (i + 1) % centre, centre] for i in range(centre)])
    return rasterize_triangles(fan, triangles, np.zeros((len(fan), 1)), size)[1]


def pull_push(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """values [S, S, D] known where ``weights`` [S, S] > 0, smoothly filled in everywhere else
    (pull: a weighted image pyramid; push: coarse levels fill the holes of finer ones)."""
    v = torch.as_tensor(values * weights[..., None]).permute(2, 0, 1)[None]
    w = torch.as_tensor(weights)[None, None]
    pyramid = [(v, w)]
    while pyramid[-1][1].shape[-1] > 1:
        v, w = pyramid[-1]
        pyramid.append((F.avg_pool2d(v, 2, ceil_mode=True) * 4, F.avg_pool2d(w, 2, ceil_mode=True) * 4))
    v, w = pyramid[-1]
    filled = v / w.clamp_min(1e-12)
    for v, w in reversed(pyramid[:-1]):
        coarse = F.interpolate(filled, size=v.shape[-2:], mode="bilinear", align_corners=False)
        known = w.clamp(max=1.0)
        filled = known * v / w.clamp_min(1e-12) + (1 - known) * coarse
    return filled[0].permute(1, 2, 0).numpy()


def _smooth(image: np.ndarray, factor: int) -> np.ndarray:
    """A wide blur: average over factor x factor blocks, then bilinear upsampling."""
    x = torch.as_tensor(image)[None, None]
    small = F.avg_pool2d(x, factor, ceil_mode=True)
    small = F.avg_pool2d(small, 3, stride=1, padding=1, count_include_pad=False)
    return F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0].numpy()


def _box_blur(image: np.ndarray) -> np.ndarray:
    x = torch.as_tensor(image).permute(2, 0, 1)[None]
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)[0].permute(1, 2, 0).numpy()


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    """[S, S, D] -> [size, size, D] by area averaging."""
    x = torch.as_tensor(image).permute(2, 0, 1)[None]
    return F.interpolate(x, size=(size, size), mode="area")[0].permute(1, 2, 0).numpy()


def _curve(points: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The height of the polyline through ``points`` [P, 2] (sorted by x here) at ``x``."""
    order = np.argsort(points[:, 0])
    return np.interp(x, points[order, 0], points[order, 1])


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


@dataclass(frozen=True)
class HeadProxy:
    """An ellipsoidal head fitted to the face (world units): centred between the cheeks, a little above
    the nose tip, 1.2 cheek widths wide and deep, 1.5 face heights tall."""

    centre: np.ndarray  # [3]
    axes: np.ndarray  # [3] semi-axes

    @classmethod
    def fit(cls, marks: np.ndarray) -> "HeadProxy":
        h = expression.face_scale(marks)
        cheeks = marks[list(lm.CHEEK_EXTREMES)]
        width = abs(cheeks[1, 0] - cheeks[0, 0])
        centre = np.array([cheeks[:, 0].mean(), marks[lm.NOSE_TIP, 1] - 0.15 * h, cheeks[:, 2].mean()])
        return cls(centre, np.array([0.6 * width, 0.75 * h, 0.6 * width]))

    def _half_depth(self, u: np.ndarray, v: np.ndarray, size: int, config: EncoderConfig) -> np.ndarray:
        """The ellipsoid's half depth along the rays of pixels (u, v) (0 outside its outline)."""
        focal = config.focal_fraction * size
        x = (u - size / 2) * config.distance / focal
        y = (v - size / 2) * config.distance / focal
        r2 = ((x - self.centre[0]) / self.axes[0]) ** 2 + ((y - self.centre[1]) / self.axes[1]) ** 2
        return self.axes[2] * np.sqrt(np.clip(1.0 - r2, 0.0, None))

    def front_depth(self, u: np.ndarray, v: np.ndarray, size: int, config: EncoderConfig) -> np.ndarray:
        """World depth of its front (the mid-plane outside its outline, so the depth is continuous)."""
        return self.centre[2] - self._half_depth(u, v, size, config)

    def back_depth(self, u: np.ndarray, v: np.ndarray, size: int, config: EncoderConfig) -> np.ndarray:
        return self.centre[2] + self._half_depth(u, v, size, config)


def _tangent_frames(d_u: np.ndarray, d_v: np.ndarray, max_length: float) -> tuple[np.ndarray, np.ndarray]:
    """(R [..., 3, 3], lengths [..., 2]): rotations whose first two columns span the surface with
    tangents ``d_u``, ``d_v`` (Gram-Schmidt), and the tangents' lengths along them (capped)."""
    e1 = d_u / np.linalg.norm(d_u, axis=-1, keepdims=True).clip(1e-12)
    along = (d_v * e1).sum(-1, keepdims=True)
    rest = d_v - along * e1
    e2 = rest / np.linalg.norm(rest, axis=-1, keepdims=True).clip(1e-12)
    e3 = np.cross(e1, e2)
    lengths = np.stack([np.linalg.norm(d_u, axis=-1), np.linalg.norm(rest, axis=-1)], -1).clip(None, max_length)
    return np.stack([e1, e2, e3], -1), lengths


def _mouth_interior(marks: np.ndarray, spacing: float) -> dict[str, np.ndarray]:
    """Gaussians of the mouth cavity, collapsed onto the lip line at rest; row ``t`` in [0, 1] follows
    the jaw with weight ``t`` so the rows spread over the opening as the jaw drops."""
    h = expression.face_scale(marks)
    right, left = marks[lm.MOUTH_CORNERS[0]], marks[lm.MOUTH_CORNERS[1]]
    seam = marks[[lm.UPPER_LIP_CENTRE, lm.LOWER_LIP_CENTRE]].mean(0)
    depth = marks[list(lm.LIPS_INNER), 2].mean() + 0.03 * h
    opening = abs(expression.jaw_displacement(seam[None], marks)[0, 1])  # lip gap at jaw_open = 1
    columns = max(int(abs(left[0] - right[0]) / spacing), 4)
    rows = max(int(1.5 * opening / spacing), 8)
    s, t = np.meshgrid(np.linspace(-0.45, 0.45, columns), np.linspace(0.0, 1.0, rows))
    s, t = s.ravel(), t.ravel()
    half_width = 0.5 * abs(left[0] - right[0])
    x = seam[0] + 2 * s * half_width * 0.9
    # the lip line curves: follow the inner upper lip's height across the mouth
    upper = marks[list(lm.LIPS_INNER)]
    order = np.argsort(upper[:, 0])
    y = np.interp(x, upper[order, 0], upper[order, 1])
    means = np.stack([x, y, np.full_like(x, depth)], -1)
    edge = np.abs(2 * s) ** 4  # darker towards the corners
    cavity = np.array([0.16, 0.04, 0.04]) * (1 - 0.6 * edge)[:, None]
    tongue = np.array([0.45, 0.16, 0.16])
    teeth = np.array([0.9, 0.88, 0.82])
    colors = cavity.copy()
    in_teeth = np.abs(s) < 0.36
    colors[(t > 0.7) & (t < 0.88) & (np.abs(s) < 0.3)] = tongue
    colors[(t < 0.12) & in_teeth] = teeth
    colors[(t > 0.9) & in_teeth] = teeth * 0.9
    vertical = max(opening / rows, spacing)
    scales = np.stack([np.full_like(x, 0.7 * spacing), np.full_like(x, 0.9 * vertical), np.full_like(x, 0.3 * spacing)], -1)
    quats = np.tile(np.array([1.0, 0.0, 0.0, 0.0]), (len(x), 1))
    return {
        "means": means,
        "quats": quats,
        "scales": scales,
        "opacities": np.zeros(len(x)),
        "colors": colors,
        "jaw": t,
        "reveal": np.full(len(x), REVEAL_RATE),
    }
