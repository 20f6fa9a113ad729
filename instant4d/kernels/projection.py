"""EWA projection of 3D Gaussians into pinhole cameras (gsplat 1.5.3's ``fully_fused_projection``).

Math, per (camera, Gaussian), with the camera's world-to-camera rotation R and translation t:
    Sigma   = covars, or Rq diag(s)^2 Rq^T with Rq the rotation of the normalised quaternion
    m_c     = R m + t = (x, y, z)           culled unless near_plane <= z <= far_plane
    Sigma_c = R Sigma R^T
    J       = [[fx/z, 0, -fx u/z], [0, fy/z, -fy v/z]]   u = clamp(x/z, -lim_x_neg, lim_x_pos), v
              likewise; lim_x_pos = (W - cx)/fx + 0.3 tan_fovx, tan_fovx = W/(2 fx) (gsplat's clamp)
    mean2d  = (fx x/z + cx, fy y/z + cy)
    S       = J Sigma_c J^T + eps2d I        culled unless det S > 0
    conic   = S^-1 as (a, b, c);  compensation = sqrt(max(0, det(S - eps2d I) / det S))
    extent  = 3.33, or with opacities o (times compensation when computed): culled when o < 1/255,
              else min(3.33, sqrt(2 ln(255 o)))
    radii   = (ceil(extent sqrt(S_xx)), ceil(extent sqrt(S_yy))); culled when both <= radius_clip
              or when the box [mean2d - radii, mean2d + radii] misses the image.
Culled pairs get radii 0 and every other output 0. The backward is the hand-written VJP of the
same chain (gradients of culled pairs are zero; none reach Ks, opacities or radii).

Work split: one program per block of BLOCK_N Gaussians of one scene (grid = (cdiv(N, BLOCK_N), B)).
Each program loads its Gaussians and builds their world covariance once, then loops over the C
cameras. The backward accumulates the per-Gaussian gradients over cameras in registers (no atomics,
so it is deterministic) and converts the covariance gradient to quaternion and scale gradients once
at the end; the viewmat gradient is reduced over the block with ``tl.sum`` into one partial per
(camera, block), summed by torch.

Limits: pinhole cameras only; float32 compute (float64 inputs are cast and the outputs cast back);
packed mode is the unpacked result compacted with ``torch.nonzero`` (a host sync); sparse gradients
are not implemented. Differences from gsplat: its compensation gradient divides by
(compensation + 1e-6) and is written in a form that loses all float32 digits for sub-pixel Gaussians;
ours is the exact derivative in a cancellation-free form. Its conic gradient is -P G P formed from the
rounded conic P, whose float32 rounding an elongated Gaussian's cond(S) amplifies in the rotation
(quaternion) and mean gradients (~1e-3 relative on random_scene); ours forms the same derivative from
adj(S) = (c, -b, a) exactly (as the twin's autograd does). gsplat leaves culled outputs uninitialised
and keeps pairs whose 2D covariance is negative definite (only reachable with invalid ``covars``)
with radii 0 in packed mode; we cull them.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .. import shapes
from ..backend import resolve_backend
from ._triton import cdiv, float32_contiguous, launch_kernel, tl, triton
from . import reference

BLOCK_N = 128  # Gaussians per program (4 warps): the backward needs 124 registers a lane, no spills (sm_90)

if triton is not None:
    _ALPHA_THRESHOLD = tl.constexpr(shapes.ALPHA_THRESHOLD)
    _RADIUS_EXTENT = tl.constexpr(shapes.RADIUS_EXTENT)

    @triton.jit
    def _quat_scale(quats_ptr, scales_ptr, g, mask):
        """The unit quaternion (w, x, y, z), 1 / |q|, its row-major rotation matrix and the scales."""
        qw = tl.load(quats_ptr + g * 4, mask=mask, other=1.0)
        qx = tl.load(quats_ptr + g * 4 + 1, mask=mask, other=0.0)
        qy = tl.load(quats_ptr + g * 4 + 2, mask=mask, other=0.0)
        qz = tl.load(quats_ptr + g * 4 + 3, mask=mask, other=0.0)
        inv_norm = 1.0 / tl.sqrt(qw * qw + qx * qx + qy * qy + qz * qz)
        w, x, y, z = qw * inv_norm, qx * inv_norm, qy * inv_norm, qz * inv_norm
        return (
            w, x, y, z, inv_norm,
            1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - w * z), 2.0 * (x * z + w * y),
            2.0 * (x * y + w * z), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - w * x),
            2.0 * (x * z - w * y), 2.0 * (y * z + w * x), 1.0 - 2.0 * (x * x + y * y),
            tl.load(scales_ptr + g * 3, mask=mask, other=0.0),
            tl.load(scales_ptr + g * 3 + 1, mask=mask, other=0.0),
            tl.load(scales_ptr + g * 3 + 2, mask=mask, other=0.0),
        )

    @triton.jit
    def _mul_sym(a00, a01, a02, a10, a11, a12, a20, a21, a22, s00, s01, s02, s11, s12, s22):
        """A S for a 3x3 A and a symmetric S (given by its upper triangle); all 9 entries."""
        return (
            a00 * s00 + a01 * s01 + a02 * s02, a00 * s01 + a01 * s11 + a02 * s12, a00 * s02 + a01 * s12 + a02 * s22,
            a10 * s00 + a11 * s01 + a12 * s02, a10 * s01 + a11 * s11 + a12 * s12, a10 * s02 + a11 * s12 + a12 * s22,
            a20 * s00 + a21 * s01 + a22 * s02, a20 * s01 + a21 * s11 + a22 * s12, a20 * s02 + a21 * s12 + a22 * s22,
        )

    @triton.jit
    def _mul_transpose_sym(t00, t01, t02, t10, t11, t12, t20, t21, t22,
                           a00, a01, a02, a10, a11, a12, a20, a21, a22):
        """Upper triangle of T A^T, for T = A S with S symmetric (so the product is symmetric)."""
        return (
            t00 * a00 + t01 * a01 + t02 * a02, t00 * a10 + t01 * a11 + t02 * a12, t00 * a20 + t01 * a21 + t02 * a22,
            t10 * a10 + t11 * a11 + t12 * a12, t10 * a20 + t11 * a21 + t12 * a22,
            t20 * a20 + t21 * a21 + t22 * a22,
        )

    @triton.jit
    def _gaussians(means_ptr, covars_ptr, quats_ptr, scales_ptr, N, USE_COVARS: tl.constexpr,
                   BLOCK_N: tl.constexpr):
        """This program's scene, Gaussian ids (in the scene, in range, flat) and the Gaussians' world
        means and upper-triangle covariances."""
        batch = tl.program_id(1).to(tl.int64)
        n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        mask = n < N
        g = batch * N + n
        mx = tl.load(means_ptr + g * 3, mask=mask, other=0.0)
        my = tl.load(means_ptr + g * 3 + 1, mask=mask, other=0.0)
        mz = tl.load(means_ptr + g * 3 + 2, mask=mask, other=0.0)
        if USE_COVARS:
            s00 = tl.load(covars_ptr + g * 6, mask=mask, other=0.0)
            s01 = tl.load(covars_ptr + g * 6 + 1, mask=mask, other=0.0)
            s02 = tl.load(covars_ptr + g * 6 + 2, mask=mask, other=0.0)
            s11 = tl.load(covars_ptr + g * 6 + 3, mask=mask, other=0.0)
            s12 = tl.load(covars_ptr + g * 6 + 4, mask=mask, other=0.0)
            s22 = tl.load(covars_ptr + g * 6 + 5, mask=mask, other=0.0)
        else:
            _, _, _, _, _, r00, r01, r02, r10, r11, r12, r20, r21, r22, sx, sy, sz = _quat_scale(
                quats_ptr, scales_ptr, g, mask)
            # M = Rq diag(s), Sigma = M M^T
            m00, m01, m02 = r00 * sx, r01 * sy, r02 * sz
            m10, m11, m12 = r10 * sx, r11 * sy, r12 * sz
            m20, m21, m22 = r20 * sx, r21 * sy, r22 * sz
            s00 = m00 * m00 + m01 * m01 + m02 * m02
            s01 = m00 * m10 + m01 * m11 + m02 * m12
            s02 = m00 * m20 + m01 * m21 + m02 * m22
            s11 = m10 * m10 + m11 * m11 + m12 * m12
            s12 = m10 * m20 + m11 * m21 + m12 * m22
            s22 = m20 * m20 + m21 * m21 + m22 * m22
        return batch, n, mask, g, mx, my, mz, s00, s01, s02, s11, s12, s22

    @triton.jit
    def _camera(viewmats_ptr, Ks_ptr, cam):
        """Rotation (row-major), translation and fx, fy, cx, cy of camera ``cam`` (scalars)."""
        v = viewmats_ptr + cam * 16
        k = Ks_ptr + cam * 9
        return (
            tl.load(v), tl.load(v + 1), tl.load(v + 2), tl.load(v + 4), tl.load(v + 5), tl.load(v + 6),
            tl.load(v + 8), tl.load(v + 9), tl.load(v + 10), tl.load(v + 3), tl.load(v + 7), tl.load(v + 11),
            tl.load(k), tl.load(k + 4), tl.load(k + 2), tl.load(k + 5),
        )

    @triton.jit
    def _to_camera(mx, my, mz, s00, s01, s02, s11, s12, s22, r00, r01, r02, r10, r11, r12, r20, r21, r22,
                   t0, t1, t2):
        """Camera-space mean (x, y, z) and the upper triangle of Sigma_c = R Sigma R^T."""
        t00, t01, t02, t10, t11, t12, t20, t21, t22 = _mul_sym(
            r00, r01, r02, r10, r11, r12, r20, r21, r22, s00, s01, s02, s11, s12, s22)
        c00, c01, c02, c11, c12, c22 = _mul_transpose_sym(
            t00, t01, t02, t10, t11, t12, t20, t21, t22, r00, r01, r02, r10, r11, r12, r20, r21, r22)
        x = r00 * mx + r01 * my + r02 * mz + t0
        y = r10 * mx + r11 * my + r12 * mz + t1
        z = r20 * mx + r21 * my + r22 * mz + t2
        return x, y, z, c00, c01, c02, c11, c12, c22

    @triton.jit
    def _perspective(x, y, z, c00, c01, c02, c11, c12, c22, fx, fy, cx, cy, width, height):
        """mean2d, the unblurred 2D covariance (a, b, c) and the Jacobian of the pinhole projection."""
        tan_fovx = 0.5 * width / fx
        tan_fovy = 0.5 * height / fy
        lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
        lim_x_neg = cx / fx + 0.3 * tan_fovx
        lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
        lim_y_neg = cy / fy + 0.3 * tan_fovy
        rz = 1.0 / z
        u = x * rz
        v = y * rz
        u_inside = (u <= lim_x_pos) & (u >= -lim_x_neg)
        v_inside = (v <= lim_y_pos) & (v >= -lim_y_neg)
        u_clamped = tl.minimum(tl.maximum(u, -lim_x_neg), lim_x_pos)
        v_clamped = tl.minimum(tl.maximum(v, -lim_y_neg), lim_y_pos)
        j00 = fx * rz
        j02 = -fx * u_clamped * rz
        j11 = fy * rz
        j12 = -fy * v_clamped * rz
        a = j00 * j00 * c00 + 2.0 * j00 * j02 * c02 + j02 * j02 * c22
        b = j00 * j11 * c01 + j00 * j12 * c02 + j02 * j11 * c12 + j02 * j12 * c22
        c = j11 * j11 * c11 + 2.0 * j11 * j12 * c12 + j12 * j12 * c22
        return fx * u + cx, fy * v + cy, a, b, c, j00, j02, j11, j12, u_clamped, v_clamped, u_inside, v_inside

    @triton.jit
    def _projection_fwd_kernel(
        means_ptr, covars_ptr, quats_ptr, scales_ptr, opacities_ptr, viewmats_ptr, Ks_ptr,
        radii_ptr, means2d_ptr, depths_ptr, conics_ptr, compensations_ptr,
        C, N, width, height, eps2d, near_plane, far_plane, radius_clip,
        USE_COVARS: tl.constexpr, HAS_OPACITIES: tl.constexpr, CALC_COMPENSATIONS: tl.constexpr,
        BLOCK_N: tl.constexpr,
    ):
        batch, n, in_range, g, mx, my, mz, s00, s01, s02, s11, s12, s22 = _gaussians(
            means_ptr, covars_ptr, quats_ptr, scales_ptr, N, USE_COVARS, BLOCK_N)
        if HAS_OPACITIES:
            opacity = tl.load(opacities_ptr + g, mask=in_range, other=0.0)
        # a while loop: the Triton 3.6 interpreter cannot take range() of a runtime int (numpy >= 2.4)
        cam_in_batch = 0
        while cam_in_batch < C:
            cam = batch * C + cam_in_batch
            cam_in_batch += 1
            r00, r01, r02, r10, r11, r12, r20, r21, r22, t0, t1, t2, fx, fy, cx, cy = _camera(
                viewmats_ptr, Ks_ptr, cam)
            x, y, z, c00, c01, c02, c11, c12, c22 = _to_camera(
                mx, my, mz, s00, s01, s02, s11, s12, s22, r00, r01, r02, r10, r11, r12, r20, r21, r22, t0, t1, t2)
            in_depth = (z >= near_plane) & (z <= far_plane)
            z = tl.where(in_depth, z, 1.0)
            px, py, a, b, c, _, _, _, _, _, _, _, _ = _perspective(
                x, y, z, c00, c01, c02, c11, c12, c22, fx, fy, cx, cy, width, height)
            det_orig = a * c - b * b
            a = a + eps2d
            c = c + eps2d
            det = a * c - b * b
            invertible = det > 0
            det = tl.where(invertible, det, 1.0)
            ratio = det_orig / det
            compensation = tl.where(ratio > 0, tl.sqrt(tl.maximum(ratio, 0.0)), 0.0)
            visible = in_range & in_depth & invertible
            extent = _RADIUS_EXTENT
            if HAS_OPACITIES:
                alpha = opacity
                if CALC_COMPENSATIONS:
                    alpha = alpha * compensation
                visible = visible & (alpha >= _ALPHA_THRESHOLD)
                alpha = tl.maximum(alpha, _ALPHA_THRESHOLD)
                extent = tl.minimum(extent, tl.sqrt(2.0 * tl.log(alpha / _ALPHA_THRESHOLD)))
            rx = tl.ceil(extent * tl.sqrt_rn(a))
            ry = tl.ceil(extent * tl.sqrt_rn(c))
            # comparisons with a NaN radius are false: a negative-definite covariance is culled
            visible = visible & ((rx > radius_clip) | (ry > radius_clip))
            visible = visible & (px + rx > 0) & (px - rx < width) & (py + ry > 0) & (py - ry < height)
            out = cam * N + n
            tl.store(radii_ptr + out * 2, tl.where(visible, rx, 0.0).to(tl.int32), mask=in_range)
            tl.store(radii_ptr + out * 2 + 1, tl.where(visible, ry, 0.0).to(tl.int32), mask=in_range)
            tl.store(means2d_ptr + out * 2, tl.where(visible, px, 0.0), mask=in_range)
            tl.store(means2d_ptr + out * 2 + 1, tl.where(visible, py, 0.0), mask=in_range)
            tl.store(depths_ptr + out, tl.where(visible, z, 0.0), mask=in_range)
            tl.store(conics_ptr + out * 3, tl.where(visible, c / det, 0.0), mask=in_range)
            tl.store(conics_ptr + out * 3 + 1, tl.where(visible, -b / det, 0.0), mask=in_range)
            tl.store(conics_ptr + out * 3 + 2, tl.where(visible, a / det, 0.0), mask=in_range)
            if CALC_COMPENSATIONS:
                tl.store(compensations_ptr + out, tl.where(visible, compensation, 0.0), mask=in_range)

    @triton.jit
    def _projection_bwd_kernel(
        means_ptr, covars_ptr, quats_ptr, scales_ptr, viewmats_ptr, Ks_ptr, radii_ptr,
        v_means2d_ptr, v_depths_ptr, v_conics_ptr, v_compensations_ptr,
        v_means_ptr, v_covars_ptr, v_quats_ptr, v_scales_ptr, v_viewmats_ptr,
        C, N, width, height, eps2d,
        USE_COVARS: tl.constexpr, HAS_V_DEPTHS: tl.constexpr, HAS_V_COMPENSATIONS: tl.constexpr,
        VIEWMATS_GRAD: tl.constexpr, BLOCK_N: tl.constexpr,
    ):
        batch, n, in_range, g, mx, my, mz, s00, s01, s02, s11, s12, s22 = _gaussians(
            means_ptr, covars_ptr, quats_ptr, scales_ptr, N, USE_COVARS, BLOCK_N)
        zero = tl.zeros([BLOCK_N], dtype=tl.float32)
        v_mx, v_my, v_mz = zero, zero, zero
        v_s00, v_s01, v_s02, v_s11, v_s12, v_s22 = zero, zero, zero, zero, zero, zero
        cam_in_batch = 0
        while cam_in_batch < C:  # not range(C): see the forward kernel
            cam = batch * C + cam_in_batch
            cam_in_batch += 1
            r00, r01, r02, r10, r11, r12, r20, r21, r22, t0, t1, t2, fx, fy, cx, cy = _camera(
                viewmats_ptr, Ks_ptr, cam)
            out = cam * N + n
            visible = (tl.load(radii_ptr + out * 2, mask=in_range, other=0) > 0) & (
                tl.load(radii_ptr + out * 2 + 1, mask=in_range, other=0) > 0)
            x, y, z, c00, c01, c02, c11, c12, c22 = _to_camera(
                mx, my, mz, s00, s01, s02, s11, s12, s22, r00, r01, r02, r10, r11, r12, r20, r21, r22, t0, t1, t2)
            z = tl.where(visible, z, 1.0)
            _, _, a, b, c, j00, j02, j11, j12, u, v, u_inside, v_inside = _perspective(
                x, y, z, c00, c01, c02, c11, c12, c22, fx, fy, cx, cy, width, height)
            det_orig = a * c - b * b
            det = (a + eps2d) * (c + eps2d) - b * b
            det = tl.where(visible, det, 1.0)

            # conic = S^-1 = adj(S) / det with G = [[g0, g1/2], [g1/2, g2]]: dL/dS = -P G P, evaluated
            # as (adj(G) - t adj(S)) / det, t = tr(G adj(S)) / det (the derivative of the forward's
            # c / det, -b / det, a / det). Not -P G P from the rounded conic: for an elongated
            # Gaussian P's rounding is amplified by cond(S) in W S (the rotation gradient), which cost
            # quaternion gradients ~1e-3 relative; adj(S) holds the exact a, b, c, so here W S =
            # (adj(G) S - t det I) / det up to scalar roundings. W = [[wa, wb], [wb, wc]].
            g0 = tl.load(v_conics_ptr + out * 3, mask=visible, other=0.0)
            g1 = tl.load(v_conics_ptr + out * 3 + 1, mask=visible, other=0.0)
            g2 = tl.load(v_conics_ptr + out * 3 + 2, mask=visible, other=0.0)
            t_adj = (g0 * (c + eps2d) - g1 * b + g2 * (a + eps2d)) / det
            wa = (g2 - t_adj * (c + eps2d)) / det
            wb = (t_adj * b - 0.5 * g1) / det
            wc = (g0 - t_adj * (a + eps2d)) / det
            if HAS_V_COMPENSATIONS:
                # compensation^2 = det_orig / det with det = det_orig + eps2d (a + c + eps2d); its
                # derivatives written as sums of like-signed terms (gsplat's (1 - comp^2) S^-1 -
                # eps2d / det form cancels catastrophically in float32 for sub-pixel Gaussians)
                ratio = det_orig / det
                positive = visible & (ratio > 0)
                v_comp = tl.load(v_compensations_ptr + out, mask=positive, other=0.0)
                scale = 0.5 * v_comp / tl.sqrt(tl.where(positive, ratio, 1.0)) * eps2d / (det * det)
                wa += scale * (c * (c + eps2d) + b * b)
                wb -= scale * b * (a + c + eps2d)
                wc += scale * (a * (a + eps2d) + b * b)

            # S = J Sigma_c J^T: dL/dSigma_c = J^T W J, dL/dJ = 2 W J Sigma_c
            wj00 = wa * j00
            wj01 = wb * j11
            wj02 = wa * j02 + wb * j12
            wj10 = wb * j00
            wj11 = wc * j11
            wj12 = wb * j02 + wc * j12
            vc00 = j00 * wj00
            vc01 = j00 * wj01
            vc02 = j00 * wj02
            vc11 = j11 * wj11
            vc12 = j11 * wj12
            vc22 = j02 * wj02 + j12 * wj12
            v_j00 = 2.0 * (wj00 * c00 + wj01 * c01 + wj02 * c02)
            v_j02 = 2.0 * (wj00 * c02 + wj01 * c12 + wj02 * c22)
            v_j11 = 2.0 * (wj10 * c01 + wj11 * c11 + wj12 * c12)
            v_j12 = 2.0 * (wj10 * c02 + wj11 * c12 + wj12 * c22)

            # camera-space mean: through mean2d, depth and J (x/z clamped: no x gradient through J)
            v_px = tl.load(v_means2d_ptr + out * 2, mask=visible, other=0.0)
            v_py = tl.load(v_means2d_ptr + out * 2 + 1, mask=visible, other=0.0)
            rz = 1.0 / z
            rz2 = rz * rz
            v_x = fx * rz * v_px + tl.where(u_inside, -fx * rz2 * v_j02, 0.0)
            v_y = fy * rz * v_py + tl.where(v_inside, -fy * rz2 * v_j12, 0.0)
            v_depth = zero
            if HAS_V_DEPTHS:
                v_depth = tl.load(v_depths_ptr + out, mask=visible, other=0.0)
            v_z = (v_depth
                   - (fx * x * v_px + fy * y * v_py) * rz2
                   - (fx * v_j00 + fy * v_j11) * rz2
                   + fx * u * rz2 * v_j02 * tl.where(u_inside, 2.0, 1.0)
                   + fy * v * rz2 * v_j12 * tl.where(v_inside, 2.0, 1.0))
            v_x = tl.where(visible, v_x, 0.0)
            v_y = tl.where(visible, v_y, 0.0)
            v_z = tl.where(visible, v_z, 0.0)

            # world: m_c = R m + t, Sigma_c = R Sigma R^T
            v_mx += r00 * v_x + r10 * v_y + r20 * v_z
            v_my += r01 * v_x + r11 * v_y + r21 * v_z
            v_mz += r02 * v_x + r12 * v_y + r22 * v_z
            u00, u01, u02, u10, u11, u12, u20, u21, u22 = _mul_sym(
                r00, r10, r20, r01, r11, r21, r02, r12, r22, vc00, vc01, vc02, vc11, vc12, vc22)
            d00, d01, d02, d11, d12, d22 = _mul_transpose_sym(
                u00, u01, u02, u10, u11, u12, u20, u21, u22, r00, r10, r20, r01, r11, r21, r02, r12, r22)
            v_s00 += tl.where(visible, d00, 0.0)
            v_s01 += tl.where(visible, d01, 0.0)
            v_s02 += tl.where(visible, d02, 0.0)
            v_s11 += tl.where(visible, d11, 0.0)
            v_s12 += tl.where(visible, d12, 0.0)
            v_s22 += tl.where(visible, d22, 0.0)

            if VIEWMATS_GRAD:
                # dL/dR = v_m_c m^T + 2 (dL/dSigma_c) R Sigma, dL/dt = v_m_c; rows of [R | t]
                partial = v_viewmats_ptr + (cam * tl.num_programs(0) + tl.program_id(0)) * 12
                t00, t01, t02, t10, t11, t12, t20, t21, t22 = _mul_sym(
                    r00, r01, r02, r10, r11, r12, r20, r21, r22, s00, s01, s02, s11, s12, s22)
                for row in tl.static_range(3):
                    if row == 0:
                        v_row, vc_0, vc_1, vc_2 = v_x, vc00, vc01, vc02
                    elif row == 1:
                        v_row, vc_0, vc_1, vc_2 = v_y, vc01, vc11, vc12
                    else:
                        v_row, vc_0, vc_1, vc_2 = v_z, vc02, vc12, vc22
                    d_0 = v_row * mx + 2.0 * (vc_0 * t00 + vc_1 * t10 + vc_2 * t20)
                    d_1 = v_row * my + 2.0 * (vc_0 * t01 + vc_1 * t11 + vc_2 * t21)
                    d_2 = v_row * mz + 2.0 * (vc_0 * t02 + vc_1 * t12 + vc_2 * t22)
                    tl.store(partial + row * 4, tl.sum(tl.where(visible, d_0, 0.0)))
                    tl.store(partial + row * 4 + 1, tl.sum(tl.where(visible, d_1, 0.0)))
                    tl.store(partial + row * 4 + 2, tl.sum(tl.where(visible, d_2, 0.0)))
                    tl.store(partial + row * 4 + 3, tl.sum(v_row))

        tl.store(v_means_ptr + g * 3, v_mx, mask=in_range)
        tl.store(v_means_ptr + g * 3 + 1, v_my, mask=in_range)
        tl.store(v_means_ptr + g * 3 + 2, v_mz, mask=in_range)
        if USE_COVARS:
            # one input entry feeds both off-diagonal positions
            tl.store(v_covars_ptr + g * 6, v_s00, mask=in_range)
            tl.store(v_covars_ptr + g * 6 + 1, 2.0 * v_s01, mask=in_range)
            tl.store(v_covars_ptr + g * 6 + 2, 2.0 * v_s02, mask=in_range)
            tl.store(v_covars_ptr + g * 6 + 3, v_s11, mask=in_range)
            tl.store(v_covars_ptr + g * 6 + 4, 2.0 * v_s12, mask=in_range)
            tl.store(v_covars_ptr + g * 6 + 5, v_s22, mask=in_range)
        else:
            # Sigma = M M^T, M = Rq diag(s): dL/dM = 2 (dL/dSigma) M
            w, qx, qy, qz, inv_norm, q00, q01, q02, q10, q11, q12, q20, q21, q22, sx, sy, sz = _quat_scale(
                quats_ptr, scales_ptr, g, in_range)
            n00, n01, n02, n10, n11, n12, n20, n21, n22 = _mul_sym(
                q00 * sx, q10 * sx, q20 * sx, q01 * sy, q11 * sy, q21 * sy, q02 * sz, q12 * sz, q22 * sz,
                v_s00, v_s01, v_s02, v_s11, v_s12, v_s22)  # rows of M^T dL/dSigma = columns of dL/dM / 2
            tl.store(v_scales_ptr + g * 3, 2.0 * (q00 * n00 + q10 * n01 + q20 * n02), mask=in_range)
            tl.store(v_scales_ptr + g * 3 + 1, 2.0 * (q01 * n10 + q11 * n11 + q21 * n12), mask=in_range)
            tl.store(v_scales_ptr + g * 3 + 2, 2.0 * (q02 * n20 + q12 * n21 + q22 * n22), mask=in_range)
            # dL/dRq = dL/dM diag(s), entry (i, j) = 2 s_j n_ji
            e00, e01, e02 = 2.0 * sx * n00, 2.0 * sy * n10, 2.0 * sz * n20
            e10, e11, e12 = 2.0 * sx * n01, 2.0 * sy * n11, 2.0 * sz * n21
            e20, e21, e22 = 2.0 * sx * n02, 2.0 * sy * n12, 2.0 * sz * n22
            v_w = 2.0 * (qx * (e21 - e12) + qy * (e02 - e20) + qz * (e10 - e01))
            v_qx = 2.0 * (-2.0 * qx * (e11 + e22) + qy * (e01 + e10) + qz * (e02 + e20) + w * (e21 - e12))
            v_qy = 2.0 * (-2.0 * qy * (e00 + e22) + qx * (e01 + e10) + qz * (e12 + e21) + w * (e02 - e20))
            v_qz = 2.0 * (-2.0 * qz * (e00 + e11) + qx * (e02 + e20) + qy * (e12 + e21) + w * (e10 - e01))
            # through the normalisation q / |q|
            radial = v_w * w + v_qx * qx + v_qy * qy + v_qz * qz
            tl.store(v_quats_ptr + g * 4, (v_w - radial * w) * inv_norm, mask=in_range)
            tl.store(v_quats_ptr + g * 4 + 1, (v_qx - radial * qx) * inv_norm, mask=in_range)
            tl.store(v_quats_ptr + g * 4 + 2, (v_qy - radial * qy) * inv_norm, mask=in_range)
            tl.store(v_quats_ptr + g * 4 + 3, (v_qz - radial * qz) * inv_norm, mask=in_range)


class _FullyFusedProjection(torch.autograd.Function):
    """Unpacked projection on float32 contiguous tensors (B = the product of the batch dims)."""

    @staticmethod
    def forward(
        ctx,
        means: Tensor,  # [..., N, 3]
        covars: Optional[Tensor],  # [..., N, 6] or None
        quats: Optional[Tensor],  # [..., N, 4] or None (when covars is given)
        scales: Optional[Tensor],  # [..., N, 3] or None (when covars is given)
        viewmats: Tensor,  # [..., C, 4, 4]
        Ks: Tensor,  # [..., C, 3, 3]
        opacities: Optional[Tensor],  # [..., N] or None
        width: int,
        height: int,
        eps2d: float,
        near_plane: float,
        far_plane: float,
        radius_clip: float,
        calc_compensations: bool,
    ):
        batch, n, n_cameras = means.shape[:-2], means.shape[-2], viewmats.shape[-3]

        def per_pair(*tail: int, dtype: torch.dtype = torch.float32) -> Tensor:  # [..., C, N, *tail]
            return torch.empty((*batch, n_cameras, n, *tail), device=means.device, dtype=dtype)

        radii, means2d, depths, conics = per_pair(2, dtype=torch.int32), per_pair(2), per_pair(), per_pair(3)
        compensations = per_pair() if calc_compensations else None
        if radii.numel() > 0:
            launch_kernel(_projection_fwd_kernel, (cdiv(n, BLOCK_N), math.prod(batch)),
                means, covars if covars is not None else means, quats if quats is not None else means,
                scales if scales is not None else means, opacities if opacities is not None else means,
                viewmats, Ks, radii, means2d, depths, conics,
                compensations if calc_compensations else depths,
                n_cameras, n, width, height, eps2d, near_plane, far_plane, radius_clip,
                USE_COVARS=covars is not None, HAS_OPACITIES=opacities is not None,
                CALC_COMPENSATIONS=calc_compensations, BLOCK_N=BLOCK_N,
            )
        ctx.save_for_backward(means, covars, quats, scales, viewmats, Ks, radii)
        ctx.mark_non_differentiable(radii)
        # an output the loss does not use gets no gradient tensor (None), not one of zeros to read
        ctx.set_materialize_grads(False)
        ctx.image_size = (width, height)
        ctx.eps2d = eps2d
        return radii, means2d, depths, conics, compensations

    @staticmethod
    def backward(ctx, v_radii, v_means2d, v_depths, v_conics, v_compensations):
        means, covars, quats, scales, viewmats, Ks, radii = ctx.saved_tensors
        batch, n, n_cameras = means.shape[:-2], means.shape[-2], viewmats.shape[-3]
        use_covars = covars is not None
        viewmats_grad = ctx.needs_input_grad[4]
        n_blocks = cdiv(n, BLOCK_N)
        launch = radii.numel() > 0
        like = torch.empty_like if launch else torch.zeros_like  # the kernel writes every entry
        v_means = like(means)
        v_covars = like(covars) if use_covars else None
        v_quats = None if use_covars else like(quats)
        v_scales = None if use_covars else like(scales)
        partials = (torch.empty((*batch, n_cameras, n_blocks, 3, 4), device=means.device, dtype=torch.float32)
                    if viewmats_grad else v_means)  # (bound to a pointer the kernel does not use)
        if launch:
            # means2d and conics feed every later stage, so their gradients are there but for a loss of
            # depths or radii alone
            v_means2d = v_means2d.contiguous() if v_means2d is not None else means.new_zeros((*batch, n_cameras, n, 2))
            v_conics = v_conics.contiguous() if v_conics is not None else means.new_zeros((*batch, n_cameras, n, 3))
            launch_kernel(_projection_bwd_kernel, (n_blocks, math.prod(batch)),
                means, covars if use_covars else means, quats if quats is not None else means,
                scales if scales is not None else means, viewmats, Ks, radii,
                v_means2d, v_depths.contiguous() if v_depths is not None else v_means2d, v_conics,
                v_compensations.contiguous() if v_compensations is not None else v_means2d,
                v_means, v_covars if use_covars else v_means, v_quats if not use_covars else v_means,
                v_scales if not use_covars else v_means, partials,
                n_cameras, n, *ctx.image_size, ctx.eps2d,
                USE_COVARS=use_covars, HAS_V_DEPTHS=v_depths is not None,
                HAS_V_COMPENSATIONS=v_compensations is not None, VIEWMATS_GRAD=viewmats_grad, BLOCK_N=BLOCK_N,
            )
        v_viewmats = None
        if viewmats_grad:
            v_viewmats = torch.zeros_like(viewmats)
            v_viewmats[..., :3, :] = partials.sum(dim=-3)
        return v_means, v_covars, v_quats, v_scales, v_viewmats, *([None] * 9)


def _check_inputs(means, covars, quats, scales, viewmats, Ks, opacities, width, height, camera_model, sparse_grad):
    if camera_model != "pinhole":
        raise NotImplementedError(f"camera_model={camera_model!r}: only 'pinhole' is implemented")
    if sparse_grad:
        raise NotImplementedError("sparse_grad=True: sparse gradients are not implemented")
    if not isinstance(means, Tensor) or means.dim() < 2:
        shape = list(means.shape) if isinstance(means, Tensor) else type(means).__name__
        raise ValueError(f"means must have shape [..., N, 3], got {shape}")
    batch, n = list(means.shape[:-2]), means.shape[-2]
    shapes.check_tensor("means", means, [*batch, n, 3], dtypes=(torch.float32, torch.float64))
    same = dict(dtypes=(means.dtype,), device=means.device)
    shapes.check_tensor("viewmats", viewmats, [*batch, None, 4, 4], **same)
    n_cameras = viewmats.shape[-3]
    shapes.check_tensor("Ks", Ks, [*batch, n_cameras, 3, 3], **same)
    if covars is not None:
        shapes.check_tensor("covars", covars, [*batch, n, 6], **same)
    elif quats is None or scales is None:
        raise ValueError("pass covars, or both quats and scales")
    else:
        shapes.check_tensor("quats", quats, [*batch, n, 4], **same)
        shapes.check_tensor("scales", scales, [*batch, n, 3], **same)
    if opacities is not None:
        shapes.check_tensor("opacities", opacities, [*batch, n], **same)
    shapes.check_image_size(width, height)


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
    *,
    backend: Optional[str] = None,
):
    """Project Gaussians into C pinhole cameras: a drop-in for gsplat 1.5.3's
    ``fully_fused_projection`` (same arguments, same return convention, same CUDA numerics).

    Unpacked: ``(radii int32 [..., C, N, 2], means2d [..., C, N, 2], depths [..., C, N],
    conics [..., C, N, 3], compensations [..., C, N] or None)``; culled pairs have radii 0 and zeros
    elsewhere. Packed: ``(batch_ids, camera_ids, gaussian_ids, radii, means2d, depths, conics,
    compensations)`` over the nnz visible pairs, int32 ids ordered by (batch, camera, Gaussian).
    ``covars`` wins over ``quats`` / ``scales`` when both are given (as in gsplat). Gradients reach
    means, covars or quats and scales, and viewmats; ``backend`` is "auto" | "triton" | "torch".
    """
    _check_inputs(means, covars, quats, scales, viewmats, Ks, opacities, width, height, camera_model, sparse_grad)
    if covars is not None:
        quats = scales = None
    return project_checked(means, covars, quats, scales, viewmats, Ks, width, height, eps2d, near_plane,
                           far_plane, radius_clip, packed, calc_compensations, opacities,
                           resolve_backend(backend, means, covars, quats, scales, viewmats, Ks, opacities))


def project_checked(means, covars, quats, scales, viewmats, Ks, width, height, eps2d, near_plane, far_plane,
                    radius_clip, packed, calc_compensations, opacities, backend: str):
    """fully_fused_projection on checked inputs (covars, or quats and scales, not both) with the backend
    resolved: what rasterization() calls after its own checks."""
    if backend == "torch":
        return reference.fully_fused_projection(
            means, covars, quats, scales, viewmats, Ks, width, height, eps2d, near_plane, far_plane,
            radius_clip, packed, False, calc_compensations, "pinhole", opacities)
    radii, *floats = _FullyFusedProjection.apply(
        float32_contiguous(means), None if covars is None else float32_contiguous(covars),
        None if quats is None else float32_contiguous(quats), None if scales is None else float32_contiguous(scales),
        float32_contiguous(viewmats), float32_contiguous(Ks),
        None if opacities is None else float32_contiguous(opacities),
        width, height, float(eps2d), float(near_plane), float(far_plane), float(radius_clip),
        bool(calc_compensations),
    )
    dtype = means.dtype
    outputs = (radii, *(t if t is None or t.dtype == dtype else t.to(dtype) for t in floats))
    return reference.pack_projection(*outputs) if packed else outputs
