"""Alpha compositing of depth-sorted Gaussians into pixels (gsplat's ``rasterize_to_pixels``).

Math (per pixel centre x, Gaussians g in front-to-back order, d = mean2d_g - x):
    sigma_g = 0.5 (a dx^2 + c dy^2) + b dx dy,   alpha_g = min(0.999, o_g exp(-sigma_g))
    skipped when sigma_g < 0 or alpha_g < 1/255;  T_g = prod_{k<g} (1 - alpha_k)
    colour = sum_g c_g alpha_g T_g + T background,   alpha = 1 - T
and compositing stops before the Gaussian that would bring T to 1e-4 or below.

Work split: one program (one warp) per part of an (image, tile), 64 pixels (four rows of a 16-px tile),
each thread holding its pixels. Forward: the tile's Gaussians are walked in blocks of BLOCK_G as the leading
tensor axis, so a block's transmittances come from one ``tl.cumprod`` along that axis, inside each
thread. Because T never rises, "before the stop" is exactly "inclusive T above 1e-4", which keeps the
block vectorised; the loop ends as soon as every pixel of the part is done (early exit per part).

Backward walks each tile back to front, as gsplat's does, from the final transmittance T = 1 - alpha
(so it keeps the alphas, not the colours): T before each Gaussian is T after it / (1 - alpha_j), and
with g the pixel's output gradient, u_j = g . c_j and the rest R_j = g . (T background) + sum_{k>j}
w_k u_k (everything composited after j), dL/dalpha_j = T_j u_j - R_j / (1 - alpha_j) + gA T / (1 - alpha_j).
Each backward program (the whole tile in deterministic mode) loads the Gaussians in batches of 32, one a
lane, and walks them one at a time, each broadcast to the pixels by a warp shuffle (``tl.gather``): one
vote skips a Gaussian that none of the part's pixels composites (most of them, where splats are small
next to a tile), as gsplat's warps do. The others' gradients are reduced over the part's pixels inside
the warp (six moments of dL/dsigma and the colour sums) into the Gaussian's lane, and each batch ends with
one atomic add (relaxed: no memory fences) per gradient of each Gaussian that some pixel composited. The
backward keeps the alphas and the index of the last composited Gaussian per pixel. Both passes load the
next block or batch of Gaussians one iteration ahead, so that their loads' latency overlaps the work.

With a padded, bounded ``flatten_ids`` (``n_isects`` given), the forward reads the real count from the
device and writes NaN images when it exceeds the buffer.

Limits: float32 inside; channels D any size (the forward takes D >= 16 through ``tl.dot`` in IEEE fp32,
the backward a warp shuffle a channel for each composited Gaussian); tile_size any positive int (padded
to a power of two inside the program).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .. import shapes
from ..backend import resolve_backend
from ._triton import cdiv, float32_contiguous, launch_kernel, next_power_of_2, triton, tl
from . import reference


if triton is not None:

    @triton.jit
    def _load_block(means2d_ptr, conics_ptr, opacities_ptr, flatten_ids_ptr, j, in_range):
        """The Gaussians at positions j of the tile's list (the forward's block [BLOCK_G], the backward's
        batch [BATCH]): flat ids and their 2D means, conics and opacities."""
        ids = tl.load(flatten_ids_ptr + j, mask=in_range, other=0).to(tl.int64)
        mx = tl.load(means2d_ptr + ids * 2, mask=in_range, other=0.0)
        my = tl.load(means2d_ptr + ids * 2 + 1, mask=in_range, other=0.0)
        ca = tl.load(conics_ptr + ids * 3, mask=in_range, other=0.0)
        cb = tl.load(conics_ptr + ids * 3 + 1, mask=in_range, other=0.0)
        cc = tl.load(conics_ptr + ids * 3 + 2, mask=in_range, other=0.0)
        opacity = tl.load(opacities_ptr + ids, mask=in_range, other=0.0)
        return ids, mx, my, ca, cb, cc, opacity

    @triton.jit
    def _tile_setup(offsets_ptr, tile_mask_ptr, n_isects, n_flat_tiles, n_tiles, tile_width,
                    image_width, image_height, TILE: tl.constexpr, TILE_PAD: tl.constexpr,
                    HAS_MASK: tl.constexpr, PIXELS: tl.constexpr):
        """The program's (image, tile) and its PIXELS pixels: part program_id % parts of the tile's
        TILE_PAD^2 in row-major order, parts = TILE_PAD^2 / PIXELS programs a tile."""
        PARTS: tl.constexpr = TILE_PAD * TILE_PAD // PIXELS
        flat_tile = tl.program_id(0) // PARTS
        image = flat_tile // n_tiles
        tile = flat_tile % n_tiles
        p = (tl.program_id(0) % PARTS) * PIXELS + tl.arange(0, PIXELS)
        local_y = p // TILE_PAD
        local_x = p % TILE_PAD
        py = (tile // tile_width) * TILE + local_y
        px = (tile % tile_width) * TILE + local_x
        inside = (local_y < TILE) & (local_x < TILE) & (py < image_height) & (px < image_width)
        pixel = (image.to(tl.int64) * image_height + py) * image_width + px
        start = tl.load(offsets_ptr + flat_tile)
        end = tl.load(offsets_ptr + flat_tile + 1, mask=flat_tile + 1 < n_flat_tiles, other=n_isects)
        if HAS_MASK:
            keep = tl.load(tile_mask_ptr + flat_tile)
            end = tl.where(keep != 0, end, start)
        return image, pixel, inside, px.to(tl.float32) + 0.5, py.to(tl.float32) + 0.5, start, end

    @triton.jit
    def _add_gradient(targets, record_slots, value, mask, DETERMINISTIC: tl.constexpr):
        """Accumulate a per-(tile, Gaussian) gradient: an atomic add into the Gaussian's gradient, or
        (deterministic mode) a store into the intersection's own record, summed later in a fixed order."""
        if DETERMINISTIC:
            tl.store(record_slots, value, mask=mask)
        else:
            # relaxed: nothing in the kernel reads the gradients back, so the default acq_rel
            # ordering only adds fences (H100, 100k / 512²: 1.91 -> 1.35 ms for this kernel)
            tl.atomic_add(targets, value, mask=mask, sem="relaxed")

    @triton.jit
    def _add6(a0, a1, a2, a3, a4, a5, b0, b1, b2, b3, b4, b5):
        return a0 + b0, a1 + b1, a2 + b2, a3 + b3, a4 + b4, a5 + b5

    @triton.jit
    def _exponent_coefficients(ca, cb, cc, opacity):
        """alpha = o exp(-sigma) = 2^(power + log2 o) with power = -sigma log2(e) = dx (qa dx + qb dy) +
        qc dy^2: the constants folded into per-Gaussian coefficients (qa, qb, qc, log2 o), so that a
        (Gaussian, pixel) pair costs fewer instructions. Padding lanes load opacity 0: log2 0 = -inf,
        alpha 0, never valid."""
        LOG2E: tl.constexpr = 1.4426950408889634
        return (-0.5 * LOG2E) * ca, -LOG2E * cb, (-0.5 * LOG2E) * cc, tl.log2(opacity)

    @triton.jit
    def _alpha(dx, dy, qa, qb, qc, log2_opacity):
        """Unclamped alpha of (Gaussian, pixel) pairs at offsets dx = mean - pixel centre (any
        broadcastable shapes), and which pairs count (sigma >= 0 and alpha >= 1/255)."""
        power = dx * (qa * dx + qb * dy) + qc * dy * dy
        raw = tl.exp2(power + log2_opacity)
        return raw, (power <= 0) & (raw >= 1.0 / 255.0)

    @triton.jit
    def _products_through_and_before(through_a, before_a, through_b, before_b):
        """Scan step for (product through this element, product before it): scanned from (x, 1), it
        gives the inclusive and the exclusive running products of x."""
        return through_a * through_b, through_a * before_b

    # Forward tensors are [BLOCK_G, P] with the pixel axis last, P the program's pixels (PIXELS, 64 a warp),
    # so each thread owns its pixels and walks the block's Gaussians in registers: the transmittance scan
    # and the colour sums never leave the thread.

    @triton.jit
    def _composite_forward_kernel(
        means2d_ptr, conics_ptr, colors_ptr, opacities_ptr, backgrounds_ptr, tile_mask_ptr,
        offsets_ptr, flatten_ids_ptr, count_ptr,
        out_colors_ptr, out_alphas_ptr, last_ids_ptr,
        n_isects, n_flat_tiles, n_tiles, tile_width, image_width, image_height,
        TILE: tl.constexpr, TILE_PAD: tl.constexpr, CHANNELS: tl.constexpr, CHANNELS_PAD: tl.constexpr,
        BLOCK_G: tl.constexpr, UNROLL: tl.constexpr, HAS_BACKGROUND: tl.constexpr, HAS_MASK: tl.constexpr,
        USE_DOT: tl.constexpr, COUNT_ON_DEVICE: tl.constexpr, PIXELS: tl.constexpr, STORE_LAST: tl.constexpr,
    ):
        overflow = False
        if COUNT_ON_DEVICE:  # bounded buffers: the real count is on the device, and may not have fit
            count = tl.load(count_ptr)
            overflow = count > n_isects
            n_isects = tl.minimum(count, n_isects)
        image, pixel, inside, fx, fy, start, end = _tile_setup(
            offsets_ptr, tile_mask_ptr, n_isects, n_flat_tiles, n_tiles, tile_width, image_width,
            image_height, TILE, TILE_PAD, HAS_MASK, PIXELS)
        ch = tl.arange(0, CHANNELS_PAD)
        ch_ok = ch < CHANNELS
        transmittance = tl.full([PIXELS], 1.0, tl.float32)
        acc = tl.zeros([CHANNELS_PAD, PIXELS], tl.float32)
        last = tl.full([PIXELS], -1, tl.int32)
        done = inside == 0
        alive = tl.sum(inside.to(tl.int32), axis=0)
        b = start
        j = b + tl.arange(0, BLOCK_G)
        n_ids, n_mx, n_my, n_ca, n_cb, n_cc, n_opacity = _load_block(
            means2d_ptr, conics_ptr, opacities_ptr, flatten_ids_ptr, j, j < end)
        while (b < end) & (alive > 0):
            # UNROLL blocks between the early-exit checks (each a reduction over the program's pixels)
            for u in tl.static_range(UNROLL):
                j = b + u * BLOCK_G + tl.arange(0, BLOCK_G)
                in_range = j < end
                # the next block's loads are issued now and overlap this block's arithmetic
                ids, mx, my, ca, cb, cc, opacity = n_ids, n_mx, n_my, n_ca, n_cb, n_cc, n_opacity
                n_ids, n_mx, n_my, n_ca, n_cb, n_cc, n_opacity = _load_block(
                    means2d_ptr, conics_ptr, opacities_ptr, flatten_ids_ptr, j + BLOCK_G, j + BLOCK_G < end)
                qa, qb, qc, log2_opacity = _exponent_coefficients(ca, cb, cc, opacity)
                raw, valid = _alpha(mx[:, None] - fx[None, :], my[:, None] - fy[None, :], qa[:, None], qb[:, None],
                                    qc[:, None], log2_opacity[:, None])
                alpha = tl.where(valid, tl.minimum(raw, 0.999), 0.0)
                # products of (1 - alpha) up to and up to before each Gaussian: one scan, no division
                through, before = tl.associative_scan((1.0 - alpha, tl.full(alpha.shape, 1.0, tl.float32)), 0,
                                                      _products_through_and_before)
                t_incl = transmittance[None, :] * through
                included = (t_incl > 1e-4) & (done == 0)[None, :]
                weight = tl.where(included, alpha * (transmittance[None, :] * before), 0.0)
                if USE_DOT:
                    col = tl.load(colors_ptr + ids[:, None] * CHANNELS + ch[None, :],
                                  mask=in_range[:, None] & ch_ok[None, :], other=0.0)  # [BLOCK_G, CHANNELS_PAD]
                    acc += tl.dot(tl.trans(col), weight, input_precision="ieee")
                else:
                    for c in tl.static_range(CHANNELS):
                        col_c = tl.load(colors_ptr + ids * CHANNELS + c, mask=in_range, other=0.0)
                        acc += tl.where(ch[:, None] == c, tl.sum(weight * col_c[:, None], axis=0)[None, :], 0.0)
                transmittance = tl.min(tl.where(included, t_incl, transmittance[None, :]), axis=0)
                if STORE_LAST:
                    last = tl.max(tl.where(included & valid, j[:, None], last[None, :]), axis=0)
                done = done | (tl.min(t_incl, axis=0) <= 1e-4)
            alive = tl.sum((done == 0).to(tl.int32), axis=0)
            b += UNROLL * BLOCK_G
        if HAS_BACKGROUND:
            bg = tl.load(backgrounds_ptr + image * CHANNELS + ch, mask=ch_ok, other=0.0)
            acc += bg[:, None] * transmittance[None, :]
        if overflow:  # some intersections were dropped: say so with NaN rather than draw an incomplete image
            acc = tl.full([CHANNELS_PAD, PIXELS], float("nan"), tl.float32)
            transmittance = tl.full([PIXELS], float("nan"), tl.float32)
        tl.store(out_colors_ptr + pixel[None, :] * CHANNELS + ch[:, None], acc,
                 mask=inside[None, :] & ch_ok[:, None])
        tl.store(out_alphas_ptr + pixel, 1.0 - transmittance, mask=inside)
        if STORE_LAST:
            tl.store(last_ids_ptr + pixel, last, mask=inside)

    @triton.jit
    def _composite_backward_kernel(
        means2d_ptr, conics_ptr, colors_ptr, opacities_ptr, backgrounds_ptr, tile_mask_ptr, offsets_ptr,
        flatten_ids_ptr, out_alphas_ptr, last_ids_ptr, v_out_colors_ptr, v_out_alphas_ptr,
        v_means2d_ptr, v_absgrad_ptr, v_conics_ptr, v_colors_ptr, v_opacities_ptr, records_ptr,
        n_isects, n_flat_tiles, n_tiles, tile_width, image_width, image_height,
        g_image_stride, g_row_stride, g_column_stride, g_channel_stride, ga_image_stride, ga_row_stride,
        ga_column_stride,
        TILE: tl.constexpr, TILE_PAD: tl.constexpr, CHANNELS: tl.constexpr, CHANNELS_PAD: tl.constexpr,
        BATCH: tl.constexpr, PIXELS: tl.constexpr, HAS_BACKGROUND: tl.constexpr, HAS_MASK: tl.constexpr,
        HAS_V_ALPHAS: tl.constexpr, ABSGRAD: tl.constexpr, DETERMINISTIC: tl.constexpr, RECORD_WIDTH: tl.constexpr,
    ):
        # a record per intersection (deterministic mode): dL/d(mean x, mean y, conic a, b, c, opacity),
        # then dL/dcolour, then |dL/dmean| (absgrad)
        RECORD_COLORS: tl.constexpr = 6
        # no count needed here in bounded mode: every pixel stops at its last composited Gaussian
        image, pixel, inside, fx, fy, start, end = _tile_setup(
            offsets_ptr, tile_mask_ptr, n_isects, n_flat_tiles, n_tiles, tile_width, image_width,
            image_height, TILE, TILE_PAD, HAS_MASK, PIXELS)
        ch = tl.arange(0, CHANNELS_PAD)
        ch_ok = ch < CHANNELS
        # the images' gradients are read through their strides: a loss's broadcast gradient (.sum(): strides 0)
        # needs no dense copy
        image64 = image.to(tl.int64)
        in_image = pixel - image64 * image_height * image_width
        row = in_image // image_width
        column = in_image % image_width
        g_at = image64 * g_image_stride + row * g_row_stride + column * g_column_stride
        g_col = tl.load(v_out_colors_ptr + g_at[None, :] + ch[:, None] * g_channel_stride,
                        mask=inside[None, :] & ch_ok[:, None], other=0.0)  # [CHANNELS_PAD, P]
        final_t = 1.0 - tl.load(out_alphas_ptr + pixel, mask=inside, other=0.0)
        last = tl.load(last_ids_ptr + pixel, mask=inside, other=-1)
        g_final = tl.zeros([PIXELS], tl.float32)
        if HAS_V_ALPHAS:
            ga_at = image64 * ga_image_stride + row * ga_row_stride + column * ga_column_stride
            g_final = tl.load(v_out_alphas_ptr + ga_at, mask=inside, other=0.0) * final_t
        # walking back from the last composited Gaussian: the transmittance before the Gaussian walked
        # last, and "rest", the gradient's dot product with everything composited behind it
        transmittance = final_t
        rest = tl.zeros([PIXELS], tl.float32)
        if HAS_BACKGROUND:
            bg = tl.load(backgrounds_ptr + image * CHANNELS + ch, mask=ch_ok, other=0.0)
            rest = final_t * tl.sum(g_col * bg[:, None], axis=0)
        end = tl.minimum(end, tl.max(last, axis=0) + 1)
        lane = tl.arange(0, BATCH)
        top = end - 1  # the batch's first Gaussian (walking back): lane k holds Gaussian top - k
        j = top - lane
        # the next batch is loaded one batch ahead, so that the loads' latency (ids, then the Gaussians
        # they point to) overlaps this batch's work
        n_ids, n_mx, n_my, n_ca, n_cb, n_cc, n_opacity = _load_block(
            means2d_ptr, conics_ptr, opacities_ptr, flatten_ids_ptr, j, j >= start)
        while top >= start:
            j = top - lane
            in_range = j >= start
            ids, mx, my, ca, cb, cc, opacity = n_ids, n_mx, n_my, n_ca, n_cb, n_cc, n_opacity
            n_ids, n_mx, n_my, n_ca, n_cb, n_cc, n_opacity = _load_block(
                means2d_ptr, conics_ptr, opacities_ptr, flatten_ids_ptr, j - BATCH, j - BATCH >= start)
            col = tl.load(colors_ptr + ids[None, :] * CHANNELS + ch[:, None], mask=ch_ok[:, None] & in_range[None, :],
                          other=0.0)  # [CHANNELS_PAD, BATCH]
            qa, qb, qc, log2_opacity = _exponent_coefficients(ca, cb, cc, opacity)
            # each Gaussian's sums over the part's pixels, in its lane: dL/dsigma's six moments, the colour sums
            zero = tl.zeros([BATCH], tl.float32)
            s_dx, s_dy, s_dxdx, s_dxdy, s_dydy, s_v, s_abs_x, s_abs_y = zero, zero, zero, zero, zero, zero, zero, zero
            s_col = tl.zeros([CHANNELS_PAD, BATCH], tl.float32)
            touched = lane < 0
            for k in range(0, tl.minimum(BATCH, top - start + 1)):
                sel = tl.full([PIXELS], k, tl.int32)  # lane k's values to every pixel (a warp shuffle)
                dx = tl.gather(mx, sel, 0) - fx
                dy = tl.gather(my, sel, 0) - fy
                raw, valid = _alpha(dx, dy, tl.gather(qa, sel, 0), tl.gather(qb, sel, 0), tl.gather(qc, sel, 0),
                                    tl.gather(log2_opacity, sel, 0))
                valid = valid & (top - k <= last) & inside
                # a Gaussian that no pixel of the part composites changes nothing here: skipped after one vote
                # (with 64 px a part, 47-64% of those walked in the benchmark's head scenes, 36% in its uniform
                # one: scripts/composite_skip_rate.py)
                if tl.max(valid.to(tl.int32), axis=0) > 0:
                    alpha = tl.where(valid, tl.minimum(raw, 0.999), 0.0)
                    inv_one_minus = tl.fdiv(1.0, 1.0 - alpha)  # alpha <= 0.999: the approximate reciprocal is exact enough
                    t_before = transmittance * inv_one_minus
                    weight = alpha * t_before
                    u = tl.sum(g_col * tl.gather(col, tl.full([CHANNELS_PAD, PIXELS], k, tl.int32), 1), axis=0)
                    # T_j u_j - (rest after j) / (1 - alpha_j) + dL/dalpha_out * T_final / (1 - alpha_j)
                    v_alpha = t_before * u + (g_final - rest) * inv_one_minus
                    # With v = dL/dsigma = -alpha dL/dalpha, the means and conics need only the moments of v over
                    # the pixels: dL/dmean = [[a, b], [b, c]] sum(v d), dL/dconic = sum(v (dx^2/2, dx dy, dy^2/2)),
                    # and dL/dopacity = sum(exp(-sigma) dL/dalpha) = -sum(v) / opacity (alpha = o exp(-sigma) there).
                    v_sigma = tl.where(valid & (raw <= 0.999), -alpha * v_alpha, 0.0)
                    v_dx = v_sigma * dx
                    v_dy = v_sigma * dy
                    m_dx, m_dy, m_dxdx, m_dxdy, m_dydy, m_v = tl.reduce(
                        (v_dx, v_dy, v_dx * dx, v_dx * dy, v_dy * dy, v_sigma), 0, _add6)
                    here = lane == k
                    s_dx = tl.where(here, m_dx, s_dx)
                    s_dy = tl.where(here, m_dy, s_dy)
                    s_dxdx = tl.where(here, m_dxdx, s_dxdx)
                    s_dxdy = tl.where(here, m_dxdy, s_dxdy)
                    s_dydy = tl.where(here, m_dydy, s_dydy)
                    s_v = tl.where(here, m_v, s_v)
                    s_col = tl.where(here[None, :], tl.sum(g_col * weight[None, :], axis=1)[:, None], s_col)
                    touched = touched | here
                    if ABSGRAD:
                        g_ca = tl.gather(ca, sel, 0)
                        g_cb = tl.gather(cb, sel, 0)
                        g_cc = tl.gather(cc, sel, 0)
                        s_abs_x = tl.where(here, tl.sum(tl.abs(g_ca * v_dx + g_cb * v_dy), axis=0), s_abs_x)
                        s_abs_y = tl.where(here, tl.sum(tl.abs(g_cb * v_dx + g_cc * v_dy), axis=0), s_abs_y)
                    transmittance = t_before
                    rest += weight * u
            # the batch's gradients, one lane a Gaussian: only those of Gaussians some pixel composited
            ok = in_range & touched
            record = records_ptr + j.to(tl.int64) * RECORD_WIDTH  # [BATCH] (deterministic mode)
            _add_gradient(v_means2d_ptr + ids * 2, record, ca * s_dx + cb * s_dy, ok, DETERMINISTIC)
            _add_gradient(v_means2d_ptr + ids * 2 + 1, record + 1, cb * s_dx + cc * s_dy, ok, DETERMINISTIC)
            _add_gradient(v_conics_ptr + ids * 3, record + 2, 0.5 * s_dxdx, ok, DETERMINISTIC)
            _add_gradient(v_conics_ptr + ids * 3 + 1, record + 3, s_dxdy, ok, DETERMINISTIC)
            _add_gradient(v_conics_ptr + ids * 3 + 2, record + 4, 0.5 * s_dydy, ok, DETERMINISTIC)
            _add_gradient(v_opacities_ptr + ids, record + 5, -s_v / tl.where(opacity > 0, opacity, 1.0), ok,
                          DETERMINISTIC)
            _add_gradient(v_colors_ptr + ids[None, :] * CHANNELS + ch[:, None],
                          record[None, :] + RECORD_COLORS + ch[:, None], s_col, ok[None, :] & ch_ok[:, None],
                          DETERMINISTIC)
            if ABSGRAD:
                _add_gradient(v_absgrad_ptr + ids * 2, record + RECORD_COLORS + CHANNELS, s_abs_x, ok, DETERMINISTIC)
                _add_gradient(v_absgrad_ptr + ids * 2 + 1, record + RECORD_COLORS + CHANNELS + 1, s_abs_y, ok,
                              DETERMINISTIC)
            top -= BATCH

    @triton.jit
    def _sum_records_kernel(records_ptr, order_ptr, starts_ptr, counts_ptr, out_ptr, n_rows,
                            WIDTH: tl.constexpr, WIDTH_PAD: tl.constexpr, BLOCK: tl.constexpr):
        """out[g] = the records of Gaussian g's intersections added one by one in sorted order (a lane
        per Gaussian): the same order every run, so the same bits."""
        g = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        valid = g < n_rows
        start = tl.load(starts_ptr + g, mask=valid, other=0)
        count = tl.load(counts_ptr + g, mask=valid, other=0)
        col = tl.arange(0, WIDTH_PAD)
        col_ok = col < WIDTH
        acc = tl.zeros([BLOCK, WIDTH_PAD], tl.float32)
        for k in range(0, tl.max(count, axis=0)):
            active = k < count
            isect = tl.load(order_ptr + start + k, mask=active, other=0)
            acc += tl.load(records_ptr + isect[:, None] * WIDTH + col[None, :],
                           mask=active[:, None] & col_ok[None, :], other=0.0)
        tl.store(out_ptr + g[:, None].to(tl.int64) * WIDTH + col[None, :], acc, mask=valid[:, None] & col_ok[None, :])


