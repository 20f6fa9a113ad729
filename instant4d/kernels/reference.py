"""PyTorch twins of every Triton kernel: the readable spec, the CPU path and the test oracle.

Each function here has the same signature as the Triton-backed function of the same name in
``instant4d/kernels/<op>.py``; gradients come from autograd. They favour clarity over speed, but
are vectorised so that they are usable as the CPU renderer.
"""

from __future__ import annotations

import functools
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..shapes import ALPHA_THRESHOLD, MAX_ALPHA, RADIUS_EXTENT, TRANSMITTANCE_MIN

# ---------------------------------------------------------------------------------------------
# projection and spherical harmonics (kernels/projection.py, kernels/spherical_harmonics.py)
# ---------------------------------------------------------------------------------------------

def _rotmat_from_quat(quats: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] of quaternions [..., 4] (wxyz), normalised first."""
    w, x, y, z = (quats / quats.norm(dim=-1, keepdim=True)).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).unflatten(-1, (3, 3))


def fully_fused_projection(
    means: Tensor,  # [..., N, 3]
    covars: Optional[Tensor],  # [..., N, 6] upper triangle (xx, xy, xz, yy, yz, zz), or None
    quats: Optional[Tensor],  # [..., N, 4] wxyz, need not be normalised (used when covars is None)
    scales: Optional[Tensor],  # [..., N, 3] linear (used when covars is None)
    viewmats: Tensor,  # [..., C, 4, 4] world to camera
    Ks: Tensor,  # [..., C, 3, 3]
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    packed: bool = False,
    sparse_grad: bool = False,
    calc_compensations: bool = False,
    camera_model: str = "pinhole",
    opacities: Optional[Tensor] = None,  # [..., N] in [0, 1], or None
):
    """EWA projection of 3D Gaussians into C pinhole cameras, with gsplat 1.5.3's CUDA numerics.

    Returns ``(radii, means2d, depths, conics, compensations)`` shaped [..., C, N, (2 | 2 | - | 3 | -)]
    (compensations None unless ``calc_compensations``), or with ``packed`` the visible pairs only:
    ``(batch_ids, camera_ids, gaussian_ids, radii, means2d, depths, conics, compensations)`` [nnz, ...].
    Culled pairs have radii 0 and every other output 0 (gsplat leaves them uninitialised). Gradients
    reach means, covars or quats and scales, and viewmats; none reach Ks, opacities or radii.
    """
    if camera_model != "pinhole":
        raise NotImplementedError(f"camera_model={camera_model!r}: only 'pinhole' is implemented")
    if sparse_grad:
        raise NotImplementedError("sparse_grad=True: sparse gradients are not implemented")
    Ks = Ks.detach()
    if covars is None:
        rot_scale = _rotmat_from_quat(quats) * scales[..., None, :]  # [..., N, 3, 3]
        covar = rot_scale @ rot_scale.transpose(-1, -2)
    else:
        covar = covars[..., [0, 1, 2, 1, 3, 4, 2, 4, 5]].unflatten(-1, (3, 3))
    rot, trans = viewmats[..., :3, :3], viewmats[..., :3, 3]  # [..., C, 3, 3], [..., C, 3]
    means_c = torch.einsum("...cij,...nj->...cni", rot, means) + trans[..., :, None, :]  # [..., C, N, 3]
    covar_c = torch.einsum("...cij,...njk,...clk->...cnil", rot, covar, rot)  # [..., C, N, 3, 3]

    x, y, z = means_c.unbind(-1)  # [..., C, N]
    in_depth = (z >= near_plane) & (z <= far_plane)
    z = torch.where(in_depth, z, torch.ones_like(z))  # keeps culled pairs finite for autograd
    fx, fy, cx, cy = Ks[..., 0, 0, None], Ks[..., 1, 1, None], Ks[..., 0, 2, None], Ks[..., 1, 2, None]
    # the Jacobian is evaluated with x/z, y/z clamped to the field of view widened by 0.3 x tan(fov/2)
    lim_x_pos = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    lim_x_neg = cx / fx + 0.3 * (0.5 * width / fx)
    lim_y_pos = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    lim_y_neg = cy / fy + 0.3 * (0.5 * height / fy)
    u = torch.clamp(x / z, -lim_x_neg, lim_x_pos)
    v = torch.clamp(y / z, -lim_y_neg, lim_y_pos)
    zero = torch.zeros_like(z)
    jac = torch.stack([fx / z, zero, -fx * u / z, zero, fy / z, -fy * v / z], dim=-1).unflatten(-1, (2, 3))
    cov2d = jac @ covar_c @ jac.transpose(-1, -2)  # [..., C, N, 2, 2]
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)  # [..., C, N, 2]

    a, b, c = cov2d[..., 0, 0], cov2d[..., 0, 1], cov2d[..., 1, 1]
    det_orig = a * c - b * b
    a, c = a + eps2d, c + eps2d
    det = a * c - b * b
    invertible = det > 0
    det = torch.where(invertible, det, torch.ones_like(det))
    conics = torch.stack([c / det, -b / det, a / det], dim=-1)  # [..., C, N, 3]
    ratio = det_orig / det
    positive = ratio > 0
    compensations = torch.where(positive, torch.sqrt(torch.where(positive, ratio, torch.ones_like(ratio))), zero)

    with torch.no_grad():
        visible = in_depth & invertible
        extent = torch.full_like(z, RADIUS_EXTENT)
        if opacities is not None:
            opacity = opacities[..., None, :] * (compensations if calc_compensations else 1.0)
            visible &= opacity >= ALPHA_THRESHOLD
            bounded = torch.sqrt(2 * torch.log(opacity.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
            extent = torch.minimum(extent, bounded)
        radius = torch.ceil(extent[..., None] * torch.sqrt(torch.stack([a, c], dim=-1)))  # [..., C, N, 2]
        # NaN radii (a negative-definite 2D covariance) fail every comparison and are culled
        visible &= (radius > radius_clip).any(-1)
        lo, hi = means2d - radius, means2d + radius
        visible &= (hi > 0).all(-1) & (lo[..., 0] < width) & (lo[..., 1] < height)
        radii = torch.where(visible[..., None], radius, 0.0).to(torch.int32)

    keep = visible[..., None]
    outputs = (
        radii,
        torch.where(keep, means2d, 0.0),
        torch.where(visible, means_c[..., 2], 0.0),
        torch.where(keep, conics, 0.0),
        torch.where(visible, compensations, 0.0) if calc_compensations else None,
    )
    return pack_projection(*outputs) if packed else outputs


def pack_projection(
    radii: Tensor,  # [..., C, N, 2] int32
    means2d: Tensor,  # [..., C, N, 2]
    depths: Tensor,  # [..., C, N]
    conics: Tensor,  # [..., C, N, 3]
    compensations: Optional[Tensor],  # [..., C, N] or None
):
    """Keep the (batch, camera, Gaussian) triples with both radii > 0, in that order (gsplat's packed
    layout): ``(batch_ids, camera_ids, gaussian_ids, radii, means2d, depths, conics, compensations)``,
    ids int32 [nnz], the rest [nnz, ...]. The batch id flattens the leading dims."""
    n_cameras, n = radii.shape[-3], radii.shape[-2]
    flat = (radii > 0).all(-1).reshape(-1).nonzero().squeeze(-1)  # [nnz] into the flattened [B * C * N]
    per_batch = max(n_cameras * n, 1)
    ids = (flat // per_batch, flat // max(n, 1) % max(n_cameras, 1), flat % max(n, 1))
    rows = [t.reshape(-1, *t.shape[radii.dim() - 1 :])[flat] for t in (radii, means2d, depths, conics)]
    comps = None if compensations is None else compensations.reshape(-1)[flat]
    return (*(i.to(torch.int32) for i in ids), *rows, comps)


def sh_bases(degree: int, dirs: Tensor) -> Tensor:
    """Real spherical-harmonic bases [..., (degree + 1)^2] at unit directions [..., 3], in gsplat's
    order and signs (Sloan's "Efficient Spherical Harmonic Evaluation", Condon-Shortley phase)."""
    x, y, z = dirs.unbind(-1)
    bases = [torch.full_like(x, 0.2820947917738781)]
    if degree >= 1:
        bases += [-0.48860251190292 * y, 0.48860251190292 * z, -0.48860251190292 * x]
    if degree >= 2:
        c1, s1 = x * x - y * y, 2 * x * y
        bases += [
            0.5462742152960395 * s1,
            -1.092548430592079 * z * y,
            0.9461746957575601 * z * z - 0.3153915652525201,
            -1.092548430592079 * z * x,
            0.5462742152960395 * c1,
        ]
    if degree >= 3:
        c2, s2 = x * c1 - y * s1, x * s1 + y * c1
        bases += [
            -0.5900435899266435 * s2,
            1.445305721320277 * z * s1,
            (-2.285228997322329 * z * z + 0.4570457994644658) * y,
            z * (1.865881662950577 * z * z - 1.119528997770346),
            (-2.285228997322329 * z * z + 0.4570457994644658) * x,
            1.445305721320277 * z * c1,
            -0.5900435899266435 * c2,
        ]
    return torch.stack(bases, dim=-1)


def spherical_harmonics(
    degrees_to_use: int,
    dirs: Tensor,  # [..., 3] view directions, need not be normalised
    coeffs: Tensor,  # [..., K, 3] with K >= (degrees_to_use + 1)^2; bases beyond that are ignored
    masks: Optional[Tensor] = None,  # [...] bool, False -> colour 0 and no gradient
) -> Tensor:
    """Colours [..., 3] = sum_k basis_k(dirs / |dirs|) * coeffs[..., k, :] over the first
    (degrees_to_use + 1)^2 bases (gsplat's ``spherical_harmonics``, degrees 0 to 3)."""
    n_bases = (degrees_to_use + 1) ** 2
    bases = sh_bases(degrees_to_use, F.normalize(dirs, dim=-1))  # [..., n_bases]
    colors = (bases[..., None] * coeffs[..., :n_bases, :]).sum(dim=-2)
    if masks is not None:
        colors = torch.where(masks[..., None], colors, 0.0)
    return colors


# ---------------------------------------------------------------------------------------------
# tile intersection and compositing (kernels/intersect.py, kernels/composite.py)
# ---------------------------------------------------------------------------------------------

PADDING_KEY = torch.iinfo(torch.int64).max  # fills bounded buffers past the count; its top 32 bits exceed every tile key


def _tile_bits(n_images: int, n_tiles: int) -> tuple[int, int]:
    """Bits that the image id and the tile id take in an intersection key (gsplat's layout)."""
    image_bits, tile_bits = int(n_images).bit_length(), int(n_tiles).bit_length()
    if image_bits + tile_bits > 32:
        raise ValueError(f"{n_images} images x {n_tiles} tiles do not fit the 32 key bits left beside the depth")
    return image_bits, tile_bits


def tile_bounds(means2d: Tensor, radii: Tensor, tile_size: int, tile_width: int, tile_height: int):
    """Tile rectangle touched by each Gaussian: ``tile_min, tile_max`` int32 [..., 2] (max exclusive).

    Computed in float32 like the kernel, so that integer outputs agree exactly.
    """
    centre = means2d.detach().float() / tile_size
    extent = radii.float() / tile_size
    limit = torch.tensor([tile_width, tile_height], device=means2d.device, dtype=torch.float32)
    tile_min = torch.minimum(torch.floor(centre - extent).clamp_min(0), limit).int()
    tile_max = torch.minimum(torch.ceil(centre + extent).clamp_min(0), limit).int()
    return tile_min, tile_max


# Slack on the reach test's sigma, absolute plus relative to the size of its terms: the compositing
# kernel evaluates sigma at pixel centres in float32 and may round below the least sigma computed
# here, so a tile is dropped only when it is beyond the threshold by more than rounding can move it.
REACH_SLACK_ABS = 1e-3
REACH_SLACK_REL = 1e-5
# Rectangles of more tiles keep them all: the kernels test tile by tile in lockstep across a block of
# Gaussians, so a few huge rectangles would make every block walk them (a uniform random scene: 64
# keeps 24% fewer intersections of the 29% that testing every rectangle would; head scenes: all).
REACH_MAX_TILES = 64


def tile_reachable(means2d: Tensor, conics: Tensor, opacities: Tensor, tile_x: Tensor, tile_y: Tensor,
                   tile_size: int) -> Tensor:
    """Whether a Gaussian's alpha can reach the 1/255 compositing threshold at a pixel centre of a tile.

    means2d [K, 2], conics [K, 3], opacities [K], tile_x / tile_y [K] int -> bool [K].
    alpha = o exp(-sigma) >= 1/255 needs sigma <= ln(255 o), the ellipse whose bounding box the
    projection's radii are. sigma is a convex quadratic in the pixel centre, so its least value over
    the tile's rectangle of pixel centres is 0 when the mean lies in it, else on an edge, where it is
    a parabola with its vertex clamped to the edge. Tiles that fail hold no pixel the Gaussian
    contributes to, so leaving them out changes no image.
    Float32, in the same operation order as the kernel (intersect.py), so both take the same tiles.
    """
    mx, my = means2d[:, 0].float(), means2d[:, 1].float()
    a, b, c = conics[:, 0].float(), conics[:, 1].float(), conics[:, 2].float()
    x0 = (tile_x * tile_size).float() + 0.5
    y0 = (tile_y * tile_size).float() + 0.5
    x1 = x0 + (tile_size - 1)
    y1 = y0 + (tile_size - 1)
    threshold = torch.log(opacities.float() / ALPHA_THRESHOLD)
    best, size = torch.full_like(mx, math.inf), torch.zeros_like(mx)
    best, size = _least_sigma(a, b, c, mx, my, x0, y0, y1, best, size)  # the vertical edges
    best, size = _least_sigma(a, b, c, mx, my, x1, y0, y1, best, size)
    best, size = _least_sigma(c, b, a, my, mx, y0, x0, x1, best, size)  # the horizontal ones, axes swapped
    best, size = _least_sigma(c, b, a, my, mx, y1, x0, x1, best, size)
    inside = (mx >= x0) & (mx <= x1) & (my >= y0) & (my <= y1)
    improper = (a <= 0) | (c <= 0) | a.isnan() | c.isnan()  # not an ellipse: keep the whole rectangle
    return improper | inside | (best <= threshold + (REACH_SLACK_ABS + REACH_SLACK_REL * size))


def _least_sigma(a, b, c, mx, my, x_edge, y_lo, y_hi, best, size):
    """sigma's least value on the edge x = x_edge, y in [y_lo, y_hi] (its vertex dy = -b dx / c clamped
    to the edge), folded into the running least value ``best`` and the size of its terms."""
    dx = mx - x_edge
    dy = torch.minimum(torch.maximum(-b * dx / c, my - y_hi), my - y_lo)
    cross = b * dx * dy
    square = 0.5 * (a * dx * dx + c * dy * dy)
    sigma = square + cross
    return torch.minimum(best, sigma), torch.where(sigma < best, square + cross.abs(), size)


@torch.no_grad()
def isect_tiles(
    means2d: Tensor,  # [..., N, 2] or [nnz, 2]
    radii: Tensor,  # [..., N, 2] or [nnz, 2] int32
    depths: Tensor,  # [..., N] or [nnz]
    tile_size: int,
    tile_width: int,
    tile_height: int,
    sort: bool = True,
    segmented: bool = False,
    packed: bool = False,
    n_images: Optional[int] = None,
    image_ids: Optional[Tensor] = None,  # [nnz] when packed
    gaussian_ids: Optional[Tensor] = None,  # [nnz] when packed
    max_intersections: Optional[int] = None,
    conics: Optional[Tensor] = None,  # [..., N, 3] or [nnz, 3]
    opacities: Optional[Tensor] = None,  # [..., N] or [nnz]
) -> tuple[Tensor, Tensor, Tensor]:
    """Every (image, tile, Gaussian) overlap, as gsplat's 64-bit keys sorted front to back per tile.

    Returns ``tiles_per_gauss`` int32 [..., N] (or [nnz]), ``isect_ids`` int64 [M] =
    image_id << (32 + tile_bits) | tile_id << 32 | float32 bits of depth, and ``flatten_ids``
    int32 [M], the index of the Gaussian in the flattened [I * N] (or [nnz]) inputs. Sorting is
    stable, so equal depths keep the Gaussians' order. With ``max_intersections`` both have that
    length: the real intersections, then padding (key ``PADDING_KEY``, id 0); a bound below the real
    count keeps some of them (here the first ones in unsorted order; which ones is not part of the
    contract, the kernels' bucket sort keeps others).
    A Gaussian overlaps the tiles of its radii's rectangle (gsplat's rule); given ``conics`` and
    ``opacities`` (those the compositing uses), only those of them it can reach (``tile_reachable``),
    in rectangles of at most ``REACH_MAX_TILES`` tiles.
    """
    n_tiles = tile_width * tile_height
    if packed:
        n_images_total = int(n_images)
        flat_image_ids = image_ids.long()
        count = means2d.shape[0]
    else:
        n_images_total = math.prod(means2d.shape[:-2])
        n = means2d.shape[-2]
        count = n_images_total * n
        flat_image_ids = torch.arange(n_images_total, device=means2d.device).repeat_interleave(n)
    _, tile_bits = _tile_bits(n_images_total, n_tiles)
    lead_shape = radii.shape[:-1]
    means2d, radii, depths = means2d.reshape(-1, 2), radii.reshape(-1, 2), depths.reshape(-1)
    tile_min, tile_max = tile_bounds(means2d, radii, tile_size, tile_width, tile_height)
    visible = (radii > 0).all(dim=-1)
    tiles_per_gauss = ((tile_max - tile_min).prod(dim=-1) * visible).int()  # [count]

    # Enumerate the overlaps: Gaussian g owns tiles_per_gauss[g] consecutive slots, slot k of it is
    # tile (tile_min + (k % w, k // w)) of its w-wide rectangle.
    owner = torch.repeat_interleave(torch.arange(count, device=means2d.device), tiles_per_gauss.long())
    first_slot = torch.cumsum(tiles_per_gauss.long(), 0) - tiles_per_gauss.long()
    k = torch.arange(owner.numel(), device=means2d.device) - first_slot[owner]
    rect_width = (tile_max[:, 0] - tile_min[:, 0]).long()[owner]
    tile_x = tile_min[owner, 0].long() + k % rect_width.clamp_min(1)
    tile_y = tile_min[owner, 1].long() + k // rect_width.clamp_min(1)
    if conics is not None:
        reach = tile_reachable(means2d[owner], conics.reshape(-1, 3)[owner], opacities.reshape(-1)[owner],
                               tile_x, tile_y, tile_size) | (tiles_per_gauss[owner] > REACH_MAX_TILES)
        owner, tile_x, tile_y = owner[reach], tile_x[reach], tile_y[reach]
        tiles_per_gauss = torch.bincount(owner, minlength=count).int()
    tile_id = tile_y * tile_width + tile_x
    depth_bits = depths.float().contiguous().view(torch.int32).long()[owner] & 0xFFFFFFFF
    isect_ids = (flat_image_ids[owner] << (32 + tile_bits)) | (tile_id << 32) | depth_bits
    flatten_ids = owner.int()
    if max_intersections is not None:
        kept = min(max_intersections, isect_ids.numel())
        padding = max_intersections - kept
        isect_ids = torch.cat([isect_ids[:kept], isect_ids.new_full((padding,), PADDING_KEY)])
        flatten_ids = torch.cat([flatten_ids[:kept], flatten_ids.new_zeros(padding)])
    if sort:
        isect_ids, order = torch.sort(isect_ids, stable=True)
        flatten_ids = flatten_ids[order]
    return tiles_per_gauss.reshape(lead_shape), isect_ids, flatten_ids


@torch.no_grad()
def isect_offset_encode(isect_ids: Tensor, n_images: int, tile_width: int, tile_height: int) -> Tensor:
    """offsets int32 [I, TH, TW]: index of the first sorted intersection of each (image, tile);
    a tile's intersections are ``offsets[tile] : offsets[next tile]`` (the last ends at M)."""
    n_tiles = tile_width * tile_height
    _, tile_bits = _tile_bits(n_images, n_tiles)
    targets = _tile_keys(n_images, n_tiles, tile_bits, isect_ids.device)
    offsets = torch.searchsorted(isect_ids >> 32, targets, out_int32=True)
    return offsets.reshape(n_images, tile_height, tile_width)


@functools.lru_cache(maxsize=16)
def _tile_keys(n_images: int, n_tiles: int, tile_bits: int, device: torch.device) -> Tensor:
    """The upper 32 key bits of every (image, tile), in order (cached: the same every frame)."""
    image = torch.arange(n_images, device=device)[:, None]
    tile = torch.arange(n_tiles, device=device)[None, :]
    return ((image << tile_bits) | tile).reshape(-1)


TWIN_CHUNK = 128  # Gaussians per step of the twin's compositing loop


def rasterize_to_pixels(
    means2d: Tensor,  # [..., N, 2] or [nnz, 2]
    conics: Tensor,  # [..., N, 3] or [nnz, 3]
    colors: Tensor,  # [..., N, D] or [nnz, D]
    opacities: Tensor,  # [..., N] or [nnz]
    image_width: int,
    image_height: int,
    tile_size: int,
    isect_offsets: Tensor,  # [..., TH, TW]
    flatten_ids: Tensor,  # [M]
    backgrounds: Optional[Tensor] = None,  # [..., D]
    masks: Optional[Tensor] = None,  # [..., TH, TW] bool
    packed: bool = False,
    absgrad: bool = False,
    n_isects: Optional[Tensor] = None,  # [1]
    deterministic: bool = False,
) -> tuple[Tensor, Tensor]:
    """Front-to-back alpha compositing of each tile's depth-sorted Gaussians.

    For pixel centre x = (j + 0.5, i + 0.5) and Gaussian g with d = mean2d_g - x:
    ``sigma = 0.5 (a dx^2 + c dy^2) + b dx dy``, ``alpha = min(0.999, o exp(-sigma))``; Gaussians with
    ``sigma < 0`` or ``alpha < 1/255`` are skipped; compositing stops before the Gaussian that would
    bring the transmittance T to 1e-4 or below. ``colour = sum_g c_g alpha_g T_g + T background``,
    ``alpha = 1 - T``. Masked tiles render the background with alpha 0.

    Returns colours [..., H, W, D] and alphas [..., H, W, 1]. With ``absgrad`` the backward pass
    also stores ``means2d.absgrad``: the sum over pixels of |d loss / d means2d| per pixel.
    ``n_isects``: how many entries of a padded ``flatten_ids`` are real; more than it holds means
    intersections were dropped, and every output is NaN. ``deterministic`` changes nothing here:
    the twin's gradients come from autograd on the CPU or from deterministic torch reductions.
    """
    image_dims = isect_offsets.shape[:-2]
    n_images = math.prod(image_dims)
    tile_height, tile_width = isect_offsets.shape[-2:]
    channels = colors.shape[-1]
    device, dtype = means2d.device, means2d.dtype
    means2d_flat = means2d.reshape(-1, 2)
    conics_flat, colors_flat = conics.reshape(-1, 3), colors.reshape(-1, channels)
    opacities_flat = opacities.reshape(-1)
    offsets = isect_offsets.reshape(-1).long()
    n_real = flatten_ids.numel() if n_isects is None else min(int(n_isects), flatten_ids.numel())
    ends = torch.cat([offsets[1:], offsets.new_tensor([n_real])])
    tile_masks = masks.reshape(-1) if masks is not None else None
    bg = backgrounds.reshape(n_images, channels) if backgrounds is not None else None

    if absgrad:
        means2d.absgrad = torch.zeros_like(means2d)

    pixels_per_tile = tile_size * tile_size
    local = torch.arange(tile_size, device=device, dtype=dtype) + 0.5
    tile_colors, tile_transmittance = [], []  # per (image, tile): [P, D], [P]
    for flat_tile in range(n_images * tile_height * tile_width):
        start, end = int(offsets[flat_tile]), int(ends[flat_tile])
        if start == end or (tile_masks is not None and not bool(tile_masks[flat_tile])):
            tile_colors.append(torch.zeros(pixels_per_tile, channels, device=device, dtype=dtype))
            tile_transmittance.append(torch.ones(pixels_per_tile, device=device, dtype=dtype))
            continue
        ty, tx = divmod(flat_tile % (tile_height * tile_width), tile_width)
        ys, xs = torch.meshgrid(local + ty * tile_size, local + tx * tile_size, indexing="ij")
        pixels = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)  # [P, 2] pixel centres (x, y)
        transmittance = torch.ones(pixels_per_tile, device=device, dtype=dtype)
        color = torch.zeros(pixels_per_tile, channels, device=device, dtype=dtype)
        done = torch.zeros(pixels_per_tile, device=device, dtype=torch.bool)
        # chunks of the depth-sorted list, so that a tile stops once every pixel is opaque
        for chunk in range(start, end, TWIN_CHUNK):
            ids = flatten_ids[chunk:min(chunk + TWIN_CHUNK, end)].long()
            centres = means2d_flat[ids]  # [K, 2]
            if absgrad and centres.requires_grad:
                # one copy of the means per pixel, so that the hook sees per-pixel gradients
                centres = centres[None].repeat(pixels_per_tile, 1, 1)
                centres.register_hook(_absgrad_hook(means2d.absgrad.view(-1, 2), ids))
            delta = centres - pixels[:, None, :]  # [P, K, 2]
            a, b, c = conics_flat[ids].unbind(-1)
            sigma = 0.5 * (a * delta[..., 0] ** 2 + c * delta[..., 1] ** 2) + b * delta[..., 0] * delta[..., 1]
            alpha = torch.clamp(opacities_flat[ids] * torch.exp(-sigma), max=MAX_ALPHA)  # [P, K]
            alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_THRESHOLD), alpha, torch.zeros_like(alpha))
            transmit_incl = transmittance[:, None] * torch.cumprod(1 - alpha, dim=-1)
            transmit_excl = torch.cat([transmittance[:, None], transmit_incl[:, :-1]], dim=-1)
            # T never rises, so "before the stop" is exactly "inclusive T still above the floor"
            included = (transmit_incl > TRANSMITTANCE_MIN) & ~done[:, None]
            weights = torch.where(included, alpha * transmit_excl, torch.zeros_like(alpha))
            color = color + weights @ colors_flat[ids]
            transmittance = transmittance * torch.where(included, 1 - alpha, torch.ones_like(alpha)).prod(dim=-1)
            done = done | (transmit_incl[:, -1] <= TRANSMITTANCE_MIN)
            if bool(done.all()):
                break
        tile_colors.append(color)
        tile_transmittance.append(transmittance)

    def to_images(tiles: list[Tensor]) -> Tensor:  # I * TH * TW tiles of [P, X] -> [I, H, W, X]
        grid = torch.stack(tiles).reshape(n_images, tile_height, tile_width, tile_size, tile_size, -1)
        grid = grid.permute(0, 1, 3, 2, 4, 5).reshape(n_images, tile_height * tile_size, tile_width * tile_size, -1)
        return grid[:, :image_height, :image_width]

    out_colors = to_images(tile_colors)
    out_transmittance = to_images([t[:, None] for t in tile_transmittance])
    if bg is not None:
        out_colors = out_colors + out_transmittance * bg[:, None, None, :]
    if n_isects is not None and int(n_isects) > flatten_ids.numel():  # dropped intersections: no image
        out_colors, out_transmittance = out_colors * float("nan"), out_transmittance * float("nan")
    return (
        out_colors.reshape(image_dims + (image_height, image_width, channels)),
        (1 - out_transmittance).reshape(image_dims + (image_height, image_width, 1)),
    )


