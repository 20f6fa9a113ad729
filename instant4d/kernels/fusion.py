"""Per-Gaussian local motion fusion + Gaussian decoder, fused into one Triton kernel per pass.

Math (per frame b with modulation (scale_b, shift_b) = split(scale_shift[b]), per Gaussian i with
feature f_i [F], motion basis m_i [F] and anchor p_i [3]; the paper's form, no ``1 + scale``):
    x = LayerNorm(m_i) * scale_b + shift_b            (LayerNorm without affine, eps from the config)
    h = x @ W_in + b_in                               [F]
    delta = delta_scale * (softplus(h @ W1 + b1) @ W2 + b2)       (delta_scale 0.01 in the paper)
    f' = f_i + delta
    a = softplus(f' @ D1 + e1) @ D2 + e2              [O],  O = 11 + D
    mean = p_i + offset_scale * tanh(a[0:3])     scale = max_scale * sigmoid(a[3:6])
    quat = a[6:10] / max(|a[6:10]|, 1e-12)       opacity = 1 - exp(-softplus(a[10] - 1)) = sigmoid(a[10] - 1)
    color = sigmoid(a[11:11+D])
Both MLPs have hidden width Hd; (scale, shift) = c @ W_ada comes from the motion code outside the
kernel (a plain matmul once per frame; autograd takes its gradient to c and W_ada).

Work split: a persistent grid of at most ``programs_per_sm`` programs per multiprocessor. Each program
loads all weights once, then walks blocks of BLOCK_N Gaussians (block = pid, pid + programs, ...)
and, per block, every frame b: the block's f, m, p and LayerNorm(m) are read and computed once for
all B frames. The five matmuls per frame are ``tl.dot`` on tiles padded to powers of two >= 16
(F -> FP, Hd -> HP, O -> OP, masked), the activations and heads are fused, and the heads are stored
straight into the rasterizer's layout (means [B,N,3], quats [B,N,4], scales [B,N,3], opacities
[B,N], colors [B,N,D]).
Backward recomputes the forward of each (block, frame) in registers (no activations are stored),
sums the per-Gaussian gradients v_f, v_m, v_p over the B frames in registers, and accumulates every
weight gradient over the program's blocks with ``tl.dot``; each program writes its own row of a
[programs, weights] float32 buffer that torch sums (deterministic: no atomics on weights). The
per-frame v_scale_shift is reduced over the block with ``tl.sum`` and added into the program's own
row of a [programs, B, 2F] buffer, then summed by torch.

Precision: elementwise maths and every accumulation in float32. ``tl.dot`` operands are bf16 for
bf16 inputs, and for float32 inputs ``config.fp32_dot``: "tf32" (default), "bf16" or "ieee".
Outputs and input gradients are returned in the input dtype, weight gradients in the weights' dtype.

Limits: inputs, scale_shift and weights share one dtype (float32 or bfloat16; the twin also takes
float64); feature_dim <= 128, hidden_dim <= 256, 11 + color_dim <= 64 (larger tiles would not fit
on chip). Under the Triton interpreter bf16 dots are emulated by rounding the operands to bf16 and
multiplying in float32 (its native bf16 ``tl.dot`` multiplies the raw bits), which is the same
arithmetic as the hardware's bf16 products with float32 accumulation.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .. import shapes
from ..backend import interpreting, resolve_backend
from ._triton import next_power_of_2, triton, tl
from . import reference

KERNEL_DTYPES = (torch.float32, torch.bfloat16)
FP32_DOTS = ("tf32", "bf16", "ieee")
QUAT_EPS = 1e-12  # F.normalize's default
HEAD_CHANNELS = 11  # 3 mean offset + 3 scale + 4 rotation + 1 opacity, before the colour channels
MAX_FEATURE_DIM, MAX_HIDDEN_DIM, MAX_OUTPUTS = 128, 256, 64


@dataclass(frozen=True)
class FusionConfig:
    """Widths and output scalings of the fusion MLP and the Gaussian decoder (paper defaults)."""

    feature_dim: int = 48  # F: appearance feature and motion basis width
    hidden_dim: int = 96  # Hd: hidden width of the fusion MLP and of the decoder
    color_dim: int = 3  # D: colour (or feature) channels decoded per Gaussian
    motion_dim: int = 1024  # Cm: motion code width (source and driving codes); used by the module
    offset_scale: float = 1.0  # mean = anchor + offset_scale * tanh(offset)
    max_scale: float = 0.05  # scale = max_scale * sigmoid(.)
    delta_scale: float = 0.01  # delta = delta_scale * MLP(h)
    layer_norm_eps: float = 1e-5  # torch's default
    fp32_dot: str = "tf32"  # Triton tl.dot operand precision for float32 inputs: tf32 | bf16 | ieee

    def __post_init__(self):
        for name in ("feature_dim", "hidden_dim", "color_dim", "motion_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"FusionConfig.{name} must be a positive int, got {value!r}")
        if self.fp32_dot not in FP32_DOTS:
            raise ValueError(f"FusionConfig.fp32_dot must be one of {FP32_DOTS}, got {self.fp32_dot!r}")

    @property
    def out_dim(self) -> int:
        """O: decoder outputs per Gaussian."""
        return HEAD_CHANNELS + self.color_dim

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of every field of :class:`FusionWeights`, in field order."""
        f, hd, o = self.feature_dim, self.hidden_dim, self.out_dim
        return dict(w_in=(f, f), b_in=(f,), w1=(f, hd), b1=(hd,), w2=(hd, f), b2=(f,),
                    d1=(f, hd), e1=(hd,), d2=(hd, o), e2=(o,))


