"""The embedded avatar's per-Gaussian deformation: motion basis x motion code -> Gaussians, fused.

Math (per frame b with expression code c_b [K] and head pose (p_b, t_b) = (unit quaternion wxyz with
w >= 0, translation); per Gaussian i with anchor x_i, rotation quat_i, opacity o_i, motion basis
B_i [K, 3], opacity basis A_i [K] and rigid weight w_i; pivot P shared):
    y   = x_i + sum_k c_bk B_ik                       expression: the blendshape-like offsets
    u   = (1 - w_i) [1, 0, 0, 0] + w_i p_b,  q = u / |u|     rigid head motion, faded on the neck
    mean    = R(q) (y - P) + P + w_i t_b
    quat    = q * quat_i                              (Hamilton product; |quat| = |quat_i|)
    opacity = clamp(o_i + sum_k c_bk A_ik, 0, 1)      the mouth interior appears as the jaw opens
Scales and colours do not change, so they are not copied. The PyTorch twin is
``reference.deform_gaussians``.

Work split: forward, one program per (block of BLOCK_N Gaussians, frame); the basis is read as
[BLOCK_N, KP] tiles (K padded to a power of two, masked) and reduced against the code in registers.
Backward, one program per block of Gaussians looping over the B frames: it recomputes the forward in
registers, accumulates the per-Gaussian gradients over frames in registers, and writes the per-frame
reductions over its block (v_codes, v_poses, v_pivot) to its own row of a [blocks, B, .] buffer that
torch sums (deterministic: no atomics).

Limits: float32 or float64 (computed in the input dtype), K <= 64. Gradients flow to every input.
The per-frame work is a few dozen flops per Gaussian over ~(4 K + 11) values read: memory bound.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import shapes
from ..backend import resolve_backend
from ._triton import cdiv, launch_kernel, next_power_of_2, tl, triton
from . import reference

KERNEL_DTYPES = (torch.float32, torch.float64)
MAX_COMPONENTS = 64
BLOCK_N = 128

if triton is not None:

    @triton.jit
    def _rotation(qw, qx, qy, qz):
        r00 = 1 - 2 * (qy * qy + qz * qz)
        r01 = 2 * (qx * qy - qw * qz)
        r02 = 2 * (qx * qz + qw * qy)
        r10 = 2 * (qx * qy + qw * qz)
        r11 = 1 - 2 * (qx * qx + qz * qz)
        r12 = 2 * (qy * qz - qw * qx)
        r20 = 2 * (qx * qz - qw * qy)
        r21 = 2 * (qy * qz + qw * qx)
        r22 = 1 - 2 * (qx * qx + qy * qy)
        return r00, r01, r02, r10, r11, r12, r20, r21, r22

    @triton.jit
    def _load_block(
        means, quats, opacities, basis, opacity_basis, rigid, pivot, block, N,
        K: tl.constexpr, KP: tl.constexpr, BLOCK_N: tl.constexpr,
    ):  # fmt: skip
        """Block ``block``'s Gaussians (masked lanes read as an identity Gaussian) and the pivot."""
        offs = block * BLOCK_N + tl.arange(0, BLOCK_N)
        mask = offs < N
        ks = tl.arange(0, KP)
        kmask = ks < K
        x0 = tl.load(means + offs * 3 + 0, mask=mask, other=0.0)
        x1 = tl.load(means + offs * 3 + 1, mask=mask, other=0.0)
        x2 = tl.load(means + offs * 3 + 2, mask=mask, other=0.0)
        p0 = tl.load(quats + offs * 4 + 0, mask=mask, other=1.0)
        p1 = tl.load(quats + offs * 4 + 1, mask=mask, other=0.0)
        p2 = tl.load(quats + offs * 4 + 2, mask=mask, other=0.0)
        p3 = tl.load(quats + offs * 4 + 3, mask=mask, other=0.0)
        o = tl.load(opacities + offs, mask=mask, other=0.0)
        w = tl.load(rigid + offs, mask=mask, other=0.0)
        tile = mask[:, None] & kmask[None, :]
        b_index = (offs[:, None] * K + ks[None, :]) * 3
        b0 = tl.load(basis + b_index + 0, mask=tile, other=0.0)  # [BLOCK_N, KP]
        b1 = tl.load(basis + b_index + 1, mask=tile, other=0.0)
        b2 = tl.load(basis + b_index + 2, mask=tile, other=0.0)
        a = tl.load(opacity_basis + offs[:, None] * K + ks[None, :], mask=tile, other=0.0)
        c0 = tl.load(pivot + 0)
        c1 = tl.load(pivot + 1)
        c2 = tl.load(pivot + 2)
        return offs, mask, ks, kmask, x0, x1, x2, p0, p1, p2, p3, o, w, b0, b1, b2, a, c0, c1, c2

    @triton.jit
    def _frame(x0, x1, x2, b0, b1, b2, w, codes, poses, c0, c1, c2, b, ks, kmask, K: tl.constexpr):
        """Frame b's code row c [1, KP], the offsets d = y - pivot, the pose (p_b, |u|, q) and t_b."""
        c = tl.load(codes + b * K + ks, mask=kmask, other=0.0)[None, :]
        d0 = x0 + tl.sum(b0 * c, axis=1) - c0
        d1 = x1 + tl.sum(b1 * c, axis=1) - c1
        d2 = x2 + tl.sum(b2 * c, axis=1) - c2
        pw, px, py, pz, norm, qw, qx, qy, qz = _frame_rotation(poses, b, w)
        t0 = tl.load(poses + b * 7 + 4)
        t1 = tl.load(poses + b * 7 + 5)
        t2 = tl.load(poses + b * 7 + 6)
        return c, d0, d1, d2, pw, px, py, pz, norm, qw, qx, qy, qz, t0, t1, t2

    @triton.jit
    def _frame_rotation(poses, b, w):
        """The per-Gaussian rotation q = normalise((1 - w) e + w p_b): (p_b, |u|, q)."""
        pw = tl.load(poses + b * 7 + 0)
        px = tl.load(poses + b * 7 + 1)
        py = tl.load(poses + b * 7 + 2)
        pz = tl.load(poses + b * 7 + 3)
        u0 = 1 - w + w * pw
        u1 = w * px
        u2 = w * py
        u3 = w * pz
        norm = tl.sqrt(u0 * u0 + u1 * u1 + u2 * u2 + u3 * u3)
        return pw, px, py, pz, norm, u0 / norm, u1 / norm, u2 / norm, u3 / norm

    @triton.jit
    def _deform_forward_kernel(
        means, quats, opacities, basis, opacity_basis, rigid, pivot, codes, poses,  # inputs
        out_means, out_quats, out_opacities,  # outputs [B, N, 3], [B, N, 4], [B, N]
        N, K: tl.constexpr, KP: tl.constexpr, BLOCK_N: tl.constexpr,
    ):  # fmt: skip
        b = tl.program_id(1)
        offs, mask, ks, kmask, x0, x1, x2, p0, p1, p2, p3, o, w, b0, b1, b2, a, c0, c1, c2 = _load_block(
            means, quats, opacities, basis, opacity_basis, rigid, pivot, tl.program_id(0), N, K, KP, BLOCK_N
        )
        c, d0, d1, d2, pw, px, py, pz, norm, qw, qx, qy, qz, t0, t1, t2 = _frame(
            x0, x1, x2, b0, b1, b2, w, codes, poses, c0, c1, c2, b, ks, kmask, K
        )
        r00, r01, r02, r10, r11, r12, r20, r21, r22 = _rotation(qw, qx, qy, qz)
        out = out_means + (b * N + offs) * 3
        tl.store(out + 0, r00 * d0 + r01 * d1 + r02 * d2 + c0 + w * t0, mask=mask)
        tl.store(out + 1, r10 * d0 + r11 * d1 + r12 * d2 + c1 + w * t1, mask=mask)
        tl.store(out + 2, r20 * d0 + r21 * d1 + r22 * d2 + c2 + w * t2, mask=mask)
        out = out_quats + (b * N + offs) * 4
        tl.store(out + 0, qw * p0 - qx * p1 - qy * p2 - qz * p3, mask=mask)
        tl.store(out + 1, qw * p1 + qx * p0 + qy * p3 - qz * p2, mask=mask)
        tl.store(out + 2, qw * p2 - qx * p3 + qy * p0 + qz * p1, mask=mask)
        tl.store(out + 3, qw * p3 + qx * p2 - qy * p1 + qz * p0, mask=mask)
        s = o + tl.sum(a * c, axis=1)
        tl.store(out_opacities + b * N + offs, tl.minimum(tl.maximum(s, 0.0), 1.0), mask=mask)

    @triton.jit
    def _deform_backward_kernel(
        means, quats, opacities, basis, opacity_basis, rigid, pivot, codes, poses,  # inputs
        v_out_means, v_out_quats, v_out_opacities,  # [B, N, 3], [B, N, 4], [B, N]
        v_means, v_quats, v_opacities, v_basis, v_opacity_basis, v_rigid,  # per Gaussian
        v_codes_partial, v_poses_partial, v_pivot_partial,  # [blocks, B, KP], [blocks, B, 7], [blocks, B, 3]
        N, B, K: tl.constexpr, KP: tl.constexpr, BLOCK_N: tl.constexpr,
    ):  # fmt: skip
        block = tl.program_id(0)
        offs, mask, ks, kmask, x0, x1, x2, p0, p1, p2, p3, o, w, b0, b1, b2, a, c0, c1, c2 = _load_block(
            means, quats, opacities, basis, opacity_basis, rigid, pivot, block, N, K, KP, BLOCK_N
        )
        zero = x0 * 0
        acc_x0, acc_x1, acc_x2 = zero, zero, zero
        acc_p0, acc_p1, acc_p2, acc_p3 = zero, zero, zero, zero
        acc_o, acc_w = zero, zero
        acc_b0, acc_b1, acc_b2, acc_a = b0 * 0, b0 * 0, b0 * 0, b0 * 0
        for b in range(0, B):
            c, d0, d1, d2, pw, px, py, pz, norm, qw, qx, qy, qz, t0, t1, t2 = _frame(
                x0, x1, x2, b0, b1, b2, w, codes, poses, c0, c1, c2, b, ks, kmask, K
            )
            r00, r01, r02, r10, r11, r12, r20, r21, r22 = _rotation(qw, qx, qy, qz)
            g = v_out_means + (b * N + offs) * 3
            gm0 = tl.load(g + 0, mask=mask, other=0.0)
            gm1 = tl.load(g + 1, mask=mask, other=0.0)
            gm2 = tl.load(g + 2, mask=mask, other=0.0)
            g = v_out_quats + (b * N + offs) * 4
            gq0 = tl.load(g + 0, mask=mask, other=0.0)
            gq1 = tl.load(g + 1, mask=mask, other=0.0)
            gq2 = tl.load(g + 2, mask=mask, other=0.0)
            gq3 = tl.load(g + 3, mask=mask, other=0.0)
            go = tl.load(v_out_opacities + b * N + offs, mask=mask, other=0.0)

            # mean = R (y - P) + P + w t
            vy0 = r00 * gm0 + r10 * gm1 + r20 * gm2
            vy1 = r01 * gm0 + r11 * gm1 + r21 * gm2
            vy2 = r02 * gm0 + r12 * gm1 + r22 * gm2
            acc_x0 += vy0
            acc_x1 += vy1
            acc_x2 += vy2
            acc_b0 += vy0[:, None] * c
            acc_b1 += vy1[:, None] * c
            acc_b2 += vy2[:, None] * c
            v_c = tl.sum(b0 * vy0[:, None] + b1 * vy1[:, None] + b2 * vy2[:, None], axis=0)
            acc_w += t0 * gm0 + t1 * gm1 + t2 * gm2
            # v_R = g_m d^T, through the (unnormalised) rotation formula at the unit q
            g00, g01, g02 = gm0 * d0, gm0 * d1, gm0 * d2
            g10, g11, g12 = gm1 * d0, gm1 * d1, gm1 * d2
            g20, g21, g22 = gm2 * d0, gm2 * d1, gm2 * d2
            vq0 = 2 * (-qz * g01 + qy * g02 + qz * g10 - qx * g12 - qy * g20 + qx * g21)
            vq1 = 2 * (qy * g01 + qz * g02 + qy * g10 - 2 * qx * g11 - qw * g12 + qz * g20 + qw * g21 - 2 * qx * g22)
            vq2 = 2 * (-2 * qy * g00 + qx * g01 + qw * g02 + qx * g10 + qz * g12 - qw * g20 + qz * g21 - 2 * qy * g22)
            vq3 = 2 * (-2 * qz * g00 - qw * g01 + qx * g02 + qw * g10 - 2 * qz * g11 + qy * g12 + qx * g20 + qy * g21)
            # quat = q * quat_i
            vq0 += gq0 * p0 + gq1 * p1 + gq2 * p2 + gq3 * p3
            vq1 += -gq0 * p1 + gq1 * p0 - gq2 * p3 + gq3 * p2
            vq2 += -gq0 * p2 + gq1 * p3 + gq2 * p0 - gq3 * p1
            vq3 += -gq0 * p3 - gq1 * p2 + gq2 * p1 + gq3 * p0
            acc_p0 += gq0 * qw + gq1 * qx + gq2 * qy + gq3 * qz
            acc_p1 += -gq0 * qx + gq1 * qw + gq2 * qz - gq3 * qy
            acc_p2 += -gq0 * qy - gq1 * qz + gq2 * qw + gq3 * qx
            acc_p3 += -gq0 * qz + gq1 * qy - gq2 * qx + gq3 * qw
            # q = u / |u|, u = (1 - w) e + w p_b
            along = qw * vq0 + qx * vq1 + qy * vq2 + qz * vq3
            vu0 = (vq0 - qw * along) / norm
            vu1 = (vq1 - qx * along) / norm
            vu2 = (vq2 - qy * along) / norm
            vu3 = (vq3 - qz * along) / norm
            acc_w += (pw - 1) * vu0 + px * vu1 + py * vu2 + pz * vu3
            # opacity = clamp(o + A c, 0, 1): the gradient passes on [0, 1] inclusive, as torch.clamp's
            s = o + tl.sum(a * c, axis=1)
            vs = tl.where((s >= 0) & (s <= 1), go, 0.0)
            acc_o += vs
            acc_a += vs[:, None] * c
            v_c += tl.sum(a * vs[:, None], axis=0)

            row = block * B + b
            tl.store(v_codes_partial + row * KP + ks, v_c)
            pose_row = v_poses_partial + row * 7
            tl.store(pose_row + 0, tl.sum(w * vu0, axis=0))
            tl.store(pose_row + 1, tl.sum(w * vu1, axis=0))
            tl.store(pose_row + 2, tl.sum(w * vu2, axis=0))
            tl.store(pose_row + 3, tl.sum(w * vu3, axis=0))
            tl.store(pose_row + 4, tl.sum(w * gm0, axis=0))
            tl.store(pose_row + 5, tl.sum(w * gm1, axis=0))
            tl.store(pose_row + 6, tl.sum(w * gm2, axis=0))
            pivot_row = v_pivot_partial + row * 3
            tl.store(pivot_row + 0, tl.sum(gm0 - vy0, axis=0))
            tl.store(pivot_row + 1, tl.sum(gm1 - vy1, axis=0))
            tl.store(pivot_row + 2, tl.sum(gm2 - vy2, axis=0))

        tl.store(v_means + offs * 3 + 0, acc_x0, mask=mask)
        tl.store(v_means + offs * 3 + 1, acc_x1, mask=mask)
        tl.store(v_means + offs * 3 + 2, acc_x2, mask=mask)
        tl.store(v_quats + offs * 4 + 0, acc_p0, mask=mask)
        tl.store(v_quats + offs * 4 + 1, acc_p1, mask=mask)
        tl.store(v_quats + offs * 4 + 2, acc_p2, mask=mask)
        tl.store(v_quats + offs * 4 + 3, acc_p3, mask=mask)
        tl.store(v_opacities + offs, acc_o, mask=mask)
        tl.store(v_rigid + offs, acc_w, mask=mask)
        tile = mask[:, None] & kmask[None, :]
        b_index = (offs[:, None] * K + ks[None, :]) * 3
        tl.store(v_basis + b_index + 0, acc_b0, mask=tile)
        tl.store(v_basis + b_index + 1, acc_b1, mask=tile)
        tl.store(v_basis + b_index + 2, acc_b2, mask=tile)
        tl.store(v_opacity_basis + offs[:, None] * K + ks[None, :], acc_a, mask=tile)