def _absgrad_hook(buffer: Tensor, ids: Tensor):
    def hook(grad: Tensor) -> None:
        buffer.index_add_(0, ids, grad.abs().sum(0).to(buffer.dtype))

    return hook

# ---------------------------------------------------------------------------------------------
# per-Gaussian local motion fusion + Gaussian decoder (kernels/fusion.py)
# ---------------------------------------------------------------------------------------------


def local_fusion(
    features: Tensor,  # [N, F]
    motion_basis: Tensor,  # [N, F]
    anchors: Tensor,  # [N, 3]
    scale_shift: Tensor,  # [B, 2F]
    weights: "FusionWeights",
    config: "FusionConfig",
    *,
    return_delta: bool = False,
) -> "FusedGaussians":
    """Twin of ``kernels.fusion.local_fusion`` (no ``backend``): the issue's formulas, literally."""
    from .fusion import FusedGaussians  # fusion.py imports this module

    w = weights
    scale, shift = scale_shift[:, None].split(config.feature_dim, dim=-1)  # [B, 1, F] each
    ln = F.layer_norm(motion_basis, (config.feature_dim,), eps=config.layer_norm_eps)  # [N, F]
    h = (ln * scale + shift) @ w.w_in + w.b_in  # [B, N, F]
    delta = config.delta_scale * (F.softplus(h @ w.w1 + w.b1) @ w.w2 + w.b2)  # [B, N, F]
    a = F.softplus((features + delta) @ w.d1 + w.e1) @ w.d2 + w.e2  # [B, N, O]
    return FusedGaussians(
        means=anchors + config.offset_scale * torch.tanh(a[..., 0:3]),
        quats=F.normalize(a[..., 6:10], dim=-1),
        scales=config.max_scale * torch.sigmoid(a[..., 3:6]),
        opacities=1.0 - torch.exp(-F.softplus(a[..., 10] - 1.0)),
        colors=torch.sigmoid(a[..., 11:]),
        delta=delta if return_delta else None,
    )