@dataclass(frozen=True)
class FusionWeights:
    """Weights of the fusion MLP and the decoder, as ``x @ W + b`` ([in, out] layout)."""

    w_in: Tensor  # [F, F]
    b_in: Tensor  # [F]
    w1: Tensor  # [F, Hd]
    b1: Tensor  # [Hd]
    w2: Tensor  # [Hd, F]
    b2: Tensor  # [F]
    d1: Tensor  # [F, Hd]
    e1: Tensor  # [Hd]
    d2: Tensor  # [Hd, O]
    e2: Tensor  # [O]

    def tensors(self) -> tuple[Tensor, ...]:
        return tuple(getattr(self, field.name) for field in dataclasses.fields(self))

    @classmethod
    def init(cls, config: FusionConfig, *, generator: Optional[torch.Generator] = None,
             dtype: torch.dtype = torch.float32, device=None) -> "FusionWeights":
        """Linear layers drawn like ``nn.Linear`` (uniform in +-1/sqrt(fan_in)); the decoder's output
        bias starts the Gaussians small (scale ~ 0.12 max_scale), mostly transparent (opacity ~ 0.1),
        unrotated (quaternion bias (1, 0, 0, 0)), grey and on their anchors."""
        tensors = {}
        shapes_ = config.weight_shapes()
        for weight, bias in (("w_in", "b_in"), ("w1", "b1"), ("w2", "b2"), ("d1", "e1"), ("d2", "e2")):
            bound = 1.0 / math.sqrt(shapes_[weight][0])
            for name in (weight, bias):
                tensors[name] = (torch.rand(shapes_[name], generator=generator, dtype=torch.float64) * 2 - 1) * bound
        head_bias = torch.zeros(config.out_dim, dtype=torch.float64)
        head_bias[3:6] = -2.0  # sigmoid(-2) = 0.12
        head_bias[6] = 1.0
        head_bias[10] = 1.0 + math.log(0.1 / 0.9)  # sigmoid(x - 1) = 0.1
        tensors["e2"] = tensors["e2"] + head_bias
        return cls(**{k: v.to(dtype=dtype, device=device) for k, v in tensors.items()})


@dataclass(frozen=True)
class FusedGaussians:
    """Per-frame Gaussians in the layout the rasterizer takes."""

    means: Tensor  # [B, N, 3]
    quats: Tensor  # [B, N, 4] (w, x, y, z), unit length
    scales: Tensor  # [B, N, 3]
    opacities: Tensor  # [B, N]
    colors: Tensor  # [B, N, D]
    delta: Optional[Tensor] = None  # [B, N, F] feature offset, when asked for (sparsity loss)


@dataclass(frozen=True)
class FusionLaunch:
    """How the kernels split the work (tuned on an H100, see docs/benchmarks-fusion.md)."""

    block_n: int  # Gaussians per block: the M of every per-Gaussian tl.dot
    num_warps: int
    programs_per_sm: int  # persistent grid size = min(blocks, programs_per_sm * multiprocessors)


INTERPRETER_LAUNCH = FusionLaunch(block_n=16, num_warps=4, programs_per_sm=3)


def default_launch(config: FusionConfig, backward: bool) -> FusionLaunch:
    hidden_pad = next_power_of_2(max(16, config.hidden_dim))
    if backward:
        # every weight gradient is a register accumulator for the program's lifetime
        return FusionLaunch(block_n=32 if hidden_pad <= 128 else 16, num_warps=8, programs_per_sm=1)
    return FusionLaunch(block_n=64 if hidden_pad <= 128 else 32, num_warps=4, programs_per_sm=2)


