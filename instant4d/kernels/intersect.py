"""Tile intersection: which 16x16 tiles each projected Gaussian touches, as sortable 64-bit keys.

Key layout (gsplat's): ``image_id << (32 + tile_bits) | tile_id << 32 | float32 bits of depth``.
Depths of visible Gaussians are positive, and positive IEEE floats order like their bit patterns,
so these keys order intersections by image, then tile, then depth (front to back).

Work split: ``_count_tiles_kernel`` gives each Gaussian its tile-rectangle size (one lane per
(image, Gaussian)); an exclusive cumsum gives each Gaussian its slots; ``_emit_intersections_kernel``
walks each block's rectangles in lockstep (slot k of every lane per step, up to the block's largest
count) writing keys and flat ids. The tile bounds are computed in float32 exactly as the twin does,
so integer outputs agree bit for bit.

Sorting in two stages instead of one 64-bit sort of the keys: a 64-bit radix sort makes 8 passes
over every intersection, and there are several intersections per Gaussian. So the Gaussians are
sorted by depth once (32-bit keys, one per Gaussian), their slots are handed out in that order, and
the emitted buffer is already in (depth, Gaussian index) order; a stable sort of short (image, tile)
keys finishes the job (int16 when they fit: torch's CUDA sort is a cub radix sort over every bit of
the key type, so its passes grow with the key's width). Both sorts are stable and a Gaussian meets
a tile once, so the order is exactly the twin's stable 64-bit sort, equal depths included.

Limits: image_bits + tile_bits <= 32 (gsplat's). The number of intersections is read back to the
host once per call to size the buffers, unless ``max_intersections`` bounds them: then nothing waits
for the GPU (so the call can be captured in a CUDA graph), the buffers have that length, and the slots
past the true count hold ``reference.PADDING_KEY``, which sorts after every real key. What a too small
bound keeps is the twin's choice: the intersections that come first in Gaussian-index order.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .. import shapes
from ..backend import resolve_backend
from ._triton import cdiv, launch_kernel, triton, tl
from . import reference

BLOCK = 256  # Gaussians per program: a coalesced load per field, and enough lanes to hide latency
SIGN_BIT = -2**31  # int32 with only the sign bit: flipping it makes signed order the unsigned order of the bits

if triton is not None:

    @triton.jit
    def _tile_rect(means2d_ptr, radii_ptr, i, valid, tile_size, tile_width, tile_height):
        mx = tl.load(means2d_ptr + i * 2, mask=valid, other=0.0)
        my = tl.load(means2d_ptr + i * 2 + 1, mask=valid, other=0.0)
        rx = tl.load(radii_ptr + i * 2, mask=valid, other=0)
        ry = tl.load(radii_ptr + i * 2 + 1, mask=valid, other=0)
        cx = mx / tile_size
        cy = my / tile_size
        ex = rx.to(tl.float32) / tile_size
        ey = ry.to(tl.float32) / tile_size
        x0 = tl.minimum(tl.maximum(tl.floor(cx - ex), 0.0), tile_width * 1.0).to(tl.int32)
        y0 = tl.minimum(tl.maximum(tl.floor(cy - ey), 0.0), tile_height * 1.0).to(tl.int32)
        x1 = tl.minimum(tl.maximum(tl.ceil(cx + ex), 0.0), tile_width * 1.0).to(tl.int32)
        y1 = tl.minimum(tl.maximum(tl.ceil(cy + ey), 0.0), tile_height * 1.0).to(tl.int32)
        count = tl.where(valid & (rx > 0) & (ry > 0), (x1 - x0) * (y1 - y0), 0)
        return x0, y0, x1 - x0, count

    @triton.jit
    def _count_tiles_kernel(means2d_ptr, radii_ptr, counts_ptr, n, tile_size, tile_width, tile_height,
                            BLOCK: tl.constexpr):
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        valid = i < n
        _, _, _, count = _tile_rect(means2d_ptr, radii_ptr, i, valid, tile_size, tile_width, tile_height)
        tl.store(counts_ptr + i, count, mask=valid)

    @triton.jit
    def _emit_intersections_kernel(
        means2d_ptr, radii_ptr, depths_ptr, image_ids_ptr, gaussians_ptr, kept_ptr, slots_end_ptr,
        isect_ids_ptr, flatten_ids_ptr, tile_keys_ptr,
        n, n_per_image, tile_size, tile_width, tile_height, tile_bits, n_tiles,
        PACKED: tl.constexpr, DEPTH_ORDER: tl.constexpr, BLOCK: tl.constexpr,
    ):
        lane = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        valid = lane < n
        if DEPTH_ORDER:  # lane j emits the j-th Gaussian front to back, and (image, tile) sort keys
            i = tl.load(gaussians_ptr + lane, mask=valid, other=0)
        else:
            i = lane
        x0, y0, rect_width, _ = _tile_rect(means2d_ptr, radii_ptr, i, valid, tile_size, tile_width, tile_height)
        if PACKED:
            image = tl.load(image_ids_ptr + i, mask=valid, other=0).to(tl.int64)
        else:
            image = (i // n_per_image).to(tl.int64)
        depth_bits = tl.load(depths_ptr + i, mask=valid, other=1.0).to(tl.int32, bitcast=True)
        key_base = (image << (32 + tile_bits)) | (depth_bits.to(tl.int64) & 0xFFFFFFFF)
        kept = tl.load(kept_ptr + lane, mask=valid, other=0)
        first = tl.load(slots_end_ptr + lane, mask=valid, other=0) - kept  # exclusive cumsum, no extra launch
        rect_width = tl.maximum(rect_width, 1)
        for k in range(0, tl.max(kept, axis=0)):
            active = k < kept
            tile_id = (y0 + k // rect_width) * tile_width + x0 + k % rect_width
            tl.store(isect_ids_ptr + first + k, key_base | (tile_id.to(tl.int64) << 32), mask=active)
            tl.store(flatten_ids_ptr + first + k, i.to(tl.int32), mask=active)
            if DEPTH_ORDER:
                tile_key = image * n_tiles + tile_id
                tl.store(tile_keys_ptr + first + k, tile_key.to(tile_keys_ptr.dtype.element_ty), mask=active)


def _tile_key_dtype(n_keys: int) -> torch.dtype:
    """The narrowest integer dtype whose largest value exceeds every (image, tile) key (it pads)."""
    return next(dtype for dtype in (torch.int16, torch.int32, torch.int64) if n_keys <= torch.iinfo(dtype).max)


def _isect_tiles_triton(means2d, radii, depths, tile_size, tile_width, tile_height, sort, packed,
                        n_images, image_ids, max_intersections):
    _, tile_bits = reference._tile_bits(n_images, tile_width * tile_height)
    n = means2d.numel() // 2
    n_per_image = 1 if packed else max(1, means2d.shape[-2])
    n_tiles = tile_width * tile_height
    device = means2d.device
    means2d = means2d.detach().float().contiguous()
    radii = radii.contiguous()
    depths = depths.detach().float().contiguous()
    counts = torch.empty(radii.shape[:-1], device=device, dtype=torch.int32)
    grid = (cdiv(n, BLOCK),)
    if n > 0:
        launch_kernel(_count_tiles_kernel, grid, means2d, radii, counts, n, float(tile_size), tile_width,
                      tile_height, BLOCK=BLOCK)
    kept = counts.reshape(-1)
    if max_intersections is not None:  # keep what the twin keeps: the first slots in Gaussian-index order
        first_slot = torch.cumsum(kept, 0, dtype=torch.int64) - kept
        kept = torch.minimum(kept, (max_intersections - first_slot).clamp_min(0)).int()
    gaussians = kept  # unused unless sorting
    if sort:  # stable, so equal depths keep Gaussian-index order; the sign flip orders bits as unsigned
        gaussians = torch.argsort(depths.reshape(-1).view(torch.int32) ^ SIGN_BIT, stable=True)
        kept = kept[gaussians]
    slots_end = torch.cumsum(kept, 0, dtype=torch.int64)
    if max_intersections is None:
        n_slots = int(slots_end[-1]) if n > 0 else 0  # the one host sync
    else:
        n_slots = max_intersections

    def buffer(dtype, padding):  # bounded buffers start as padding, whose sort key is the largest
        if max_intersections is None:
            return torch.empty(n_slots, device=device, dtype=dtype)
        return torch.full((n_slots,), padding, device=device, dtype=dtype)

    isect_ids = buffer(torch.int64, reference.PADDING_KEY)
    flatten_ids = buffer(torch.int32, 0)
    key_dtype = _tile_key_dtype(n_images * n_tiles)
    tile_keys = buffer(key_dtype, torch.iinfo(key_dtype).max) if sort else isect_ids  # unused unless sorting
    if n_slots > 0 and n > 0:
        launch_kernel(_emit_intersections_kernel, grid,
            means2d, radii, depths, image_ids if packed else counts, gaussians, kept, slots_end,
            isect_ids, flatten_ids, tile_keys, n, n_per_image, float(tile_size), tile_width, tile_height,
            tile_bits, n_tiles, PACKED=packed, DEPTH_ORDER=sort, BLOCK=BLOCK)
    if sort:  # stable: within a tile the depth order of the slots stays
        _, order = torch.sort(tile_keys, stable=True)
        isect_ids, flatten_ids = isect_ids[order], flatten_ids[order]
    return counts, isect_ids, flatten_ids


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
    *,
    max_intersections: Optional[int] = None,
    backend: Optional[str] = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Map projected Gaussians to the tiles they touch (gsplat's ``isect_tiles``).

    Returns ``tiles_per_gauss`` int32 [..., N] (or [nnz]), ``isect_ids`` int64 [M] sorted when
    ``sort`` and ``flatten_ids`` int32 [M] (index into the flattened [I * N] or [nnz] inputs).
    ``segmented`` is accepted for gsplat compatibility and changes nothing (the sort is global).

    ``max_intersections`` bounds M without a host sync: both outputs then have that length, the
    ``tiles_per_gauss.sum()`` real intersections come first and the rest is ``reference.PADDING_KEY`` / 0;
    intersections beyond the bound are dropped (``rasterize_to_pixels`` with ``n_isects`` turns that
    into NaN images, never a silently incomplete one).
    """
    for name, value in (("tile_size", tile_size), ("tile_width", tile_width), ("tile_height", tile_height)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    device = means2d.device
    if packed:
        if n_images is None or image_ids is None or gaussian_ids is None:
            raise ValueError("packed=True needs n_images, image_ids and gaussian_ids")
        lead: tuple = (means2d.shape[0],)
        shapes.check_tensor("image_ids", image_ids, lead, dtypes=(torch.int32, torch.int64), device=device)
    else:
        if means2d.dim() < 2:
            raise ValueError(f"means2d must have shape [..., N, 2], got {list(means2d.shape)}")
        lead = tuple(means2d.shape[:-1])
        n_images = math.prod(means2d.shape[:-2])
    shapes.check_tensor("means2d", means2d, lead + (2,))
    shapes.check_tensor("radii", radii, lead + (2,), dtypes=(torch.int32,), device=device)
    shapes.check_tensor("depths", depths, lead, device=device)
    if max_intersections is not None:
        if isinstance(max_intersections, bool) or not isinstance(max_intersections, int) or max_intersections < 0:
            raise ValueError(f"max_intersections must be None or an int >= 0, got {max_intersections!r}")
        image_bits, tile_bits = reference._tile_bits(n_images, tile_width * tile_height)
        if image_bits + tile_bits > 31:
            raise ValueError(f"max_intersections needs image and tile ids within 31 bits; {n_images} images x "
                             f"{tile_width * tile_height} tiles take {image_bits + tile_bits}")
    if resolve_backend(backend, means2d, radii, depths) == "torch":
        return reference.isect_tiles(means2d, radii, depths, tile_size, tile_width, tile_height, sort=sort,
                                     packed=packed, n_images=n_images, image_ids=image_ids,
                                     gaussian_ids=gaussian_ids, max_intersections=max_intersections)
    return _isect_tiles_triton(means2d, radii, depths, tile_size, tile_width, tile_height, sort, packed,
                               n_images, image_ids, max_intersections)


@torch.no_grad()
def isect_offset_encode(isect_ids: Tensor, n_images: int, tile_width: int, tile_height: int) -> Tensor:
    """Per-tile start offsets int32 [I, TH, TW] into the sorted intersections (gsplat's
    ``isect_offset_encode``). One ``torch.searchsorted`` on any device: no kernel of its own."""
    shapes.check_tensor("isect_ids", isect_ids, (None,), dtypes=(torch.int64,))
    return reference.isect_offset_encode(isect_ids, n_images, tile_width, tile_height)
