"""Tile intersection: which 16x16 tiles each projected Gaussian touches, as sortable 64-bit keys.

Key layout (gsplat's): ``image_id << (32 + tile_bits) | tile_id << 32 | float32 bits of depth``.
Depths of visible Gaussians are positive, and positive IEEE floats order like their bit patterns,
so one integer sort orders intersections by image, then tile, then depth (front to back).

Work split: ``_count_tiles_kernel`` gives each Gaussian its number of tiles (one lane per (image,
Gaussian)): its tile rectangle's size, or with conics and opacities the tiles of it that its alpha
can reach (walking rectangles of up to ``reference.REACH_MAX_TILES`` tiles); for a sorted call it walks
every rectangle and also counts each (image, tile) bucket's intersections (relaxed atomics), whose
cumsum gives the real count. ``_emit_intersections_kernel`` walks the rectangles again writing the
intersections, and pads bounded buffers. Both kernels walk a block's rectangles lane by lane in lockstep
where they are alike in size, and as one list of items where one large splat would hold up the rest
(``FLAT_ABOVE``). Then the sort, one of two ways:

- bucket sort (tiles hold at most ``SORT_BUCKET_MAX_AVERAGE`` intersections on average: every scene of
  the benchmark matrix and the avatar's frames): the buckets' cumsum gives their ends, the emit kernel
  writes each intersection's (depth, flat id) key straight into its bucket (atomic cursors), and
  ``_sort_tiles_kernel`` (a program per bucket) ranks the bucket's keys and writes gsplat's keys, the flat
  ids in order and the bucket's start (``isect_offset_encode``'s offsets for free, ``intersect_tiles``): no
  cumsum over the Gaussians, where ``torch.sort`` makes about twenty launches (its host time was a quarter
  of a small frame's).
- one stable ``torch.sort`` of the 64-bit keys otherwise (longer tiles, where one program would rank
  each), the emit kernel writing each Gaussian's keys at its slots (a cumsum of the counts).

Both give the same order (stable by flat id among equal depths): the keys and ids come out bit for
bit the same as the twin's. The tile bounds are computed in float32 exactly as the twin does, so
integer outputs agree bit for bit.

Limits: image_bits + tile_bits <= 32 (gsplat's). The number of intersections is read back to the
host once per call to size the buffers (a large call sized like the last one sizes them from its count and
reads its own while the device writes and sorts, ``GUESS_MIN``), unless ``max_intersections`` bounds them:
then nothing waits
for the GPU (so the call can be captured in a CUDA graph), the buffers have that length, and the slots
past the true count hold ``reference.PADDING_KEY``, which sorts after every real key. Buffers too small
for the true count hold some of the real intersections, sorted: which ones depends on the sort (and on
the atomics' order in the bucket sort); the count tells the overflow.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .. import shapes
from ..backend import resolve_backend
from ._triton import cdiv, float32_contiguous, launch_kernel, triton, tl
from . import reference

# Gaussians per program of the count and emit kernels: 128 beat 256 by 0.3-25% on every scene of the benchmark
# matrix and 64 lost at 8 cameras (H100, scripts/gpu_intersect_block.py), with lockstep walks then; with
# every block walking the flat list, 256 and 64 were slower than 128 in every cell (2026-11-27, H100).
BLOCK = 128
# How the count and emit kernels walk a block's tile rectangles: each lane its own (the block in lockstep, up
# to its longest rectangle: a step is cheap, but one large splat holds up the lanes beside it), or the
# rectangles laid end to end as one list of items, BLOCK a step (each item's lane found by binary search and
# its Gaussian loaded again: a step costs more). A block takes the list where its longest rectangle is more
# than FLAT_ABOVE times the list's steps. Uniform 100k / 512²: count + emit 300 -> 63 us; no head-like cell
# of the matrix more than 2% slower than lockstep alone, up to 1.24x faster (H100, 2026-11-27; 1, 2 and 4
# less even than 3; docs/benchmarks.md)
FLAT_ABOVE = 3
SORT_BLOCK = 128  # keys of a tile ranked together
SORT_CHUNK = 32  # keys each ranking step compares them with (a [SORT_BLOCK, SORT_CHUNK] tile)
SORT_RUN = 128  # tiles up to this long are ranked whole; longer ones as runs of it, then merged
SORT_WARPS = 8
# keys a step of the merges of long tiles' runs: the longest tile sets the sort's time, and its merges' binary
# searches are chains of loads, which a wide step keeps in flight together (1M / 512²: 290 -> 188-192 us against
# 128 keys a step; 1024 and 2048 slower than 512; H100, 2026-11-27)
SORT_MERGE = 512
# More intersections a tile on average: one radix sort of all keys (a single program ranks a tile, so very
# long tiles would serialise). Since the intersections go straight into their buckets (no pass of their own,
# no cumsum over the Gaussians), the buckets were as fast or faster than the radix sort's path in every call
# measured, up to 1436 a tile on average (longest 4102), and took less memory (H100, 2026-11-27, same process:
# uniform 100k / 512², 859 a tile: forward 0.863 -> 0.633 ms, peak 49.5 -> 20.7 MB; 1M / 512² / 8 cameras: forward
# 8.31 -> 8.35 ms, forward+backward 30.64 -> 30.54, forward peak 1002 -> 602 MB; docs/benchmarks.md)
SORT_BUCKET_MAX_AVERAGE = 1536
# Counters a bucket is split into (a Gaussian counts into the one of its flat index modulo this): a long
# tile's atomics wait on each other at one address (count kernel at 100k / 512² / 8 cameras: 120 us with one
# counter, 37 with 8; 16 or 32 no faster); a bucket's counters' slots are consecutive, so the tile sort sees
# one bucket
SUB_BUCKETS = 8

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
    def _load_ellipse(conics_ptr, opacities_ptr, i, valid, REACH: tl.constexpr):
        """Each lane's conic (a, b, c) and log(opacity / alpha threshold), what _reaches_tile takes; without
        REACH (no conics given) placeholders that nothing reads."""
        if REACH:
            ca = tl.load(conics_ptr + i * 3, mask=valid, other=1.0)
            cb = tl.load(conics_ptr + i * 3 + 1, mask=valid, other=0.0)
            cc = tl.load(conics_ptr + i * 3 + 2, mask=valid, other=1.0)
            threshold = tl.log(tl.load(opacities_ptr + i, mask=valid, other=1.0) / _ALPHA_THRESHOLD)
        else:
            zero = tl.zeros(i.shape, tl.float32)
            ca, cb, cc, threshold = zero, zero, zero, zero
        return ca, cb, cc, threshold

    @triton.jit
    def _counter_base(image_ids_ptr, i, valid, n_per_image, tile_width, tile_height, SUB: tl.constexpr,
                      PACKED: tl.constexpr):
        """Lane i's intersection with tile t counts in counter base + t * SUB: its (image, tile) bucket,
        then SUB counters a bucket (the lane's flat index modulo SUB); the count and emit kernels must agree."""
        if PACKED:
            image = tl.load(image_ids_ptr + i, mask=valid, other=0).to(tl.int32)
        else:
            image = i // n_per_image
        return image * tile_width * tile_height * SUB + i % SUB

    @triton.jit
    def _lay_out_rectangles(item_starts_ptr, count, BLOCK: tl.constexpr):
        """Lays the block's rectangles (count [BLOCK] tiles each) end to end: each lane's first item, an
        exclusive cumsum, goes to item_starts [BLOCK] for _item_owner."""
        tl.store(item_starts_ptr + tl.arange(0, BLOCK), tl.cumsum(count, 0) - count)
        tl.debug_barrier()  # (every lane's start visible to every thread of the program)

    @triton.jit
    def _item_owner(item_starts_ptr, item, LOG2_BLOCK: tl.constexpr):
        """For items laid out by _lay_out_rectangles, each one's lane (the last whose start is at or before
        it: lanes with nothing to walk share the next one's start) and its index in that lane's rectangle,
        by binary search."""
        lane = tl.zeros(item.shape, tl.int32)
        for s in tl.static_range(LOG2_BLOCK):
            probe = lane + (1 << (LOG2_BLOCK - 1 - s))
            lane = tl.where(tl.load(item_starts_ptr + probe) <= item, probe, lane)
        return lane, item - tl.load(item_starts_ptr + lane)

    @triton.jit
    def _tile_of_item(k, x0, y0, rect_width, live, mx, my, ca, cb, cc, threshold, untested, tile_size, tile_width,
                      REACH: tl.constexpr):
        """Tile k of each item's rectangle (row by row): whether it is an intersection (with REACH, whether
        the Gaussian's alpha can reach it; rectangles of more than REACH_MAX_TILES tiles untested), its id."""
        tile_x = x0 + k % rect_width
        tile_y = y0 + k // rect_width
        hit = live
        if REACH:
            hit = hit & (untested | _reaches_tile(mx, my, ca, cb, cc, threshold, tile_x, tile_y, tile_size))
        return hit, tile_y * tile_width + tile_x

    @triton.jit
    def _flat_step(item_starts_ptr, first, total, means2d_ptr, radii_ptr, conics_ptr, opacities_ptr, tile_size,
                   tile_width, tile_height, REACH: tl.constexpr, BLOCK: tl.constexpr, LOG2_BLOCK: tl.constexpr):
        """Items first .. first + BLOCK of the block's rectangles laid end to end: each one's lane, Gaussian
        and tile id, whether it is a real item and whether it is an intersection (_tile_of_item)."""
        item = first + tl.arange(0, BLOCK)
        live = item < total
        lane, k = _item_owner(item_starts_ptr, item, LOG2_BLOCK)
        g = tl.program_id(0) * BLOCK + lane
        mx, my, x0, y0, rect_width, rect_count = _tile_rect(means2d_ptr, radii_ptr, g, live, tile_size, tile_width,
                                                            tile_height)
        ca, cb, cc, threshold = _load_ellipse(conics_ptr, opacities_ptr, g, live, REACH)
        hit, tile_id = _tile_of_item(k, x0, y0, rect_width, live, mx, my, ca, cb, cc, threshold,
                                     rect_count > _REACH_MAX_TILES, tile_size, tile_width, REACH)
        return lane, g, live, hit, tile_id

    @triton.jit
    def _count_tiles_kernel(means2d_ptr, radii_ptr, conics_ptr, opacities_ptr, image_ids_ptr, counts_ptr,
                            tile_counts_ptr, item_starts_ptr, n, n_per_image, tile_size, tile_width, tile_height,
                            REACH: tl.constexpr, PACKED: tl.constexpr, BUCKETS: tl.constexpr, SUB: tl.constexpr,
                            FLAT_ABOVE: tl.constexpr, BLOCK: tl.constexpr, LOG2_BLOCK: tl.constexpr):
        """Each Gaussian's number of tiles; with BUCKETS also each (image, tile) bucket's number of
        intersections, added up in tile_counts [buckets * SUB] (walking every rectangle as the emit kernel
        will; SUB counters a bucket, see SUB_BUCKETS). The walk: see FLAT_ABOVE (item_starts
        [programs * BLOCK] holds the flat walk's lists)."""
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        valid = i < n
        mx, my, x0, y0, rect_width, count = _tile_rect(means2d_ptr, radii_ptr, i, valid, tile_size, tile_width,
                                                       tile_height)
        ca, cb, cc, threshold = _load_ellipse(conics_ptr, opacities_ptr, i, valid, REACH)
        untested = count > _REACH_MAX_TILES
        if BUCKETS:
            counter_base = _counter_base(image_ids_ptr, i, valid, n_per_image, tile_width, tile_height, SUB, PACKED)
            walked = count
        else:  # only rectangles whose tiles are tested need walking
            walked = tl.where(untested, 0, count) if REACH else tl.zeros([BLOCK], tl.int32)
        item_starts_ptr += tl.program_id(0) * BLOCK
        total = tl.sum(walked, axis=0)
        longest = tl.max(walked, axis=0)
        reached = tl.zeros([BLOCK], tl.int32)
        if longest <= FLAT_ABOVE * tl.cdiv(total, BLOCK):  # each lane walks its own rectangle
            for k in range(0, longest):
                hit, tile_id = _tile_of_item(k, x0, y0, rect_width, k < walked, mx, my, ca, cb, cc, threshold,
                                             untested, tile_size, tile_width, REACH)
                if BUCKETS:
                    tl.atomic_add(tile_counts_ptr + counter_base + tile_id * SUB, 1, mask=hit, sem="relaxed")
                reached += hit.to(tl.int32)
        else:  # the rectangles as one list of items
            _lay_out_rectangles(item_starts_ptr, walked, BLOCK)
            for first in range(0, total, BLOCK):
                lane, g, live, hit, tile_id = _flat_step(item_starts_ptr, first, total, means2d_ptr, radii_ptr,
                                                         conics_ptr, opacities_ptr, tile_size, tile_width,
                                                         tile_height, REACH, BLOCK, LOG2_BLOCK)
                if BUCKETS:
                    base = _counter_base(image_ids_ptr, g, live, n_per_image, tile_width, tile_height, SUB, PACKED)
                    tl.atomic_add(tile_counts_ptr + base + tile_id * SUB, 1, mask=hit, sem="relaxed")
                reached += tl.histogram(lane, BLOCK, mask=hit)  # (each lane's hits, back in lane order)
        tl.store(counts_ptr + i, tl.where(walked == count, reached, count), mask=valid)

    @triton.jit
    def _emit_intersections_kernel(
        means2d_ptr, radii_ptr, depths_ptr, conics_ptr, opacities_ptr, image_ids_ptr, counts_ptr, slots_end_ptr,
        cursors_ptr, bucketed_ptr, isect_ids_ptr, flatten_ids_ptr, n_isects_ptr, item_starts_ptr, n, n_per_image,
        tile_size, tile_width, tile_height, tile_bits, n_slots, PACKED: tl.constexpr, REACH: tl.constexpr,
        BOUNDED: tl.constexpr, BUCKET: tl.constexpr, SUB: tl.constexpr, FLAT_ABOVE: tl.constexpr,
        BLOCK: tl.constexpr, LOG2_BLOCK: tl.constexpr,
    ):
        """Writes each Gaussian's intersections: gsplat's keys and the flat ids at its slots (from the
        cumsum of the counts), or with BUCKET (a bucket sort follows) the depth-and-id keys of
        ``_depth_id_key`` into their (image, tile) buckets of ``bucketed``: cursors [buckets * SUB] hold each
        bucket's counters' ends and are decremented, so that they end at their starts (the order within a
        bucket is arbitrary; the tile sort makes it exact), the block's rectangles walked as the count kernel
        walks them (FLAT_ABOVE). Slots past n_slots are dropped (bounded buffers); with BOUNDED the programs
        pad isect_ids and flatten_ids from the real count (n_isects) on."""
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        valid = i < n
        mx, my, x0, y0, rect_width, rect_count = _tile_rect(means2d_ptr, radii_ptr, i, valid, tile_size,
                                                            tile_width, tile_height)
        if BUCKET:
            ca, cb, cc, threshold = _load_ellipse(conics_ptr, opacities_ptr, i, valid, REACH)
            depth_bits = tl.load(depths_ptr + i, mask=valid, other=1.0).to(tl.int32, bitcast=True)
            key = _depth_id_key(depth_bits, i)
            counter_base = _counter_base(image_ids_ptr, i, valid, n_per_image, tile_width, tile_height, SUB, PACKED)
            item_starts_ptr += tl.program_id(0) * BLOCK
            total = tl.sum(rect_count, axis=0)
            longest = tl.max(rect_count, axis=0)
            if longest <= FLAT_ABOVE * tl.cdiv(total, BLOCK):  # as the count kernel walked
                for k in range(0, longest):
                    hit, tile_id = _tile_of_item(k, x0, y0, rect_width, k < rect_count, mx, my, ca, cb, cc,
                                                 threshold, rect_count > _REACH_MAX_TILES, tile_size, tile_width,
                                                 REACH)
                    slot = tl.atomic_add(cursors_ptr + counter_base + tile_id * SUB, -1, mask=hit, sem="relaxed") - 1
                    tl.store(bucketed_ptr + slot, key, mask=hit & (slot < n_slots))
            else:
                _lay_out_rectangles(item_starts_ptr, rect_count, BLOCK)
                for first in range(0, total, BLOCK):
                    lane, g, live, hit, tile_id = _flat_step(item_starts_ptr, first, total, means2d_ptr, radii_ptr,
                                                             conics_ptr, opacities_ptr, tile_size, tile_width,
                                                             tile_height, REACH, BLOCK, LOG2_BLOCK)
                    base = _counter_base(image_ids_ptr, g, live, n_per_image, tile_width, tile_height, SUB, PACKED)
                    slot = tl.atomic_add(cursors_ptr + base + tile_id * SUB, -1, mask=hit, sem="relaxed") - 1
                    bits = tl.load(depths_ptr + g, mask=live, other=1.0).to(tl.int32, bitcast=True)
                    tl.store(bucketed_ptr + slot, _depth_id_key(bits, g), mask=hit & (slot < n_slots))
        else:
            depth_bits = tl.load(depths_ptr + i, mask=valid, other=1.0).to(tl.int32, bitcast=True)
            if PACKED:
                image = tl.load(image_ids_ptr + i, mask=valid, other=0).to(tl.int64)
            else:
                image = (i // n_per_image).to(tl.int64)
            key_base = (image << (32 + tile_bits)) | (depth_bits.to(tl.int64) & 0xFFFFFFFF)
            # exclusive cumsum from the inclusive one, no extra launch
            slot = tl.load(slots_end_ptr + i, mask=valid, other=0) - tl.load(counts_ptr + i, mask=valid, other=0)
            ca, cb, cc, threshold = _load_ellipse(conics_ptr, opacities_ptr, i, valid, REACH)
            untested = rect_count > _REACH_MAX_TILES
            # each Gaussian's slots are consecutive: its lane walks its rectangle (the block in lockstep)
            for k in range(0, tl.max(rect_count, axis=0)):
                hit, tile_id = _tile_of_item(k, x0, y0, rect_width, k < rect_count, mx, my, ca, cb, cc, threshold,
                                             untested, tile_size, tile_width, REACH)
                active = hit & (slot < n_slots)  # bounded buffers drop what does not fit
                tl.store(isect_ids_ptr + slot, key_base | (tile_id.to(tl.int64) << 32), mask=active)
                tl.store(flatten_ids_ptr + slot, i, mask=active)
                slot += hit.to(tl.int64)
        if BOUNDED:  # the programs pad the slots past the real intersections between them
            first_pad = tl.minimum(tl.load(n_isects_ptr), n_slots).to(tl.int32)
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
    def _sort_tiles_kernel(bucketed_ptr, isect_ids_ptr, flatten_ids_ptr, starts_ptr, offsets_ptr,
                           n_tiles, tile_bits, n_slots, SUB: tl.constexpr, BLOCK: tl.constexpr, CHUNK: tl.constexpr,
                           RUN: tl.constexpr, MERGE: tl.constexpr):
        """One program per (image, tile) bucket: sorts its depth-and-id keys and writes gsplat's keys
        and the flat ids, and its start as an int32 offset. Up to RUN keys: each key goes straight to
        its rank among them, counted by comparing it with every key of the bucket (BLOCK keys against
        CHUNK at a time: no data exchange between threads, and a bucket's work grows with its length).
        Longer buckets: runs of RUN ranked the same way into isect_ids (free by then), then merged
        pairwise (each key's place in the other run by binary search, MERGE keys a step so that their
        searches' loads are in flight together), ping-ponging with bucketed.
        A bucket is SUB consecutive counters, whose starts are at starts_ptr [buckets * SUB + 1] (the last:
        the real count): the bucket ends where the next one starts. Bounded buffers too small (the real
        count over n_slots): only the keys that fit are sorted, and the offsets stop at n_slots (the
        compositing reads the ids between them)."""
        bucket = tl.program_id(0)
        start = tl.minimum(tl.load(starts_ptr + bucket * SUB).to(tl.int64), n_slots)
        tl.store(offsets_ptr + bucket, start.to(tl.int32))
        end = tl.minimum(tl.load(starts_ptr + (bucket + 1) * SUB).to(tl.int64), n_slots)
        count = (end - start).to(tl.int32)
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
                for chunk in range(0, count, MERGE):
                    i = chunk + tl.arange(0, MERGE)
                    ok = i < count
                    key = tl.load(src + i, mask=ok)
                    pair = (i // (2 * width)) * (2 * width)
                    left = i - pair < width
                    other = tl.where(left, pair + width, pair)
                    other_count = tl.minimum(tl.maximum(count - other, 0), width)
                    below = tl.zeros([MERGE], tl.int32)  # keys of the other run below this one
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
            for chunk in range(0, count, MERGE):
                i = chunk + tl.arange(0, MERGE)
                _store_tile_keys(tl.load(src + i, mask=i < count), isect_ids_ptr, flatten_ids_ptr, start, i, i < count,
                                 key_hi)


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
    item_starts = torch.empty(grid[0] * BLOCK, device=device, dtype=torch.int32)  # (the kernels' item lists)
    n_buckets = n_images * tile_width * tile_height
    image_ids = image_ids if packed else counts  # (unread without packing)
    # a sorted call counts each (image, tile) bucket's intersections as it counts each Gaussian's: their
    # cumsum gives the real count (and, should the bucket sort run, the buckets' ends) with no cumsum over
    # the Gaussians; the last bucket is a spare one, never counted into, so that the count stays apart
    # (int64: the cumsum then converts nothing, one op and one copy fewer a call). The kernels index the
    # counters in int32: more than 2^31 of them (2^28 tiles in all) take the radix sort instead
    buckets = sort and n_buckets * SUB_BUCKETS < 2**31
    tile_counts = torch.zeros(n_buckets * SUB_BUCKETS + 1, device=device, dtype=torch.int64) if buckets else counts
    if n > 0:
        launch_kernel(_count_tiles_kernel, grid, means2d, radii, conics, opacities, image_ids, counts, tile_counts,
                      item_starts, n, n_per_image, float(tile_size), tile_width, tile_height, REACH=reach, PACKED=packed,
                      BUCKETS=buckets, SUB=SUB_BUCKETS, FLAT_ABOVE=FLAT_ABOVE, BLOCK=BLOCK,
                      LOG2_BLOCK=BLOCK.bit_length() - 1)
    ends = torch.cumsum(tile_counts if buckets else counts.reshape(-1), 0, dtype=torch.int64)
    n_isects = ends[-1:] if n > 0 else None  # [1]: the real count, on the device
    emit = functools.partial(_emit_and_sort, means2d, radii, depths, conics, opacities, image_ids, counts, item_starts,
                             n, n_per_image, tile_size, tile_width, tile_height, tile_bits, packed, reach, buckets,
                             n_buckets, max_intersections is not None)
    if max_intersections is not None:
        n_slots = max_intersections
    elif n == 0:
        n_slots = 0
    else:
        # the count is read back to size the buffers; a call like the last one (same sizes) sizes them from its
        # count instead and reads this one's while the device writes and sorts the intersections (the device
        # would otherwise wait for the host's launches), then checks that they fit
        key = (device, n, n_images, tile_width, tile_height, packed, reach)
        guess = _COUNT_GUESSES.get(key) if buckets else None
        if guess is not None and GUESS_MIN <= guess <= SORT_BUCKET_MAX_AVERAGE * n_buckets:
            read_count = _count_reader(n_isects)
            isect_ids, flatten_ids, offsets, _ = emit(guess, ends, n_isects)
            n_slots = read_count()
            _remember_count(key, n_slots)
            if n_slots <= guess:
                return counts, isect_ids[:n_slots], flatten_ids[:n_slots], offsets, n_isects
            ends = torch.cumsum(tile_counts, 0, dtype=torch.int64)  # (the emit kernel used up its cursors)
            n_isects = ends[-1:]
        else:
            n_slots = int(n_isects)
            _remember_count(key, n_slots)
    isect_ids, flatten_ids, offsets, bucket = emit(n_slots, ends, n_isects)
    if sort and not bucket:
        isect_ids, order = torch.sort(isect_ids, stable=True)
        flatten_ids = flatten_ids[order]
    # by-products intersect_tiles uses when they exist: the buckets' starts (the per-tile offsets) and
    # the count
    return counts, isect_ids, flatten_ids, offsets, n_isects


def _emit_and_sort(means2d, radii, depths, conics, opacities, image_ids, counts, item_starts, n, n_per_image,
                   tile_size, tile_width, tile_height, tile_bits, packed, reach, buckets, n_buckets, bounded, n_slots,
                   ends, n_isects):
    """The emit kernel, and the tile sort where it runs, into buffers of n_slots intersections: (isect_ids,
    flatten_ids, the per-tile offsets or None, whether the bucket sort ran). ends: the count's cumsum, the
    buckets' cursors (used up)."""
    device = means2d.device
    isect_ids = torch.empty(n_slots, device=device, dtype=torch.int64)
    flatten_ids = torch.empty(n_slots, device=device, dtype=torch.int32)
    bucket = buckets and n_slots <= SORT_BUCKET_MAX_AVERAGE * n_buckets
    offsets = None
    if n > 0 and n_slots > 0:
        # each Gaussian's slots: the cumsum of the counts (with buckets: their cursors, the slots unread)
        slots_end = torch.cumsum(counts.reshape(-1), 0, dtype=torch.int64) if buckets and not bucket else ends
        bucketed = torch.empty_like(isect_ids) if bucket else isect_ids  # (unread without buckets)
        launch_kernel(_emit_intersections_kernel, (cdiv(n, BLOCK),),
            means2d, radii, depths, conics, opacities, image_ids, counts, slots_end, ends, bucketed, isect_ids,
            flatten_ids, n_isects, item_starts, n, n_per_image, float(tile_size), tile_width, tile_height,
            tile_bits, n_slots, PACKED=packed, REACH=reach, BOUNDED=bounded, BUCKET=bucket, SUB=SUB_BUCKETS,
            FLAT_ABOVE=FLAT_ABOVE, BLOCK=BLOCK, LOG2_BLOCK=BLOCK.bit_length() - 1)
        if bucket:  # the cursors (ends but its last) hold the buckets' counters' starts now
            offsets = torch.empty(n_buckets, device=device, dtype=torch.int32)
            launch_kernel(_sort_tiles_kernel, (n_buckets,), bucketed, isect_ids, flatten_ids, ends, offsets,
                          tile_width * tile_height, tile_bits, n_slots, SUB=SUB_BUCKETS, BLOCK=SORT_BLOCK,
                          CHUNK=SORT_CHUNK, RUN=SORT_RUN, MERGE=SORT_MERGE, num_warps=SORT_WARPS)
    elif n_slots > 0:  # bounded buffers and no Gaussians: all padding
        isect_ids.fill_(reference.PADDING_KEY)
        flatten_ids.zero_()
    return isect_ids, flatten_ids, offsets, bucket


# the intersection count of the last call of each size (device, N, images, tile grid, packed, reach test), which
# sizes the next one's buffers; COUNT_HEADROOM x it, so that a count that grows a little still fits. Only calls
# of GUESS_MIN intersections or more: in smaller ones the host, not the device, sets the time, and the
# read-back's extra host work made them slower (eager 100k / 1024² / 1: 0.65 -> 0.79 ms; 1M / 1024² / 1: 1.353 ->
# 1.246 ms; H100, 2026-11-27, docs/benchmarks.md)
_COUNT_GUESSES: dict = {}
COUNT_HEADROOM = 1.02
GUESS_MIN = 1 << 20


def _remember_count(key: tuple, count: int) -> None:
    if len(_COUNT_GUESSES) > 64:  # (sizes change as scenes grow: keep it bounded)
        _COUNT_GUESSES.clear()
    _COUNT_GUESSES[key] = math.ceil(count * COUNT_HEADROOM)


def send_count_to_host(n_isects: Tensor, host: Tensor, counted: "torch.cuda.Event") -> None:
    """Queue the count's copy into ``host`` (pinned, [1]) and record ``counted`` behind it, on the stream of the
    count's device: the host can then wait for the count alone (``counted.synchronize()``) while later work stays
    queued. Inside a CUDA graph's capture both become nodes of the graph (instant4d.graphs replays wait so)."""
    host.copy_(n_isects, non_blocking=True)
    counted.record(torch.cuda.current_stream(n_isects.device))


def _count_reader(n_isects: Tensor):
    """A function that returns the count [1] on the device as an int, waiting only for the count: on CUDA a
    copy to pinned memory and an event recorded now, so that later work stays queued behind it."""
    if not n_isects.is_cuda:
        return lambda: int(n_isects)
    host = torch.empty(1, dtype=n_isects.dtype, pin_memory=True)
    counted = torch.cuda.Event()
    send_count_to_host(n_isects, host, counted)

    def read() -> int:
        counted.synchronize()
        return int(host[0])
    return read


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
    beyond the bound some intersections are dropped, which ones not specified (the twin keeps the first
    in unsorted order, the kernels' bucket sort those that fall into the buffers); ``rasterize_to_pixels``
    with ``n_isects`` turns that into NaN images, never a silently incomplete one.

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