if triton is not None:
    _QUAT_EPS = tl.constexpr(QUAT_EPS)

    @triton.jit
    def _operand(x, DOT: tl.constexpr):
        """x as a tl.dot operand of the given precision."""
        if DOT == "bf16":
            out = x.to(tl.bfloat16)
        elif DOT == "bf16_rounded":
            out = x.to(tl.bfloat16).to(tl.float32)
        else:
            out = x.to(tl.float32)
        return out

    @triton.jit
    def _dot(a, b, acc, DOT: tl.constexpr):
        """acc + a @ b with float32 accumulation (acc may be None)."""
        if DOT == "bf16":
            out = tl.dot(_operand(a, DOT), _operand(b, DOT), acc)
        elif DOT == "bf16_rounded":
            out = tl.dot(_operand(a, DOT), _operand(b, DOT), acc, input_precision="ieee")
        else:
            out = tl.dot(_operand(a, DOT), _operand(b, DOT), acc, input_precision=DOT)
        return out

    @triton.jit
    def _softplus(z):
        return tl.maximum(z, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(z)))

    @triton.jit
    def _tile(ptr, R, C, RP: tl.constexpr, CP: tl.constexpr):
        """Row-major [R, C] tensor at ptr as a float32 [RP, CP] tile, zero-padded."""
        r = tl.arange(0, RP)
        c = tl.arange(0, CP)
        return tl.load(ptr + r[:, None] * C + c[None, :], mask=(r < R)[:, None] & (c < C)[None, :],
                       other=0.0).to(tl.float32)

    @triton.jit
    def _vec(ptr, C, CP: tl.constexpr):
        c = tl.arange(0, CP)
        return tl.load(ptr + c, mask=c < C, other=0.0).to(tl.float32)

    @triton.jit
    def _store_tile(ptr, value, R, C, RP: tl.constexpr, CP: tl.constexpr):
        r = tl.arange(0, RP)
        c = tl.arange(0, CP)
        tl.store(ptr + r[:, None] * C + c[None, :], value, mask=(r < R)[:, None] & (c < C)[None, :])

    @triton.jit
    def _rows(ptr, rows, row_ok, C, CP: tl.constexpr):
        """Rows ``rows`` of a row-major [*, C] tensor as a float32 [BLOCK_N, CP] tile."""
        c = tl.arange(0, CP)
        return tl.load(ptr + rows[:, None] * C + c[None, :], mask=row_ok[:, None] & (c < C)[None, :],
                       other=0.0).to(tl.float32)

    @triton.jit
    def _store_rows(ptr, value, rows, row_ok, C, CP: tl.constexpr):
        c = tl.arange(0, CP)
        tl.store(ptr + rows[:, None] * C + c[None, :], value.to(ptr.dtype.element_ty),
                 mask=row_ok[:, None] & (c < C)[None, :])

    @triton.jit
    def _head_slice(ptr, items, row_ok, START: tl.constexpr, WIDTH: tl.constexpr, OP: tl.constexpr):
        """Pointers and mask placing columns [START, START + WIDTH) of a [BLOCK_N, OP] head tile in
        the row-major [*, WIDTH] output whose rows are ``items``."""
        col = tl.arange(0, OP)
        inside = (col >= START) & (col < START + WIDTH)
        return ptr + items[:, None] * WIDTH + (col - START)[None, :], row_ok[:, None] & inside[None, :]

    @triton.jit
    def _store_heads(out, items, row_ok, means_ptr, scales_ptr, quats_ptr, opacities_ptr, colors_ptr,
                     D: tl.constexpr, OP: tl.constexpr):
        out = out.to(means_ptr.dtype.element_ty)
        ptrs, ok = _head_slice(means_ptr, items, row_ok, 0, 3, OP)
        tl.store(ptrs, out, mask=ok)
        ptrs, ok = _head_slice(scales_ptr, items, row_ok, 3, 3, OP)
        tl.store(ptrs, out, mask=ok)
        ptrs, ok = _head_slice(quats_ptr, items, row_ok, 6, 4, OP)
        tl.store(ptrs, out, mask=ok)
        ptrs, ok = _head_slice(opacities_ptr, items, row_ok, 10, 1, OP)
        tl.store(ptrs, out, mask=ok)
        ptrs, ok = _head_slice(colors_ptr, items, row_ok, 11, D, OP)
        tl.store(ptrs, out, mask=ok)

    @triton.jit
    def _load_heads(items, row_ok, means_ptr, scales_ptr, quats_ptr, opacities_ptr, colors_ptr,
                    D: tl.constexpr, OP: tl.constexpr):
        """The five per-head tensors at rows ``items`` gathered into one float32 [BLOCK_N, OP] tile."""
        ptrs, ok = _head_slice(means_ptr, items, row_ok, 0, 3, OP)
        out = tl.load(ptrs, mask=ok, other=0.0).to(tl.float32)
        ptrs, ok = _head_slice(scales_ptr, items, row_ok, 3, 3, OP)
        out += tl.load(ptrs, mask=ok, other=0.0).to(tl.float32)
        ptrs, ok = _head_slice(quats_ptr, items, row_ok, 6, 4, OP)
        out += tl.load(ptrs, mask=ok, other=0.0).to(tl.float32)
        ptrs, ok = _head_slice(opacities_ptr, items, row_ok, 10, 1, OP)
        out += tl.load(ptrs, mask=ok, other=0.0).to(tl.float32)
        ptrs, ok = _head_slice(colors_ptr, items, row_ok, 11, D, OP)
        out += tl.load(ptrs, mask=ok, other=0.0).to(tl.float32)
        return out

    @triton.jit
    def _layer_norm(m, F: tl.constexpr, FP: tl.constexpr, eps):
        """LayerNorm without affine over the F valid columns of m [BLOCK_N, FP] (padding is 0)."""
        valid = (tl.arange(0, FP) < F)[None, :]
        mean = tl.sum(m, axis=1) / F
        centred = tl.where(valid, m - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=1) / F + eps)
        return centred * rstd[:, None], rstd

    @triton.jit
    def _frame_forward(ln, f, scale, shift, w_in, b_in, w1, b1, w2, b2, d1, e1, d2, e2, delta_scale,
                       DOT: tl.constexpr):
        """One frame's fusion MLP and decoder for a block: the pre-activations backward needs."""
        x = ln * scale[None, :] + shift[None, :]
        h = _dot(x, w_in, None, DOT) + b_in[None, :]
        z1 = _dot(h, w1, None, DOT) + b1[None, :]
        delta = delta_scale * (_dot(_softplus(z1), w2, None, DOT) + b2[None, :])
        f_new = f + delta
        z2 = _dot(f_new, d1, None, DOT) + e1[None, :]
        a = _dot(_softplus(z2), d2, None, DOT) + e2[None, :]
        return x, h, z1, delta, f_new, z2, a

    @triton.jit
    def _heads(a, anchors, offset_scale, max_scale, OP: tl.constexpr):
        """Decoder outputs a [BLOCK_N, OP] -> attributes, column by column (anchors in columns 0-2)."""
        col = tl.arange(0, OP)[None, :]
        is_rot = (col >= 6) & (col < 10)
        sig = tl.sigmoid(a)
        tanh = 2.0 * tl.sigmoid(2.0 * a) - 1.0
        norm = tl.sqrt(tl.sum(tl.where(is_rot, a * a, 0.0), axis=1))
        quat = a / tl.maximum(norm, _QUAT_EPS)[:, None]
        out = tl.where(col < 3, anchors + offset_scale * tanh, max_scale * sig)
        out = tl.where(is_rot, quat, out)
        out = tl.where(col == 10, tl.sigmoid(a - 1.0), out)
        return tl.where(col >= 11, sig, out)

    @triton.jit
    def _heads_backward(a, g, offset_scale, max_scale, OP: tl.constexpr):
        """d loss / d a from the gradients g of the attributes (same column layout)."""
        col = tl.arange(0, OP)[None, :]
        is_rot = (col >= 6) & (col < 10)
        sig = tl.sigmoid(a)
        tanh = 2.0 * tl.sigmoid(2.0 * a) - 1.0
        opacity = tl.sigmoid(a - 1.0)
        norm = tl.sqrt(tl.sum(tl.where(is_rot, a * a, 0.0), axis=1))
        clamped = tl.maximum(norm, _QUAT_EPS)
        quat = a / clamped[:, None]
        radial = tl.where(norm > _QUAT_EPS, tl.sum(tl.where(is_rot, quat * g, 0.0), axis=1), 0.0)
        v_rot = (g - quat * radial[:, None]) / clamped[:, None]
        v_a = tl.where(col < 3, g * offset_scale * (1.0 - tanh * tanh), g * max_scale * sig * (1.0 - sig))
        v_a = tl.where(is_rot, v_rot, v_a)
        v_a = tl.where(col == 10, g * opacity * (1.0 - opacity), v_a)
        return tl.where(col >= 11, g * sig * (1.0 - sig), v_a)

    @triton.jit
    def _fusion_forward_kernel(
        features_ptr, motion_basis_ptr, anchors_ptr, scale_shift_ptr,
        w_in_ptr, b_in_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, d1_ptr, e1_ptr, d2_ptr, e2_ptr,
        means_ptr, quats_ptr, scales_ptr, opacities_ptr, colors_ptr, delta_ptr,
        N, B, offset_scale, max_scale, delta_scale, ln_eps,
        F: tl.constexpr, HD: tl.constexpr, D: tl.constexpr, O: tl.constexpr,
        FP: tl.constexpr, HP: tl.constexpr, OP: tl.constexpr,
        DOT: tl.constexpr, RETURN_DELTA: tl.constexpr, BLOCK_N: tl.constexpr,
    ):
        w_in = _operand(_tile(w_in_ptr, F, F, FP, FP), DOT)
        w1 = _operand(_tile(w1_ptr, F, HD, FP, HP), DOT)
        w2 = _operand(_tile(w2_ptr, HD, F, HP, FP), DOT)
        d1 = _operand(_tile(d1_ptr, F, HD, FP, HP), DOT)
        d2 = _operand(_tile(d2_ptr, HD, O, HP, OP), DOT)
        b_in = _vec(b_in_ptr, F, FP)
        b1 = _vec(b1_ptr, HD, HP)
        b2 = _vec(b2_ptr, F, FP)
        e1 = _vec(e1_ptr, HD, HP)
        e2 = _vec(e2_ptr, O, OP)
        cf = tl.arange(0, FP)
        for block in range(tl.program_id(0), tl.cdiv(N, BLOCK_N), tl.num_programs(0)):
            rows = block * BLOCK_N + tl.arange(0, BLOCK_N)
            row_ok = rows < N
            f = _rows(features_ptr, rows, row_ok, F, FP)
            ln, _ = _layer_norm(_rows(motion_basis_ptr, rows, row_ok, F, FP), F, FP, ln_eps)
            anchors = _rows(anchors_ptr, rows, row_ok, 3, OP)
            for b in range(B):
                scale = tl.load(scale_shift_ptr + b * 2 * F + cf, mask=cf < F, other=0.0).to(tl.float32)
                shift = tl.load(scale_shift_ptr + b * 2 * F + F + cf, mask=cf < F, other=0.0).to(tl.float32)
                _, _, _, delta, _, _, a = _frame_forward(ln, f, scale, shift, w_in, b_in, w1, b1, w2, b2,
                                                         d1, e1, d2, e2, delta_scale, DOT)
                items = tl.cast(b, tl.int64) * N + rows
                _store_heads(_heads(a, anchors, offset_scale, max_scale, OP), items, row_ok,
                             means_ptr, scales_ptr, quats_ptr, opacities_ptr, colors_ptr, D, OP)
                if RETURN_DELTA:
                    _store_rows(delta_ptr, delta, items, row_ok, F, FP)

    @triton.jit
    def _fusion_backward_kernel(
        features_ptr, motion_basis_ptr, scale_shift_ptr,
        w_in_ptr, b_in_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, d1_ptr, e1_ptr, d2_ptr, e2_ptr,
        v_means_ptr, v_quats_ptr, v_scales_ptr, v_opacities_ptr, v_colors_ptr, v_delta_ptr,
        v_features_ptr, v_motion_basis_ptr, v_anchors_ptr, v_weights_ptr, v_scale_shift_ptr,
        N, B, partials_stride, offset_scale, max_scale, delta_scale, ln_eps,
        F: tl.constexpr, HD: tl.constexpr, D: tl.constexpr, O: tl.constexpr,
        FP: tl.constexpr, HP: tl.constexpr, OP: tl.constexpr,
        DOT: tl.constexpr, HAS_V_DELTA: tl.constexpr, BLOCK_N: tl.constexpr,
    ):
        pid = tl.program_id(0)
        w_in = _operand(_tile(w_in_ptr, F, F, FP, FP), DOT)
        w1 = _operand(_tile(w1_ptr, F, HD, FP, HP), DOT)
        w2 = _operand(_tile(w2_ptr, HD, F, HP, FP), DOT)
        d1 = _operand(_tile(d1_ptr, F, HD, FP, HP), DOT)
        d2 = _operand(_tile(d2_ptr, HD, O, HP, OP), DOT)
        b_in = _vec(b_in_ptr, F, FP)
        b1 = _vec(b1_ptr, HD, HP)
        b2 = _vec(b2_ptr, F, FP)
        e1 = _vec(e1_ptr, HD, HP)
        e2 = _vec(e2_ptr, O, OP)
        v_w_in = tl.zeros([FP, FP], tl.float32)
        v_w1 = tl.zeros([FP, HP], tl.float32)
        v_w2 = tl.zeros([HP, FP], tl.float32)
        v_d1 = tl.zeros([FP, HP], tl.float32)
        v_d2 = tl.zeros([HP, OP], tl.float32)
        v_b_in = tl.zeros([FP], tl.float32)
        v_b1 = tl.zeros([HP], tl.float32)
        v_b2 = tl.zeros([FP], tl.float32)
        v_e1 = tl.zeros([HP], tl.float32)
        v_e2 = tl.zeros([OP], tl.float32)
        cf = tl.arange(0, FP)
        for block in range(pid, tl.cdiv(N, BLOCK_N), tl.num_programs(0)):
            rows = block * BLOCK_N + tl.arange(0, BLOCK_N)
            row_ok = rows < N
            f = _rows(features_ptr, rows, row_ok, F, FP)
            ln, rstd = _layer_norm(_rows(motion_basis_ptr, rows, row_ok, F, FP), F, FP, ln_eps)
            v_f = tl.zeros([BLOCK_N, FP], tl.float32)
            v_ln = tl.zeros([BLOCK_N, FP], tl.float32)
            v_p = tl.zeros([BLOCK_N, OP], tl.float32)
            for b in range(B):
                scale = tl.load(scale_shift_ptr + b * 2 * F + cf, mask=cf < F, other=0.0).to(tl.float32)
                shift = tl.load(scale_shift_ptr + b * 2 * F + F + cf, mask=cf < F, other=0.0).to(tl.float32)
                x, h, z1, delta, f_new, z2, a = _frame_forward(ln, f, scale, shift, w_in, b_in, w1, b1, w2,
                                                               b2, d1, e1, d2, e2, delta_scale, DOT)
                items = tl.cast(b, tl.int64) * N + rows
                g = _load_heads(items, row_ok, v_means_ptr, v_scales_ptr, v_quats_ptr, v_opacities_ptr,
                                v_colors_ptr, D, OP)
                v_p += g
                v_a = _heads_backward(a, g, offset_scale, max_scale, OP)
                # decoder
                v_d2 = _dot(tl.trans(_softplus(z2)), v_a, v_d2, DOT)
                v_e2 += tl.sum(v_a, axis=0)
                v_z2 = _dot(v_a, tl.trans(d2), None, DOT) * tl.sigmoid(z2)
                v_d1 = _dot(tl.trans(f_new), v_z2, v_d1, DOT)
                v_e1 += tl.sum(v_z2, axis=0)
                v_f_new = _dot(v_z2, tl.trans(d1), None, DOT)
                v_f += v_f_new
                # fusion MLP
                v_delta = v_f_new
                if HAS_V_DELTA:
                    v_delta += _rows(v_delta_ptr, items, row_ok, F, FP)
                v_y = delta_scale * v_delta
                v_w2 = _dot(tl.trans(_softplus(z1)), v_y, v_w2, DOT)
                v_b2 += tl.sum(v_y, axis=0)
                v_z1 = _dot(v_y, tl.trans(w2), None, DOT) * tl.sigmoid(z1)
                v_w1 = _dot(tl.trans(h), v_z1, v_w1, DOT)
                v_b1 += tl.sum(v_z1, axis=0)
                v_h = _dot(v_z1, tl.trans(w1), None, DOT)
                v_w_in = _dot(tl.trans(x), v_h, v_w_in, DOT)
                v_b_in += tl.sum(v_h, axis=0)
                v_x = _dot(v_h, tl.trans(w_in), None, DOT)
                v_ss_row = v_scale_shift_ptr + (pid * B + b) * 2 * F
                tl.atomic_add(v_ss_row + cf, tl.sum(v_x * ln, axis=0), mask=cf < F)
                tl.atomic_add(v_ss_row + F + cf, tl.sum(v_x, axis=0), mask=cf < F)
                v_ln += v_x * scale[None, :]
            # LayerNorm backward is linear in v_ln, so it runs once on the sum over frames
            mean_v = tl.sum(v_ln, axis=1) / F
            mean_v_ln = tl.sum(v_ln * ln, axis=1) / F
            v_m = rstd[:, None] * (v_ln - mean_v[:, None] - ln * mean_v_ln[:, None])
            _store_rows(v_features_ptr, v_f, rows, row_ok, F, FP)
            _store_rows(v_motion_basis_ptr, v_m, rows, row_ok, F, FP)
            _store_rows(v_anchors_ptr, v_p, rows, row_ok, 3, OP)
        # this program's row of the weight-gradient partials, in FusionWeights field order
        row = v_weights_ptr + pid.to(tl.int64) * partials_stride
        _store_tile(row, v_w_in, F, F, FP, FP)
        row += F * F
        tl.store(row + cf, v_b_in, mask=cf < F)
        row += F
        _store_tile(row, v_w1, F, HD, FP, HP)
        row += F * HD
        tl.store(row + tl.arange(0, HP), v_b1, mask=tl.arange(0, HP) < HD)
        row += HD
        _store_tile(row, v_w2, HD, F, HP, FP)
        row += HD * F
        tl.store(row + cf, v_b2, mask=cf < F)
        row += F
        _store_tile(row, v_d1, F, HD, FP, HP)
        row += F * HD
        tl.store(row + tl.arange(0, HP), v_e1, mask=tl.arange(0, HP) < HD)
        row += HD
        _store_tile(row, v_d2, HD, O, HP, OP)
        row += HD * O
        tl.store(row + tl.arange(0, OP), v_e2, mask=tl.arange(0, OP) < O)


