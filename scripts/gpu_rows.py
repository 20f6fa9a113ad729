"""GPU: the fusion backward's per-row kernels, the package's at several launches against the kernel
they replaced, at 200k Gaussians, B = 1 and 8, fp32 inputs, bf16 tl.dot operands (the default config).

    PYTHONPATH=. python scripts/gpu_rows.py            # H100, about 3 minutes
    PYTHONPATH=. python scripts/gpu_rows.py --tiny     # CPU, Triton interpreter, tiny sizes: checks it runs

Times (triton.testing.do_bench, median) the backward kernels together, for:
- ``today``: a copy of the package's ``_backward_rows_kernel`` as of commit ecb9ab5 (the reference);
- ``split``: the package's kernels since (frames as their own work items, no cross-frame sums held
  in registers, then a per-Gaussian kernel that sums v_features, v_motion_basis, v_scale_shift and
  v_anchors over the frames from the stored per-row gradients), at other launches;
each over a few launches, some with a register cap (maxnreg) for more programs per multiprocessor.
(Variants measured no faster on 2026-11-25 and since removed, the one-kernel form with each frame's
loads issued a frame ahead and a split kernel prefetching the next item, are in this script as of
commit 6d02934.)
Every variant's five gradients are compared with today's (bit-equal, or the largest error relative
to the largest magnitude). Then the whole public forward+backward step (local_fusion +
torch.autograd.grad) with the package default. A launch that fails to compile prints its error and
the rest still run.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Optional

TINY = "--tiny" in sys.argv
if TINY:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from instant4d.kernels import fusion  # noqa: E402
from instant4d.kernels._triton import cdiv, launch_kernel  # noqa: E402
from instant4d.kernels.fusion import (  # noqa: E402
    FusionConfig, FusionLaunch, WEIGHT_GROUPS, _constexprs, _grad_cols, _layer_norm, _load_heads, _mm, _rows,
    _saved_cols, _store_rows, _stored_rows, _softplus_grad, _tile, _transposed_weights,
    _two_layer_weights, _vec, _weight_operand, _weight_ptrs, _heads_backward,
)

DEVICE = "cpu" if TINY else "cuda"
N = 40 if TINY else 200_000
FRAMES = (1, 3) if TINY else (1, 8)


# ---------------------------------------------------------------- today's kernel (commit ecb9ab5), verbatim
@triton.jit
def _saved_hidden_out(hidden_ptr, items, row_ok, S, second_a, sa, second_b, sb, HD: tl.constexpr,
                      HA: tl.constexpr, HB: tl.constexpr, DOT: tl.constexpr):
    out = _mm(_stored_rows(hidden_ptr, items, row_ok, HD, HA, S), second_a, sa, DOT)
    if HB > 0:
        out += _mm(_stored_rows(hidden_ptr + HA, items, row_ok, HD - HA, HB, S), second_b, sb, DOT)
    return out


@triton.jit
def _two_layer_backward(v_out, second_ta, sa, second_tb, sb, first_ta, fa, first_tb, fb, hidden_ptr,
                        grad_ptr, items, row_ok, S, GW: tl.constexpr, HD: tl.constexpr, HA: tl.constexpr,
                        HB: tl.constexpr, DOT: tl.constexpr):
    v_za = _mm(v_out, second_ta, sa, DOT) * _softplus_grad(_rows(hidden_ptr, items, row_ok, HD, HA, S))
    v_zb = v_za
    if HB > 0:
        v_zb = _mm(v_out, second_tb, sb, DOT) * _softplus_grad(
            _rows(hidden_ptr + HA, items, row_ok, HD - HA, HB, S))
    _store_rows(grad_ptr, v_za, items, row_ok, HD, HA, GW)
    v_x = _mm(v_za, first_ta, fa, DOT)
    if HB > 0:
        _store_rows(grad_ptr + HA, v_zb, items, row_ok, HD - HA, HB, GW)
        v_x += _mm(v_zb, first_tb, fb, DOT)
    return v_x


@triton.jit
def _today_rows_kernel(
    motion_basis_ptr, scale_shift_ptr, saved_ptr, weights_ptr,
    v_means_ptr, v_quats_ptr, v_scales_ptr, v_opacities_ptr, v_colors_ptr, v_delta_ptr,
    v_features_ptr, v_motion_basis_ptr, v_anchors_ptr, grads_ptr, v_scale_shift_ptr, N, B,
    F: tl.constexpr, HD: tl.constexpr, D: tl.constexpr, O: tl.constexpr,
    FP: tl.constexpr, HA: tl.constexpr, HB: tl.constexpr, OP: tl.constexpr, GW: tl.constexpr,
    DOT: tl.constexpr, OFFSET_SCALE: tl.constexpr, MAX_SCALE: tl.constexpr, DELTA_SCALE: tl.constexpr,
    LN_EPS: tl.constexpr, HAS_V_DELTA: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    w_in_ptr, _, w1_ptr, _, w2_ptr, _, d1_ptr, _, d2_ptr, e2_ptr = _weight_ptrs(weights_ptr, F, HD, O)
    _, _, _, _, d2a, v2a, d2b, v2b = _two_layer_weights(d1_ptr, d2_ptr, F, FP, O, OP, HD, HA, HB, DOT)
    d2_ta, v2_ta, d2_tb, v2_tb, d1_ta, v1_ta, d1_tb, v1_tb = _transposed_weights(
        d1_ptr, d2_ptr, F, FP, O, OP, HD, HA, HB, DOT)
    w2_ta, u2_ta, w2_tb, u2_tb, w1_ta, u1_ta, w1_tb, u1_tb = _transposed_weights(
        w1_ptr, w2_ptr, F, FP, F, FP, HD, HA, HB, DOT)
    w_in_t, u_in_t = _weight_operand(_tile(w_in_ptr, F, F, F, FP, FP, True), DOT)
    _, _, saved_a1, saved_a2 = _saved_cols(saved_ptr, F, HD)
    grad_h, grad_z1, grad_y, grad_z2, grad_a = _grad_cols(grads_ptr, F, HD)
    S = 2 * F + 2 * HD
    cf = tl.arange(0, FP)
    for block in range(pid, tl.cdiv(N, BLOCK_N), tl.num_programs(0)):
        r = tl.arange(0, BLOCK_N)
        r_ok = r < N - block * BLOCK_N
        m_ptr = motion_basis_ptr + block * BLOCK_N * F
        v_f = tl.zeros([BLOCK_N, FP], tl.float32)
        v_ln = tl.zeros([BLOCK_N, FP], tl.float32)
        for b in range(B):
            row0 = tl.cast(b, tl.int64) * N + block * BLOCK_N
            g = _load_heads(r, r_ok, v_means_ptr + row0 * 3, v_scales_ptr + row0 * 3, v_quats_ptr + row0 * 4,
                            v_opacities_ptr + row0, v_colors_ptr + row0 * D, D, OP)
            a = _saved_hidden_out(saved_a2 + row0 * S, r, r_ok, S, d2a, v2a, d2b, v2b, HD, HA, HB, DOT)
            v_a = _heads_backward(a + _vec(e2_ptr, O, OP)[None, :], g, OFFSET_SCALE, MAX_SCALE, OP)
            _store_rows(grad_a + row0 * GW, v_a, r, r_ok, O, OP, GW)
            v_f_new = _two_layer_backward(v_a, d2_ta, v2_ta, d2_tb, v2_tb, d1_ta, v1_ta, d1_tb, v1_tb,
                                          saved_a2 + row0 * S, grad_z2 + row0 * GW, r, r_ok, S, GW, HD, HA, HB, DOT)
            v_f += v_f_new
            if HAS_V_DELTA:
                v_f_new += _rows(v_delta_ptr + row0 * F, r, r_ok, F, FP, F)
            v_y = DELTA_SCALE * v_f_new
            _store_rows(grad_y + row0 * GW, v_y, r, r_ok, F, FP, GW)
            v_h = _two_layer_backward(v_y, w2_ta, u2_ta, w2_tb, u2_tb, w1_ta, u1_ta, w1_tb, u1_tb,
                                      saved_a1 + row0 * S, grad_z1 + row0 * GW, r, r_ok, S, GW, HD, HA, HB, DOT)
            _store_rows(grad_h + row0 * GW, v_h, r, r_ok, F, FP, GW)
            v_x = _mm(v_h, w_in_t, u_in_t, DOT)
            ln = _layer_norm(_rows(m_ptr, r, r_ok, F, FP, F), F, FP, LN_EPS)[0]
            v_ss_row = v_scale_shift_ptr + (pid * B + b) * 2 * F
            tl.atomic_add(v_ss_row + cf, tl.sum(v_x * ln, axis=0), mask=cf < F)
            tl.atomic_add(v_ss_row + F + cf, tl.sum(v_x, axis=0), mask=cf < F)
            v_ln += v_x * _vec(scale_shift_ptr + b * 2 * F, F, FP)[None, :]
        ln, rstd = _layer_norm(_rows(m_ptr, r, r_ok, F, FP, F), F, FP, LN_EPS)
        mean_v = tl.sum(v_ln, axis=1) / F
        mean_v_ln = tl.sum(v_ln * ln, axis=1) / F
        v_m = rstd[:, None] * (v_ln - mean_v[:, None] - ln * mean_v_ln[:, None])
        _store_rows(v_motion_basis_ptr + block * BLOCK_N * F, v_m, r, r_ok, F, FP, F)
        _store_rows(v_features_ptr + block * BLOCK_N * F, v_f, r, r_ok, F, FP, F)
        v_p = tl.zeros([BLOCK_N, 4], tl.float32)
        for b in range(B):
            v_p += _rows(v_means_ptr + (tl.cast(b, tl.int64) * N + block * BLOCK_N) * 3, r, r_ok, 3, 4, 3)
        _store_rows(v_anchors_ptr + block * BLOCK_N * 3, v_p, r, r_ok, 3, 4, 3)


# ---------------------------------------------------------------- host side
@dataclass(frozen=True)
class Variant:
    name: str
    rows: Optional[FusionLaunch]  # None for "package"
    maxnreg: Optional[int] = None  # register cap of the (first) rows kernel
    gaussians: Optional[FusionLaunch] = None  # split: the per-Gaussian kernel's launch
    gaussians_maxnreg: Optional[int] = None


def _multiprocessors() -> int:
    return torch.cuda.get_device_properties(0).multi_processor_count if DEVICE == "cuda" else 1


def _programs(work: int, launch: FusionLaunch) -> int:
    return max(1, min(work, launch.programs_per_sm * _multiprocessors()))


def _with_cap(constexprs: dict, maxnreg) -> dict:
    return constexprs | ({} if maxnreg is None else dict(maxnreg=maxnreg))


def backward(variant: Variant, m, ss, packed, saved, config, v_out, weight_grads: bool = True):
    """(v_features, v_motion_basis, v_anchors, v_scale_shift, v_weights) as fusion.op_backward,
    with the variant's per-row kernel(s); the weight-gradient kernel is the package's (not
    launched without weight_grads: v_weights is then None)."""
    if variant.name == "package":
        assert weight_grads, "the package's backward always launches the weight-gradient kernel"
        return fusion.op_backward(m, ss, packed, saved, config, v_out)
    n, b, f = m.shape[0], ss.shape[0], config.feature_dim
    new = dict(device=m.device, dtype=m.dtype)
    v_features, v_motion_basis, v_anchors = torch.empty(n, f, **new), torch.empty(n, f, **new), torch.empty(n, 3, **new)
    grads = torch.empty(b, n, fusion.grad_width(config), device=m.device, dtype=fusion.saved_dtype(config))
    v_delta = v_out[0]
    blocks = cdiv(n, variant.rows.block_n)
    if variant.name == "today":
        # today's per-row constexprs: the forward's (launch included) and the gradient row width
        cx = _constexprs(config, variant.rows, "forward") | dict(GW=fusion.grad_width(config))
        grid = (_programs(blocks, variant.rows),)
        v_ss = torch.zeros(grid[0], b, 2 * f, device=m.device, dtype=torch.float32)
        launch_kernel(_today_rows_kernel, grid, m, ss, saved, packed, *v_out, v_delta, v_features, v_motion_basis, v_anchors,
                      grads, v_ss, n, b, HAS_V_DELTA=False, **_with_cap(cx, variant.maxnreg))
    else:  # the package's two kernels at the variant's launches
        launch_kernel(fusion._backward_rows_kernel, (_programs(blocks * b, variant.rows),), saved, packed, *v_out,
                      v_delta, grads, n, b, HAS_V_DELTA=False,
                      **_with_cap(_constexprs(config, variant.rows, "backward_rows"), variant.maxnreg))
        g = variant.gaussians
        grid = (_programs(cdiv(n, g.block_n), g),)
        v_ss = torch.zeros(grid[0], b, 2 * f, device=m.device, dtype=torch.float32)
        launch_kernel(fusion._backward_gaussians_kernel, grid, m, ss, packed, v_out[0], grads, v_features,
                      v_motion_basis, v_anchors, v_ss, n, b,
                      **_with_cap(_constexprs(config, g, "backward_gaussians"), variant.gaussians_maxnreg))
    if not weight_grads:
        return v_features, v_motion_basis, v_anchors, v_ss, None
    wl = fusion.default_launch(config, "weight_grads")
    wgrid = fusion._grid(b * n, m.device, wl, WEIGHT_GROUPS)
    partials = torch.empty(wgrid[0] // WEIGHT_GROUPS, packed.numel(), device=m.device, dtype=torch.float32)
    launch_kernel(fusion._weight_grad_kernel, wgrid, saved, grads, packed, partials, b * n,
                  **_constexprs(config, wl, "weight_grads"))
    return v_features, v_motion_basis, v_anchors, v_ss.sum(0).to(ss.dtype), partials.sum(0)


L = FusionLaunch
# the per-Gaussian kernel: 154 registers (sm_90, offline, Triton 3.6), capped for two programs a multiprocessor
GAUSSIANS = dict(gaussians=L(64, 8, 1, 2), gaussians_maxnreg=128)
# launches from the offline sm_90 build (registers by Triton 3.6 as on the GPU machine): a register
# cap picks the programs per multiprocessor (65536 registers / (32 * warps * registers)); spills
# noted where there are any
VARIANTS = [  # the first is the reference: today's kernel and default launch
    Variant("today", L(64, 4, 1, 2)),  # 255 registers, 112 B spill
    Variant("today", L(32, 4, 1, 3), maxnreg=168),  # 80 B spill
    Variant("split", L(64, 4, 1, 2), **GAUSSIANS),  # 219
    Variant("split", L(64, 4, 1, 2), gaussians=L(64, 4, 1, 2)),  # 219; per-Gaussian 255
    Variant("split", L(64, 4, 1, 2), gaussians=L(32, 8, 1, 2)),  # 219; per-Gaussian 102
    Variant("split", L(64, 4, 1, 3), maxnreg=168, **GAUSSIANS),  # 56 B spill
    Variant("split", L(32, 4, 1, 3), maxnreg=168, **GAUSSIANS),  # none
    Variant("split", L(32, 4, 1, 4), maxnreg=128, **GAUSSIANS),  # 8 B spill
    Variant("split", L(64, 8, 1, 1), **GAUSSIANS),  # 255
    Variant("package", None),  # fusion.op_backward with the package's default launches, as checked out
]
if TINY:
    TINY_LAUNCH = FusionLaunch(16, 4, 1, 3)
    VARIANTS = [Variant("today", TINY_LAUNCH), Variant("split", TINY_LAUNCH, gaussians=TINY_LAUNCH), VARIANTS[-1]]


def label(v: Variant) -> str:
    if v.name == "package":
        return "package op_backward, default launches"
    r = v.rows
    text = f"{v.name} {r.block_n}/{r.num_warps}/{r.num_stages}/{r.programs_per_sm}"
    if v.maxnreg:
        text += f" maxnreg {v.maxnreg}"
    if v.gaussians:
        g = v.gaussians
        text += f" + gaussians {g.block_n}/{g.num_warps}/{g.num_stages}/{g.programs_per_sm}"
        if v.gaussians_maxnreg:
            text += f" maxnreg {v.gaussians_maxnreg}"
    return text


def compare(out, ref) -> str:
    if all(torch.equal(x, y) for x, y in zip(out, ref)):
        return "bit-equal"
    errors = [((x.double() - y.double()).abs().max() / y.double().abs().max().clamp_min(1e-30)).item()
              for x, y in zip(out, ref)]
    return "max rel err " + ", ".join(f"{name} {e:.1e}" for name, e in zip(("v_f", "v_m", "v_p", "v_ss", "v_w"), errors))


def ms(fn) -> float:
    if TINY:
        start = time.perf_counter()
        fn()
        return 1e3 * (time.perf_counter() - start)
    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def main():
    config = FusionConfig()
    start = time.time()
    print(f"{torch.cuda.get_device_name() if DEVICE == 'cuda' else 'CPU (interpreter)'}, torch {torch.__version__}, "
          f"Triton {triton.__version__}, N = {N}, fp32, bf16 dot operands")
    for b in FRAMES:
        f, m, p, ss, w = fusion.example_inputs(config, N, b, device=DEVICE)
        packed = w.packed(config, f.dtype, f.device)
        _, saved = fusion.op_forward(f, m, p, ss, packed, config, False, save=True)
        gen = torch.Generator(device=DEVICE).manual_seed(1)
        v_out = [torch.randn(b, N, *s, generator=gen, device=DEVICE) for s in ((3,), (4,), (3,), (), (3,))]
        ref = backward(VARIANTS[0], m, ss, packed, saved, config, v_out)
        print(f"\n| B={b} | both backward kernels (ms) | vs today's default | per-row kernel(s) alone (ms) "
              f"| outputs vs today's default |")
        print("|---|---|---|---|---|")
        base = None
        for variant in VARIANTS:
            try:
                run = lambda: backward(variant, m, ss, packed, saved, config, v_out)  # noqa: E731
                check = compare(run(), ref)
                t = ms(run)
                rows = "" if variant.name == "package" else "%.3f" % ms(
                    lambda: backward(variant, m, ss, packed, saved, config, v_out, weight_grads=False))
                base = base or t
                print(f"| {label(variant)} | {t:.3f} | {base / t:.2f}x | {rows} | {check} |", flush=True)
            except Exception:  # noqa: BLE001 - one launch failing must not stop the rest
                print(f"| {label(variant)} | failed | | | {traceback.format_exc(limit=-2)!r} |", flush=True)
    print("\n| public step (local_fusion + autograd.grad), package default | ms |\n|---|---|")
    for b in FRAMES:
        f, m, p, ss, w = fusion.example_inputs(config, N, b, device=DEVICE)
        leaves = [f, m, p, ss, *w.tensors()]
        for t in leaves:
            t.requires_grad_()
        weights = fusion.FusionWeights(*leaves[4:])
        gen = torch.Generator(device=DEVICE).manual_seed(1)
        v_out = [torch.randn(b, N, *s, generator=gen, device=DEVICE) for s in ((3,), (4,), (3,), (), (3,))]

        def step():
            out = fusion.local_fusion(f, m, p, ss, weights, config, backend="triton" if TINY else None)
            return torch.autograd.grad([out.means, out.quats, out.scales, out.opacities, out.colors], leaves, v_out)
        step()
        print(f"| B={b} | {ms(step):.3f} |", flush=True)
    print(f"\n{time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
