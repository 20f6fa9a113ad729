"""Tile intersection: which 16x16 tiles each projected Gaussian touches, as sortable 64-bit keys.

Key layout (gsplat's): ``image_id << (32 + tile_bits) | tile_id << 32 | float32 bits of depth``.
Depths of visible Gaussians are positive, and positive IEEE floats order like their bit patterns,
so one integer sort orders intersections by image, then tile, then depth (front to back).

Work split: ``_count_tiles_kernel`` gives each Gaussian its number of tiles (one lane per (image,
Gaussian)): its tile rectangle's size, or with conics and opacities the tiles of it that its alpha
can reach (walking rectangles of up to ``reference.REACH_MAX_TILES`` tiles); an exclusive cumsum
gives each Gaussian its slots; ``_emit_intersections_kernel`` walks each block's rectangles in
lockstep (tile k of every lane per step, up to the block's largest rectangle) writing a key and a
flat id per slot, and pads bounded buffers. Then the sort, one of two ways:

- bucket sort (tiles hold at most ``SORT_BUCKET_MAX_AVERAGE`` intersections on average, as in avatar
  frames, or ``SORT_BUCKET_MAX_AVERAGE_FEW_KEYS`` in calls of up to ``SORT_BUCKET_FEW_KEYS``
  intersections): the emit kernel also counts each (image, tile) bucket's intersections, a cumsum gives the
  buckets' ends, ``_bucket_kernel`` moves every intersection into its bucket (atomic cursors), and
  ``_sort_tiles_kernel`` (a program per bucket) ranks the bucket's (depth, flat id) keys and writes
  gsplat's keys and the flat ids in order: a memset, a cumsum and two kernels where ``torch.sort``
  makes about twenty launches (its host time was a quarter of a small frame's), and the buckets'
  starts are ``isect_offset_encode``'s offsets for free (``intersect_tiles``).
- one stable ``torch.sort`` of the 64-bit keys otherwise (long tiles: a radix sort's passes beat
  ranking there, measured in docs/benchmarks.md).

Both give the same order (stable by flat id among equal depths): the keys and ids come out bit for
bit the same as the twin's. The tile bounds are computed in float32 exactly as the twin does, so
integer outputs agree bit for bit.

Limits: image_bits + tile_bits <= 32 (gsplat's). The number of intersections is read back to the
host once per call to size the buffers, unless ``max_intersections`` bounds them: then nothing waits
for the GPU (so the call can be captured in a CUDA graph), the buffers have that length, and the slots
past the true count hold ``reference.PADDING_KEY``, which sorts after every real key.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .. import shapes
from ..backend import resolve_backend
from ._triton import cdiv, float32_contiguous, launch_kernel, triton, tl
from . import reference

# Gaussians per program of the count, emit and bucketing kernels. A program walks its lanes' tile
# rectangles in lockstep, so one large splat holds up the lanes beside it: 128 beat 256 by 0.3-25% on
# every scene of the benchmark matrix and 64 lost at 8 cameras (H100, scripts/gpu_intersect_block.py).
BLOCK = 128
SORT_BLOCK = 128  # keys of a tile ranked together
SORT_CHUNK = 32  # keys each ranking step compares them with (a [SORT_BLOCK, SORT_CHUNK] tile)
SORT_RUN = 128  # tiles up to this long are ranked whole; longer ones as runs of it, then merged
SORT_WARPS = 8
# More intersections a tile on average: one radix sort of all keys is faster. Up to SORT_BUCKET_FEW_KEYS keys
# in all, tiles of up to SORT_BUCKET_MAX_AVERAGE_FEW_KEYS still sort faster (or as fast) in buckets, and the
# radix sort's buffers made those calls' peak memory 1.4x gsplat's (H100, 2026-11-27: 250k / 512², 463 a
# tile, 474k keys: forward+backward 2.33 / 2.22 -> 2.09 / 1.81 ms, peak 35.4 -> 23.3 MB; 1M / 1024², 462 a tile,
# 1.9M keys: same time, 137.2 -> 89.5 MB; 8 cameras of the 250k scene, 3.8M keys: 4% slower in buckets)
SORT_BUCKET_MAX_AVERAGE = 256
SORT_BUCKET_MAX_AVERAGE_FEW_KEYS = 512
SORT_BUCKET_FEW_KEYS = 1 << 21

if triton is not None:
    _ALPHA_THRESHOLD = tl.constexpr(shapes.ALPHA_THRESHOLD)
    _REACH_SLACK_ABS = tl.constexpr(reference.REACH_SLACK_ABS)
    _REACH_SLACK_REL = tl.constexpr(reference.REACH_SLACK_REL)
    _PADDING_KEY = tl.constexpr(reference.PADDING_KEY)
    _REACH_MAX_TILES = tl.constexpr(reference.REACH_MAX_TILES)
    _MAX_KEY = tl.constexpr(torch.iinfo(torch.int64).max)

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
        return mx, my, x0, y0, tl.maximum(x1 - x0, 1), count

    @triton.jit
    def _sigma_and_size(ca, cb, cc, dx, dy):
        cross = cb * dx * dy
        square = 0.5 * (ca * dx * dx + cc * dy * dy)
        return square + cross, square + tl.abs(cross)

    @triton.jit
    def _least_sigma(ca, cb, cc, mx, my, x_edge, y_lo, y_hi, best, size):
        """sigma's least value on the vertical edge x = x_edge, y in [y_lo, y_hi] (swap the axes and
        a / c for a horizontal edge), folded into the running least value and its terms' size."""
        dx = mx - x_edge
        dy = tl.minimum(tl.maximum(-cb * dx / cc, my - y_hi), my - y_lo)
        sigma, terms = _sigma_and_size(ca, cb, cc, dx, dy)
        return tl.minimum(best, sigma), tl.where(sigma < best, terms, size)

    @triton.jit
    def _reaches_tile(mx, my, ca, cb, cc, threshold, tile_x, tile_y, tile_size):
        """The kernel form of ``reference.tile_reachable`` (same float32 operations, same order)."""
        x0 = (tile_x * tile_size).to(tl.float32) + 0.5
        y0 = (tile_y * tile_size).to(tl.float32) + 0.5
        x1 = x0 + (tile_size - 1)
        y1 = y0 + (tile_size - 1)
        best = tl.full(mx.shape, float("inf"), tl.float32)
        size = tl.zeros(mx.shape, tl.float32)
        best, size = _least_sigma(ca, cb, cc, mx, my, x0, y0, y1, best, size)
        best, size = _least_sigma(ca, cb, cc, mx, my, x1, y0, y1, best, size)
        best, size = _least_sigma(cc, cb, ca, my, mx, y0, x0, x1, best, size)
        best, size = _least_sigma(cc, cb, ca, my, mx, y1, x0, x1, best, size)
        inside = (mx >= x0) & (mx <= x1) & (my >= y0) & (my <= y1)
        improper = (ca <= 0) | (cc <= 0) | (ca != ca) | (cc != cc)  # not an ellipse: keep the rectangle
        return improper | inside | (best <= threshold + (_REACH_SLACK_ABS + _REACH_SLACK_REL * size))

    @triton.jit
    def _load_ellipse(conics_ptr, opacities_ptr, i, valid):
        ca = tl.load(conics_ptr + i * 3, mask=valid, other=1.0)
        cb = tl.load(conics_ptr + i * 3 + 1, mask=valid, other=0.0)
        cc = tl.load(conics_ptr + i * 3 + 2, mask=valid, other=1.0)
        opacity = tl.load(opacities_ptr + i, mask=valid, other=1.0)
        return ca, cb, cc, tl.log(opacity / _ALPHA_THRESHOLD)

    @triton.jit
    def _count_tiles_kernel(means2d_ptr, radii_ptr, conics_ptr, opacities_ptr, counts_ptr, n, tile_size,
                            tile_width, tile_height, REACH: tl.constexpr, BLOCK: tl.constexpr):
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        valid = i < n
        mx, my, x0, y0, rect_width, count = _tile_rect(means2d_ptr, radii_ptr, i, valid, tile_size, tile_width,
                                                       tile_height)
        if REACH:  # walk the rectangle as the emit kernel will and count the tiles reached
            ca, cb, cc, threshold = _load_ellipse(conics_ptr, opacities_ptr, i, valid)
            tested = count <= _REACH_MAX_TILES
            reached = tl.zeros([BLOCK], tl.int32)
            for k in range(0, tl.max(tl.where(tested, count, 0), axis=0)):
                hit = (k < count) & _reaches_tile(mx, my, ca, cb, cc, threshold, x0 + k % rect_width,
                                                  y0 + k // rect_width, tile_size)
                reached += hit.to(tl.int32)
            count = tl.where(tested, reached, count)
        tl.store(counts_ptr + i, count, mask=valid)

    @triton.jit
    def _emit_intersections_kernel(
        means2d_ptr, radii_ptr, depths_ptr, conics_ptr, opacities_ptr, image_ids_ptr, counts_ptr, slots_end_ptr,
        isect_ids_ptr, flatten_ids_ptr, tile_counts_ptr, n, n_per_image, tile_size, tile_width, tile_height,
        tile_bits, n_slots, PACKED: tl.constexpr, REACH: tl.constexpr, BOUNDED: tl.constexpr,
        BUCKET: tl.constexpr, BLOCK: tl.constexpr,
    ):
        """Writes each Gaussian's intersections at its slots: gsplat's keys and the flat ids, or with
        BUCKET (a bucket sort follows) the depth-and-id keys of ``_depth_id_key`` and the (image, tile)
        bucket of each, counting the bucket's intersections in tile_counts."""
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        valid = i < n
        mx, my, x0, y0, rect_width, rect_count = _tile_rect(means2d_ptr, radii_ptr, i, valid, tile_size,
                                                            tile_width, tile_height)
        if PACKED:
            image = tl.load(image_ids_ptr + i, mask=valid, other=0).to(tl.int64)
        else:
            image = (i // n_per_image).to(tl.int64)
        depth_bits = tl.load(depths_ptr + i, mask=valid, other=1.0).to(tl.int32, bitcast=True)
        if BUCKET:
            key_base = _depth_id_key(depth_bits, i)
            bucket_base = (image * tile_width * tile_height).to(tl.int32)
        else:
            key_base = (image << (32 + tile_bits)) | (depth_bits.to(tl.int64) & 0xFFFFFFFF)
        # exclusive cumsum from the inclusive one, no extra launch
        slot = tl.load(slots_end_ptr + i, mask=valid, other=0) - tl.load(counts_ptr + i, mask=valid, other=0)
        if REACH:
            ca, cb, cc, threshold = _load_ellipse(conics_ptr, opacities_ptr, i, valid)
            untested = rect_count > _REACH_MAX_TILES
        for k in range(0, tl.max(rect_count, axis=0)):
            tile_x = x0 + k % rect_width
            tile_y = y0 + k // rect_width
            hit = k < rect_count
            if REACH:
                if k < _REACH_MAX_TILES:  # past it, every lane still walking is untested
                    hit = hit & (untested | _reaches_tile(mx, my, ca, cb, cc, threshold, tile_x, tile_y,
                                                          tile_size))
            active = hit & (slot < n_slots)  # bounded buffers drop what does not fit
            tile_id = tile_y * tile_width + tile_x
            if BUCKET:
                tl.store(isect_ids_ptr + slot, key_base, mask=active)
                tl.store(flatten_ids_ptr + slot, bucket_base + tile_id, mask=active)
                tl.atomic_add(tile_counts_ptr + bucket_base + tile_id, 1, mask=active, sem="relaxed")
            else:
                tl.store(isect_ids_ptr + slot, key_base | (tile_id.to(tl.int64) << 32), mask=active)
                tl.store(flatten_ids_ptr + slot, i, mask=active)
            slot += hit.to(tl.int64)
        if BOUNDED:  # the programs pad the slots past the real intersections between them
            total = tl.load(slots_end_ptr + n - 1, mask=n > 0, other=0)
            first_pad = tl.minimum(total, n_slots).to(tl.int32)
            for start in range(first_pad + tl.program_id(0) * BLOCK, n_slots, tl.num_programs(0) * BLOCK):
                j = start + tl.arange(0, BLOCK)
                tl.store(isect_ids_ptr + j, tl.full([BLOCK], _PADDING_KEY, tl.int64), mask=j < n_slots)
                tl.store(flatten_ids_ptr + j, tl.zeros([BLOCK], tl.int32), mask=j < n_slots)


    @triton.jit
    def _depth_id_key(depth_bits, flat_id):
        """int64 keys whose signed order is that of (depth's unsigned bits, flat id), the order of the
        twin's stable sort within one tile: the depth's top bit flipped into the sign bit."""
        return (((depth_bits.to(tl.int64) & 0xFFFFFFFF) ^ 0x80000000) << 32) | flat_id.to(tl.int64)

    @triton.jit
    def _bucket_kernel(depth_id_keys_ptr, buckets_ptr, slots_end_ptr, n, n_slots, cursors_ptr, bucketed_ptr,
                       BLOCK: tl.constexpr):
        """Moves each stored intersection into its (image, tile) bucket: cursors hold each bucket's
        end and are decremented, so that they end at its start (the order within a bucket is
        arbitrary; the tile sort makes it exact)."""
        j = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        kept = tl.minimum(tl.load(slots_end_ptr + n - 1), n_slots)
        ok = j < kept
        key = tl.load(depth_id_keys_ptr + j, mask=ok)
        bucket = tl.load(buckets_ptr + j, mask=ok, other=0)
        slot = tl.atomic_add(cursors_ptr + bucket, -1, mask=ok, sem="relaxed") - 1
        tl.store(bucketed_ptr + slot, key, mask=ok)

    @triton.jit
    def _store_tile_keys(key, isect_ids_ptr, flatten_ids_ptr, start, index, ok, key_hi):
        """gsplat's keys (key_hi: the bucket's image and tile bits) and the flat ids from sorted
        depth-and-id keys."""
        depth_bits = ((key >> 32) ^ 0x80000000) & 0xFFFFFFFF
        tl.store(isect_ids_ptr + start + index, key_hi | depth_bits, mask=ok)
        tl.store(flatten_ids_ptr + start + index, (key & 0xFFFFFFFF).to(tl.int32), mask=ok)

    @triton.jit
    def _rank_in_run(keys_ptr, count, key, ok, BLOCK: tl.constexpr, CHUNK: tl.constexpr):
        """For the keys [BLOCK] (ok: real) of a run of count keys at keys_ptr, their ranks in it: how
        many of its keys are smaller (the keys are unique), counted CHUNK at a time."""
        rank = tl.zeros([BLOCK], tl.int32)
        for first in range(0, count, CHUNK):
            j = first + tl.arange(0, CHUNK)
            other = tl.load(keys_ptr + j, mask=j < count, other=_MAX_KEY)
            rank += tl.sum((other[None, :] < key[:, None]).to(tl.int32), axis=1)
        return tl.where(ok, rank, 0)

    @triton.jit
    def _sort_tiles_kernel(bucketed_ptr, isect_ids_ptr, flatten_ids_ptr, starts_ptr, counts_ptr, n_tiles, tile_bits,
                           BLOCK: tl.constexpr, CHUNK: tl.constexpr, RUN: tl.constexpr):
        """One program per (image, tile) bucket: sorts its depth-and-id keys and writes gsplat's keys
        and the flat ids. Up to RUN keys: each key goes straight to its rank among them, counted by
        comparing it with every key of the bucket (BLOCK keys against CHUNK at a time: no data
        exchange between threads, and a bucket's work grows with its length). Longer buckets: runs
        of RUN ranked the same way into isect_ids (free by then), then merged pairwise (each key's
        place in the other run by binary search), ping-ponging with bucketed."""
        bucket = tl.program_id(0)
        start = tl.load(starts_ptr + bucket).to(tl.int64)
        count = tl.load(counts_ptr + bucket)
        key_hi = ((bucket // n_tiles).to(tl.int64) << (32 + tile_bits)) | ((bucket % n_tiles).to(tl.int64) << 32)
        index = tl.arange(0, BLOCK)
        if count <= RUN:
            for row in range(0, count, BLOCK):
                ok = row + index < count
                key = tl.load(bucketed_ptr + start + row + index, mask=ok, other=_MAX_KEY)
                rank = _rank_in_run(bucketed_ptr + start, count, key, ok, BLOCK, CHUNK)
                _store_tile_keys(key, isect_ids_ptr, flatten_ids_ptr, start, rank, ok, key_hi)
        else:
            for run in range(0, count, RUN):
                run_count = tl.minimum(count - run, RUN)
                for row in range(0, run_count, BLOCK):
                    ok = row + index < run_count
                    key = tl.load(bucketed_ptr + start + run + row + index, mask=ok, other=_MAX_KEY)
                    rank = _rank_in_run(bucketed_ptr + start + run, run_count, key, ok, BLOCK, CHUNK)
                    tl.store(isect_ids_ptr + start + run + rank, key, mask=ok)
            src = isect_ids_ptr + start
            dst = bucketed_ptr + start
            width = RUN
            while width < count:
                tl.debug_barrier()  # the runs written by every thread
                for chunk in range(0, count, BLOCK):
                    i = chunk + index
                    ok = i < count
                    key = tl.load(src + i, mask=ok)
                    pair = (i // (2 * width)) * (2 * width)
                    left = i - pair < width
                    other = tl.where(left, pair + width, pair)
                    other_count = tl.minimum(tl.maximum(count - other, 0), width)
                    below = tl.zeros([BLOCK], tl.int32)  # keys of the other run below this one
                    step = width
                    while step > 0:
                        probe = below + step
                        inside = ok & (probe <= other_count)
                        other_key = tl.load(src + other + probe - 1, mask=inside, other=_MAX_KEY)
                        below = tl.where(inside & (other_key < key), probe, below)
                        step = step // 2
                    tl.store(dst + i - tl.where(left, 0, width) + below, key, mask=ok)
                src, dst = dst, src
                width *= 2
            tl.debug_barrier()
            for chunk in range(0, count, BLOCK):
                ok = chunk + index < count
                _store_tile_keys(tl.load(src + chunk + index, mask=ok), isect_ids_ptr, flatten_ids_ptr, start,
                                 chunk + index, ok, key_hi)


def _isect_tiles_triton(means2d, radii, depths, tile_size, tile_width, tile_height, sort, packed,
                        n_images, image_ids, max_intersections, conics, opacities):
    _, tile_bits = reference._tile_bits(n_images, tile_width * tile_height)
    n = means2d.numel() // 2
    n_per_image = 1 if packed else max(1, means2d.shape[-2])
    device = means2d.device
    # (no autograd: the kernels only read these)
    means2d = float32_contiguous(means2d)
    radii = radii.contiguous()
    depths = float32_contiguous(depths)
    reach = conics is not None
    if reach:
        conics = float32_contiguous(conics)
        opacities = float32_contiguous(opacities)
    else:  # unused by the kernels
        conics = opacities = means2d
    counts = torch.empty(radii.shape[:-1], device=device, dtype=torch.int32)
    grid = (cdiv(n, BLOCK),)
    if n > 0:
        launch_kernel(_count_tiles_kernel, grid, means2d, radii, conics, opacities, counts, n, float(tile_size),
                      tile_width, tile_height, REACH=reach, BLOCK=BLOCK)
    slots_end = torch.cumsum(counts.reshape(-1), 0, dtype=torch.int64)
    bounded = max_intersections is not None
    n_isects = slots_end[-1:] if n > 0 else None  # [1]: the real count, on the device
    n_slots = max_intersections if bounded else (int(n_isects) if n > 0 else 0)  # the one host sync
    isect_ids = torch.empty(n_slots, device=device, dtype=torch.int64)
    flatten_ids = torch.empty(n_slots, device=device, dtype=torch.int32)
    n_buckets = n_images * tile_width * tile_height
    bucket = sort and (n_slots <= SORT_BUCKET_MAX_AVERAGE * n_buckets or (
        n_slots <= SORT_BUCKET_FEW_KEYS and n_slots <= SORT_BUCKET_MAX_AVERAGE_FEW_KEYS * n_buckets))
    if n > 0 and n_slots > 0:
        tile_counts = torch.zeros(n_buckets if bucket else 1, device=device, dtype=torch.int32)
        launch_kernel(_emit_intersections_kernel, grid,
            means2d, radii, depths, conics, opacities, image_ids if packed else counts, counts, slots_end,
            isect_ids, flatten_ids, tile_counts, n, n_per_image, float(tile_size), tile_width, tile_height,
            tile_bits, n_slots, PACKED=packed, REACH=reach, BOUNDED=bounded, BUCKET=bucket, BLOCK=BLOCK)
        if bucket:
            cursors = torch.cumsum(tile_counts, 0, dtype=torch.int32)  # each bucket's end, then its start
            bucketed = torch.empty_like(isect_ids)
            launch_kernel(_bucket_kernel, (cdiv(n_slots, BLOCK),), isect_ids, flatten_ids, slots_end, n, n_slots,
                          cursors, bucketed, BLOCK=BLOCK)
            launch_kernel(_sort_tiles_kernel, (n_buckets,), bucketed, isect_ids, flatten_ids, cursors, tile_counts,
                          tile_width * tile_height, tile_bits, BLOCK=SORT_BLOCK, CHUNK=SORT_CHUNK, RUN=SORT_RUN,
                          num_warps=SORT_WARPS)
    elif n_slots > 0:  # bounded buffers and no Gaussians: all padding
        isect_ids.fill_(reference.PADDING_KEY)
        flatten_ids.zero_()
    if sort and not bucket:
        isect_ids, order = torch.sort(isect_ids, stable=True)
        flatten_ids = flatten_ids[order]
    # by-products intersect_tiles uses when they exist: the buckets' starts (the per-tile offsets) and
    # the count
    offsets = cursors if bucket and n > 0 and n_slots > 0 else None
    return counts, isect_ids, flatten_ids, offsets, n_isects


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
    conics: Optional[Tensor] = None,  # [..., N, 3] or [nnz, 3]
    opacities: Optional[Tensor] = None,  # [..., N] or [nnz]
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

    ``conics`` and ``opacities`` (those the compositing will use; instant4d.rasterization passes them)
    keep only the tiles of each Gaussian's rectangle where its alpha can reach 1/255 at a pixel centre
    (``reference.tile_reachable``; in rectangles of up to ``reference.REACH_MAX_TILES`` tiles): the
    corners of the rectangle that its ellipse misses are left out, which changes no image and leaves
    fewer intersections to sort and composite. Without them every tile of the rectangle counts, as in
    gsplat.
    """
    n_images = _check_inputs(means2d, radii, depths, tile_size, tile_width, tile_height, packed, n_images,
                             image_ids, gaussian_ids, max_intersections, conics, opacities)
    return _isect_tiles(means2d, radii, depths, tile_size, tile_width, tile_height, sort, packed, n_images,
                        image_ids, gaussian_ids, max_intersections, conics, opacities,
                        resolve_backend(backend, means2d, radii, depths))[:3]


class TileIntersections(NamedTuple):
    tiles_per_gauss: Tensor  # [..., N] or [nnz] int32
    isect_ids: Tensor  # [M] int64, sorted
    flatten_ids: Tensor  # [M] int32
    isect_offsets: Tensor  # [I, TH, TW] int32
    n_isects: Tensor  # [1] int64: the real intersections (more than M when max_intersections was too small)


def intersect_tiles(
    means2d: Tensor,  # [..., N, 2] or [nnz, 2]
    radii: Tensor,  # [..., N, 2] or [nnz, 2] int32
    depths: Tensor,  # [..., N] or [nnz]
    tile_size: int,
    tile_width: int,
    tile_height: int,
    *,
    packed: bool = False,
    n_images: Optional[int] = None,
    image_ids: Optional[Tensor] = None,  # [nnz] when packed
    gaussian_ids: Optional[Tensor] = None,  # [nnz] when packed
    max_intersections: Optional[int] = None,
    conics: Optional[Tensor] = None,  # [..., N, 3] or [nnz, 3]
    opacities: Optional[Tensor] = None,  # [..., N] or [nnz]
    backend: Optional[str] = None,
) -> TileIntersections:
    """``isect_tiles`` (sorted), ``isect_offset_encode`` of its keys and the real count, as
    ``rasterization`` needs them. Where the bucket sort ran, the offsets are its buckets' starts and
    the count the last of its cumsum: no kernels of their own."""
    n_images = _check_inputs(means2d, radii, depths, tile_size, tile_width, tile_height, packed, n_images,
                             image_ids, gaussian_ids, max_intersections, conics, opacities)
    return intersect_checked(means2d, radii, depths, tile_size, tile_width, tile_height, packed, n_images, image_ids,
                             gaussian_ids, max_intersections, conics, opacities,
                             resolve_backend(backend, means2d, radii, depths))


def intersect_checked(means2d, radii, depths, tile_size, tile_width, tile_height, packed, n_images, image_ids,
                      gaussian_ids, max_intersections, conics, opacities, backend: str) -> TileIntersections:
    """intersect_tiles on checked inputs (n_images given) with the backend resolved: what
    rasterization() calls after its own checks."""
    counts, isect_ids, flatten_ids, offsets, n_isects = _isect_tiles(
        means2d, radii, depths, tile_size, tile_width, tile_height, True, packed, n_images, image_ids, gaussian_ids,
        max_intersections, conics, opacities, backend)
    if offsets is None:
        offsets = reference.isect_offset_encode(isect_ids, n_images, tile_width, tile_height)
    if n_isects is None:
        n_isects = counts.sum(dtype=torch.int64).reshape(1)
    return TileIntersections(counts, isect_ids, flatten_ids, offsets.reshape(n_images, tile_height, tile_width),
                             n_isects)


def _isect_tiles(means2d, radii, depths, tile_size, tile_width, tile_height, sort, packed, n_images, image_ids,
                 gaussian_ids, max_intersections, conics, opacities, backend):
    """The backend's isect_tiles on checked inputs: (tiles_per_gauss, isect_ids, flatten_ids, the
    per-tile offsets or None, the count [1] or None; the Triton path gives the last two where it has
    them for free). Nothing here is differentiable."""
    if backend == "torch":
        with torch.no_grad():
            outputs = reference.isect_tiles(means2d, radii, depths, tile_size, tile_width, tile_height, sort=sort,
                                            packed=packed, n_images=n_images, image_ids=image_ids,
                                            gaussian_ids=gaussian_ids, max_intersections=max_intersections,
                                            conics=conics, opacities=opacities)
        return (*outputs, None, None)
    return _isect_tiles_triton(means2d, radii, depths, tile_size, tile_width, tile_height, sort, packed, n_images,
                               image_ids, max_intersections, conics, opacities)


def _check_inputs(means2d, radii, depths, tile_size, tile_width, tile_height, packed, n_images, image_ids,
                  gaussian_ids, max_intersections, conics, opacities) -> int:
    """Raise a ValueError naming the first bad argument of isect_tiles; returns the number of images."""
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
    if (conics is None) != (opacities is None):
        raise ValueError("conics and opacities go together: give both or neither")
    if conics is not None:
        shapes.check_tensor("conics", conics, lead + (3,), device=device)
        shapes.check_tensor("opacities", opacities, lead, device=device)
    if max_intersections is not None:
        if isinstance(max_intersections, bool) or not isinstance(max_intersections, int) or max_intersections < 0:
            raise ValueError(f"max_intersections must be None or an int >= 0, got {max_intersections!r}")
        image_bits, tile_bits = reference._tile_bits(n_images, tile_width * tile_height)
        if image_bits + tile_bits > 31:
            raise ValueError(f"max_intersections needs image and tile ids within 31 bits; {n_images} images x "
                             f"{tile_width * tile_height} tiles take {image_bits + tile_bits}")
    return n_images


@torch.no_grad()
def isect_offset_encode(isect_ids: Tensor, n_images: int, tile_width: int, tile_height: int) -> Tensor:
    """Per-tile start offsets int32 [I, TH, TW] into the sorted intersections (gsplat's
    ``isect_offset_encode``). One ``torch.searchsorted`` on any device: no kernel of its own."""
    shapes.check_tensor("isect_ids", isect_ids, (None,), dtypes=(torch.int64,))
    return reference.isect_offset_encode(isect_ids, n_images, tile_width, tile_height)
