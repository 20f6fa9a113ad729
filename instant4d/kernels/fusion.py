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

Work split: a persistent grid of ``programs_per_sm`` programs per multiprocessor. Each program
loads every weight once (they stay in shared memory as tl.dot operands) and walks work items
(block of BLOCK_N Gaussians, frame b) in one flat loop. The five matmuls per item are ``tl.dot`` on
tiles padded to powers of two >= 16 (F -> FP, Hd -> HP, O -> OP, masked); activations and heads are
fused and the heads stored straight into the rasterizer's layout (means [B,N,3], quats [B,N,4],
scales [B,N,3], opacities [B,N], colors [B,N,D]).
Backward, two kernels on one grid, each recomputing the forward it needs in registers (nothing is
stored by the forward): ``_decoder_backward_kernel`` gives the decoder's weight gradients, v_p,
v_f and dL/d delta per frame ([B, N, F] float32 scratch); ``_fusion_backward_kernel`` gives the
fusion MLP's weight gradients, v_m and v_scale_shift. Each program walks all frames of its blocks,
so it alone owns their per-Gaussian gradients (summed over frames by read-add-write, no atomics);
weight gradients accumulate in registers over the program's items and land in its own row of a
[programs, weights] float32 buffer that torch sums; v_scale_shift rows likewise ([programs, B, 2F]).
The result is deterministic. (One fused backward kernel holds too many accumulators: it spilled
kilobytes a thread in the compiler's report.)

Precision: elementwise maths and all accumulation in float32; exp, log and 1/x are the hardware's
approximations (ex2/lg2/rcp.approx, relative error ~2^-22), since libdevice's logf and IEEE
division had made up most of the instructions. ``config.dot_operands`` picks the tl.dot operands:
"bf16" (default; 8 significant bits) or "fp16" (11 bits, like tf32: each activation row scaled to
largest magnitude 2^14, weights scaled per tensor; measured 0.9-1.2x the forward's time and
1.3x the backward's). Weight gradients (sums over the Gaussians) always come from bf16 operands. Measured
errors against the float64 twin are in docs/benchmarks.md. Outputs and input gradients
come in the inputs' dtype (a bf16 input's per-Gaussian gradient is rounded once per frame),
weight gradients in the weights' dtype.

Limits: inputs, scale_shift and weights share one dtype (float32 or bfloat16; the twin also takes
float64); 11 + color_dim <= 64; the padded fp16 weights held by the largest kernel must fit in
180 KB of shared memory (every F <= 64 with Hd <= 256, F = 96 with Hd <= 128;
``triton_unsupported_reasons`` says); N * F < 2^31. Tuned for F <= 64, Hd <= 128: larger tiles
spill registers. Under the Triton interpreter bf16 dots are emulated by rounding the operands to
bf16 and multiplying in float32 (its native bf16 ``tl.dot`` multiplies the raw bits: the same
arithmetic as the hardware's bf16 products with float32 accumulation) and exp/log/1/x are exact.
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
DOT_OPERANDS = ("bf16", "fp16")
QUAT_EPS = 1e-12  # F.normalize's default
HEAD_CHANNELS = 11  # 3 mean offset + 3 scale + 4 rotation + 1 opacity, before the colour channels
MAX_OUTPUTS = 64  # 11 + color_dim, padded: one tile of decoder outputs
MAX_WEIGHT_BYTES = 180 * 1024  # fp16 weight tiles held on chip by the largest kernel (228 KB a multiprocessor)


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
    dot_operands: str = "bf16"  # Triton tl.dot operands: bf16 | fp16 (rows scaled; slower); see kernels/fusion.py

    def __post_init__(self):
        for name in ("feature_dim", "hidden_dim", "color_dim", "motion_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"FusionConfig.{name} must be a positive int, got {value!r}")
        if self.dot_operands not in DOT_OPERANDS:
            raise ValueError(f"FusionConfig.dot_operands must be one of {DOT_OPERANDS}, got {self.dot_operands!r}")

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
    """How the kernels split the work (tuned on an H100, see docs/benchmarks.md)."""

    block_n: int  # Gaussians per block: the M of every per-Gaussian tl.dot
    num_warps: int
    num_stages: int  # software pipelining of the loads; backward must use 1 (see op_backward)
    programs_per_sm: int  # persistent grid size = min(blocks, programs_per_sm * multiprocessors)


INTERPRETER_LAUNCH = FusionLaunch(block_n=16, num_warps=4, num_stages=1, programs_per_sm=3)


def default_launch(config: FusionConfig, backward: bool) -> FusionLaunch:
    """The fastest launch of the sweep on an H100 (docs/benchmarks.md) for F <= 64, Hd <= 128;
    larger tiles take the shapes that the compiler's report for sm_90 shows fitting in shared memory
    with the fewest spills (not timed)."""
    fp, hp = (next_power_of_2(max(16, d)) for d in (config.feature_dim, config.hidden_dim))
    small = fp <= 64 and hp <= 128
    if backward:
        return FusionLaunch(32, 4, 1, 2) if small else FusionLaunch(32, 8, 1, 1)
    return FusionLaunch(64, 4, 2, 2) if small else FusionLaunch(32, 4, 2, 1)


if triton is not None:
    _QUAT_EPS = tl.constexpr(QUAT_EPS)
    # Decided at import, like Triton's own switch: the interpreter runs no inline PTX, and its bf16
    # tl.dot multiplies raw bits, so there bf16 operands are bf16 values held in float32.
    _INTERPRET = tl.constexpr(interpreting())

    @triton.jit
    def _log(x):
        """Natural log by lg2.approx: one special-function op where tl.log inlines libdevice's logf
        (about 20 instructions with branches), which dominated the kernels' instruction count."""
        if _INTERPRET:
            y = tl.log(x)
        else:
            y = 0.6931471805599453 * tl.inline_asm_elementwise(
                "lg2.approx.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True, pack=1)
        return y

    @triton.jit
    def _rcp(x):
        """1 / x by rcp.approx (tl.sigmoid and "/" compile to a full-precision division)."""
        if _INTERPRET:
            y = 1.0 / x
        else:
            y = tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32,
                                          is_pure=True, pack=1)
        return y

    @triton.jit
    def _sigmoid(z):
        return _rcp(1.0 + tl.exp(-z))

    @triton.jit
    def _softplus(z):
        return tl.maximum(z, 0.0) + _log(1.0 + tl.exp(-tl.abs(z)))

    @triton.jit
    def _softplus_sigmoid(z):
        """softplus(z) and its derivative sigmoid(z), sharing one exp."""
        e = tl.exp(-tl.abs(z))
        r = _rcp(1.0 + e)
        return tl.maximum(z, 0.0) + _log(1.0 + e), tl.where(z >= 0, r, e * r)

    @triton.jit
    def _bf16(x):
        if _INTERPRET:
            y = x.to(tl.bfloat16).to(tl.float32)
        else:
            y = x.to(tl.bfloat16)
        return y

    @triton.jit
    def _dot(a, b):
        if _INTERPRET:
            out = tl.dot(a, b, input_precision="ieee")
        else:
            out = tl.dot(a, b)
        return out

    @triton.jit
    def _weight_operand(w, DOT: tl.constexpr):
        """A float32 weight tile as a tl.dot operand, and the factor that undoes its scaling
        (fp16: scaled so that its largest magnitude is 2^14; bf16: rounded, factor 1)."""
        if DOT == "fp16":
            scale = 16384.0 / tl.maximum(tl.max(tl.max(tl.abs(w), axis=1), axis=0), 1e-30)
            op = (w * scale).to(tl.float16)
            unscale = 1.0 / scale
        else:
            op = _bf16(w)
            unscale = 1.0
        return op, unscale

    @triton.jit
    def _mm(x, w, w_unscale, DOT: tl.constexpr):
        """x @ W for a float32 activation (or gradient) tile x [BLOCK_N, K] and a weight operand.
        fp16: each row of x is scaled to largest magnitude 2^14 before rounding (11 significant
        bits, like tf32, over float32's range; a row maximum needs no cross-warp reduction) and
        the result's rows are scaled back; bf16: x rounded to bf16."""
        if DOT == "fp16":
            scale = 16384.0 / tl.maximum(tl.max(tl.abs(x), axis=1), 1e-30)
            out = _dot((x * scale[:, None]).to(tl.float16), w) * (_rcp(scale)[:, None] * w_unscale)
        else:
            out = _dot(_bf16(x), w)
        return out

    @triton.jit
    def _mm_tn(x, g):
        """x^T @ g for float32 tiles: a weight gradient summed over the rows of a block, from bf16
        operands (range-safe for gradients of any scale; a per-row fp16 scale cannot apply along
        the summed dimension)."""
        return _dot(_bf16(tl.trans(x)), _bf16(g))

    @triton.jit
    def _tile(ptr, R, C, RP: tl.constexpr, CP: tl.constexpr, TRANSPOSE: tl.constexpr = False):
        """Row-major [R, C] tensor at ptr as a float32 [RP, CP] tile, zero-padded (or its transpose
        [CP, RP], read transposed from memory)."""
        if TRANSPOSE:
            r = tl.arange(0, RP)[None, :]
            c = tl.arange(0, CP)[:, None]
        else:
            r = tl.arange(0, RP)[:, None]
            c = tl.arange(0, CP)[None, :]
        return tl.load(ptr + r * C + c, mask=(r < R) & (c < C), other=0.0).to(tl.float32)

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
    def _fusion_mlp(motion_basis_ptr, scale_shift_ptr, rows, row_ok, b, w_in, u_in, b_in_ptr, w1, u1, b1_ptr,
                    w2, u2, b2_ptr, delta_scale, ln_eps, F: tl.constexpr, HD: tl.constexpr, FP: tl.constexpr,
                    HP: tl.constexpr, DOT: tl.constexpr):
        """Frame b's feature offset for a block of rows, and the values its backward needs.
        Inputs and biases are (re-)read where they are used rather than held across frames: a
        [BLOCK_N, Hd] float32 tile already takes 64 registers a thread, and a bias broadcast along
        a tl.dot result costs one register per column a thread owns; the re-reads hit L1/L2."""
        ln, rstd = _layer_norm(_rows(motion_basis_ptr, rows, row_ok, F, FP), F, FP, ln_eps)
        scale = _vec(scale_shift_ptr + b * 2 * F, F, FP)
        x = ln * scale[None, :] + _vec(scale_shift_ptr + b * 2 * F + F, F, FP)[None, :]
        h = _mm(x, w_in, u_in, DOT) + _vec(b_in_ptr, F, FP)[None, :]
        z1 = _mm(h, w1, u1, DOT) + _vec(b1_ptr, HD, HP)[None, :]
        delta = delta_scale * (_mm(_softplus(z1), w2, u2, DOT) + _vec(b2_ptr, F, FP)[None, :])
        return ln, rstd, scale, x, h, z1, delta

    @triton.jit
    def _decoder(f_new, d1, v1, e1_ptr, d2, v2, e2_ptr, HD: tl.constexpr, O: tl.constexpr,
                 HP: tl.constexpr, OP: tl.constexpr, DOT: tl.constexpr):
        """Decoder pre-activations z2 [BLOCK_N, HP] and outputs a [BLOCK_N, OP] of the new features."""
        z2 = _mm(f_new, d1, v1, DOT) + _vec(e1_ptr, HD, HP)[None, :]
        return z2, _mm(_softplus(z2), d2, v2, DOT) + _vec(e2_ptr, O, OP)[None, :]

    @triton.jit
    def _head_terms(a, OP: tl.constexpr):
        """What the heads take from the decoder outputs a [BLOCK_N, OP], for every column (each
        column then keeps the term of its head): the column index, the rotation columns, sigmoid(a),
        tanh(a), the opacity sigmoid(a - 1), the quaternion norm per row and a / max(norm, eps)."""
        col = tl.arange(0, OP)[None, :]
        is_rot = (col >= 6) & (col < 10)
        norm = tl.sqrt(tl.sum(tl.where(is_rot, a * a, 0.0), axis=1))
        inv_norm = _rcp(tl.maximum(norm, _QUAT_EPS))
        return (col, is_rot, _sigmoid(a), 2.0 * _sigmoid(2.0 * a) - 1.0, _sigmoid(a - 1.0), norm, inv_norm,
                a * inv_norm[:, None])

    @triton.jit
    def _heads(a, anchors, offset_scale, max_scale, OP: tl.constexpr):
        """Decoder outputs a [BLOCK_N, OP] -> attributes, column by column (anchors in columns 0-2)."""
        col, is_rot, sig, tanh, opacity, norm, inv_norm, quat = _head_terms(a, OP)
        out = tl.where(col < 3, anchors + offset_scale * tanh, max_scale * sig)
        out = tl.where(is_rot, quat, out)
        out = tl.where(col == 10, opacity, out)
        return tl.where(col >= 11, sig, out)

    @triton.jit
    def _heads_backward(a, g, offset_scale, max_scale, OP: tl.constexpr):
        """d loss / d a from the gradients g of the attributes (same column layout)."""
        col, is_rot, sig, tanh, opacity, norm, inv_norm, quat = _head_terms(a, OP)
        radial = tl.where(norm > _QUAT_EPS, tl.sum(tl.where(is_rot, quat * g, 0.0), axis=1), 0.0)
        v_rot = (g - quat * radial[:, None]) * inv_norm[:, None]
        v_a = tl.where(col < 3, g * offset_scale * (1.0 - tanh * tanh), g * max_scale * sig * (1.0 - sig))
        v_a = tl.where(is_rot, v_rot, v_a)
        v_a = tl.where(col == 10, g * opacity * (1.0 - opacity), v_a)
        return tl.where(col >= 11, g * sig * (1.0 - sig), v_a)

    @triton.jit
    def _fusion_weights(w_in_ptr, w1_ptr, w2_ptr, F: tl.constexpr, HD: tl.constexpr, FP: tl.constexpr,
                        HP: tl.constexpr, DOT: tl.constexpr, TRANSPOSE: tl.constexpr = False):
        """The fusion MLP's weights (or their transposes) as tl.dot operands, with their unscales.
        Loaded once per program before its loop, they stay in shared memory. Backward reads the
        transposes from memory too: tl.trans of the held operands made the compiler keep them in
        registers instead."""
        w_in, u_in = _weight_operand(_tile(w_in_ptr, F, F, FP, FP, TRANSPOSE), DOT)
        w1, u1 = _weight_operand(_tile(w1_ptr, F, HD, FP, HP, TRANSPOSE), DOT)
        w2, u2 = _weight_operand(_tile(w2_ptr, HD, F, HP, FP, TRANSPOSE), DOT)
        return w_in, u_in, w1, u1, w2, u2

    @triton.jit
    def _decoder_weights(d1_ptr, d2_ptr, F: tl.constexpr, HD: tl.constexpr, O: tl.constexpr,
                         FP: tl.constexpr, HP: tl.constexpr, OP: tl.constexpr, DOT: tl.constexpr,
                         TRANSPOSE: tl.constexpr = False):
        """The decoder's weights (or their transposes) as tl.dot operands, with their unscales."""
        d1, v1 = _weight_operand(_tile(d1_ptr, F, HD, FP, HP, TRANSPOSE), DOT)
        d2, v2 = _weight_operand(_tile(d2_ptr, HD, O, HP, OP, TRANSPOSE), DOT)
        return d1, v1, d2, v2

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
        w_in, u_in, w1, u1, w2, u2 = _fusion_weights(w_in_ptr, w1_ptr, w2_ptr, F, HD, FP, HP, DOT)
        d1, v1, d2, v2 = _decoder_weights(d1_ptr, d2_ptr, F, HD, O, FP, HP, OP, DOT)
        # work items (block, frame), frame fastest: programs running together share a block in L2
        for item in range(tl.program_id(0), tl.cdiv(N, BLOCK_N) * B, tl.num_programs(0)):
            b = item % B
            rows = (item // B) * BLOCK_N + tl.arange(0, BLOCK_N)
            row_ok = rows < N
            ln, rstd, scale, x, h, z1, delta = _fusion_mlp(
                motion_basis_ptr, scale_shift_ptr, rows, row_ok, b, w_in, u_in, b_in_ptr, w1, u1, b1_ptr,
                w2, u2, b2_ptr, delta_scale, ln_eps, F, HD, FP, HP, DOT)
            z2, a = _decoder(_rows(features_ptr, rows, row_ok, F, FP) + delta, d1, v1, e1_ptr, d2, v2, e2_ptr,
                             HD, O, HP, OP, DOT)
            items = tl.cast(b, tl.int64) * N + rows
            anchors = _rows(anchors_ptr, rows, row_ok, 3, OP)
            _store_heads(_heads(a, anchors, offset_scale, max_scale, OP), items, row_ok,
                         means_ptr, scales_ptr, quats_ptr, opacities_ptr, colors_ptr, D, OP)
            if RETURN_DELTA:
                _store_rows(delta_ptr, delta, items, row_ok, F, FP)

    @triton.jit
    def _accumulate_rows(ptr, value, rows, row_ok, b, C, CP: tl.constexpr):
        """Add frame b's gradient of a per-Gaussian input (rows of a row-major [N, C] tensor); the
        program walking a block's frames owns its rows, so this needs no atomics or zeroing."""
        c = tl.arange(0, CP)
        ptrs = ptr + rows[:, None] * C + c[None, :]
        mask = row_ok[:, None] & (c < C)[None, :]
        later_frame = (rows * 0 + b) > 0  # a tensor, which the interpreter needs in a mask
        value += tl.load(ptrs, mask=mask & later_frame[:, None], other=0.0).to(tl.float32)
        tl.store(ptrs, value.to(ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _partials_row(v_weights_ptr, pid, partials_stride, F: tl.constexpr, HD: tl.constexpr, O: tl.constexpr):
        """Pointers to each weight's gradient in this program's row of the [programs, weights]
        float32 partials, in FusionWeights field order."""
        v_w_in = v_weights_ptr + pid.to(tl.int64) * partials_stride
        v_b_in = v_w_in + F * F
        v_w1 = v_b_in + F
        v_b1 = v_w1 + F * HD
        v_w2 = v_b1 + HD
        v_b2 = v_w2 + HD * F
        v_d1 = v_b2 + F
        v_e1 = v_d1 + F * HD
        v_d2 = v_e1 + HD
        return v_w_in, v_b_in, v_w1, v_b1, v_w2, v_b2, v_d1, v_e1, v_d2, v_d2 + HD * O

    @triton.jit
    def _block_of_item(item, pid, programs, B, N, BLOCK_N: tl.constexpr):
        """Work item -> (frame, rows, row_ok): frames fastest, the blocks pid, pid + programs, ...
        so that one program walks all frames of each of its blocks."""
        rows = (pid + (item // B) * programs) * BLOCK_N + tl.arange(0, BLOCK_N)
        return item % B, rows, rows < N

    @triton.jit
    def _decoder_backward_kernel(
        features_ptr, motion_basis_ptr, scale_shift_ptr,
        w_in_ptr, b_in_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, d1_ptr, e1_ptr, d2_ptr, e2_ptr,
        v_means_ptr, v_quats_ptr, v_scales_ptr, v_opacities_ptr, v_colors_ptr, v_delta_ptr,
        v_features_ptr, v_anchors_ptr, v_f_new_ptr, v_weights_ptr,
        N, B, partials_stride, offset_scale, max_scale, delta_scale, ln_eps,
        F: tl.constexpr, HD: tl.constexpr, D: tl.constexpr, O: tl.constexpr,
        FP: tl.constexpr, HP: tl.constexpr, OP: tl.constexpr,
        DOT: tl.constexpr, HAS_V_DELTA: tl.constexpr, BLOCK_N: tl.constexpr,
    ):
        """Backward, part 1: recompute the forward; gradients of the decoder weights (summed over
        this program's items in registers), of the anchors and features, and dL/d delta per frame
        (stored in v_f_new [B, N, F] for part 2)."""
        pid = tl.program_id(0)
        programs = tl.num_programs(0)
        w_in, u_in, w1, u1, w2, u2 = _fusion_weights(w_in_ptr, w1_ptr, w2_ptr, F, HD, FP, HP, DOT)
        d1, v1, d2, v2 = _decoder_weights(d1_ptr, d2_ptr, F, HD, O, FP, HP, OP, DOT)
        d1_t, v1_t, d2_t, v2_t = _decoder_weights(d1_ptr, d2_ptr, F, HD, O, FP, HP, OP, DOT, True)
        v_d1 = tl.zeros([FP, HP], tl.float32)
        v_d2 = tl.zeros([HP, OP], tl.float32)
        v_e1 = tl.zeros([HP], tl.float32)
        v_e2 = tl.zeros([OP], tl.float32)
        for item in range(0, tl.cdiv(tl.cdiv(N, BLOCK_N) - pid, programs) * B):
            b, rows, row_ok = _block_of_item(item, pid, programs, B, N, BLOCK_N)
            items = tl.cast(b, tl.int64) * N + rows
            ln, rstd, scale, x, h, z1, delta = _fusion_mlp(
                motion_basis_ptr, scale_shift_ptr, rows, row_ok, b, w_in, u_in, b_in_ptr, w1, u1, b1_ptr,
                w2, u2, b2_ptr, delta_scale, ln_eps, F, HD, FP, HP, DOT)
            f_new = _rows(features_ptr, rows, row_ok, F, FP) + delta
            z2, a = _decoder(f_new, d1, v1, e1_ptr, d2, v2, e2_ptr, HD, O, HP, OP, DOT)
            g = _load_heads(items, row_ok, v_means_ptr, v_scales_ptr, v_quats_ptr, v_opacities_ptr,
                            v_colors_ptr, D, OP)
            _accumulate_rows(v_anchors_ptr, g, rows, row_ok, b, 3, OP)
            v_a = _heads_backward(a, g, offset_scale, max_scale, OP)
            a2, sigmoid_z2 = _softplus_sigmoid(z2)
            v_d2 += _mm_tn(a2, v_a)
            v_e2 += tl.sum(v_a, axis=0)
            v_z2 = _mm(v_a, d2_t, v2_t, DOT) * sigmoid_z2
            v_d1 += _mm_tn(f_new, v_z2)
            v_e1 += tl.sum(v_z2, axis=0)
            v_f_new = _mm(v_z2, d1_t, v1_t, DOT)
            _accumulate_rows(v_features_ptr, v_f_new, rows, row_ok, b, F, FP)
            if HAS_V_DELTA:
                v_f_new += _rows(v_delta_ptr, items, row_ok, F, FP)
            _store_rows(v_f_new_ptr, v_f_new, items, row_ok, F, FP)
        _, _, _, _, _, _, v_d1_ptr, v_e1_ptr, v_d2_ptr, v_e2_ptr = _partials_row(
            v_weights_ptr, pid, partials_stride, F, HD, O)
        _store_tile(v_d1_ptr, v_d1, F, HD, FP, HP)
        _store_tile(v_e1_ptr, v_e1[None, :], 1, HD, 1, HP)
        _store_tile(v_d2_ptr, v_d2, HD, O, HP, OP)
        _store_tile(v_e2_ptr, v_e2[None, :], 1, O, 1, OP)

    @triton.jit
    def _fusion_backward_kernel(
        motion_basis_ptr, scale_shift_ptr, w_in_ptr, b_in_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr,
        v_f_new_ptr, v_motion_basis_ptr, v_weights_ptr, v_scale_shift_ptr,
        N, B, partials_stride, delta_scale, ln_eps,
        F: tl.constexpr, HD: tl.constexpr, O: tl.constexpr,
        FP: tl.constexpr, HP: tl.constexpr, OP: tl.constexpr,
        DOT: tl.constexpr, BLOCK_N: tl.constexpr,
    ):
        """Backward, part 2: from dL/d delta (v_f_new), the fusion MLP's weight gradients, the
        motion basis gradient and the per-frame v_scale_shift (this program's row)."""
        pid = tl.program_id(0)
        programs = tl.num_programs(0)
        w_in, u_in, w1, u1, w2, u2 = _fusion_weights(w_in_ptr, w1_ptr, w2_ptr, F, HD, FP, HP, DOT)
        w_in_t, u_in_t, w1_t, u1_t, w2_t, u2_t = _fusion_weights(w_in_ptr, w1_ptr, w2_ptr, F, HD, FP, HP, DOT, True)
        v_w_in = tl.zeros([FP, FP], tl.float32)
        v_w1 = tl.zeros([FP, HP], tl.float32)
        v_w2 = tl.zeros([HP, FP], tl.float32)
        v_b_in = tl.zeros([FP], tl.float32)
        v_b1 = tl.zeros([HP], tl.float32)
        v_b2 = tl.zeros([FP], tl.float32)
        cf = tl.arange(0, FP)
        for item in range(0, tl.cdiv(tl.cdiv(N, BLOCK_N) - pid, programs) * B):
            b, rows, row_ok = _block_of_item(item, pid, programs, B, N, BLOCK_N)
            ln, rstd, scale, x, h, z1, delta = _fusion_mlp(
                motion_basis_ptr, scale_shift_ptr, rows, row_ok, b, w_in, u_in, b_in_ptr, w1, u1, b1_ptr,
                w2, u2, b2_ptr, delta_scale, ln_eps, F, HD, FP, HP, DOT)
            v_y = delta_scale * _rows(v_f_new_ptr, tl.cast(b, tl.int64) * N + rows, row_ok, F, FP)
            a1, sigmoid_z1 = _softplus_sigmoid(z1)
            v_w2 += _mm_tn(a1, v_y)
            v_b2 += tl.sum(v_y, axis=0)
            v_z1 = _mm(v_y, w2_t, u2_t, DOT) * sigmoid_z1
            v_w1 += _mm_tn(h, v_z1)
            v_b1 += tl.sum(v_z1, axis=0)
            v_h = _mm(v_z1, w1_t, u1_t, DOT)
            v_w_in += _mm_tn(x, v_h)
            v_b_in += tl.sum(v_h, axis=0)
            v_x = _mm(v_h, w_in_t, u_in_t, DOT)
            v_ss_row = v_scale_shift_ptr + (pid * B + b) * 2 * F
            tl.atomic_add(v_ss_row + cf, tl.sum(v_x * ln, axis=0), mask=cf < F)
            tl.atomic_add(v_ss_row + F + cf, tl.sum(v_x, axis=0), mask=cf < F)
            # LayerNorm backward (no affine)
            v_ln = v_x * scale[None, :]
            mean_v = tl.sum(v_ln, axis=1) / F
            mean_v_ln = tl.sum(v_ln * ln, axis=1) / F
            v_m = rstd[:, None] * (v_ln - mean_v[:, None] - ln * mean_v_ln[:, None])
            _accumulate_rows(v_motion_basis_ptr, v_m, rows, row_ok, b, F, FP)
        v_w_in_ptr, v_b_in_ptr, v_w1_ptr, v_b1_ptr, v_w2_ptr, v_b2_ptr, _, _, _, _ = _partials_row(
            v_weights_ptr, pid, partials_stride, F, HD, O)
        _store_tile(v_w_in_ptr, v_w_in, F, F, FP, FP)
        _store_tile(v_b_in_ptr, v_b_in[None, :], 1, F, 1, FP)
        _store_tile(v_w1_ptr, v_w1, F, HD, FP, HP)
        _store_tile(v_b1_ptr, v_b1[None, :], 1, HD, 1, HP)
        _store_tile(v_w2_ptr, v_w2, HD, F, HP, FP)
        _store_tile(v_b2_ptr, v_b2[None, :], 1, F, 1, FP)


def _grid(n: int, device: torch.device, launch: FusionLaunch) -> tuple[int]:
    """Persistent grid: one program per block up to programs_per_sm per multiprocessor (never 0,
    so the backward always writes at least one row of partials)."""
    if device.type == "cuda":
        slots = launch.programs_per_sm * torch.cuda.get_device_properties(device).multi_processor_count
    else:  # interpreter: a few programs, so that the grid-stride loop is exercised
        slots = launch.programs_per_sm
    return (max(1, min(triton.cdiv(n, launch.block_n), slots)),)


def _constexprs(config: FusionConfig, launch: FusionLaunch) -> dict:
    return dict(
        F=config.feature_dim, HD=config.hidden_dim, D=config.color_dim, O=config.out_dim,
        FP=next_power_of_2(max(16, config.feature_dim)), HP=next_power_of_2(max(16, config.hidden_dim)),
        OP=next_power_of_2(max(16, config.out_dim)), DOT=config.dot_operands,
        BLOCK_N=launch.block_n, num_warps=launch.num_warps, num_stages=launch.num_stages,
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
        RETURN_DELTA=return_delta, **_constexprs(config, launch),
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
    """Launch the two backward kernels: (v_features, v_motion_basis, v_anchors, v_scale_shift, v_weights).

    Both run on one grid, so that each program fills its whole row of weight-gradient partials.
    Their loops read back per-Gaussian gradients they stored for the previous frame, so their
    loads must not be software-pipelined: num_stages = 1."""
    n, b = features.shape[0], scale_shift.shape[0]
    launch = launch or (INTERPRETER_LAUNCH if interpreting() else default_launch(config, True))
    if launch.num_stages != 1:
        raise ValueError(f"the backward kernels need num_stages=1, got {launch.num_stages}")
    grid = _grid(n, features.device, launch)
    shapes_ = config.weight_shapes()
    sizes = [math.prod(s) for s in shapes_.values()]
    new = dict(device=features.device, dtype=torch.float32)
    v_features, v_motion_basis = torch.empty_like(features), torch.empty_like(motion_basis)
    v_anchors = torch.empty(n, 3, device=features.device, dtype=features.dtype)
    v_f_new = torch.empty(b, n, config.feature_dim, **new)  # dL/d delta per frame, part 1 -> part 2
    partials = torch.empty(grid[0], sum(sizes), **new)
    v_ss_partials = torch.zeros(grid[0], b, 2 * config.feature_dim, **new)
    v_outputs = [v.contiguous() for v in v_outputs]
    has_v_delta = len(v_outputs) == 6
    constexprs = _constexprs(config, launch)
    scalars = (config.offset_scale, config.max_scale, config.delta_scale, config.layer_norm_eps)
    _decoder_backward_kernel[grid](
        features, motion_basis, scale_shift, *weights.tensors(), *v_outputs[:5],
        v_outputs[5] if has_v_delta else v_outputs[0], v_features, v_anchors, v_f_new, partials,
        n, b, partials.stride(0), *scalars, HAS_V_DELTA=has_v_delta, **constexprs,
    )
    constexprs.pop("D")
    _fusion_backward_kernel[grid](
        motion_basis, scale_shift, *weights.tensors()[:6], v_f_new, v_motion_basis, partials, v_ss_partials,
        n, b, partials.stride(0), *scalars[2:], **constexprs,
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


def held_weight_bytes(config: FusionConfig) -> int:
    """Shared memory the backward's decoder kernel holds: every weight and the decoder's transposes,
    as fp16 tiles padded to powers of two."""
    fp, hp, op = (next_power_of_2(max(16, d)) for d in (config.feature_dim, config.hidden_dim, config.out_dim))
    return 2 * (fp * fp + 4 * fp * hp + 2 * hp * op)


def triton_unsupported_reasons(config: FusionConfig, dtype: torch.dtype) -> list[str]:
    """Why the Triton kernels cannot run this config and input dtype (empty when they can)."""
    reasons = []
    if dtype not in KERNEL_DTYPES:
        reasons.append(f"inputs are {dtype}; the kernels take {[str(d) for d in KERNEL_DTYPES]}")
    if config.out_dim > MAX_OUTPUTS:
        reasons.append(f"11 + color_dim = {config.out_dim} outputs; the kernels take at most {MAX_OUTPUTS}")
    if held_weight_bytes(config) > MAX_WEIGHT_BYTES:
        reasons.append(f"feature_dim {config.feature_dim} with hidden_dim {config.hidden_dim} needs "
                       f"{held_weight_bytes(config) // 1024} KB of weights on chip; the kernels hold at most "
                       f"{MAX_WEIGHT_BYTES // 1024} KB")
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
    reasons = triton_unsupported_reasons(config, features.dtype)
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
    """Fewest bytes one pass must move through device memory, each tensor read or written once:
    forward reads f, m, p, scale_shift and the weights and writes the B frames of Gaussians;
    backward reads f, m, scale_shift, the weights and the Gaussians' gradients and writes the
    gradients of all of them (in the inputs' dtype throughout)."""
    f, o = config.feature_dim, config.out_dim
    weights = sum(math.prod(s) for s in config.weight_shapes().values())
    per_gaussian = n * (2 * f + 3)  # f, m, p (or their gradients)
    elements = per_gaussian + b * 2 * f + weights + b * n * o
    if backward:
        elements += n * 2 * f + b * 2 * f + weights
    return elements * torch.finfo(dtype).bits // 8