def op_forward(means, quats, opacities, basis, opacity_basis, rigid, pivot, codes, poses):
    """Launch the forward kernel on contiguous inputs: (means [B,N,3], quats [B,N,4], opacities [B,N])."""
    n, k = basis.shape[:2]
    b = codes.shape[0]
    new = dict(device=means.device, dtype=means.dtype)
    outputs = (torch.empty(b, n, 3, **new), torch.empty(b, n, 4, **new), torch.empty(b, n, **new))
    if n > 0 and b > 0:
        grid = (cdiv(n, BLOCK_N), b)
        launch_kernel(_deform_forward_kernel, grid,
            means, quats, opacities, basis, opacity_basis, rigid, pivot, codes, poses, *outputs,
            n, K=k, KP=next_power_of_2(max(k, 2)), BLOCK_N=BLOCK_N,
        )  # fmt: skip
    return outputs


def op_backward(means, quats, opacities, basis, opacity_basis, rigid, pivot, codes, poses, v_outputs):
    """Launch the backward kernel: gradients of the nine inputs, in their order."""
    n, k = basis.shape[:2]
    b = codes.shape[0]
    kp = next_power_of_2(max(k, 2))
    blocks = cdiv(n, BLOCK_N)
    new = dict(device=means.device, dtype=means.dtype)
    grads = [torch.zeros_like(t) for t in (means, quats, opacities, basis, opacity_basis, rigid)]
    v_codes = torch.zeros(blocks, b, kp, **new)
    v_poses = torch.zeros(blocks, b, 7, **new)
    v_pivot = torch.zeros(blocks, b, 3, **new)
    if n > 0 and b > 0:
        launch_kernel(_deform_backward_kernel, (blocks,),
            means, quats, opacities, basis, opacity_basis, rigid, pivot, codes, poses,
            *(v.contiguous() for v in v_outputs), *grads, v_codes, v_poses, v_pivot,
            n, b, K=k, KP=kp, BLOCK_N=BLOCK_N,
        )  # fmt: skip
    return (*grads, v_pivot.sum((0, 1)), v_codes.sum(0)[:, :k].contiguous(), v_poses.sum(0))


