"""Tile intersection: which 16x16 tiles each projected Gaussian touches, as sortable 64-bit keys.

Key layout (gsplat's): ``image_id << (32 + tile_bits) | tile_id << 32 | float32 bits of depth``.
Depths of visible Gaussians are positive, and positive IEEE floats order like their bit patterns,
so one integer sort orders intersections by image, then tile, then depth (front to back).

Work split: ``_count_tiles_kernel`` gives each Gaussian its tile-rectangle size (one lane per
(image, Gaussian)); an exclusive cumsum gives each Gaussian its slots; ``_emit_intersections_kernel``
walks each block's rectangles in lockstep (slot k of every lane per step, up to the block's largest
count) writing keys and flat ids; ``torch.sort(stable=True)`` orders them. The tile bounds are
computed in float32 exactly as the twin does, so integer outputs agree bit for bit.

Limits: image_bits + tile_bits <= 32 (gsplat's). The number of intersections is read back to the
host once per call to size the buffers, unless ``max_intersections`` bounds them: then nothing waits
for the GPU (so the call can be captured in a CUDA graph), the buffers have that length, and the slots
past the true count hold ``reference.PADDING_KEY``, which sorts after every real key.
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
        means2d_ptr, radii_ptr, depths_ptr, image_ids_ptr, slots_end_ptr, isect_ids_ptr, flatten_ids_ptr,
        n, n_per_image, tile_size, tile_width, tile_height, tile_bits, n_slots,
        PACKED: tl.constexpr, BLOCK: tl.constexpr,
    ):
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        valid = i < n
        x0, y0, rect_width, count = _tile_rect(means2d_ptr, radii_ptr, i, valid, tile_size, tile_width,
                                               tile_height)
        if PACKED:
            image = tl.load(image_ids_ptr + i, mask=valid, other=0).to(tl.int64)
        else:
            image = (i // n_per_image).to(tl.int64)
        depth_bits = tl.load(depths_ptr + i, mask=valid, other=1.0).to(tl.int32, bitcast=True)
        key_base = (image << (32 + tile_bits)) | (depth_bits.to(tl.int64) & 0xFFFFFFFF)
        first = tl.load(slots_end_ptr + i, mask=valid, other=0) - count  # exclusive cumsum, no extra launch
        rect_width = tl.maximum(rect_width, 1)
        for k in range(0, tl.max(count, axis=0)):
            active = (k < count) & (first + k < n_slots)  # bounded buffers drop what does not fit
            tile_id = (y0 + k // rect_width) * tile_width + x0 + k % rect_width
            tl.store(isect_ids_ptr + first + k, key_base | (tile_id.to(tl.int64) << 32), mask=active)
            tl.store(flatten_ids_ptr + first + k, i, mask=active)


def _isect_tiles_triton(means2d, radii, depths, tile_size, tile_width, tile_height, sort, packed,
                        n_images, image_ids, max_intersections):
    _, tile_bits = reference._tile_bits(n_images, tile_width * tile_height)
    n = means2d.numel() // 2
    n_per_image = 1 if packed else max(1, means2d.shape[-2])
    means2d = means2d.detach().float().contiguous()
    radii = radii.contiguous()
    depths = depths.detach().float().contiguous()
    counts = torch.empty(radii.shape[:-1], device=means2d.device, dtype=torch.int32)
    grid = (cdiv(n, BLOCK),)
    if n > 0:
        launch_kernel(_count_tiles_kernel, grid, means2d, radii, counts, n, float(tile_size), tile_width,
                      tile_height, BLOCK=BLOCK)
    slots_end = torch.cumsum(counts.reshape(-1), 0, dtype=torch.int64)
    if max_intersections is None:
        n_slots = int(slots_end[-1]) if n > 0 else 0  # the one host sync
        isect_ids = torch.empty(n_slots, device=means2d.device, dtype=torch.int64)
        flatten_ids = torch.empty(n_slots, device=means2d.device, dtype=torch.int32)
    else:
        n_slots = max_intersections
        isect_ids = torch.full((n_slots,), reference.PADDING_KEY, device=means2d.device, dtype=torch.int64)
        flatten_ids = torch.zeros(n_slots, device=means2d.device, dtype=torch.int32)
    if n_slots > 0 and n > 0:
        launch_kernel(_emit_intersections_kernel, grid,
            means2d, radii, depths, image_ids if packed else counts, slots_end,
            isect_ids, flatten_ids, n, n_per_image, float(tile_size), tile_width, tile_height, tile_bits,
            n_slots, PACKED=packed, BLOCK=BLOCK)
    if sort:
        isect_ids, order = torch.sort(isect_ids, stable=True)
        flatten_ids = flatten_ids[order]
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
