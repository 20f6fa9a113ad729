"""Per-Gaussian local motion fusion + Gaussian decoder, fused into Triton kernels.

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

Weights travel as one float32 buffer (``FusionWeights.packed``, every weight flattened in field
order, built once and reused until a weight changes), so that a launch binds few arguments: the
public call is short on the host, which at 200k Gaussians takes as long as the kernel.

Forward: a persistent grid of ``programs_per_sm`` programs per multiprocessor. Each program loads
every weight once (they stay in shared memory as tl.dot operands) and walks work items (block of
BLOCK_N Gaussians, frame b) in one flat loop. The five matmuls per item are ``tl.dot`` on tiles
padded to powers of two >= 16 (F -> FP, Hd -> HP, O -> OP, masked); activations and heads are fused
and the heads stored straight into the rasterizer's layout (means [B,N,3], quats [B,N,4], scales
[B,N,3], opacities [B,N], colors [B,N,D]). When a gradient is wanted the forward also saves, per
Gaussian and frame, f' and the softplus of the fusion MLP's hidden layer ([B, N, F + Hd], 288 bytes in
bf16 at the paper's widths), and LayerNorm(m) once per Gaussian ([N, F]; x = LayerNorm(m) * scale + shift
is rebuilt from it). The backward recomputes only the decoder from f' (its hidden layer had been saved
too: 480 bytes a row, and the saving forward took 0.716 against 0.622 ms at 200k, B = 8, while the per-row
kernel, which reads less, went 1066 -> 1042 us; H100, 2026-11-26). On sm_90
and later, where the widths allow (``saves_by_descriptor``), those tiles go out through tensor
descriptors (TMA), which leaves the forward few enough registers for four programs a multiprocessor
(at a 128-register cap; the plain forward runs three).

Backward, three kernels with their own launch shapes: ``_backward_rows_kernel`` walks work items (block
of Gaussians, frame), runs the decoder again from the saved f', and stores per row (Gaussian, frame)
the gradients of the pre-activations that the other two kernels take ([B, N, GW]: d/dh, d/dz1, d/df',
d/dz2); the one weight gradient it forms itself is the decoder's last layer's (D2, e2: a2^T d/da, a
[Hd, O] accumulator per program, into a row of [programs, Hd * O + O]), since it holds both factors and
d/da is narrow. ``_backward_gaussians_kernel`` walks blocks of Gaussians and sums their gradients (v_p,
v_m) over the frames from the stored d/dh rows and v_means (the LayerNorm backward, linear, runs once
per block on the frame sum, from the forward's saved LayerNorm(m) and 1 / std), with no sum across rows;
it runs on a second stream beside ``_weight_grad_kernel``, in the multiprocessors that the weight groups
leave as they finish (op_backward at 200k, B = 8: 2.004 against 1.952 ms one after the other; H100,
2026-11-26).
``_weight_grad_kernel`` forms the other weight gradients as X^T dY over all B * N rows (saved
activations X, stored gradients dY; biases as column sums of dY, from the same tl.dot through a column
of ones in X's padding), one weight per program and chunks of Gaussians per weight (every frame of them,
a block's frames in a row), into rows of a [chunks, P + 2FB] float32 buffer that
``_sum_partials_kernel`` adds up; W2's program, which reads d/df', also sums it over the frames into
v_features. W1's input h is not saved: its gradient is W_in^T (x^T dz1) + b_in (1^T dz1), applied per
chunk. W_in's program sums G_b = LayerNorm(m)^T dh per frame, which gives both W_in's gradient and
v_scale_shift (the row's last 2FB columns), and adds up a share of the per-row kernel's D2 rows into the
row's D2 slice. The result is deterministic (a fixed grid per device, sums in a fixed order): checked on
an H100 at the paper's widths and at F / Hd = 32 / 64, 64 / 96, 64 / 128, 96 / 128, 64 / 256, 32 / 256
and 48 / 96 with 16 colours (docs/benchmarks.md, 2026-11-26; the bias sums had come from a second tl.dot
on the same tile, which gave D1's gradient run-to-run differences at F = 96 / Hd = 128). The fusion
MLP's softplus derivative comes from the saved softplus: sigmoid(z) = 1 - exp(-softplus(z)); the
decoder's from the recomputed one (float32).

Precision: elementwise maths and all accumulation in float32; exp, log and 1/x are the hardware's
approximations (ex2.approx.ftz/lg2/rcp.approx, relative error ~2^-22; results below 2^-126 flushed to
0), since libdevice's logf, IEEE division and ex2's subnormal handling had made up most of the
instructions. ``config.dot_operands`` picks the tl.dot operands: "bf16" (default; 8 significant bits) or
"fp16" (11 bits, like tf32: each activation row scaled to largest magnitude 2^14, weights scaled per
tensor; slower). Weight gradients (sums over the Gaussians) always come from bf16 operands. The saved
activations and the stored per-row gradients are bf16 with bf16 operands (the backward's softplus
derivatives and the bias sums then carry their 2^-9 relative rounding) and float32 with fp16 operands.
Measured errors against the float64 twin are in docs/benchmarks.md. Outputs and input gradients come in
the inputs' dtype, weight gradients in the weights' dtype.

Limits: inputs, scale_shift and weights share one dtype (float32 or bfloat16; the twin also takes
float64); 11 + color_dim <= 64; the padded fp16 weights held by a kernel must fit in 180 KB of shared
memory (every F <= 96 with Hd <= 128; Hd = 256 with F <= 64 and at most 21 colour channels;
``triton_unsupported_reasons`` says); N * F < 2^31. Tuned for F <= 64, Hd <= 128: larger tiles spill
registers. Under the Triton interpreter bf16 dots are emulated by rounding the operands to bf16 and
multiplying in float32 (its native bf16 ``tl.dot`` multiplies the raw bits: the same arithmetic as the
hardware's bf16 products with float32 accumulation) and exp/log/1/x are exact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .. import shapes
from ..backend import interpreting, resolve_backend
from ._triton import cdiv, ensure_allocator, launch_kernel, next_power_of_2, triton, tl
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
    # the packed buffer and the state of the weights it was built from (see packed)
    _cache: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    def tensors(self) -> tuple[Tensor, ...]:
        return (self.w_in, self.b_in, self.w1, self.b1, self.w2, self.b2, self.d1, self.e1, self.d2, self.e2)

    def packed(self, config: "FusionConfig", dtype: torch.dtype, device: torch.device) -> Tensor:
        """Every weight, detached and flattened in field order, in one float32 buffer [P] (the
        kernels' single weight argument), after checking their shapes against ``config`` and their
        dtype and device against the inputs'. Built once and reused while every weight keeps its
        storage and version counter (an in-place update, an optimizer step say, bumps it)."""
        tensors = self.tensors()
        key = (config, dtype, device, *((t._version, t.data_ptr()) for t in tensors))
        if self._cache.get("key") != key:
            check_weights(self, config, dtype, device)
            with torch.no_grad():
                self._cache["packed"] = torch.cat([t.reshape(-1) for t in tensors]).to(torch.float32)
            self._cache["key"] = key
        return self._cache["packed"]

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
    """How a kernel splits the work (tuned on an H100, see docs/benchmarks.md)."""

    block_n: int  # Gaussians per block: the M of every per-Gaussian tl.dot (weight_grads: rows per block)
    num_warps: int
    num_stages: int  # software pipelining of the loads
    programs_per_sm: int  # persistent grid size = min(blocks, programs_per_sm * multiprocessors)
    # (weight_grads: chunks of rows = that / WEIGHT_GROUPS, rounded up; WEIGHT_GROUPS programs a chunk)
    max_registers: Optional[int] = None  # per thread (Triton's maxnreg); None: the compiler's choice


# "forward_saving": the forward when it saves for the backward through tensor descriptors
KERNELS = ("forward", "forward_saving", "backward_rows", "backward_gaussians", "weight_grads")
WEIGHT_GROUPS = 4  # programs per chunk of rows in the weight-gradient kernel: w_in, w1, w2, d1
SUM_COLUMNS = 256  # columns a program of _sum_partials_kernel adds up
INTERPRETER_LAUNCH = FusionLaunch(block_n=16, num_warps=4, num_stages=1, programs_per_sm=3)
INTERPRETER_WEIGHT_GRADS_LAUNCH = FusionLaunch(block_n=16, num_warps=4, num_stages=1, programs_per_sm=10)  # 2 chunks


def default_launch(config: FusionConfig, kernel: str, device: Optional[torch.device] = None) -> FusionLaunch:
    """The launch of each kernel (one of KERNELS) for this config on ``device`` (default: the current
    CUDA device): for F <= 64, Hd <= 128 the fastest of the sweeps on an H100 (docs/benchmarks.md; the
    weight-gradient kernel's is one wave of one program per multiprocessor, where the device gives a program
    the shared memory it takes). Larger tiles take the shapes that the compiler's report for sm_90 shows
    fitting with the fewest spills (not timed)."""
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    large_shared = _shared_memory_per_program(device) >= 224 * 1024
    return _default_launch(config, kernel, interpreting(), large_shared)


@functools.lru_cache(maxsize=None)
def _shared_memory_per_program(device: torch.device) -> int:
    """Bytes of shared memory one program may take on a CUDA device (its opt-in limit; 0 elsewhere)."""
    if interpreting() or device.type != "cuda":
        return 0
    return torch.cuda.get_device_properties(device).shared_memory_per_block_optin


@functools.lru_cache(maxsize=None)
def _default_launch(config: FusionConfig, kernel: str, interpreter: bool, large_shared: bool) -> FusionLaunch:
    if interpreter:
        return INTERPRETER_WEIGHT_GRADS_LAUNCH if kernel == "weight_grads" else INTERPRETER_LAUNCH
    fp, hp, op = (next_power_of_2(max(16, d)) for d in (config.feature_dim, config.hidden_dim, config.out_dim))
    small = fp <= 64 and hp <= 128
    # the per-row kernel's D2 accumulator: 64 rows fit (sm_90) with hidden tiles of at most 96 columns and
    # 16 outputs (F = 64 / Hd = 96 spills 16 bytes); Hd = 128 at 64 rows spilled 184
    narrow_hidden = small and sum(hidden_tiles(config.hidden_dim, hp)) <= 96
    narrow = narrow_hidden and op <= 16
    return {
        # three programs a multiprocessor, one stage, where the hidden tiles are at most 96 columns: 142
        # registers (paper widths; at most 168, sm_90) saving through tensor descriptors, 137 without saving
        # (at 64 / 4 / 2 / 2 the saving forward took 0.831 against 0.713 ms at 200k, B = 8, and the plain one
        # 0.511 against 0.451; H100, 2026-11-26); Hd = 128 takes 175-189 registers, two programs
        "forward": FusionLaunch(64, 4, 1, 3) if narrow_hidden else FusionLaunch(64, 4, 2, 2) if small
        else FusionLaunch(32, 4, 2, 1),
        # four programs a multiprocessor, capped at 128 registers (142 uncapped; 24 bytes of spill at the
        # paper's widths, 40 at F = 64 / Hd = 96, sm_90) where the shared memory of four fits (at most 16
        # outputs): the saving forward at 200k took 0.620 -> 0.559 ms at B = 8 and 0.110 -> 0.101 at B = 1
        # (H100, 2026-11-26, paper widths); the plain forward needs 64 KB and so keeps three
        "forward_saving": FusionLaunch(64, 4, 1, 4, 128) if narrow else FusionLaunch(64, 4, 1, 3) if narrow_hidden
        else FusionLaunch(64, 4, 2, 2) if small else FusionLaunch(32, 4, 2, 1),
        "backward_rows": FusionLaunch(64, 4, 1, 2) if narrow else FusionLaunch(32, 4, 1, 2) if small
        else FusionLaunch(32, 8, 1, 1),
        # since v_features moved to the weight-gradient kernel: 44 / 120 us at 200k, B = 1 / 8, against 55 /
        # 161 at 32 / 4 / 2 / 8 (H100, 2026-11-26)
        "backward_gaussians": FusionLaunch(64, 4, 2, 4) if small else FusionLaunch(32, 8, 1, 1),
        # three stages since the loop over (block, frame) is one loop (_weight_grad): the one-frame step
        # replayed from a CUDA graph 0.403 -> 0.388 ms, eight frames 2.445 -> 2.402 at 64 / 4 / 3 / 2 (the
        # flat loop at two stages: 0.405 / 2.472, at one: 0.416 / 2.926); then one 8-warp program a
        # multiprocessor (at most 223 registers, sm_90): 0.389 -> 0.384 at B = 1, and half the partial rows
        # to sum (H100, 2026-11-26 23:18-23:35 UTC). With bf16 rows it takes up to 210 KB of shared memory
        # (with the delta output's gradient; 140 KB without; sm_90), which Hopper's 227 KB a program holds;
        # float32 rows (fp16 operands: 272 KB) or a device with less keep two 4-warp programs
        "weight_grads": FusionLaunch(128, 8, 3, 1) if small and large_shared and config.dot_operands == "bf16"
        else FusionLaunch(64, 4, 2, 2) if small else FusionLaunch(64, 8, 2, 1),
    }[kernel]


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
    def _exp(x):
        """e^x through tl.exp2, which compiles to ex2.approx.ftz (sm_90, Triton 3.6): tl.exp compiles to
        ex2.approx.f32, whose handling of subnormal results costs three more instructions a call (a
        compare and two predicated multiplies): 12% of the per-row backward kernel's instructions and 10%
        of the forward's, and the one-frame step replayed from a CUDA graph took 0.370 -> 0.336 ms (H100,
        docs/benchmarks.md). Results below 2^-126 become 0, which no caller tells apart (each adds them
        to 1 or scales a gradient by them; the gradients came out bit-identical)."""
        return tl.exp2(x * 1.4426950408889634)

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
        return _rcp(1.0 + _exp(-z))

    @triton.jit
    def _softplus(z):
        return tl.maximum(z, 0.0) + _log(1.0 + _exp(-tl.abs(z)))

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
    def _dot_fp32(a, b):
        """a @ b for float32 tiles at about float32 accuracy: three tf32 products on the tensor cores
        (an FMA dot, "ieee", held both tiles in registers and spilled)."""
        if _INTERPRET:
            out = tl.dot(a, b, input_precision="ieee")
        else:
            out = tl.dot(a, b, input_precision="tf32x3")
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
    def _tile(ptr, R, C, STRIDE, RP: tl.constexpr, CP: tl.constexpr, TRANSPOSE: tl.constexpr = False):
        """[R, C] block at ptr of a row-major tensor with row stride STRIDE as a float32 [RP, CP]
        tile, zero-padded (or its transpose [CP, RP], read transposed from memory)."""
        if TRANSPOSE:
            r = tl.arange(0, RP)[None, :]
            c = tl.arange(0, CP)[:, None]
        else:
            r = tl.arange(0, RP)[:, None]
            c = tl.arange(0, CP)[None, :]
        return tl.load(ptr + r * STRIDE + c, mask=(r < R) & (c < C), other=0.0).to(tl.float32)

    @triton.jit
    def _vec(ptr, C, CP: tl.constexpr):
        c = tl.arange(0, CP)
        return tl.load(ptr + c, mask=c < C, other=0.0).to(tl.float32)

    @triton.jit
    def _store_tile(ptr, value, R, C, RP: tl.constexpr, CP: tl.constexpr):
        r = tl.arange(0, RP)[:, None]
        c = tl.arange(0, CP)[None, :]
        tl.store(ptr + r * C + c, value, mask=(r < R) & (c < C))

    @triton.jit
    def _stored_rows(ptr, rows, row_ok, C, CP: tl.constexpr, STRIDE):
        """Columns [0, C) of rows ``rows`` of a row-major tensor with row stride STRIDE, as a
        [BLOCK_N, CP] tile in the tensor's dtype: a saved bf16 activation stays a bf16 tile (half the
        registers) until it is used, and as a bf16 tl.dot operand it is exact."""
        c = tl.arange(0, CP)
        return tl.load(ptr + rows[:, None] * STRIDE + c[None, :], mask=row_ok[:, None] & (c < C)[None, :],
                       other=0.0)

    @triton.jit
    def _rows(ptr, rows, row_ok, C, CP: tl.constexpr, STRIDE):
        """_stored_rows as a float32 tile."""
        return _stored_rows(ptr, rows, row_ok, C, CP, STRIDE).to(tl.float32)

    @triton.jit
    def _store_rows(ptr, value, rows, row_ok, C, CP: tl.constexpr, STRIDE):
        c = tl.arange(0, CP)
        tl.store(ptr + rows[:, None] * STRIDE + c[None, :], value.to(ptr.dtype.element_ty),
                 mask=row_ok[:, None] & (c < C)[None, :])

    @triton.jit
    def _store_in_place(ptrs, value, mask):
        """tl.store(ptrs, value, mask) from the registers value is in (a tl.dot result's layout), one
        st.global per element: tl.store first moves a tile through shared memory into a layout whose
        threads write contiguous runs, a barrier each way, and at the register limit those barriers
        cost more than the wider writes save (H100, docs/benchmarks.md)."""
        dtype = ptrs.dtype.element_ty
        if _INTERPRET:
            tl.store(ptrs, value.to(dtype), mask=mask)
        else:
            if dtype == tl.bfloat16:
                tl.inline_asm_elementwise(
                    "{ .reg .pred p; setp.ne.b32 p, $3, 0; @p st.global.b16 [$1], $2; mov.u32 $0, 0; }",
                    "=r,l,h,r", [ptrs.to(tl.int64, bitcast=True), value.to(dtype), mask.to(tl.int32)],
                    dtype=tl.int32, is_pure=False, pack=1)
            else:
                tl.inline_asm_elementwise(
                    "{ .reg .pred p; setp.ne.b32 p, $3, 0; @p st.global.b32 [$1], $2; mov.u32 $0, 0; }",
                    "=r,l,r,r", [ptrs.to(tl.int64, bitcast=True), value.to(dtype), mask.to(tl.int32)],
                    dtype=tl.int32, is_pure=False, pack=1)

    @triton.jit
    def _head_slice(ptr, items, row_ok, START: tl.constexpr, WIDTH: tl.constexpr, OP: tl.constexpr):
        """Pointers and mask placing columns [START, START + WIDTH) of a [BLOCK_N, OP] head tile in
        the row-major [*, WIDTH] output whose rows are ``items``."""
        col = tl.arange(0, OP)
        inside = (col >= START) & (col < START + WIDTH)
        return ptr + items[:, None] * WIDTH + (col - START)[None, :], row_ok[:, None] & inside[None, :]

    @triton.jit
    def _head_pointers(items, row_ok, means_ptr, scales_ptr, quats_ptr, opacities_ptr, colors_ptr,
                       D: tl.constexpr, OP: tl.constexpr):
        """Pointers and mask placing each column of a head tile [BLOCK_N, OP] (rows ``items``) in its
        tensor: one pointer tile picks the tensor per column, so a tile moves in one load or store."""
        col = tl.arange(0, OP)[None, :]
        ptrs, _ = _head_slice(colors_ptr, items, row_ok, 11, D, OP)
        ptrs = tl.where(col == 10, _head_slice(opacities_ptr, items, row_ok, 10, 1, OP)[0], ptrs)
        ptrs = tl.where(col < 10, _head_slice(quats_ptr, items, row_ok, 6, 4, OP)[0], ptrs)
        ptrs = tl.where(col < 6, _head_slice(scales_ptr, items, row_ok, 3, 3, OP)[0], ptrs)
        ptrs = tl.where(col < 3, _head_slice(means_ptr, items, row_ok, 0, 3, OP)[0], ptrs)
        return ptrs, row_ok[:, None] & (col < 11 + D)

    @triton.jit
    def _store_heads(out, items, row_ok, means_ptr, scales_ptr, quats_ptr, opacities_ptr, colors_ptr,
                     D: tl.constexpr, OP: tl.constexpr):
        """Columns of the head tile out [BLOCK_N, OP] into their five tensors, each element from the
        thread that holds it."""
        ptrs, mask = _head_pointers(items, row_ok, means_ptr, scales_ptr, quats_ptr, opacities_ptr, colors_ptr, D, OP)
        _store_in_place(ptrs, out, mask)

    @triton.jit
    def _load_heads(items, row_ok, means_ptr, scales_ptr, quats_ptr, opacities_ptr, colors_ptr,
                    D: tl.constexpr, OP: tl.constexpr):
        """The five per-head tensors at rows ``items`` gathered into one float32 [BLOCK_N, OP] tile."""
        ptrs, mask = _head_pointers(items, row_ok, means_ptr, scales_ptr, quats_ptr, opacities_ptr, colors_ptr, D, OP)
        return tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)

    @triton.jit
    def _layer_norm(m, F: tl.constexpr, FP: tl.constexpr, eps):
        """LayerNorm without affine over the F valid columns of m [BLOCK_N, FP] (padding is 0)."""
        valid = (tl.arange(0, FP) < F)[None, :]
        mean = tl.sum(m, axis=1) / F
        centred = tl.where(valid, m - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=1) / F + eps)
        return centred * rstd[:, None], rstd

    @triton.jit
    def _weight_ptrs(ptr, F: tl.constexpr, HD: tl.constexpr, O: tl.constexpr):
        """Pointers to each weight in a flat buffer holding them in FusionWeights field order (the
        packed weights, or a row of gradient partials)."""
        w_in = ptr
        b_in = w_in + F * F
        w1 = b_in + F
        b1 = w1 + F * HD
        w2 = b1 + HD
        b2 = w2 + HD * F
        d1 = b2 + F
        e1 = d1 + F * HD
        d2 = e1 + HD
        return w_in, b_in, w1, b1, w2, b2, d1, e1, d2, d2 + HD * O

    @triton.jit
    def _saved_cols(saved_ptr, F: tl.constexpr, HD: tl.constexpr):
        """Where each saved activation starts in a row of the [B, N, F + Hd] buffer: f', softplus of
        the fusion MLP's hidden layer. (The fusion MLP's input x = LayerNorm(m) * scale_b + shift_b is
        rebuilt from LayerNorm(m), saved once per Gaussian; the decoder's hidden layer from f'.)"""
        return saved_ptr, saved_ptr + F

    @triton.jit
    def _grad_cols(grads_ptr, F: tl.constexpr, HD: tl.constexpr):
        """Where each stored gradient starts in a row of the [B, N, GW] buffer: d loss / d h, / d the
        fusion MLP's hidden pre-activation, / d f' (the decoder's input: d loss / d f, without the
        delta output's own gradient), / d the decoder's hidden pre-activation (d / d a, the decoder
        outputs, is not stored: part 1 uses it itself)."""
        return grads_ptr, grads_ptr + F, grads_ptr + F + HD, grads_ptr + 2 * F + HD

    @triton.jit
    def _softplus_grad(a):
        """softplus'(z) = sigmoid(z) = 1 - exp(-a) from a = softplus(z) >= 0; a series below 2^-6,
        where 1 - exp(-a) would cancel."""
        return tl.where(a < 0.015625, a * (1.0 - a * (0.5 - a * (1.0 / 6.0))), 1.0 - _exp(-a))

    @triton.jit
    def _two_layer_weights(first_ptr, second_ptr, K, KP: tl.constexpr, M, MP: tl.constexpr, HD: tl.constexpr,
                           HA: tl.constexpr, HB: tl.constexpr, DOT: tl.constexpr):
        """first [K, Hd] and second [Hd, M] as tl.dot operands (with their unscales), split along Hd
        into tiles of HA and HB (HB = 0: one tile, and the b operands repeat the a ones)."""
        first_a, fa = _weight_operand(_tile(first_ptr, K, HD, HD, KP, HA), DOT)
        second_a, sa = _weight_operand(_tile(second_ptr, HD, M, M, HA, MP), DOT)
        first_b, fb, second_b, sb = first_a, fa, second_a, sa
        if HB > 0:
            first_b, fb = _weight_operand(_tile(first_ptr + HA, K, HD - HA, HD, KP, HB), DOT)
            second_b, sb = _weight_operand(_tile(second_ptr + HA * M, HD - HA, M, M, HB, MP), DOT)
        return first_a, fa, first_b, fb, second_a, sa, second_b, sb

    @triton.jit
    def _two_layer(x, first_a, fa, first_b, fb, bias_ptr, second_a, sa, second_b, sb, HD: tl.constexpr,
                   HA: tl.constexpr, HB: tl.constexpr, DOT: tl.constexpr):
        """softplus(x @ first + bias) @ second, the hidden width Hd in tiles of HA and HB columns
        (96 = 64 + 32: padding it to 128 cost a quarter more hidden work); returns the two hidden
        tiles (the second is the first when HB = 0) and the output."""
        hidden_a = _softplus(_mm(x, first_a, fa, DOT) + _vec(bias_ptr, HD, HA)[None, :])
        out = _mm(hidden_a, second_a, sa, DOT)
        hidden_b = hidden_a
        if HB > 0:
            hidden_b = _softplus(_mm(x, first_b, fb, DOT) + _vec(bias_ptr + HA, HD - HA, HB)[None, :])
            out += _mm(hidden_b, second_b, sb, DOT)
        return hidden_a, hidden_b, out

    @triton.jit
    def _store_hidden(ptr, hidden_a, hidden_b, items, row_ok, STRIDE, HD: tl.constexpr, HA: tl.constexpr,
                      HB: tl.constexpr):
        _store_rows(ptr, hidden_a, items, row_ok, HD, HA, STRIDE)
        if HB > 0:
            _store_rows(ptr + HA, hidden_b, items, row_ok, HD - HA, HB, STRIDE)

    @triton.jit
    def _descriptor_store(desc, tile, b, row, col):
        """tile [BLOCK_N, W] into frame b of a [B, N, width] descriptor at (row, col), in its dtype."""
        desc.store([b, row, col], tile.to(desc.dtype)[None, :, :])

    @triton.jit
    def _hidden_descriptors(ptr, B, N, S, HD: tl.constexpr, BLOCK_N: tl.constexpr, HA: tl.constexpr,
                            HB: tl.constexpr):
        """A saved hidden layer (columns [0, Hd) at ptr, row stride S) as [B, N, Hd] descriptors of its
        HA- and HB-column tiles (HB = 0: the b one repeats the a one)."""
        desc_a = tl.make_tensor_descriptor(ptr, [B, N, HD], [N * S, S, 1], [1, BLOCK_N, HA])
        desc_b = desc_a
        if HB > 0:
            desc_b = tl.make_tensor_descriptor(ptr, [B, N, HD], [N * S, S, 1], [1, BLOCK_N, HB])
        return desc_a, desc_b

    @triton.jit
    def _descriptor_store_hidden(desc_a, desc_b, hidden_a, hidden_b, b, row, HA: tl.constexpr, HB: tl.constexpr):
        """_store_hidden through _hidden_descriptors' pair, into frame b at row."""
        _descriptor_store(desc_a, hidden_a, b, row, 0)
        if HB > 0:
            _descriptor_store(desc_b, hidden_b, b, row, HA)

    @triton.jit
    def _head_terms(a, OP: tl.constexpr):
        """What the heads take from the decoder outputs a [BLOCK_N, OP], for every column: the column
        index, the rotation columns, each column's one sigmoid (of 2a for the mean offsets, whose
        tanh(a) = 2 sigmoid(2a) - 1; of a - 1 for the opacity; of a elsewhere), the quaternion norm per
        row and a / max(norm, eps)."""
        col = tl.arange(0, OP)[None, :]
        is_rot = (col >= 6) & (col < 10)
        norm = tl.sqrt(tl.sum(tl.where(is_rot, a * a, 0.0), axis=1))
        inv_norm = _rcp(tl.maximum(norm, _QUAT_EPS))
        sig = _sigmoid(tl.where(col < 3, 2.0 * a, tl.where(col == 10, a - 1.0, a)))
        return col, is_rot, sig, norm, inv_norm, a * inv_norm[:, None]

    @triton.jit
    def _heads(a, anchors, OFFSET_SCALE: tl.constexpr, MAX_SCALE: tl.constexpr, OP: tl.constexpr):
        """Decoder outputs a [BLOCK_N, OP] -> attributes, column by column (anchors in columns 0-2)."""
        col, is_rot, sig, norm, inv_norm, quat = _head_terms(a, OP)
        out = tl.where(col < 3, anchors + OFFSET_SCALE * (2.0 * sig - 1.0), tl.where(col < 6, MAX_SCALE * sig, sig))
        return tl.where(is_rot, quat, out)

    @triton.jit
    def _heads_backward(a, g, OFFSET_SCALE: tl.constexpr, MAX_SCALE: tl.constexpr, OP: tl.constexpr):
        """d loss / d a from the gradients g of the attributes (same column layout): every column but
        the rotation's is a constant times a sigmoid (1 - tanh(a)^2 = 4 s (1 - s) for s = sigmoid(2a))."""
        col, is_rot, sig, norm, inv_norm, quat = _head_terms(a, OP)
        radial = tl.where(norm > _QUAT_EPS, tl.sum(tl.where(is_rot, quat * g, 0.0), axis=1), 0.0)
        v_rot = (g - quat * radial[:, None]) * inv_norm[:, None]
        factor = tl.where(col < 3, 4.0 * OFFSET_SCALE, tl.where(col < 6, MAX_SCALE, 1.0))
        return tl.where(is_rot, v_rot, g * factor * sig * (1.0 - sig))

    @triton.jit
    def _fusion_forward_kernel(
        features_ptr, motion_basis_ptr, anchors_ptr, scale_shift_ptr, weights_ptr,
        means_ptr, quats_ptr, scales_ptr, opacities_ptr, colors_ptr, delta_ptr, saved_ptr, ln_ptr, rstd_ptr, N, B,
        F: tl.constexpr, HD: tl.constexpr, D: tl.constexpr, O: tl.constexpr,
        FP: tl.constexpr, HA: tl.constexpr, HB: tl.constexpr, OP: tl.constexpr, DOT: tl.constexpr,
        OFFSET_SCALE: tl.constexpr, MAX_SCALE: tl.constexpr, DELTA_SCALE: tl.constexpr, LN_EPS: tl.constexpr,
        RETURN_DELTA: tl.constexpr, SAVE: tl.constexpr, TMA_SAVE: tl.constexpr, BLOCK_N: tl.constexpr,
    ):
        """Inputs and biases are (re-)read where they are used rather than held across items: a
        [BLOCK_N, Hd] float32 tile already takes 64 registers a thread, and a bias broadcast along a
        tl.dot result costs one register per column a thread owns; the re-reads hit L1/L2."""
        w_in_ptr, b_in_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, d1_ptr, e1_ptr, d2_ptr, e2_ptr = _weight_ptrs(
            weights_ptr, F, HD, O)
        w_in, u_in = _weight_operand(_tile(w_in_ptr, F, F, F, FP, FP), DOT)
        w1a, u1a, w1b, u1b, w2a, u2a, w2b, u2b = _two_layer_weights(w1_ptr, w2_ptr, F, FP, F, FP, HD, HA, HB, DOT)
        d1a, v1a, d1b, v1b, d2a, v2a, d2b, v2b = _two_layer_weights(d1_ptr, d2_ptr, F, FP, O, OP, HD, HA, HB, DOT)
        saved_f, saved_a1 = _saved_cols(saved_ptr, F, HD)
        S = F + HD  # saved row width
        if TMA_SAVE:
            # the saved column groups as [B, N, width] tensors for the tensor-memory accelerator: a
            # tile goes from registers to shared memory and out asynchronously, the rows past N and
            # the padding columns clipped by the descriptor's shape instead of masked; it takes fewer
            # registers than tl.store's round trip through shared memory (148 against 223 on sm_90 at
            # 64 rows, 4 warps, 1 stage), so that three programs fit on a multiprocessor, four at a
            # 128-register cap (24 bytes of spill)
            f_desc = tl.make_tensor_descriptor(saved_f, [B, N, F], [N * S, S, 1], [1, BLOCK_N, FP])
            a1a_desc, a1b_desc = _hidden_descriptors(saved_a1, B, N, S, HD, BLOCK_N, HA, HB)
        # work items (block, frame), frame fastest: programs running together share a block in L2
        for item in range(tl.program_id(0), tl.cdiv(N, BLOCK_N) * B, tl.num_programs(0)):
            b = item % B
            first = (item // B) * BLOCK_N  # the block's first Gaussian
            r = tl.arange(0, BLOCK_N)
            rows = first + r
            row_ok = rows < N
            # the item's outputs as 32-bit offsets r from one scalar row per tensor: per-row 64-bit
            # addresses, live across the layers, took 41 more registers without saving
            row0 = tl.cast(b, tl.int64) * N + first
            # what the backward takes is stored as soon as it exists, so that no tile stays live
            # across the later layers for its store (saving, the forward is at the register limit)
            ln, rstd = _layer_norm(_rows(motion_basis_ptr, rows, row_ok, F, FP, F), F, FP, LN_EPS)
            if SAVE:
                if b == 0:
                    _store_rows(ln_ptr, ln, rows, row_ok, F, FP, F)
                    # 1 / std from the threads of the tile's column 0, in the registers that hold it: a
                    # row vector's tl.store had made the one-frame saving forward 3-5 us slower (H100)
                    c = tl.arange(0, FP)[None, :]
                    _store_in_place(rstd_ptr + rows[:, None] + c, tl.broadcast_to(rstd[:, None], (BLOCK_N, FP)),
                                    row_ok[:, None] & (c == 0))
            x = ln * _vec(scale_shift_ptr + b * 2 * F, F, FP)[None, :] + _vec(scale_shift_ptr + b * 2 * F + F, F, FP)[None, :]
            h = _mm(x, w_in, u_in, DOT) + _vec(b_in_ptr, F, FP)[None, :]
            a1a, a1b, y = _two_layer(h, w1a, u1a, w1b, u1b, b1_ptr, w2a, u2a, w2b, u2b, HD, HA, HB, DOT)
            if TMA_SAVE:
                _descriptor_store_hidden(a1a_desc, a1b_desc, a1a, a1b, b, first, HA, HB)
            elif SAVE:
                _store_hidden(saved_a1 + row0 * S, a1a, a1b, r, row_ok, S, HD, HA, HB)
            delta = DELTA_SCALE * (y + _vec(b2_ptr, F, FP)[None, :])
            if RETURN_DELTA:
                _store_rows(delta_ptr + row0 * F, delta, r, row_ok, F, FP, F)
            f_new = _rows(features_ptr, rows, row_ok, F, FP, F) + delta
            if TMA_SAVE:
                _descriptor_store(f_desc, f_new, b, first, 0)
            elif SAVE:
                _store_rows(saved_f + row0 * S, f_new, r, row_ok, F, FP, S)
            _, _, a = _two_layer(f_new, d1a, v1a, d1b, v1b, e1_ptr, d2a, v2a, d2b, v2b, HD, HA, HB, DOT)
            a += _vec(e2_ptr, O, OP)[None, :]
            anchors = _rows(anchors_ptr, rows, row_ok, 3, OP, 3)
            _store_heads(_heads(a, anchors, OFFSET_SCALE, MAX_SCALE, OP), r, row_ok, means_ptr + row0 * 3,
                         scales_ptr + row0 * 3, quats_ptr + row0 * 4, opacities_ptr + row0, colors_ptr + row0 * D,
                         D, OP)

    @triton.jit
    def _transposed_tiles(ptr, K, KP: tl.constexpr, HD: tl.constexpr, HA: tl.constexpr, HB: tl.constexpr,
                          DOT: tl.constexpr):
        """A first layer [K, Hd] transposed, as row tiles [HA, KP], [HB, KP] of tl.dot operands with
        their unscales (HB = 0: the b tile repeats the a one)."""
        ta, ua = _weight_operand(_tile(ptr, K, HD, HD, KP, HA, True), DOT)
        tb, ub = ta, ua
        if HB > 0:
            tb, ub = _weight_operand(_tile(ptr + HA, K, HD - HA, HD, KP, HB, True), DOT)
        return ta, ua, tb, ub

    @triton.jit
    def _transposed_weights(first_ptr, second_ptr, K, KP: tl.constexpr, M, MP: tl.constexpr, HD: tl.constexpr,
                            HA: tl.constexpr, HB: tl.constexpr, DOT: tl.constexpr):
        """For the backward of softplus(x @ first + b) @ second (first [K, Hd], second [Hd, M]): second^T
        in column tiles [MP, HA], [MP, HB] and first^T in row tiles [HA, KP], [HB, KP] as tl.dot
        operands with their unscales (HB = 0: one tile, the b operands repeat the a ones). Read
        transposed from memory: tl.trans of a held operand made the compiler keep it in registers."""
        second_ta, sa = _weight_operand(_tile(second_ptr, HD, M, M, HA, MP, True), DOT)
        second_tb, sb = second_ta, sa
        if HB > 0:
            second_tb, sb = _weight_operand(_tile(second_ptr + HA * M, HD - HA, M, M, HB, MP, True), DOT)
        first_ta, fa, first_tb, fb = _transposed_tiles(first_ptr, K, KP, HD, HA, HB, DOT)
        return second_ta, sa, second_tb, sb, first_ta, fa, first_tb, fb

    @triton.jit
    def _two_layer_backward(v_out, second_ta, sa, second_tb, sb, first_ta, fa, first_tb, fb, hidden_a, hidden_b,
                            grad_ptr, rows, row_ok, GW: tl.constexpr, HD: tl.constexpr, HA: tl.constexpr,
                            HB: tl.constexpr, DOT: tl.constexpr):
        """Backward of softplus(x @ first + b) @ second from v_out = d loss / d output and the saved
        softplus tiles: stores d loss / d the hidden pre-activation at grad_ptr (row stride GW) and
        returns d loss / d x. The hidden width in tiles of HA and HB (a [BLOCK_N, HP] tile had spilled
        at 64 rows); both tiles' gradients before their products, so that v_out dies first."""
        v_za = _mm(v_out, second_ta, sa, DOT) * _softplus_grad(hidden_a.to(tl.float32))
        v_zb = v_za
        if HB > 0:
            v_zb = _mm(v_out, second_tb, sb, DOT) * _softplus_grad(hidden_b.to(tl.float32))
            _store_rows(grad_ptr + HA, v_zb, rows, row_ok, HD - HA, HB, GW)
        _store_rows(grad_ptr, v_za, rows, row_ok, HD, HA, GW)
        v_x = _mm(v_za, first_ta, fa, DOT)
        if HB > 0:
            v_x += _mm(v_zb, first_tb, fb, DOT)
        return v_x

    @triton.jit
    def _stored_hidden(ptr, rows, row_ok, STRIDE, HD: tl.constexpr, HA: tl.constexpr, HB: tl.constexpr):
        """A stored hidden-width row block in its two tiles, in the tensor's dtype (HB = 0: the b
        tile repeats the a one)."""
        hidden_a = _stored_rows(ptr, rows, row_ok, HD, HA, STRIDE)
        hidden_b = hidden_a
        if HB > 0:
            hidden_b = _stored_rows(ptr + HA, rows, row_ok, HD - HA, HB, STRIDE)
        return hidden_a, hidden_b

    @triton.jit
    def _column_sums(g, BLOCK_R: tl.constexpr):
        """The column sums of a gradient tile g [BLOCK_R, M] computed in registers (the per-row
        kernel's d/da), in the first of 16 rows: a bf16 tile's from a tl.dot with ones (exact
        products, float32 sums; no cross-warp tl.sum), a float32 tile's (fp16 operands) by tl.sum.
        Not for a loaded tile that another tl.dot also reads in a pipelined loop: see _weight_grad."""
        if g.dtype == tl.bfloat16:
            sums = _dot(_bf16(tl.full([16, BLOCK_R], 1.0, tl.float32)), _bf16(g))
        else:
            sums = tl.where(tl.arange(0, 16)[:, None] == 0, tl.sum(g, axis=0)[None, :], 0.0)
        return sums

    @triton.jit
    def _first_row(sums):
        return tl.sum(tl.where(tl.arange(0, 16)[:, None] == 0, sums, 0.0), axis=0)

    @triton.jit
    def _backward_rows_kernel(
        saved_ptr, weights_ptr, v_means_ptr, v_quats_ptr, v_scales_ptr, v_opacities_ptr, v_colors_ptr,
        v_delta_ptr, grads_ptr, d2_partials_ptr, N, B,
        F: tl.constexpr, HD: tl.constexpr, D: tl.constexpr, O: tl.constexpr,
        FP: tl.constexpr, HA: tl.constexpr, HB: tl.constexpr, OP: tl.constexpr, GW: tl.constexpr,
        DOT: tl.constexpr, OFFSET_SCALE: tl.constexpr, MAX_SCALE: tl.constexpr, DELTA_SCALE: tl.constexpr,
        HAS_V_DELTA: tl.constexpr, BLOCK_N: tl.constexpr,
    ):
        """Backward, part 1: per work item (block of Gaussians, frame), from the saved activations (the decoder run
        again from f': a2^T d/da from a register tile transposed, 64 bytes of spill at 64 rows, sm_90), the
        gradients of the pre-activations, stored as rows of ``grads`` [B, N, GW] (bf16: the operands of parts
        2 and 3), and D2's and e2's gradients summed over the program's items into its row of ``d2_partials``
        [programs, Hd * O + O]. Those are the only sums across items: frame sums per Gaussian here (the frames
        of a block in one program) had held 255 registers and spilled 112 bytes (H100, B = 8: 1.71 against
        1.91 ms with part 2, scripts/gpu_rows.py as of commit 3fd9d3c). D2's [Hd, O] accumulator takes 12
        registers a thread; D1's [F, Hd] (48) had made 64 rows spill and 32 rows slower than the
        weight-gradient program it saved (H100, 2026-11-26, scripts/gpu_fusion_ab.py: op_backward at B = 8
        2.54 against 2.21 ms)."""
        _, _, w1_ptr, _, w2_ptr, _, d1_ptr, e1_ptr, d2_ptr, e2_ptr = _weight_ptrs(weights_ptr, F, HD, O)
        # the decoder's forward again, from the saved f'
        d1a, v1a, d1b, v1b, d2a, v2a, d2b, v2b = _two_layer_weights(d1_ptr, d2_ptr, F, FP, O, OP, HD, HA, HB, DOT)
        d2_ta, v2_ta, d2_tb, v2_tb, d1_ta, v1_ta, d1_tb, v1_tb = _transposed_weights(
            d1_ptr, d2_ptr, F, FP, O, OP, HD, HA, HB, DOT)
        w2_ta, u2_ta, w2_tb, u2_tb, w1_ta, u1_ta, w1_tb, u1_tb = _transposed_weights(
            w1_ptr, w2_ptr, F, FP, F, FP, HD, HA, HB, DOT)
        saved_f, saved_a1 = _saved_cols(saved_ptr, F, HD)
        S = F + HD  # saved row width
        r = tl.arange(0, BLOCK_N)
        # D2's and e2's gradients, summed over this program's items: a2^T d/da and 1^T d/da
        acc_d2a = tl.zeros([HA, OP], tl.float32)
        acc_d2b = tl.zeros([HB if HB > 0 else 16, OP], tl.float32)
        sums_e2 = tl.zeros([16, OP], tl.float32)
        # work items (block, frame), frame fastest
        for item in range(tl.program_id(0), tl.cdiv(N, BLOCK_N) * B, tl.num_programs(0)):
            # the item's rows as 32-bit offsets from one scalar row per tensor: per-row 64-bit
            # addresses take two registers an element
            row0 = tl.cast(item % B, tl.int64) * N + (item // B) * BLOCK_N
            left = N - (item // B) * BLOCK_N  # Gaussians from the block's first on
            r_ok = r < left
            grad_h, grad_z1, grad_f, grad_z2 = _grad_cols(grads_ptr + row0 * GW, F, HD)
            # decoder: a = softplus(f' @ D1 + e1) @ D2 + e2
            g = _load_heads(r, r_ok, v_means_ptr + row0 * 3, v_scales_ptr + row0 * 3, v_quats_ptr + row0 * 4,
                            v_opacities_ptr + row0, v_colors_ptr + row0 * D, D, OP)
            f_saved = _stored_rows(saved_f + row0 * S, r, r_ok, F, FP, S)
            a2a, a2b, a = _two_layer(f_saved, d1a, v1a, d1b, v1b, e1_ptr, d2a, v2a, d2b, v2b, HD, HA, HB, DOT)
            v_a = _heads_backward(a + _vec(e2_ptr, O, OP)[None, :], g, OFFSET_SCALE, MAX_SCALE, OP)
            g_a = v_a.to(grads_ptr.dtype.element_ty)  # rounded as a stored row would be
            acc_d2a += _dot(_bf16(tl.trans(a2a)), _bf16(g_a))
            if HB > 0:
                acc_d2b += _dot(_bf16(tl.trans(a2b)), _bf16(g_a))
            sums_e2 += _column_sums(g_a, BLOCK_N)
            v_y = _two_layer_backward(v_a, d2_ta, v2_ta, d2_tb, v2_tb, d1_ta, v1_ta, d1_tb, v1_tb, a2a, a2b,
                                      grad_z2, r, r_ok, GW, HD, HA, HB, DOT)  # d / d f'
            # stored before the delta output's gradient and delta_scale: part 2 sums it over the
            # frames into v_features, part 3 adds them back for W2's gradient
            _store_rows(grad_f, v_y, r, r_ok, F, FP, GW)
            if HAS_V_DELTA:
                v_y += _rows(v_delta_ptr + row0 * F, r, r_ok, F, FP, F)
            # fusion MLP: delta = delta_scale * (softplus(h @ W1 + b1) @ W2 + b2)
            v_y = DELTA_SCALE * v_y
            a1a, a1b = _stored_hidden(saved_a1 + row0 * S, r, r_ok, S, HD, HA, HB)
            v_h = _two_layer_backward(v_y, w2_ta, u2_ta, w2_tb, u2_tb, w1_ta, u1_ta, w1_tb, u1_tb, a1a, a1b,
                                      grad_z1, r, r_ok, GW, HD, HA, HB, DOT)
            _store_rows(grad_h, v_h, r, r_ok, F, FP, GW)
        v_d2 = d2_partials_ptr + tl.program_id(0).to(tl.int64) * (HD * O + O)
        _store_tile(v_d2, acc_d2a, HA if HB > 0 else HD, O, HA, OP)
        if HB > 0:
            _store_tile(v_d2 + HA * O, acc_d2b, HD - HA, O, HB, OP)
        _store_tile(v_d2 + HD * O, _first_row(sums_e2)[None, :], 1, O, 1, OP)

    @triton.jit
    def _backward_gaussians_kernel(
        ln_ptr, rstd_ptr, scale_shift_ptr, weights_ptr, v_means_ptr, grads_ptr,
        v_motion_basis_ptr, v_anchors_ptr, N, B,
        F: tl.constexpr, HD: tl.constexpr, O: tl.constexpr, FP: tl.constexpr, GW: tl.constexpr,
        DOT: tl.constexpr, SUM_ANCHORS: tl.constexpr, BLOCK_N: tl.constexpr,
    ):
        """Backward, part 2: the per-Gaussian gradients summed over the frames of a block:
        v_motion_basis through the LayerNorm backward (linear: once on the frame sum, from the
        forward's saved LayerNorm(m) and 1 / std, 100 bytes a row where m in float32 and its statistics
        again took 192) from part 1's stored d/dh rows (bf16: the tl.dot operands part 1 rounds them to),
        and with SUM_ANCHORS (B > 1; one frame's v_anchors is its v_means) v_anchors (v_features comes
        from part 3's W2 program). Nothing is summed across the block's rows (v_scale_shift
        comes from part 3's per-frame sums): per-frame cross-warp sums and atomics had made this
        kernel spill and wait on L1 (Nsight Compute, B = 8)."""
        w_in_ptr, _, _, _, _, _, _, _, _, _ = _weight_ptrs(weights_ptr, F, HD, O)
        w_in_t, u_in_t = _weight_operand(_tile(w_in_ptr, F, F, F, FP, FP, True), DOT)
        grad_h, _, _, _ = _grad_cols(grads_ptr, F, HD)
        r = tl.arange(0, BLOCK_N)
        for block in range(tl.program_id(0), tl.cdiv(N, BLOCK_N), tl.num_programs(0)):
            r_ok = r < N - block * BLOCK_N
            v_ln = tl.zeros([BLOCK_N, FP], tl.float32)  # d loss / d LayerNorm(m), summed over frames
            v_p = tl.zeros([BLOCK_N, 4], tl.float32)  # d loss / d anchors: the means' gradient summed over frames
            for b in range(B):
                row0 = tl.cast(b, tl.int64) * N + block * BLOCK_N  # the block's first row in frame b
                v_x = _mm(_stored_rows(grad_h + row0 * GW, r, r_ok, F, FP, GW), w_in_t, u_in_t, DOT)
                v_ln += v_x * _vec(scale_shift_ptr + b * 2 * F, F, FP)[None, :]
                if SUM_ANCHORS:
                    v_p += _rows(v_means_ptr + row0 * 3, r, r_ok, 3, 4, 3)
            first = block * BLOCK_N  # N * F < 2^31
            ln = _rows(ln_ptr + first * F, r, r_ok, F, FP, F)
            rstd = tl.load(rstd_ptr + first + r, mask=r_ok, other=0.0)
            mean_v = tl.sum(v_ln, axis=1) / F
            mean_v_ln = tl.sum(v_ln * ln, axis=1) / F
            v_m = rstd[:, None] * (v_ln - mean_v[:, None] - ln * mean_v_ln[:, None])
            _store_rows(v_motion_basis_ptr + first * F, v_m, r, r_ok, F, FP, F)
            if SUM_ANCHORS:
                _store_rows(v_anchors_ptr + first * 3, v_p, r, r_ok, 3, 4, 3)

    @triton.jit
    def _with_ones_column(x, K, KP: tl.constexpr):
        """x [BLOCK_R, KP] with ones in padding column K (K < KP): x^T g then also holds g's column sums
        in its row K, from the same tl.dot (see _ones_row)."""
        return tl.where((tl.arange(0, KP) == K)[None, :], 1.0, x)

    @triton.jit
    def _ones_row(acc, K, KP: tl.constexpr):
        """Row K of an x^T g accumulator [KP, M] whose x came through _with_ones_column: g's column sums."""
        return tl.sum(tl.where(tl.arange(0, KP)[:, None] == K, acc, 0.0), axis=0)

    @triton.jit
    def _weight_grad(x_ptr, K, KP: tl.constexpr, X_STRIDE, g_ptr, M, MP: tl.constexpr, v_w_ptr, v_b_ptr, N, B,
                     chunk, chunks, GW: tl.constexpr, BLOCK_R: tl.constexpr, scale_shift_ptr, w_in_ptr, b_in_ptr,
                     v_delta_ptr, v_sum_ptr, MODULATED: tl.constexpr = False, HAS_V_DELTA: tl.constexpr = False,
                     G_SCALE: tl.constexpr = 1.0, FRAME_SUM: tl.constexpr = False):
        """Stores the sums over this chunk's rows (in every frame, blocks chunk, chunk + chunks, ... of
        BLOCK_R Gaussians) of x^T g [K, M] and of g [M] at v_w_ptr and v_b_ptr, for x the columns
        [0, K) of the saved activations at x_ptr (row stride X_STRIDE) and g the columns [0, M) of the
        stored gradients at g_ptr (row stride GW): bf16 tl.dot operands, float32 accumulation.
        MODULATED (the fusion MLP's first hidden layer): x_ptr holds LayerNorm(m) [N, K], one row per
        Gaussian, and x = LayerNorm(m) * scale_b + shift_b; its input h = x @ W_in + b_in is not saved,
        so this stores W_in^T (x^T g) + b_in (1^T g) = h^T g instead, per chunk (linear, so the chunks
        still add up). HAS_V_DELTA, G_SCALE (the fusion MLP's output layer, whose stored gradient is
        d loss / d f'): g is d loss / d f' plus the delta output's gradient [B, N, M] at v_delta_ptr
        (rounded back to the stored dtype), and both sums are scaled by G_SCALE = delta_scale.
        g's column sums: for a bf16 g, from the same tl.dot through a column of ones in x's padding
        (K < KP), else from tl.sum (a float32 g is summed as it is): a second tl.dot reading g's tile
        (a ones-dot) had made the sums differ from run to run with two pipeline stages (H100, Triton
        3.6: D1's gradient at F = 96 / Hd = 128, docs/benchmarks.md). FRAME_SUM: also stores each
        Gaussian's sum of g over the frames (before the delta output's gradient) at v_sum_ptr [N, M]
        (for g = d loss / d f': v_features). The blocks are walked outermost, so that a block's frames
        follow each other."""
        acc = tl.zeros([KP, MP], tl.float32)
        sums = tl.zeros([MP], tl.float32)
        SUMS_BY_DOT: tl.constexpr = K < KP and g_ptr.dtype.element_ty == tl.bfloat16
        r = tl.arange(0, BLOCK_R)
        if FRAME_SUM:
            frame_sum = tl.zeros([BLOCK_R, MP], tl.float32)
        # one flat loop over (block, frame), frame fastest: the software pipeliner prefetches the next
        # item's tiles only in an innermost loop, which a loop over the frames inside one over the
        # blocks had made a one-trip loop at B = 1
        for item in range(0, tl.cdiv(tl.cdiv(N, BLOCK_R) - chunk, chunks) * B):
            b = item % B
            gaussians = (chunk + (item // B) * chunks) * BLOCK_R + r
            row_ok = gaussians < N
            rows = tl.cast(b, tl.int64) * N + gaussians
            if MODULATED:
                frame = scale_shift_ptr + b * 2 * K  # (scale_b, shift_b)
                x = _rows(x_ptr, gaussians, row_ok, K, KP, X_STRIDE) * _vec(frame, K, KP)[None, :] + \
                    _vec(frame + K, K, KP)[None, :]
            else:
                x = _stored_rows(x_ptr, rows, row_ok, K, KP, X_STRIDE)
            g = _stored_rows(g_ptr, rows, row_ok, M, MP, GW)
            if FRAME_SUM:  # restarted at each block's first frame, stored after its last
                frame_sum = tl.where(b == 0, 0.0, frame_sum) + g.to(tl.float32)
                _store_rows(v_sum_ptr, frame_sum, gaussians, row_ok & (gaussians * 0 + b == B - 1), M, MP, M)
            if HAS_V_DELTA:
                g = (g.to(tl.float32) + _rows(v_delta_ptr, rows, row_ok, M, MP, M)).to(g.dtype)
            if SUMS_BY_DOT:
                x = _with_ones_column(x, K, KP)
            else:
                sums += tl.sum(g.to(tl.float32), axis=0)
            acc += _dot(_bf16(tl.trans(x)), _bf16(g))
        if SUMS_BY_DOT:
            sums = _ones_row(acc, K, KP)
        acc *= G_SCALE
        total = G_SCALE * sums
        if MODULATED:
            w_in_t = _tile(w_in_ptr, K, K, K, KP, KP, True)
            acc = _dot_fp32(w_in_t, acc) + _vec(b_in_ptr, K, KP)[:, None] * total[None, :]
        _store_tile(v_w_ptr, acc, K, M, KP, MP)
        _store_tile(v_b_ptr, total[None, :], 1, M, 1, MP)

    @triton.jit
    def _input_weight_grad(ln_ptr, g_ptr, scale_shift_ptr, w_in_ptr, v_w_ptr, v_b_ptr, v_ss_ptr, N, B, chunk,
                           chunks, F: tl.constexpr, FP: tl.constexpr, GW: tl.constexpr, BLOCK_R: tl.constexpr,
                           DOT: tl.constexpr):
        """The fusion MLP's input layer, from dh = d loss / d h (columns [0, F) at g_ptr) and
        LayerNorm(m) [N, F] at ln_ptr, over this chunk's rows: per frame b the sums G_b = LayerNorm(m)^T dh
        and c_b = 1^T dh give W_in's gradient (x^T dh = diag(scale_b) G_b + shift_b c_b^T), b_in's (the
        sum of the c_b) and this chunk's part of d loss / d (scale_b, shift_b) (as d loss / d x = dh W_in^T:
        rowsum(W_in * G_b) and W_in c_b), stored as row b of [B, 2F] at v_ss_ptr. G_b's operands as the
        backward's other products of the forward's inputs (``DOT``), float32 accumulation. For a bf16 dh
        and F < FP, c_b comes from the same tl.dot through a column of ones in LayerNorm(m)'s padding,
        as in _weight_grad (a cross-warp tl.sum per block had made this program the weight-gradient
        kernel's slowest at B = 1: the kernel 144 -> 125 us at 200k; H100, 2026-11-26)."""
        acc = tl.zeros([FP, FP], tl.float32)
        total = tl.zeros([FP], tl.float32)
        cf = tl.arange(0, FP)
        r = tl.arange(0, BLOCK_R)
        SUMS_BY_DOT: tl.constexpr = F < FP and g_ptr.dtype.element_ty == tl.bfloat16
        for b in range(B):
            gram = tl.zeros([FP, FP], tl.float32)
            sums = tl.zeros([FP], tl.float32)
            for block in range(chunk, tl.cdiv(N, BLOCK_R), chunks):
                gaussians = block * BLOCK_R + r
                row_ok = gaussians < N
                rows = tl.cast(b, tl.int64) * N + gaussians
                if SUMS_BY_DOT:
                    x = _with_ones_column(_rows(ln_ptr, gaussians, row_ok, F, FP, F), F, FP)
                    gram += _dot(_bf16(tl.trans(x)), _bf16(_stored_rows(g_ptr, rows, row_ok, F, FP, GW)))
                else:
                    ln = _rows(ln_ptr, gaussians, row_ok, F, FP, F)
                    g = _rows(g_ptr, rows, row_ok, F, FP, GW)
                    g_op, g_unscale = _weight_operand(g, DOT)
                    gram += _mm(tl.trans(ln), g_op, g_unscale, DOT)
                    sums += tl.sum(g, axis=0)
            if SUMS_BY_DOT:
                sums = _ones_row(gram, F, FP)
            scale = _vec(scale_shift_ptr + b * 2 * F, F, FP)
            shift = _vec(scale_shift_ptr + b * 2 * F + F, F, FP)
            acc += scale[:, None] * gram + shift[:, None] * sums[None, :]
            total += sums
            w_in = _tile(w_in_ptr, F, F, F, FP, FP)  # re-read per frame (L2) rather than held across the rows
            tl.store(v_ss_ptr + b * 2 * F + cf, tl.sum(w_in * gram, axis=1), mask=cf < F)
            tl.store(v_ss_ptr + b * 2 * F + F + cf, tl.sum(w_in * sums[None, :], axis=1), mask=cf < F)
        _store_tile(v_w_ptr, acc, F, F, FP, FP)
        _store_tile(v_b_ptr, total[None, :], 1, F, 1, FP)

    @triton.jit
    def _row_sum(ptr, first, step, rows, C, c, ROWS: tl.constexpr):
        """Columns c of the sum of rows first, first + step, ... (< rows) of a row-major float32
        [rows, C] buffer, in row order: ROWS rows a tile, so that their loads are in flight together
        (one row at a time made the weight-gradient kernel 18 us slower at B = 1, H100)."""
        total = tl.zeros(c.shape, tl.float32)
        for row0 in range(first, rows, step * ROWS):
            r = row0 + step * tl.arange(0, ROWS)[:, None]
            total += tl.sum(tl.load(ptr + r * C + c[None, :], mask=(r < rows) & (c < C)[None, :], other=0.0), axis=0)
        return total

    @triton.jit
    def _sum_rows(ptr, first, step, rows, C: tl.constexpr, out_ptr, ROWS: tl.constexpr = 8,
                  BLOCK_C: tl.constexpr = 256):
        """_row_sum of every column, stored at out_ptr [C]."""
        for start in range(0, C, BLOCK_C):
            c = start + tl.arange(0, BLOCK_C)
            tl.store(out_ptr + c, _row_sum(ptr, first, step, rows, C, c, ROWS), mask=c < C)

    @triton.jit
    def _sum_partials_kernel(partials_ptr, totals_ptr, ROWS, C, BLOCK_C: tl.constexpr):
        """totals [C] = the sum of the rows of partials [ROWS, C] (float32), BLOCK_C columns a program:
        the weight-gradient kernel's chunks added up (8 us at 200k, B = 1, where torch's sum over dim 0
        took 12; H100)."""
        c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
        tl.store(totals_ptr + c, _row_sum(partials_ptr, 0, 1, ROWS, C, c, 8), mask=c < C)

    @triton.jit
    def _weight_grad_kernel(
        saved_ptr, ln_ptr, grads_ptr, scale_shift_ptr, weights_ptr, v_delta_ptr, d2_partials_ptr, partials_ptr,
        v_features_ptr, N, B, D2_ROWS,
        F: tl.constexpr, HD: tl.constexpr, O: tl.constexpr, FP: tl.constexpr, HP: tl.constexpr,
        GW: tl.constexpr, DOT: tl.constexpr, DELTA_SCALE: tl.constexpr, HAS_V_DELTA: tl.constexpr,
        BLOCK_R: tl.constexpr,
    ):
        """Backward, part 3: the weight and bias gradients but D2's and e2's (part 1's) as sums over all
        B * N rows of the saved activations and the stored gradients, v_scale_shift, and v_features
        [N, F] (W2's programs, which read d/df', sum it over the frames). Program p takes
        weight p % 4 (w_in, w1, w2, d1 with their biases; neighbouring programs share rows, in L2) on
        chunk p // 4 of the Gaussians and writes that weight's slice of the chunk's row of partials
        [chunks, P + 2FB] (packed layout, then v_scale_shift [B, 2F]); w_in's program also writes the
        chunk's [B, 2F] of v_scale_shift and, in the D2 and e2 slice, the sum of the per-row kernel's
        partial rows chunk, chunk + chunks, ... of d2_partials [D2_ROWS, Hd * O + O]. One sum over the
        chunks (_sum_partials_kernel) then gives every gradient (four sums and a concatenation had cost 20 us)."""
        pid = tl.program_id(0)
        group = pid % 4
        chunk = pid // 4
        chunks = tl.num_programs(0) // 4
        S = F + HD
        saved_f, saved_a1 = _saved_cols(saved_ptr, F, HD)
        grad_h, grad_z1, grad_f, grad_z2 = _grad_cols(grads_ptr, F, HD)
        w_in_ptr, b_in_ptr, _, _, _, _, _, _, _, _ = _weight_ptrs(weights_ptr, F, HD, O)
        P: tl.constexpr = F * F + 2 * F + 3 * F * HD + 2 * HD + HD * O + O  # the packed weights
        row = partials_ptr + chunk.to(tl.int64) * (P + B * 2 * F)
        v_w_in, v_b_in, v_w1, v_b1, v_w2, v_b2, v_d1, v_e1, v_d2, _ = _weight_ptrs(row, F, HD, O)
        if group == 0:
            _sum_rows(d2_partials_ptr, chunk, chunks, D2_ROWS, HD * O + O, v_d2)
            _input_weight_grad(ln_ptr, grad_h, scale_shift_ptr, w_in_ptr, v_w_in, v_b_in, row + P, N, B, chunk,
                               chunks, F, FP, GW, BLOCK_R, DOT)
        elif group == 1:
            _weight_grad(ln_ptr, F, FP, F, grad_z1, HD, HP, v_w1, v_b1, N, B, chunk, chunks, GW, BLOCK_R,
                         scale_shift_ptr, w_in_ptr, b_in_ptr, v_delta_ptr, v_features_ptr, MODULATED=True)
        elif group == 2:
            _weight_grad(saved_a1, HD, HP, S, grad_f, F, FP, v_w2, v_b2, N, B, chunk, chunks, GW, BLOCK_R,
                         scale_shift_ptr, w_in_ptr, b_in_ptr, v_delta_ptr, v_features_ptr, HAS_V_DELTA=HAS_V_DELTA,
                         G_SCALE=DELTA_SCALE, FRAME_SUM=True)
        else:
            _weight_grad(saved_f, F, FP, S, grad_z2, HD, HP, v_d1, v_e1, N, B, chunk, chunks, GW, BLOCK_R,
                         scale_shift_ptr, w_in_ptr, b_in_ptr, v_delta_ptr, v_features_ptr)


@functools.lru_cache(maxsize=None)
def _multiprocessors(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


@functools.lru_cache(maxsize=None)
def _side_stream(device: torch.device) -> Optional["torch.cuda.Stream"]:
    """The backward's second stream on a CUDA device (None elsewhere): forked from and joined back
    into the caller's current stream within each call, so that it also works inside CUDA graphs."""
    return torch.cuda.Stream(device) if device.type == "cuda" else None


def _grid(n: int, device: torch.device, launch: FusionLaunch, per_block: int = 1) -> tuple[int]:
    """Persistent grid: per_block programs for each block of n up to programs_per_sm per
    multiprocessor (never 0, so the backward always writes its partials), a multiple of per_block."""
    # interpreter: a few programs, so that the grid-stride loop is exercised
    slots = launch.programs_per_sm * (_multiprocessors(device) if device.type == "cuda" else 1)
    return (per_block * max(1, min(cdiv(n, launch.block_n), cdiv(slots, per_block))),)


@functools.lru_cache(maxsize=None)
def _constexprs(config: FusionConfig, launch: FusionLaunch, kernel: str) -> dict:
    """The compile-time arguments of ``kernel`` (one of KERNELS); cached, since the host time of a
    call is as long as the forward kernel at 200k Gaussians."""
    sizes = dict(F=config.feature_dim, HD=config.hidden_dim, O=config.out_dim,
                 FP=next_power_of_2(max(16, config.feature_dim)), HP=next_power_of_2(max(16, config.hidden_dim)),
                 OP=next_power_of_2(max(16, config.out_dim)), num_warps=launch.num_warps,
                 num_stages=launch.num_stages)
    if launch.max_registers is not None:
        sizes["maxnreg"] = launch.max_registers
    if kernel == "weight_grads":
        del sizes["OP"]
        return sizes | dict(GW=grad_width(config), DOT=config.dot_operands, DELTA_SCALE=config.delta_scale,
                            BLOCK_R=launch.block_n)
    if kernel == "backward_gaussians":
        del sizes["OP"], sizes["HP"]
        return sizes | dict(GW=grad_width(config), DOT=config.dot_operands, BLOCK_N=launch.block_n)
    sizes |= dict(zip(("HA", "HB"), hidden_tiles(config.hidden_dim, sizes.pop("HP"))))
    sizes |= dict(DOT=config.dot_operands, BLOCK_N=launch.block_n)
    sizes |= dict(D=config.color_dim, OFFSET_SCALE=config.offset_scale, MAX_SCALE=config.max_scale,
                  DELTA_SCALE=config.delta_scale)
    if kernel == "forward":
        return sizes | dict(LN_EPS=config.layer_norm_eps)
    return sizes | dict(GW=grad_width(config))


def hidden_tiles(hidden_dim: int, hp: int) -> tuple[int, int]:
    """The forward's hidden width in two power-of-two tiles (HA, HB), HB = 0 for one tile: the
    largest power of two below Hd and the rest padded (96 -> 64 + 32), where that beats the padded
    width hp."""
    ha = 1 << (hidden_dim.bit_length() - 1)
    hb = next_power_of_2(max(16, hidden_dim - ha))
    return (ha, hb) if ha >= 16 and ha < hidden_dim and ha + hb < hp else (hp, 0)


def saved_width(config: FusionConfig) -> int:
    """Activations the forward saves per Gaussian and frame for the backward: f' and the softplus of
    the fusion MLP's hidden layer (and LayerNorm(m) and its 1 / std once per Gaussian, beside them)."""
    return config.feature_dim + config.hidden_dim


def grad_width(config: FusionConfig) -> int:
    """Row width of the gradients the backward's first kernel stores per Gaussian and frame (in
    saved_dtype) for the other two: d loss / d (h, both hidden pre-activations, f'), 2F + 2Hd, padded
    to 8 columns (16-byte rows). d/df' is stored in its dtype (bf16 with bf16 operands: 2^-9 relative, as
    PyTorch's bf16 autograd rounds it) and summed over the frames in float32 into v_features."""
    return -(-(2 * config.feature_dim + 2 * config.hidden_dim) // 8) * 8


def saved_dtype(config: FusionConfig) -> torch.dtype:
    """Of the saved activations and the stored per-row gradients: bf16 with bf16 tl.dot operands
    (the operands exactly as the kernels use them); float32 with fp16 operands, whose 11 bits a bf16
    softplus derivative or bias sum (2^-9 relative) would undo."""
    return torch.float32 if config.dot_operands == "fp16" else torch.bfloat16


@functools.lru_cache(maxsize=None)
def saves_by_descriptor(config: FusionConfig, device: torch.device) -> bool:
    """Whether the forward writes the saved activations through tensor descriptors (the Hopper
    tensor-memory accelerator, sm_90 and later; the interpreter emulates them): each saved column
    group must start 16-byte aligned and its rows be a multiple of 16 bytes, as TMA needs. Without
    them the saving forward takes the plain forward's launch (three programs a multiprocessor), where
    it holds 172 registers and fits two: slower, not wrong."""
    size = torch.finfo(saved_dtype(config)).bits // 8
    aligned = (config.feature_dim * size) % 16 == 0 and (config.hidden_dim * size) % 16 == 0
    hopper = device.type != "cuda" or torch.cuda.get_device_capability(device)[0] >= 9
    return aligned and hopper


def op_forward(
    features: Tensor,  # [N, F]
    motion_basis: Tensor,  # [N, F]
    anchors: Tensor,  # [N, 3]
    scale_shift: Tensor,  # [B, 2F]
    weights: Tensor,  # [P] float32, FusionWeights.packed
    config: FusionConfig,
    return_delta: bool,
    save: bool = False,
    launch: Optional[FusionLaunch] = None,
) -> tuple[tuple[Tensor, ...], Optional[tuple[Tensor, Tensor, Tensor]]]:
    """Launch the forward kernel on contiguous inputs: ((means, quats, scales, opacities, colors[,
    delta]), when ``save`` what the backward takes: (the saved activations [B, N, saved_width] and
    LayerNorm(m) [N, F] in saved_dtype, its 1 / std [N] float32), else None)."""
    n, b = features.shape[0], scale_shift.shape[0]
    tma_save = save and saves_by_descriptor(config, features.device)
    launch = launch or default_launch(config, "forward_saving" if tma_save else "forward", features.device)
    new = dict(device=features.device, dtype=features.dtype)
    outputs = (torch.empty(b, n, 3, **new), torch.empty(b, n, 4, **new), torch.empty(b, n, 3, **new),
               torch.empty(b, n, **new), torch.empty(b, n, config.color_dim, **new))
    delta = torch.empty(b, n, config.feature_dim, **new) if return_delta else None
    saved = None
    if save:
        saved = (torch.empty(b, n, saved_width(config), device=features.device, dtype=saved_dtype(config)),
                 torch.empty(n, config.feature_dim, device=features.device, dtype=saved_dtype(config)),
                 torch.empty(n, device=features.device, dtype=torch.float32))
    # pointers the kernel does not touch (no delta, nothing saved) are bound to an output
    delta_arg = outputs[0] if delta is None else delta
    saved_args = saved if save else (outputs[0], outputs[0], outputs[0])
    if tma_save and features.is_cuda:
        ensure_allocator()
    launch_kernel(_fusion_forward_kernel, _grid(n, features.device, launch),
        features, motion_basis, anchors, scale_shift, weights, *outputs, delta_arg, *saved_args, n, b,
        RETURN_DELTA=return_delta, SAVE=save, TMA_SAVE=tma_save, **_constexprs(config, launch, "forward"),
    )
    return outputs + ((delta,) if return_delta else ()), saved


def op_backward(
    motion_basis: Tensor,  # [N, F]
    scale_shift: Tensor,  # [B, 2F]
    weights: Tensor,  # [P] float32, FusionWeights.packed
    saved: tuple[Tensor, Tensor, Tensor],  # ([B, N, saved_width], LayerNorm(m) [N, F], 1 / std [N]) from op_forward
    config: FusionConfig,
    v_outputs: tuple[Tensor, ...],  # v_means [B,N,3], v_quats [B,N,4], v_scales [B,N,3], v_opacities [B,N], v_colors [B,N,D][, v_delta [B,N,F]]
    launches: tuple[Optional[FusionLaunch], Optional[FusionLaunch], Optional[FusionLaunch]] = (None, None, None),
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Launch the backward kernels (per-row gradients and D2's, per-Gaussian sums over the frames, the
    other weight gradients, with the given launches, None for the default; then the sum of the weight
    gradients' partials): (v_features, v_motion_basis, v_anchors, v_scale_shift, v_weights [P] float32
    in the packed layout)."""
    n, b, f = motion_basis.shape[0], scale_shift.shape[0], config.feature_dim
    device = motion_basis.device
    rows_launch = launches[0] or default_launch(config, "backward_rows", device)
    gaussians_launch = launches[1] or default_launch(config, "backward_gaussians", device)
    weights_launch = launches[2] or default_launch(config, "weight_grads", device)
    rows_grid = _grid(b * n, device, rows_launch)  # work items (block, frame): at most one program an item
    gaussians_grid = _grid(n, device, gaussians_launch)
    weights_grid = _grid(n, device, weights_launch, WEIGHT_GROUPS)
    new = dict(device=device, dtype=motion_basis.dtype)
    v_features, v_motion_basis = torch.empty(n, f, **new), torch.empty(n, f, **new)
    grads = torch.empty(b, n, grad_width(config), device=device, dtype=saved_dtype(config))
    chunks = weights_grid[0] // WEIGHT_GROUPS
    decoder_out = config.hidden_dim * config.out_dim + config.out_dim  # D2 and e2: the packed layout's tail
    p = weights.numel()
    partials = torch.empty(chunks, p + b * 2 * f, device=device, dtype=torch.float32)
    d2_partials = torch.empty(rows_grid[0], decoder_out, device=device, dtype=torch.float32)
    v_outputs = [v.contiguous() for v in v_outputs]
    has_v_delta = len(v_outputs) == 6
    v_delta = v_outputs[5] if has_v_delta else v_outputs[0]  # (bound to an unread pointer without it)
    activations, ln, rstd = saved
    # one frame's v_anchors is its v_means (several: their sum over the frames, by the per-Gaussian kernel)
    v_anchors = v_outputs[0][0] if b == 1 else torch.empty(n, 3, **new)
    launch_kernel(_backward_rows_kernel, rows_grid,
        activations, weights, *v_outputs[:5], v_delta, grads, d2_partials, n, b, HAS_V_DELTA=has_v_delta,
        **_constexprs(config, rows_launch, "backward_rows"),
    )
    # the per-Gaussian kernel runs beside the weight-gradient kernel, on a second stream, in the
    # multiprocessors that the weight groups leave as they finish (W2's program is the last)
    side = _side_stream(device)
    if side is not None:
        main = torch.cuda.current_stream(device)
        side.wait_stream(main)
    launch_kernel(_weight_grad_kernel, weights_grid,
        activations, ln, grads, scale_shift, weights, v_delta, d2_partials, partials, v_features, n, b, rows_grid[0],
        HAS_V_DELTA=has_v_delta, **_constexprs(config, weights_launch, "weight_grads"),
    )
    totals = torch.empty(partials.shape[1], device=device, dtype=torch.float32)
    launch_kernel(_sum_partials_kernel, (cdiv(totals.numel(), SUM_COLUMNS),), partials, totals, chunks, totals.numel(),
                  BLOCK_C=SUM_COLUMNS, num_warps=4)
    with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
        launch_kernel(_backward_gaussians_kernel, gaussians_grid,
            ln, rstd, scale_shift, weights, v_outputs[0], grads, v_motion_basis, v_anchors,
            n, b, SUM_ANCHORS=b > 1, **_constexprs(config, gaussians_launch, "backward_gaussians"),
        )
    if side is not None:
        main.wait_stream(side)  # before any later work on the main stream reads or frees these tensors
    return v_features, v_motion_basis, v_anchors, totals[p:].view(b, 2 * f).to(scale_shift.dtype), totals[:p]


class _LocalFusion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, motion_basis, anchors, scale_shift, weights, config, return_delta, *weight_tensors):
        outputs, saved = op_forward(features, motion_basis, anchors, scale_shift, weights, config, return_delta, save=True)
        ctx.save_for_backward(motion_basis, scale_shift, weights, *saved)
        ctx.config = config
        ctx.weight_meta = [(t.shape, t.dtype) for t in weight_tensors]
        return outputs

    @staticmethod
    def backward(ctx, *v_outputs):
        motion_basis, scale_shift, weights, *saved = ctx.saved_tensors
        v_features, v_motion_basis, v_anchors, v_scale_shift, v_weights = op_backward(
            motion_basis, scale_shift, weights, tuple(saved), ctx.config, v_outputs)
        sizes = [math.prod(shape) for shape, _ in ctx.weight_meta]
        v_weight_tensors = [v.view(shape).to(dtype) for v, (shape, dtype) in zip(v_weights.split(sizes), ctx.weight_meta)]
        return v_features, v_motion_basis, v_anchors, v_scale_shift, None, None, None, *v_weight_tensors


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


def check_weights(weights: FusionWeights, config: FusionConfig, dtype: torch.dtype, device: torch.device) -> None:
    """Raise a ValueError naming the weight unless each has its shape in ``config``, ``dtype`` and ``device``."""
    for name, shape in config.weight_shapes().items():
        shapes.check_tensor(f"weights.{name}", getattr(weights, name), shape, dtypes=(dtype,), device=device)


def held_weight_bytes(config: FusionConfig) -> int:
    """A bound on the shared memory the weights of any kernel take, every weight as an fp16 tile
    padded to powers of two: the forward holds W_in, W1, W2, D1 and D2; the backward's per-row kernel
    W1^T, W2^T, D1 and D1^T, D2 and D2^T (it runs the decoder again)."""
    fp, hp, op = (next_power_of_2(max(16, d)) for d in (config.feature_dim, config.hidden_dim, config.out_dim))
    return 2 * max(fp * fp + 3 * fp * hp + hp * op, 4 * fp * hp + 2 * hp * op)


@functools.lru_cache(maxsize=None)
def triton_unsupported_reasons(config: FusionConfig, dtype: torch.dtype) -> tuple[str, ...]:
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
    return tuple(reasons)


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
    Keep one ``FusionWeights`` across calls (as ``LocalFusion`` does): the Triton path packs its
    weights once and reuses them until one changes. Without gradients the kernel runs outside
    autograd and saves nothing.
    """
    _check_inputs(features, motion_basis, anchors, scale_shift, weights, config)
    inputs = (features, motion_basis, anchors, scale_shift)
    if resolve_backend(backend, *inputs) == "torch":
        check_weights(weights, config, features.dtype, features.device)
        return reference.local_fusion(*inputs, weights, config, return_delta=return_delta)
    reasons = triton_unsupported_reasons(config, features.dtype)
    if reasons:
        raise ValueError("the Triton local_fusion kernels cannot run: " + "; ".join(reasons) + " (use backend='torch')")
    packed = weights.packed(config, features.dtype, features.device)
    inputs = tuple(t.contiguous() for t in inputs)
    weight_tensors = weights.tensors()
    if torch.is_grad_enabled() and any(t.requires_grad for t in inputs + weight_tensors):
        outputs = _LocalFusion.apply(*inputs, packed, config, return_delta, *weight_tensors)
    else:
        outputs, _ = op_forward(*inputs, packed, config, return_delta)
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
