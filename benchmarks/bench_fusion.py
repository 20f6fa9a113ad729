"""``pytest benchmarks/bench_fusion.py --benchmark-only``: local fusion + Gaussian decoder, forward and
forward+backward (the twin on CPU at small N, the Triton kernels on a GPU at the issue's sizes).

``extra_info`` records ms per call, Gaussians (x frames) per second and the effective bandwidth: the
pass's fewest bytes (``memory_floor_bytes``) over its time. scripts/gpu_fusion.py puts the same
cells beside the twin, eager and compiled, and the measured copy bandwidth.
"""

import pytest
import torch

from instant4d.kernels.fusion import FusionConfig, FusionWeights, example_inputs, local_fusion, memory_floor_bytes

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cuda":
    CASES = [(n, b, d) for n in (50_000, 200_000, 1_000_000) for b in (1, 8) for d in (torch.float32, torch.bfloat16)]
else:
    CASES = [(4_096, 1, torch.float32), (4_096, 4, torch.float32)]
CONFIG = FusionConfig()


def _case_id(case):
    n, b, dtype = case
    return f"{n // 1000}k-B{b}-{str(dtype).removeprefix('torch.')}"


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _inputs(n, b, dtype, requires_grad):
    f, m, p, ss, w = example_inputs(CONFIG, n, b, dtype=dtype, device=DEVICE)
    return [t.requires_grad_(requires_grad) for t in (f, m, p, ss, *w.tensors())]


def _fusion(inputs, held={}):
    """The public call with one FusionWeights per set of weights, held as LocalFusion holds it (the
    Triton path packs its weights once)."""
    key = tuple(map(id, inputs[4:]))
    if key not in held:
        held[key] = FusionWeights(*inputs[4:])
    return local_fusion(*inputs[:4], held[key], CONFIG)


def _record(benchmark, n, b, dtype, backward):
    mean_s = benchmark.stats.stats.mean if benchmark.stats else float("nan")
    bytes_moved = memory_floor_bytes(CONFIG, n, b, dtype, backward=False)
    if backward:
        bytes_moved += memory_floor_bytes(CONFIG, n, b, dtype, backward=True)
    benchmark.extra_info.update(
        device=torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu",
        ms=1e3 * mean_s, gaussians_per_s=n * b / mean_s, gb_per_s=bytes_moved / mean_s / 1e9,
        peak_mb=torch.cuda.max_memory_allocated() / 2**20 if DEVICE == "cuda" else None,
    )


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_fusion_forward(benchmark, case):
    n, b, dtype = case
    inputs = _inputs(n, b, dtype, requires_grad=False)

    def run():
        with torch.no_grad():
            out = _fusion(inputs)
        _sync()
        return out

    out = benchmark(run)
    assert out.means.shape == (b, n, 3) and torch.isfinite(out.colors).all()
    _record(benchmark, n, b, dtype, backward=False)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_fusion_forward_backward(benchmark, case):
    n, b, dtype = case
    inputs = _inputs(n, b, dtype, requires_grad=True)
    gen = torch.Generator(device=DEVICE).manual_seed(1)
    out = _fusion(inputs)
    v_outputs = [torch.randn(o.shape, generator=gen, device=DEVICE).to(dtype)
                 for o in (out.means, out.quats, out.scales, out.opacities, out.colors)]

    def run():
        out = _fusion(inputs)
        grads = torch.autograd.grad((out.means, out.quats, out.scales, out.opacities, out.colors), inputs, v_outputs)
        _sync()
        return grads

    grads = benchmark(run)
    assert all(torch.isfinite(g).all() for g in grads)
    _record(benchmark, n, b, dtype, backward=True)