class _DeformGaussians(torch.autograd.Function):
    @staticmethod
    def forward(ctx, *inputs):
        ctx.save_for_backward(*inputs)
        return op_forward(*inputs)

    @staticmethod
    def backward(ctx, v_means, v_quats, v_opacities):
        inputs = ctx.saved_tensors
        b, n = inputs[7].shape[0], inputs[0].shape[0]
        shape = dict(device=inputs[0].device, dtype=inputs[0].dtype)
        v_outputs = (
            torch.zeros(b, n, 3, **shape) if v_means is None else v_means,
            torch.zeros(b, n, 4, **shape) if v_quats is None else v_quats,
            torch.zeros(b, n, **shape) if v_opacities is None else v_opacities,
        )
        return op_backward(*inputs, v_outputs)


def _check_inputs(means, quats, opacities, basis, opacity_basis, rigid, pivot, codes, poses) -> None:
    shapes.check_tensor("means", means, (None, 3))
    n, device, dtypes = means.shape[0], means.device, (means.dtype,)
    shapes.check_tensor("basis", basis, (n, None, 3), dtypes=dtypes, device=device)
    k = basis.shape[1]
    shapes.check_tensor("quats", quats, (n, 4), dtypes=dtypes, device=device)
    shapes.check_tensor("opacities", opacities, (n,), dtypes=dtypes, device=device)
    shapes.check_tensor("opacity_basis", opacity_basis, (n, k), dtypes=dtypes, device=device)
    shapes.check_tensor("rigid", rigid, (n,), dtypes=dtypes, device=device)
    shapes.check_tensor("pivot", pivot, (3,), dtypes=dtypes, device=device)
    shapes.check_tensor("codes", codes, (None, k), dtypes=dtypes, device=device)
    shapes.check_tensor("poses", poses, (codes.shape[0], 7), dtypes=dtypes, device=device)