def _dot_mode(dtype: torch.dtype, config: FusionConfig) -> str:
    mode = "bf16" if dtype == torch.bfloat16 else config.fp32_dot
    return "bf16_rounded" if mode == "bf16" and interpreting() else mode


def _grid(n: int, device: torch.device, launch: FusionLaunch) -> tuple[int]:
    """Persistent grid: one program per block up to programs_per_sm per multiprocessor (never 0,
    so the backward always writes at least one row of partials)."""
    if device.type == "cuda":
        slots = launch.programs_per_sm * torch.cuda.get_device_properties(device).multi_processor_count
    else:  # interpreter: a few programs, so that the grid-stride loop is exercised
        slots = launch.programs_per_sm
    return (max(1, min(triton.cdiv(n, launch.block_n), slots)),)


def _constexprs(config: FusionConfig, dtype: torch.dtype, launch: FusionLaunch) -> dict:
    return dict(
        F=config.feature_dim, HD=config.hidden_dim, D=config.color_dim, O=config.out_dim,
        FP=next_power_of_2(max(16, config.feature_dim)), HP=next_power_of_2(max(16, config.hidden_dim)),
        OP=next_power_of_2(max(16, config.out_dim)), DOT=_dot_mode(dtype, config),
        BLOCK_N=launch.block_n, num_warps=launch.num_warps,
    )