SUM_BLOCK = 128  # Gaussians per program of the deterministic sums


def _sum_records(records: Tensor, flatten_ids: Tensor, n_rows: int) -> Tensor:
    """[n_rows, W]: per-intersection records [M, W] summed per Gaussian, in a fixed order (deterministic)."""
    order = torch.sort(flatten_ids, stable=True).indices  # intersections grouped by Gaussian, in order
    counts = torch.bincount(flatten_ids, minlength=n_rows)
    starts = torch.cumsum(counts, 0) - counts
    width = records.shape[1]
    out = torch.empty(n_rows, width, device=records.device, dtype=torch.float32)
    if n_rows > 0:
        launch_kernel(_sum_records_kernel, (cdiv(n_rows, SUM_BLOCK),),
            records, order, starts, counts, out, n_rows, WIDTH=width, WIDTH_PAD=next_power_of_2(width),
            BLOCK=SUM_BLOCK)
    return out


def _launch_config(channels: int, tile_size: int, backward: bool = False, deterministic: bool = False) -> dict:
    channels_pad = next_power_of_2(channels)
    tile_pad = next_power_of_2(tile_size)
    # Measured on an H100 (device time of each kernel, scripts/gpu_composite_variants.py; history in
    # docs/benchmarks.md). Forward: one warp over 64 of a tile's pixels (its early-exit check needs no
    # barrier; 159 -> 147 us at 100k / 512x512 against one 4-warp program a tile, 32 px 175), the next
    # block prefetched; 16 Gaussians a block for up to 3 channels in tiles of up to 16 px (avatar 128.6 ->
    # 106.8 us, 100k / 512x512 187.6 -> 177.9 against 8; sm_90, 3 channels: 166 registers), else 8 (4-8
    # channels took 203-215 registers at 16, 32 px tiles spilled); up to 8 channels walked one by one in
    # each thread, more through tl.dot (>= 16 wide).
    if not backward:
        use_dot = channels_pad > 8
        block_g = 16 if use_dot or (channels <= 3 and tile_pad <= 16) else 8
        return dict(TILE=tile_size, TILE_PAD=tile_pad, CHANNELS=channels,
                    CHANNELS_PAD=max(channels_pad, 16) if use_dot else channels_pad, BLOCK_G=block_g,
                    USE_DOT=use_dot, UNROLL=1, PIXELS=min(tile_pad * tile_pad, 64), num_warps=1)
    # Backward: one warp over 64 pixels, walking the Gaussians one at a time in batches of 32 (one a
    # lane) so that a Gaussian none of the part's pixels composites is skipped (2026-11-27, kernel alone,
    # 100k / 512x512: 514 -> 330 us against blocks of 8 Gaussians over 32 px; 8 cameras 3311 -> 1900,
    # 1M / 512x512 3006 -> 1349; 32 px a warp 410 / 2579 / 1565, 128 px 421 / 2008 / 1856). The
    # deterministic mode takes a whole tile a program (one writer per intersection record), on one warp
    # up to 16-px tiles (sums across warps cost a barrier per Gaussian).
    pixels = tile_pad * tile_pad if deterministic else min(tile_pad * tile_pad, 64)
    return dict(TILE=tile_size, TILE_PAD=tile_pad, CHANNELS=channels, CHANNELS_PAD=channels_pad, BATCH=32,
                PIXELS=pixels, num_warps=max(1, pixels // 256))


def _programs(n_flat_tiles: int, config: dict) -> int:
    """The grid: a program for each part of PIXELS pixels of each (image, tile)."""
    return n_flat_tiles * (config["TILE_PAD"] ** 2 // config["PIXELS"])


class _RasterizeToPixels(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, backgrounds, masks, width, height, tile_size,
                isect_offsets, flatten_ids, n_isects, absgrad_target, deterministic, recording):
        image_dims = isect_offsets.shape[:-2]
        n_images = math.prod(image_dims)
        tile_height, tile_width = isect_offsets.shape[-2:]
        channels = colors.shape[-1]
        device = means2d.device
        out_colors = torch.empty((*image_dims, height, width, channels), device=device, dtype=torch.float32)
        out_alphas = torch.empty((*image_dims, height, width, 1), device=device, dtype=torch.float32)
        # where each pixel's backward starts: a call that nothing differentiates (inference: no input needs a
        # gradient, or autograd does not record, which forward itself cannot see) keeps none
        store_last = recording and any(ctx.needs_input_grad[:5])
        last_ids = torch.empty((*image_dims, height, width), device=device, dtype=torch.int32) if store_last else None
        config = _launch_config(channels, tile_size)
        n_flat_tiles = n_images * tile_height * tile_width
        if n_flat_tiles > 0:
            launch_kernel(_composite_forward_kernel, (_programs(n_flat_tiles, config),),
                means2d, conics, colors, opacities,
                backgrounds if backgrounds is not None else out_colors,
                masks if masks is not None else isect_offsets,
                isect_offsets, flatten_ids, n_isects if n_isects is not None else isect_offsets,
                out_colors, out_alphas, last_ids if store_last else out_alphas,
                flatten_ids.numel(), n_flat_tiles, tile_height * tile_width, tile_width, width, height,
                HAS_BACKGROUND=backgrounds is not None, HAS_MASK=masks is not None,
                COUNT_ON_DEVICE=n_isects is not None, STORE_LAST=store_last, **config,
            )
        # the backward walks each tile back to front from the final transmittance (1 - alpha): it keeps
        # the alphas, not the colours, so the colours can be freed once the loss has used them
        ctx.save_for_backward(means2d, conics, colors, opacities, backgrounds, masks, isect_offsets, flatten_ids,
                              out_alphas, last_ids)
        # absgrad_target: [the caller's means2d] or None; backward sets its .absgrad like gsplat does
        ctx.channels, ctx.tile_size = channels, tile_size
        ctx.absgrad_target, ctx.size, ctx.deterministic = absgrad_target, (width, height), deterministic
        ctx.background_shape = backgrounds.shape if backgrounds is not None else None
        # an output the loss does not use gets no gradient tensor (None), not one of zeros to read
        ctx.set_materialize_grads(False)
        return out_colors, out_alphas

    @staticmethod
    def backward(ctx, v_out_colors, v_out_alphas):
        (means2d, conics, colors, opacities, backgrounds, masks, isect_offsets, flatten_ids, out_alphas,
         last_ids) = ctx.saved_tensors
        width, height = ctx.size
        absgrad = ctx.absgrad_target is not None
        channels = ctx.channels
        if v_out_colors is None:  # a loss of the alphas alone (zeros read through strides of 0)
            v_out_colors = out_alphas.new_zeros(()).expand(*out_alphas.shape[:-1], channels)
        if ctx.deterministic:  # a record per intersection, summed per Gaussian afterwards (no atomics)
            record_width = 6 + channels + (2 if absgrad else 0)
            records = torch.zeros(flatten_ids.numel(), record_width, device=means2d.device, dtype=torch.float32)
            v_means2d = v_absgrad = v_conics = v_colors = v_opacities = records  # unused by the kernel
        else:
            record_width = 1
            v_means2d = torch.zeros_like(means2d)
            v_absgrad = torch.zeros_like(means2d) if absgrad else v_means2d
            v_conics = torch.zeros_like(conics)
            v_colors = torch.zeros_like(colors)
            v_opacities = torch.zeros_like(opacities)
            records = v_means2d  # unused by the kernel
        tile_height, tile_width = isect_offsets.shape[-2:]
        n_flat_tiles = math.prod(isect_offsets.shape)
        config = _launch_config(channels, ctx.tile_size, backward=True, deterministic=ctx.deterministic)
        g_colors = _per_image(v_out_colors, height, width)
        g_alphas = _per_image(v_out_alphas if v_out_alphas is not None else out_alphas, height, width)
        if n_flat_tiles > 0:
            launch_kernel(_composite_backward_kernel, (_programs(n_flat_tiles, config),),
                means2d, conics, colors, opacities, backgrounds if backgrounds is not None else out_alphas,
                masks if masks is not None else isect_offsets, isect_offsets, flatten_ids, out_alphas, last_ids,
                g_colors, g_alphas, v_means2d, v_absgrad, v_conics, v_colors, v_opacities, records,
                flatten_ids.numel(), n_flat_tiles, tile_height * tile_width, tile_width, width, height,
                *g_colors.stride(), *g_alphas.stride()[:3],
                HAS_BACKGROUND=backgrounds is not None, HAS_MASK=masks is not None,
                HAS_V_ALPHAS=v_out_alphas is not None, ABSGRAD=absgrad,
                DETERMINISTIC=ctx.deterministic,
                RECORD_WIDTH=record_width, **config,
            )
        if ctx.deterministic:
            sums = _sum_records(records, flatten_ids, opacities.numel())
            v_means2d = sums[:, 0:2].reshape(means2d.shape)
            v_conics = sums[:, 2:5].reshape(conics.shape)
            v_opacities = sums[:, 5].reshape(opacities.shape)
            v_colors = sums[:, 6:6 + channels].reshape(colors.shape)
            v_absgrad = sums[:, 6 + channels:].reshape(means2d.shape) if absgrad else None
        if absgrad:
            target = ctx.absgrad_target[0]
            target.absgrad = v_absgrad.reshape(target.shape).to(target.dtype)
        v_backgrounds = None
        if ctx.needs_input_grad[4]:  # False when there is no background
            v_backgrounds = (v_out_colors * (1.0 - out_alphas)).sum(dim=(-3, -2))
            v_backgrounds = v_backgrounds.reshape(ctx.background_shape)
        return v_means2d, v_conics, v_colors, v_opacities, v_backgrounds, *([None] * 10)


def _per_image(gradient: Tensor, height: int, width: int) -> Tensor:
    """An image gradient [..., H, W, D] as [images, H, W, D], a view where the leading dims allow one (a broadcast
    gradient keeps its strides of 0), else a dense float32 copy."""
    if gradient.dtype == torch.float32:
        try:
            return gradient.view(-1, height, width, gradient.shape[-1])
        except RuntimeError:  # leading dims that no single stride walks
            pass
    return gradient.float().contiguous().view(-1, height, width, gradient.shape[-1])


def rasterize_to_pixels(
    means2d: Tensor,  # [..., N, 2] or [nnz, 2]
    conics: Tensor,  # [..., N, 3] or [nnz, 3]
    colors: Tensor,  # [..., N, D] or [nnz, D]
    opacities: Tensor,  # [..., N] or [nnz]
    image_width: int,
    image_height: int,
    tile_size: int,
    isect_offsets: Tensor,  # [..., TH, TW] int32
    flatten_ids: Tensor,  # [M] int32
    backgrounds: Optional[Tensor] = None,  # [..., D]
    masks: Optional[Tensor] = None,  # [..., TH, TW] bool
    packed: bool = False,
    absgrad: bool = False,
    *,
    n_isects: Optional[Tensor] = None,  # [1] int32 or int64
    deterministic: bool = False,
    backend: Optional[str] = None,
) -> tuple[Tensor, Tensor]:
    """Composite depth-sorted Gaussians into images (see this module's docstring for the math).

    Returns ``render_colors [..., H, W, D]`` and ``render_alphas [..., H, W, 1]``, where ``...`` are
    the image dims of ``isect_offsets``. Differentiable in means2d, conics, colors, opacities and
    backgrounds; ``absgrad=True`` also sets ``means2d.absgrad`` during backward.

    ``n_isects`` (on the device) is the number of real intersections when ``flatten_ids`` is a bounded,
    padded buffer (``isect_tiles(max_intersections=...)``); if it exceeds the buffer, intersections
    were dropped and every output pixel is NaN.

    ``deterministic=True`` makes the backward bit-identical run to run: each (tile, Gaussian) pair
    writes its gradient to its own record, and the records are summed per Gaussian in sorted order
    instead of by float atomics (cost: docs/benchmarks.md). The twin is deterministic anyway.
    """
    shapes.check_image_size(image_width, image_height, ("image_width", "image_height"))
    if not isinstance(tile_size, int) or tile_size <= 0:
        raise ValueError(f"tile_size must be a positive int, got {tile_size!r}")
    device = means2d.device
    offsets = shapes.check_tensor("isect_offsets", isect_offsets, [None] * isect_offsets.dim(),
                                  dtypes=(torch.int32,), device=device)
    if offsets.dim() < 2:
        raise ValueError(f"isect_offsets must have shape [..., TH, TW], got {list(offsets.shape)}")
    image_dims = tuple(offsets.shape[:-2])
    tile_height, tile_width = offsets.shape[-2:]
    if tile_height * tile_size < image_height or tile_width * tile_size < image_width:
        raise ValueError(
            f"isect_offsets covers {tile_width}x{tile_height} tiles of {tile_size} px, "
            f"smaller than the {image_width}x{image_height} image")
    lead = (None,) if packed else image_dims + (None,)
    shapes.check_tensor("means2d", means2d, lead + (2,))
    n = means2d.shape[-2] if not packed else means2d.shape[0]
    shapes.check_tensor("conics", conics, lead[:-1] + (n, 3), device=device)
    shapes.check_tensor("colors", colors, lead[:-1] + (n, None), device=device)
    shapes.check_tensor("opacities", opacities, lead[:-1] + (n,), device=device)
    shapes.check_tensor("flatten_ids", flatten_ids, (None,), dtypes=(torch.int32,), device=device)
    channels = colors.shape[-1]
    if channels == 0:
        raise ValueError("colors must have at least one channel")
    if backgrounds is not None:
        shapes.check_tensor("backgrounds", backgrounds, image_dims + (channels,), device=device)
    if masks is not None:
        shapes.check_tensor("masks", masks, tuple(offsets.shape), dtypes=(torch.bool,), device=device)
    if n_isects is not None:
        shapes.check_tensor("n_isects", n_isects, (1,), dtypes=(torch.int32, torch.int64), device=device)

    return composite_checked(means2d, conics, colors, opacities, image_width, image_height, tile_size, offsets,
                             flatten_ids, backgrounds, masks, packed, absgrad, n_isects, deterministic,
                             resolve_backend(backend, means2d, conics, colors, opacities, backgrounds))


def composite_checked(means2d, conics, colors, opacities, image_width, image_height, tile_size, isect_offsets,
                      flatten_ids, backgrounds, masks, packed, absgrad, n_isects, deterministic,
                      backend: str) -> tuple[Tensor, Tensor]:
    """rasterize_to_pixels on checked inputs with the backend resolved: what rasterization() calls
    after its own checks."""
    if backend == "torch":
        return reference.rasterize_to_pixels(
            means2d, conics, colors, opacities, image_width, image_height, tile_size, isect_offsets,
            flatten_ids, backgrounds=backgrounds, masks=masks, packed=packed, absgrad=absgrad, n_isects=n_isects,
            deterministic=deterministic)
    # kernels index the inputs as flat contiguous arrays, whatever their leading dims
    render_colors, render_alphas = _RasterizeToPixels.apply(
        float32_contiguous(means2d), float32_contiguous(conics), float32_contiguous(colors),
        float32_contiguous(opacities), None if backgrounds is None else float32_contiguous(backgrounds),
        None if masks is None else masks.contiguous(), image_width, image_height, tile_size,
        isect_offsets.contiguous(), flatten_ids.contiguous(), n_isects, [means2d] if absgrad else None,
        bool(deterministic), torch.is_grad_enabled())
    dtype = means2d.dtype
    if dtype != torch.float32:
        render_colors, render_alphas = render_colors.to(dtype), render_alphas.to(dtype)
    return render_colors, render_alphas