def deform_gaussians(
    means: Tensor,  # [N, 3] canonical anchors
    quats: Tensor,  # [N, 4] wxyz
    opacities: Tensor,  # [N]
    basis: Tensor,  # [N, K, 3]
    opacity_basis: Tensor,  # [N, K]
    rigid: Tensor,  # [N] in [0, 1]
    pivot: Tensor,  # [3]
    codes: Tensor,  # [B, K]
    poses: Tensor,  # [B, 7] unit quaternion (wxyz, w >= 0) + translation
    backend: Optional[str] = None,
) -> tuple[Tensor, Tensor, Tensor]:  # means [B, N, 3], quats [B, N, 4], opacities [B, N]
    """Deform the avatar's Gaussians for B frames (module docstring). Differentiable in every input."""
    inputs = (means, quats, opacities, basis, opacity_basis, rigid, pivot, codes, poses)
    _check_inputs(*inputs)
    if resolve_backend(backend, *inputs) == "torch":
        return reference.deform_gaussians(*inputs)
    reasons = []
    if means.dtype not in KERNEL_DTYPES:
        reasons.append(f"inputs are {means.dtype}; the kernels take {[str(d) for d in KERNEL_DTYPES]}")
    if basis.shape[1] > MAX_COMPONENTS:
        reasons.append(f"K = {basis.shape[1]} components; the kernels take at most {MAX_COMPONENTS}")
    if reasons:
        raise ValueError("the Triton deform kernels cannot run: " + "; ".join(reasons) + " (use backend='torch')")
    return _DeformGaussians.apply(*(t.contiguous() for t in inputs))