def op_forward(
    features: Tensor,  # [N, F]
    motion_basis: Tensor,  # [N, F]
    anchors: Tensor,  # [N, 3]
    scale_shift: Tensor,  # [B, 2F]
    weights: FusionWeights,
    config: FusionConfig,
    return_delta: bool,
    launch: Optional[FusionLaunch] = None,
) -> tuple[Tensor, ...]:
    """Launch the forward kernel on contiguous inputs: (means, quats, scales, opacities, colors[, delta])."""
    n, b = features.shape[0], scale_shift.shape[0]
    launch = launch or (INTERPRETER_LAUNCH if interpreting() else default_launch(config, False))
    new = dict(device=features.device, dtype=features.dtype)
    outputs = (torch.empty(b, n, 3, **new), torch.empty(b, n, 4, **new), torch.empty(b, n, 3, **new),
               torch.empty(b, n, **new), torch.empty(b, n, config.color_dim, **new))
    delta = torch.empty(b, n, config.feature_dim, **new) if return_delta else outputs[0]
    _fusion_forward_kernel[_grid(n, features.device, launch)](
        features, motion_basis, anchors, scale_shift, *weights.tensors(), *outputs, delta,
        n, b, config.offset_scale, config.max_scale, config.delta_scale, config.layer_norm_eps,
        RETURN_DELTA=return_delta, **_constexprs(config, features.dtype, launch),
    )
    return outputs + ((delta,) if return_delta else ())


