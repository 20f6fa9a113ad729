"""PyTorch twins of every Triton kernel: the readable spec, the CPU path and the test oracle.

Each function here has the same signature as the Triton-backed function of the same name in
``instant4d/kernels/<op>.py``; gradients come from autograd. They favour clarity over speed, but
are vectorised so that they are usable as the CPU renderer.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..shapes import ALPHA_THRESHOLD, MAX_ALPHA, RADIUS_EXTENT, TRANSMITTANCE_MIN

# ---------------------------------------------------------------------------------------------
# projection and spherical harmonics (kernels/projection.py, kernels/spherical_harmonics.py)
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# tile intersection and compositing (kernels/intersect.py, kernels/composite.py)
# ---------------------------------------------------------------------------------------------

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
) -> tuple[Tensor, Tensor, Tensor]:
    """Every (image, tile, Gaussian) overlap, as gsplat's 64-bit keys sorted front to back per tile.

    Returns ``tiles_per_gauss`` int32 [..., N] (or [nnz]), ``isect_ids`` int64 [M] =
    image_id << (32 + tile_bits) | tile_id << 32 | float32 bits of depth, and ``flatten_ids``
    int32 [M], the index of the Gaussian in the flattened [I * N] (or [nnz]) inputs. Sorting is
    stable, so equal depths keep the Gaussians' order.
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
    tile_id = tile_y * tile_width + tile_x
    depth_bits = depths.float().contiguous().view(torch.int32).long()[owner] & 0xFFFFFFFF
    isect_ids = (flat_image_ids[owner] << (32 + tile_bits)) | (tile_id << 32) | depth_bits
    flatten_ids = owner.int()
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
    image = torch.arange(n_images, device=isect_ids.device)[:, None]
    tile = torch.arange(n_tiles, device=isect_ids.device)[None, :]
    targets = ((image << tile_bits) | tile).reshape(-1)
    offsets = torch.searchsorted(isect_ids >> 32, targets)
    return offsets.int().reshape(n_images, tile_height, tile_width)


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
) -> tuple[Tensor, Tensor]:
    """Front-to-back alpha compositing of each tile's depth-sorted Gaussians.

    For pixel centre x = (j + 0.5, i + 0.5) and Gaussian g with d = mean2d_g - x:
    ``sigma = 0.5 (a dx^2 + c dy^2) + b dx dy``, ``alpha = min(0.999, o exp(-sigma))``; Gaussians with
    ``sigma < 0`` or ``alpha < 1/255`` are skipped; compositing stops before the Gaussian that would
    bring the transmittance T to 1e-4 or below. ``colour = sum_g c_g alpha_g T_g + T background``,
    ``alpha = 1 - T``. Masked tiles render the background with alpha 0.

    Returns colours [..., H, W, D] and alphas [..., H, W, 1]. With ``absgrad`` the backward pass
    also stores ``means2d.absgrad``: the sum over pixels of |d loss / d means2d| per pixel.
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
    ends = torch.cat([offsets[1:], offsets.new_tensor([flatten_ids.numel()])])
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
        ids = flatten_ids[start:end].long()
        ys, xs = torch.meshgrid(local + ty * tile_size, local + tx * tile_size, indexing="ij")
        pixels = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)  # [P, 2] pixel centres (x, y)
        centres = means2d_flat[ids]  # [K, 2]
        if absgrad:
            # one copy of the means per pixel, so that the hook sees per-pixel gradients
            centres = centres[None].repeat(pixels_per_tile, 1, 1)
            centres.register_hook(_absgrad_hook(means2d.absgrad.view(-1, 2), ids))
        delta = centres - pixels[:, None, :]  # [P, K, 2]
        a, b, c = conics_flat[ids].unbind(-1)
        sigma = 0.5 * (a * delta[..., 0] ** 2 + c * delta[..., 1] ** 2) + b * delta[..., 0] * delta[..., 1]
        alpha = torch.clamp(opacities_flat[ids] * torch.exp(-sigma), max=MAX_ALPHA)  # [P, K]
        alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_THRESHOLD), alpha, torch.zeros_like(alpha))
        transmit_incl = torch.cumprod(1 - alpha, dim=-1)
        transmit_excl = torch.cat([torch.ones_like(alpha[:, :1]), transmit_incl[:, :-1]], dim=-1)
        # T never rises, so "before the stop" is exactly "inclusive T still above the floor"
        included = transmit_incl > TRANSMITTANCE_MIN
        weights = torch.where(included, alpha * transmit_excl, torch.zeros_like(alpha))
        tile_colors.append(weights @ colors_flat[ids])
        tile_transmittance.append(torch.where(included, 1 - alpha, torch.ones_like(alpha)).prod(dim=-1))

    def to_images(tiles: list[Tensor]) -> Tensor:  # I * TH * TW tiles of [P, X] -> [I, H, W, X]
        grid = torch.stack(tiles).reshape(n_images, tile_height, tile_width, tile_size, tile_size, -1)
        grid = grid.permute(0, 1, 3, 2, 4, 5).reshape(n_images, tile_height * tile_size, tile_width * tile_size, -1)
        return grid[:, :image_height, :image_width]

    out_colors = to_images(tile_colors)
    out_transmittance = to_images([t[:, None] for t in tile_transmittance])
    if bg is not None:
        out_colors = out_colors + out_transmittance * bg[:, None, None, :]
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

# ---------------------------------------------------------------------------------------------
# avatar deformation: motion basis x motion code -> Gaussians (kernels/deform.py)
# ---------------------------------------------------------------------------------------------