# ---------------------------------------------------------------------------------------------
# avatar deformation: motion basis x motion code -> Gaussians (kernels/deform.py)
# ---------------------------------------------------------------------------------------------


def deform_gaussians(
    means: Tensor,  # [N, 3] canonical anchors
    quats: Tensor,  # [N, 4] wxyz
    opacities: Tensor,  # [N]
    basis: Tensor,  # [N, K, 3] displacement per unit of each expression component
    opacity_basis: Tensor,  # [N, K] opacity change per unit of each component
    rigid: Tensor,  # [N] in [0, 1]: how much each Gaussian follows the head pose
    pivot: Tensor,  # [3] centre of the head rotation
    codes: Tensor,  # [B, K] expression amplitudes
    poses: Tensor,  # [B, 7] head rotation quaternion (wxyz, unit, w >= 0) then translation
) -> tuple[Tensor, Tensor, Tensor]:  # means [B, N, 3], quats [B, N, 4], opacities [B, N]
    """Twin of ``kernels.deform.deform_gaussians`` (no ``backend``). Per frame b, Gaussian i:
    y = means_i + sum_k codes_bk basis_ik;  q = normalise((1 - rigid_i) [1, 0, 0, 0] + rigid_i poses_b[:4]);
    mean = R(q) (y - pivot) + pivot + rigid_i poses_b[4:];  quat = q * quats_i (Hamilton product);
    opacity = clamp(opacities_i + sum_k codes_bk opacity_basis_ik, 0, 1)."""
    moved = means + torch.einsum("bk,nkd->bnd", codes, basis)  # [B, N, 3]
    identity = torch.zeros_like(poses[:, :4])
    identity[:, 0] = 1
    w = rigid[None, :, None]
    blend = (1 - w) * identity[:, None, :] + w * poses[:, None, :4]  # [B, N, 4]
    q = blend / blend.norm(dim=-1, keepdim=True)
    rotated = (_rotmat_from_quat(q) @ (moved - pivot)[..., None])[..., 0]
    out_means = rotated + pivot + w * poses[:, None, 4:]
    a, b = q.unbind(-1), quats[None].expand_as(q).unbind(-1)
    out_quats = torch.stack(
        [
            a[0] * b[0] - a[1] * b[1] - a[2] * b[2] - a[3] * b[3],
            a[0] * b[1] + a[1] * b[0] + a[2] * b[3] - a[3] * b[2],
            a[0] * b[2] - a[1] * b[3] + a[2] * b[0] + a[3] * b[1],
            a[0] * b[3] + a[1] * b[2] - a[2] * b[1] + a[3] * b[0],
        ],
        dim=-1,
    )
    out_opacities = (opacities + codes @ opacity_basis.T).clamp(0, 1)  # [B, N]
    return out_means, out_quats, out_opacities