def op_backward(
    features: Tensor,  # [N, F]
    motion_basis: Tensor,  # [N, F]
    scale_shift: Tensor,  # [B, 2F]
    weights: FusionWeights,
    config: FusionConfig,
    v_outputs: tuple[Tensor, ...],  # v_means [B,N,3], v_quats [B,N,4], v_scales [B,N,3], v_opacities [B,N], v_colors [B,N,D][, v_delta [B,N,F]]
    launch: Optional[FusionLaunch] = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, FusionWeights]:
    """Launch the backward kernel: (v_features, v_motion_basis, v_anchors, v_scale_shift, v_weights)."""
    n, b = features.shape[0], scale_shift.shape[0]
    launch = launch or (INTERPRETER_LAUNCH if interpreting() else default_launch(config, True))
    grid = _grid(n, features.device, launch)
    shapes_ = config.weight_shapes()
    sizes = [math.prod(s) for s in shapes_.values()]
    v_features = torch.empty_like(features)
    v_motion_basis = torch.empty_like(motion_basis)
    v_anchors = torch.empty(n, 3, device=features.device, dtype=features.dtype)
    partials = torch.empty(grid[0], sum(sizes), device=features.device, dtype=torch.float32)
    v_ss_partials = torch.zeros(grid[0], b, 2 * config.feature_dim, device=features.device, dtype=torch.float32)
    v_outputs = [v.contiguous() for v in v_outputs]
    has_v_delta = len(v_outputs) == 6
    _fusion_backward_kernel[grid](
        features, motion_basis, scale_shift, *weights.tensors(),
        *v_outputs[:5], v_outputs[5] if has_v_delta else v_outputs[0],
        v_features, v_motion_basis, v_anchors, partials, v_ss_partials,
        n, b, partials.stride(0), config.offset_scale, config.max_scale, config.delta_scale,
        config.layer_norm_eps, HAS_V_DELTA=has_v_delta, **_constexprs(config, features.dtype, launch),
    )
    w_dtype = weights.w_in.dtype
    v_weights = FusionWeights(*(v.view(s).to(w_dtype) for v, s in
                                zip(partials.sum(0).split(sizes), shapes_.values())))
    return v_features, v_motion_basis, v_anchors, v_ss_partials.sum(0).to(scale_shift.dtype), v_weights


class _LocalFusion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, motion_basis, anchors, scale_shift, config, return_delta, *weight_tensors):
        weights = FusionWeights(*weight_tensors)
        outputs = op_forward(features, motion_basis, anchors, scale_shift, weights, config, return_delta)
        ctx.save_for_backward(features, motion_basis, scale_shift, *weight_tensors)
        ctx.config = config
        return outputs

    @staticmethod
    def backward(ctx, *v_outputs):
        features, motion_basis, scale_shift, *weight_tensors = ctx.saved_tensors
        v_features, v_motion_basis, v_anchors, v_scale_shift, v_weights = op_backward(
            features, motion_basis, scale_shift, FusionWeights(*weight_tensors), ctx.config, v_outputs)
        return v_features, v_motion_basis, v_anchors, v_scale_shift, None, None, *v_weights.tensors()


def _check_inputs(features, motion_basis, anchors, scale_shift, weights, config) -> None:
    if not isinstance(config, FusionConfig):
        raise TypeError(f"config must be a FusionConfig, got {type(config).__name__}")
    if not isinstance(weights, FusionWeights):
        raise TypeError(f"weights must be a FusionWeights, got {type(weights).__name__}")
    f = config.feature_dim
    shapes.check_tensor("features", features, (None, f))
    device, dtypes = features.device, (features.dtype,)
    n = features.shape[0]
    shapes.check_tensor("motion_basis", motion_basis, (n, f), dtypes=dtypes, device=device)
    shapes.check_tensor("anchors", anchors, (n, 3), dtypes=dtypes, device=device)
    shapes.check_tensor("scale_shift", scale_shift, (None, 2 * f), dtypes=dtypes, device=device)
    for name, shape in config.weight_shapes().items():
        shapes.check_tensor(f"weights.{name}", getattr(weights, name), shape, dtypes=dtypes, device=device)


def _kernel_limits(features: Tensor, config: FusionConfig) -> list[str]:
    reasons = []
    if features.dtype not in KERNEL_DTYPES:
        reasons.append(f"inputs are {features.dtype}; the kernels take {[str(d) for d in KERNEL_DTYPES]}")
    if config.feature_dim > MAX_FEATURE_DIM or config.hidden_dim > MAX_HIDDEN_DIM or config.out_dim > MAX_OUTPUTS:
        reasons.append(f"feature_dim {config.feature_dim}, hidden_dim {config.hidden_dim}, 11 + color_dim "
                       f"{config.out_dim}: the kernels take at most {MAX_FEATURE_DIM}, {MAX_HIDDEN_DIM}, {MAX_OUTPUTS}")
    return reasons


def local_fusion(
    features: Tensor,  # [N, F]
    motion_basis: Tensor,  # [N, F]
    anchors: Tensor,  # [N, 3]
    scale_shift: Tensor,  # [B, 2F]
    weights: FusionWeights,
    config: FusionConfig = FusionConfig(),
    *,
    return_delta: bool = False,
    backend: Optional[str] = None,
) -> FusedGaussians:
    """Deform every Gaussian's feature for each of B frames and decode the Gaussians (module docstring).

    ``scale_shift [B, 2F]`` is the per-frame modulation ``(scale, shift)`` computed from the motion
    code. Returns a :class:`FusedGaussians` with [B, N, ...] tensors, plus the feature offset
    ``delta [B, N, F]`` when ``return_delta``. Differentiable in every tensor input and weight.
    """
    _check_inputs(features, motion_basis, anchors, scale_shift, weights, config)
    tensors = (features, motion_basis, anchors, scale_shift, *weights.tensors())
    if resolve_backend(backend, *tensors) == "torch":
        return reference.local_fusion(features, motion_basis, anchors, scale_shift, weights, config,
                                      return_delta=return_delta)
    reasons = _kernel_limits(features, config)
    if reasons:
        raise ValueError("the Triton local_fusion kernels cannot run: " + "; ".join(reasons) + " (use backend='torch')")
    outputs = _LocalFusion.apply(*(t.contiguous() for t in tensors[:4]), config, return_delta,
                                 *(t.contiguous() for t in tensors[4:]))
    return FusedGaussians(*outputs)


def example_inputs(
    config: FusionConfig, n: int, b: int, *, dtype: torch.dtype = torch.float32, device=None,
    seed: int = 0,
) -> tuple[Tensor, Tensor, Tensor, Tensor, FusionWeights]:
    """Random (features, motion_basis, anchors, scale_shift, weights) for tests and benchmarks: unit
    normal features, a non-zero-mean motion basis, anchors in a head-sized box, scale around 1."""
    gen = torch.Generator().manual_seed(seed)
    f = config.feature_dim

    def draw(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    features, motion_basis, anchors = draw(n, f), 0.5 + draw(n, f), 0.3 * draw(n, 3)
    scale_shift = torch.cat([1.0 + 0.5 * draw(b, f), 0.5 * draw(b, f)], dim=1)
    weights = FusionWeights.init(config, generator=gen, dtype=dtype, device=device)
    return (*(t.to(dtype=dtype, device=device) for t in (features, motion_basis, anchors, scale_shift)), weights)


def memory_floor_bytes(config: FusionConfig, n: int, b: int, dtype: torch.dtype, *, backward: bool) -> int:
    """Fewest bytes a pass must move through device memory: each input read once, each output
    written once (weights included; the backward reads f, m, the output gradients and writes the
    input gradients)."""
    f, o = config.feature_dim, config.out_dim
    weights = sum(math.prod(s) for s in config.weight_shapes().values())
    per_gaussian = 2 * f + 3  # f, m, p read (forward) / v_f, v_m, v_p written (backward)
    elements = n * per_gaussian + b * n * o + b * 2 * f + weights
    if backward:
        elements += n * 2 * f + b * 2 * f + weights  # f, m read again; v_scale_shift, v_weights written
    return elements * torch.finfo(dtype).bits // 8
