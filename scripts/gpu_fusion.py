"""GPU: local_fusion's Triton kernels against the float64 twin (every output and gradient, fp32 and
bf16 inputs) and timed against the twin, eager and under torch.compile, over the issue's matrix
(N in 50k, 200k, 1M; B in 1, 8; fp32, bf16; forward and forward+backward), with the memory-traffic
floor from a device-to-device copy measured in the same run; the host time of a call (tiny N);
each kernel's device time and registers (torch.profiler, 200k Gaussians) and a cProfile of the
host side of one fwd+bwd; with --sweep, the kernels' launch shapes at 200k Gaussians. (Its
weight-gradient kernel against cuBLAS, whose table is in docs/benchmarks.md, was removed after the
kernel's arguments changed.)

    PYTHONPATH=. python scripts/gpu_fusion.py [--budget SECONDS] [--sweep] [--impls triton,compiled]
    PYTHONPATH=. python scripts/gpu_fusion.py --smoke --sweep --impls triton,eager  # CPU, interpreter, tiny sizes

Every kernel and compiled graph is first built by a pool of worker processes on tiny inputs (they
share the on-disk Triton and Inductor caches), so that the timed process only loads them. Work is
done most important first; what the time budget leaves out is listed as skipped. Prints markdown
and writes $OUT/fusion.md, $OUT/fusion.json and (for a later run, FUSION_CACHE=path) the caches.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import cProfile
import dataclasses
import datetime
import io
import json
import multiprocessing
import os
import pstats
import subprocess
import sys
import tarfile
import time

SMOKE = "--smoke" in sys.argv  # the whole script on CPU (Triton interpreter) at tiny sizes, to check it runs
if SMOKE:
    os.environ.setdefault("TRITON_INTERPRET", "1")
OUT = os.environ.get("OUT", "gpu-results")
CACHE = "/tmp/fusion-cache"
os.environ.setdefault("TRITON_CACHE_DIR", f"{CACHE}/triton")
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", f"{CACHE}/inductor")

import torch  # noqa: E402
import triton  # noqa: E402

from gpu_compare import bench_ms, source_tree  # noqa: E402  (one timing protocol for every GPU table)
from instant4d.kernels import fusion, reference  # noqa: E402
from instant4d.kernels.fusion import FusionConfig, FusionLaunch, FusionWeights  # noqa: E402

DEVICE = "cpu" if SMOKE else "cuda"
SIZES = [(n, b) for n in (50_000, 200_000, 1_000_000) for b in (1, 8)]
DONE_WHEN_N = 200_000  # the targets, the sweep and the profile are at this size
if SMOKE:
    SIZES, DONE_WHEN_N = [(40, 1), (40, 2)], 40
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
OUTPUTS = ("means", "quats", "scales", "opacities", "colors")
# the first of each is the default for F <= 64, Hd <= 128 (the forward's was swept before: see docs)
SWEEP = {
    "forward": [FusionLaunch(64, 4, 2, 2)],
    # the default first (fastest at B = 1, equal at B = 8 in the 18:01 UTC run); before the hidden
    # split 32 / 4 / 2 / 2 was fastest; the hidden width in 64 + 32 tiles lets 64 rows (wgmma) compile with 64-88 bytes
    # of spill a thread instead of 960 (sm_90, Triton 3.9; 128 rows / 8 warps: 80), 32 rows / 8
    # warps with 235 registers and none; 64 / 4 / 2 stages holds 145 KB of shared memory (one
    # program a multiprocessor), with 1 stage 68 KB (two)
    "backward_rows": [FusionLaunch(64, 4, 1, 2), FusionLaunch(32, 4, 2, 2), FusionLaunch(64, 4, 2, 1),
                      FusionLaunch(128, 8, 1, 1), FusionLaunch(32, 8, 2, 1), FusionLaunch(16, 4, 2, 4)],
    # the default first (since v_features moved to the weight-gradient kernel, 2026-11-26 13:29 UTC);
    # then the default before it and the shapes swept with it
    "backward_gaussians": [FusionLaunch(64, 4, 2, 4), FusionLaunch(32, 4, 2, 8), FusionLaunch(64, 4, 1, 2),
                           FusionLaunch(64, 4, 2, 2), FusionLaunch(32, 4, 2, 12), FusionLaunch(128, 8, 2, 1)],
    # the default first (since D2's gradient moved to the per-row kernel, 2026-11-26); sm_90 compiler
    # report then: 248 / 252 / 232 / 238 / 234 registers, no spills (the default 254 since 13:29 UTC)
    "weight_grads": [FusionLaunch(64, 4, 2, 2), FusionLaunch(64, 4, 3, 2), FusionLaunch(64, 4, 1, 2),
                     FusionLaunch(128, 4, 1, 2), FusionLaunch(32, 4, 2, 4)],
}
if SMOKE:
    SWEEP = {k: [fusion.default_launch(FusionConfig(), k)] for k in SWEEP}
WEIGHT_GRADIENTS = ("v_w_in", "v_w1", "v_w2", "v_d1", "v_d2")
START = time.time()


def ms(fn) -> float:
    if not SMOKE:
        return bench_ms(fn)
    start = time.perf_counter()
    fn()
    return 1e3 * (time.perf_counter() - start)


def synchronize():
    if not SMOKE:
        torch.cuda.synchronize()


def inputs_for(config, n, b, dtype, seed=0):
    f, m, p, ss, w = fusion.example_inputs(config, n, b, dtype=dtype, device=DEVICE, seed=seed)
    return [f, m, p, ss, *w.tensors()]


def output_grads(config, n, b, dtype, seed=1, delta=False):
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    shapes = [(b, n, 3), (b, n, 4), (b, n, 3), (b, n), (b, n, config.color_dim)] + ([(b, n, config.feature_dim)] if delta else [])
    return [torch.randn(s, generator=gen, device=DEVICE, dtype=torch.float64).to(dtype) for s in shapes]


def triton_fn(config, fresh_weights=False):
    """The public call, holding one FusionWeights per set of weight tensors as LocalFusion does
    (fresh_weights: a new one every call, so every call packs the weights)."""
    held = {}
    backend = "triton" if SMOKE else None  # "auto" on CUDA tensors is Triton (and checks less on the host)

    def run(*t):
        key = id(t[4])  # each set of inputs comes with its own weight tensors
        if fresh_weights or key not in held:
            held[key] = (FusionWeights(*t[4:]), t[4])  # (t[4] held, so that its id is not reused)
        out = fusion.local_fusion(*t[:4], held[key][0], config, backend=backend)
        return out.means, out.quats, out.scales, out.opacities, out.colors
    return run


def launcher_steps(config, launches, n, b, dtype=torch.float32):
    """(forward, backward) closures of the launchers alone, no autograd, with these launches."""
    f, m, p, ss, *w = inputs_for(config, n, b, dtype)
    packed = FusionWeights(*w).packed(config, dtype, f.device)
    v_out = output_grads(config, n, b, dtype)
    _, saved = fusion.op_forward(f, m, p, ss, packed, config, False, True, launches["forward"])
    return (lambda: fusion.op_forward(f, m, p, ss, packed, config, False, False, launches["forward"]),
            lambda: fusion.op_backward(m, ss, packed, saved, config, v_out,
                                       (launches["backward_rows"], launches["backward_gaussians"],
                                        launches["weight_grads"])))


def twin_fn(config):
    def run(*t):
        out = reference.local_fusion(*t[:4], FusionWeights(*t[4:]), config)
        return tuple(getattr(out, k) for k in OUTPUTS)
    return run


def compiled_twin(config):
    torch._dynamo.config.cache_size_limit = 64
    compiled = torch.compile(twin_fn(config))

    def run(*t):
        for x in t[:3]:  # one graph for every N (B and dtype are specialised)
            torch._dynamo.mark_dynamic(x, 0)
        return compiled(*t)
    return run


def compiled_static_twin(config):
    """The twin compiled for each input shape (torch.compile(dynamic=False)): compiled in the timed
    process, so only for the done-when cells. It has its own code object: Dynamo keeps compiled
    graphs per code object, and the N-dynamic graph above would otherwise serve these calls."""
    torch._dynamo.config.cache_size_limit = 64

    def run_static(*t):
        out = reference.local_fusion(*t[:4], FusionWeights(*t[4:]), config)
        return tuple(getattr(out, k) for k in OUTPUTS)
    return torch.compile(run_static, dynamic=False)


def graph_replay(step):
    """``step`` captured in a CUDA graph after three warm-up calls on a side stream (torch's
    whole-network capture recipe); returns a replay function, which holds ``step`` (its inputs) alive."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = step()

    def replay():
        graph.replay()
        return step, outputs
    return replay


def forward_step(fn, inputs):
    def step():
        with torch.no_grad():
            return fn(*inputs)
    return step


def backward_step(fn, inputs, v_outputs):
    leaves = [t.detach().requires_grad_() for t in inputs]

    def step():
        return torch.autograd.grad(fn(*leaves), leaves, v_outputs)
    return step


# ------------------------------------------------------------------------------------------------
# warm-up workers: build every kernel variant and compiled graph on tiny inputs, in parallel


def warm_job(job):
    os.environ["TORCHINDUCTOR_COMPILE_THREADS"] = "1"
    start = time.time()
    try:
        kind, dtype_name, extra = job
        dtype = DTYPES[dtype_name]
        if kind == "triton":
            config = FusionConfig(dot_operands=extra["dot"])
            launches = extra.get("launches", {})
            f, m, p, ss, *w = inputs_for(config, 300, 2, dtype)
            packed = FusionWeights(*w).packed(config, dtype, f.device)
            for save in (False, True):
                _, saved = fusion.op_forward(f, m, p, ss, packed, config, extra["delta"], save, launches.get("forward"))
            fusion.op_backward(m, ss, packed, saved, config, output_grads(config, 300, 2, dtype, delta=extra["delta"]),
                               (launches.get("backward_rows"), launches.get("backward_gaussians"),
                                launches.get("weight_grads")))
        else:
            config = FusionConfig()
            inputs = inputs_for(config, 300, extra["b"], dtype)
            fn = compiled_twin(config)
            if extra["grad"]:
                backward_step(fn, inputs, output_grads(config, 300, extra["b"], dtype))()
            else:
                forward_step(fn, inputs)()
        synchronize()
        return job, round(time.time() - start, 1), None
    except Exception as exc:  # reported; the main process retries (and reports) the same work
        return job, round(time.time() - start, 1), f"{type(exc).__name__}: {str(exc)[:300]}"


def warm_all(workers: int, sweep: bool, impls) -> list:
    jobs = [("triton", d, dict(dot=dot, delta=delta)) for d, dot, delta in (
        ("fp32", "bf16", True), ("bf16", "bf16", True), ("fp32", "fp16", True), ("fp32", "bf16", False),
        ("bf16", "bf16", False), ("fp32", "fp16", False))]
    if "compiled" in impls:
        dtypes = DTYPES if "eager" in impls else ("fp32",)  # a sweep run times the done-when cells only
        jobs += [("compile", d, dict(b=b, grad=g)) for d in dtypes for b in (1, 8) for g in (False, True)]
    if sweep:
        jobs += [("triton", "fp32", dict(dot="bf16", delta=False, launches={kernel: launch}))
                 for kernel, launches in SWEEP.items() for launch in launches[1:]]
    ctx = multiprocessing.get_context("spawn")
    with futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        return [r for r in pool.map(warm_job, jobs)]


# ------------------------------------------------------------------------------------------------
# checks


def check_equivalence(config, dtype, n=50_001 if not SMOKE else 37, b=3, seed=5) -> list[dict]:
    """Triton vs the float64 twin: every output and gradient, with the test's rule (2x / 3x the error
    of PyTorch running the twin in the low precision, bf16 for the weight gradients; floor 4 unit
    roundoffs of the scale)."""
    inputs = inputs_for(config, n, b, dtype, seed)
    v_out = output_grads(config, n, b, torch.float64, seed + 1, delta=True)
    low = torch.bfloat16 if dtype == torch.bfloat16 or config.dot_operands == "bf16" else torch.float16

    def run(fn, dt, **kw):
        leaves = [t.detach().to(dt).requires_grad_() for t in inputs]
        out = fn(*leaves[:4], FusionWeights(*leaves[4:]), config, return_delta=True, **kw)
        outs = [getattr(out, k) for k in OUTPUTS + ("delta",)]
        grads = torch.autograd.grad(outs, leaves, [v.to(dt) for v in v_out])
        return outs + list(grads)

    poison = torch.full((2**30 // 4 if not SMOKE else 16,), float("nan"), device=DEVICE)
    del poison  # the caching allocator hands this NaN-filled block out again: unwritten outputs show
    actual = run(fusion.local_fusion, dtype, backend="triton")
    again = run(fusion.local_fusion, dtype, backend="triton")
    expected = run(reference.local_fusion, torch.float64)
    pytorch_low = run(reference.local_fusion, low)
    pytorch_bf16 = run(reference.local_fusion, torch.bfloat16)
    names = list(OUTPUTS) + ["delta"] + ["v_" + k for k in ("features", "motion_basis", "anchors", "scale_shift")] + \
        ["v_" + k for k in config.weight_shapes()]
    rows = []
    for name, a, a2, e, lo, lo_bf16 in zip(names, actual, again, expected, pytorch_low, pytorch_bf16):
        err = (a.double() - e).abs()
        if name in WEIGHT_GRADIENTS:
            lo = lo_bf16
        low_err = (lo.double() - e).abs().max().item()
        factor = 2.0 if not name.startswith("v_") else 3.0
        bound = factor * low_err + 4 * torch.finfo(lo.dtype).eps / 2 * e.abs().max().item()
        rows.append(dict(quantity=name, max_abs_err=err.max().item(),
                         rel_err=(err.norm() / e.norm().clamp_min(1e-300)).item(),
                         pytorch_low_max_err=low_err, ratio=err.max().item() / max(low_err, 1e-300),
                         finite=bool(torch.isfinite(a).all()), deterministic=bool(torch.equal(a, a2)),
                         ok=bool(torch.isfinite(a).all() and err.max().item() <= bound)))
    return rows


# ------------------------------------------------------------------------------------------------
# timing


def equivalence_verdict(rows: list[dict]) -> str:
    """check_equivalence's rows in one line: ok or FAILED (with each failing quantity's ratio, finiteness
    and determinism), and the quantity with the largest ratio."""
    bad = [(r["quantity"], round(r["ratio"], 2), r["finite"], r["deterministic"]) for r in rows
           if not (r["ok"] and r["deterministic"])]
    worst = max(rows, key=lambda r: r["ratio"])
    return f"{'ok' if not bad else 'FAILED ' + str(bad)}; worst {worst['quantity']} {worst['ratio']:.2f}"


def copy_bandwidth() -> float:
    src = torch.empty(2**30 if not SMOKE else 2**20, dtype=torch.uint8, device=DEVICE).random_()
    dst = torch.empty_like(src)
    return 2 * src.numel() / (ms(lambda: dst.copy_(src)) * 1e-3)


def time_matrix(results, impls, budget, cells=None) -> None:
    bandwidth = results["copy_bandwidth_bytes_per_s"]
    rows = results.setdefault("timing", [])
    config = FusionConfig()
    order = [(impl, d, n, b) for impl in impls for d in DTYPES for (n, b) in SIZES]
    order = [k for k in order if cells is None or k[1:] in cells]
    order.sort(key=lambda k: not (k[1] == "fp32" and k[2] == 200_000))  # the done-when cells first
    for impl, d, n, b in order:
        if time.time() - START > budget:
            rows.append(dict(impl=impl, dtype=d, n=n, b=b, skipped="time budget"))
            continue
        dtype = DTYPES[d]
        fn = IMPLS[impl](config)
        row = dict(impl=impl, dtype=d, n=n, b=b)
        try:
            inputs = inputs_for(config, n, b, dtype)
            row["fwd_ms"] = ms(forward_step(fn, inputs))
            row["fwd_bwd_ms"] = ms(backward_step(fn, inputs, output_grads(config, n, b, dtype)))
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        fwd_bytes = fusion.memory_floor_bytes(config, n, b, dtype, backward=False)
        bwd_bytes = fusion.memory_floor_bytes(config, n, b, dtype, backward=True)
        row.update(floor_fwd_ms=1e3 * fwd_bytes / bandwidth, floor_fwd_bwd_ms=1e3 * (fwd_bytes + bwd_bytes) / bandwidth,
                   fwd_gb_s=fwd_bytes / row["fwd_ms"] / 1e6 if "fwd_ms" in row else None,
                   gaussians_per_s=n * b / row["fwd_ms"] * 1e3 if "fwd_ms" in row else None)
        rows.append(row)
        print(row, flush=True)
        torch.cuda.empty_cache()


IMPLS = dict(triton=triton_fn, eager=twin_fn, compiled=compiled_twin, compiled_static=compiled_static_twin)


def time_graphs(results, budget) -> None:
    """The done-when cells' fwd+bwd (fp32, 200k, B = 1 and 8) eager and replayed from a CUDA graph, for
    Triton and both compiled twins: a graph takes the host out of the step (a training loop that
    captures its step runs at the graph's pace)."""
    rows = results.setdefault("graphs", [])
    config = FusionConfig()
    for b in (1, 8):
        for impl in ("triton", "compiled", "compiled_static"):
            if time.time() - START > budget:
                rows.append(dict(impl=impl, b=b, skipped="time budget"))
                continue
            row = dict(impl=impl, b=b)
            try:
                step = backward_step(IMPLS[impl](config), inputs_for(config, DONE_WHEN_N, b, torch.float32),
                                     output_grads(config, DONE_WHEN_N, b, torch.float32))
                row["eager_ms"] = ms(step)
                replay = graph_replay(step)
                row["graph_ms"] = ms(replay)
                if impl == "triton":  # the replayed gradients against an eager step's, bit for bit
                    _, replayed = replay()
                    row["graph_bits_equal_eager"] = all(torch.equal(a, e) for a, e in zip(replayed, step()))
            except Exception as exc:
                row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            rows.append(row)
            print(row, flush=True)
            torch.cuda.empty_cache()


def sweep(results, budget) -> None:
    """Each kernel's launch shapes with the other kernels at their defaults (launchers alone, fp32)."""
    rows = results.setdefault("sweep", [])
    config = FusionConfig()
    defaults = {kernel: launches[0] for kernel, launches in SWEEP.items()}
    for b in (1, 8):
        for kernel, launches in SWEEP.items():
            for launch in launches:
                if time.time() - START > budget:
                    return
                row = dict(kernel=kernel, b=b, launch=dataclasses.asdict(launch))
                try:
                    forward, backward = launcher_steps(config, defaults | {kernel: launch}, DONE_WHEN_N, b)
                    row["ms"] = ms(forward if kernel == "forward" else backward)
                except Exception as exc:
                    row["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
                rows.append(row)
                print(row, flush=True)
                torch.cuda.empty_cache()


def host_us(call, repeats: int, warmup: int) -> float:
    """Host microseconds a call over ``repeats`` back-to-back calls after ``warmup`` ones (the GPU's
    work is queued, not waited for: at small N the loop runs at the host's pace; synchronised before and
    after)."""
    for _ in range(warmup):
        call()
    synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    host = (time.perf_counter() - start) / repeats * 1e6
    synchronize()
    return host


def host_times(results) -> None:
    """Host microseconds per call at N = 1024, B = 1 (the GPU's work is a few microseconds, so the
    loop runs at the host's pace; synchronised once at the end), and do_bench of the same calls."""
    config = FusionConfig()
    inputs = inputs_for(config, 1024, 1, torch.float32)
    f, m, p, ss, *w = inputs
    weights = FusionWeights(*w)
    packed = weights.packed(config, torch.float32, f.device)
    leaves = [t.detach().requires_grad_() for t in inputs]
    public, fresh = triton_fn(config), triton_fn(config, fresh_weights=True)
    calls = {
        "torch.empty [1, 1024, 3]": lambda: torch.empty(1, 1024, 3, device=DEVICE),
        "op_forward (launcher)": lambda: fusion.op_forward(f, m, p, ss, packed, config, False),
        "local_fusion, no grad, held FusionWeights": forward_step(public, inputs),
        "local_fusion, no grad, new FusionWeights each call": forward_step(fresh, inputs),
        "local_fusion, grad (saves activations)": lambda: public(*leaves),
        "local_fusion forward + autograd.grad": backward_step(public, inputs, output_grads(config, 1024, 1, torch.float32)),
    }
    rows = results.setdefault("host", [])
    repeats = 2 if SMOKE else 500
    for name, call in calls.items():
        rows.append(dict(call=name, host_us=host_us(call, repeats, 2 if SMOKE else 20), do_bench_us=1e3 * ms(call)))
        print(rows[-1], flush=True)
    # where the host time of a fwd+bwd goes: cProfile of repeated calls, by own time
    profiler = cProfile.Profile()
    step = calls["local_fusion forward + autograd.grad"]
    profiler.enable()
    for _ in range(repeats // 5 or 1):
        step()
    profiler.disable()
    synchronize()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
    results["host_profile"] = f"{repeats // 5 or 1} calls of local_fusion forward + autograd.grad (N = 1024, B = 1)\n" + \
        text.getvalue()[-6000:]
    print(results["host_profile"], flush=True)


def kernel_profile(results) -> None:
    """Device time of each kernel in a public fwd+bwd at 200k Gaussians (torch.profiler, mean of 10
    steps) and each compiled kernel's registers and spills."""
    config = FusionConfig()
    for b in (1, 8):
        inputs = inputs_for(config, DONE_WHEN_N, b, torch.float32)
        step = backward_step(triton_fn(config), inputs, output_grads(config, DONE_WHEN_N, b, torch.float32))
        for _ in range(3):
            step()
        synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU if SMOKE else
                                                torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                step()
            synchronize()
        for event in prof.key_averages():
            if event.device_type == torch.autograd.DeviceType.CUDA:
                total = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
                results.setdefault("profile", []).append(dict(b=b, kernel=event.key[:60], calls=event.count,
                                                              us_per_step=total / 10))
    for kernel in (fusion._fusion_forward_kernel, fusion._backward_rows_kernel, fusion._backward_gaussians_kernel,
                   fusion._weight_grad_kernel, fusion._sum_partials_kernel):
        try:
            for cache in kernel.device_caches.values():
                for compiled in cache[0].values():
                    results.setdefault("registers", []).append(dict(
                        kernel=kernel.fn.__name__, warps=compiled.metadata.num_warps, regs=compiled.n_regs,
                        spills=compiled.n_spills, shared=compiled.metadata.shared))
        except Exception as exc:  # Triton's caches are internal: report, don't fail
            results.setdefault("registers", []).append(dict(kernel=kernel.fn.__name__, error=str(exc)[:200]))


# ------------------------------------------------------------------------------------------------
# report


def equivalence_summary(equivalence: dict) -> str:
    """One line up front, so that a failing quantity is not lost among the timings (a GPU-only race in
    one precision mode was found in a table once, 2026-11-26)."""
    failed = [f"{title}: {r['quantity']} ({'non-finite' if not r['finite'] else 'outside the rule' if not r['ok'] else 'ok'}"
              f"{', not deterministic' if not r['deterministic'] else ''})"
              for title, rows in equivalence.items() for r in rows if not (r["ok"] and r["deterministic"])]
    if not equivalence:
        return "**Equivalence: not checked in this run.**"
    if failed:
        return "**Equivalence FAILED:** " + "; ".join(failed)
    return f"**Equivalence: every output and gradient within the rule and deterministic in all {len(equivalence)} tables.**"


def faster(times: list) -> float | None:
    """The smaller of the measured times (None where a twin was not timed)."""
    return min((t for t in times if t), default=None)


def markdown(results) -> str:
    lines = [f"# local_fusion on {results['device']} ({results['date']})", "",
             f"torch {results['torch']}, triton {results['triton']}, Python {results['python']}; "
             f"device-to-device copy {results['copy_bandwidth_bytes_per_s'] / 1e12:.2f} TB/s (read + write); "
             "times are `triton.testing.do_bench` medians (L2 flushed between runs), ms.", ""]
    lines += [equivalence_summary(results.get("equivalence", {})), ""]
    for title, rows in results.get("equivalence", {}).items():
        lines += [f"## Triton vs float64 twin: {title}", "",
                  "| quantity | max abs err | rel err (norm) | PyTorch low-precision max err | ratio | deterministic | ok |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {r['quantity']} | {r['max_abs_err']:.3g} | {r['rel_err']:.3g} | {r['pytorch_low_max_err']:.3g} | "
                  f"{r['ratio']:.2f} | {r['deterministic']} | {r['ok']} |" for r in rows]
        lines.append("")
    timing = results.get("timing", [])
    if timing:
        cell = {(r["impl"], r["dtype"], r["n"], r["b"]): r for r in timing}
        lines += ["## Timings (ms)", "",
                  "| dtype | N | B | Triton fwd | eager fwd | compiled fwd | floor fwd | Triton fwd+bwd | eager fwd+bwd | "
                  "compiled fwd+bwd | floor fwd+bwd | fwd GB/s | Gaussians/s (fwd) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

        def get(impl, d, n, b, key):
            r = cell.get((impl, d, n, b), {})
            return f"{r[key]:.3f}" if r.get(key) is not None else ("skipped" if "skipped" in r else "error" if "error" in r else "-")
        for d in DTYPES:
            for n, b in SIZES:
                t = cell.get(("triton", d, n, b), {})
                lines.append(f"| {d} | {n} | {b} | " + " | ".join(get(i, d, n, b, "fwd_ms") for i in ("triton", "eager", "compiled"))
                             + f" | {t.get('floor_fwd_ms', 0):.3f} | "
                             + " | ".join(get(i, d, n, b, "fwd_bwd_ms") for i in ("triton", "eager", "compiled"))
                             + f" | {t.get('floor_fwd_bwd_ms', 0):.3f} | {t.get('fwd_gb_s') or 0:.0f} | "
                             f"{(t.get('gaussians_per_s') or 0) / 1e9:.2f}e9 |")
        lines += ["", "## Done-when targets (fp32; the baseline is the faster compiled twin, N dynamic or static)", ""]
        for n, b, key, target in ((200_000, 1, "fwd_ms", 6), (200_000, 1, "fwd_bwd_ms", 5), (200_000, 8, "fwd_ms", 5),
                                  (200_000, 8, "fwd_bwd_ms", 5)):
            tr = cell.get(("triton", "fp32", n, b), {}).get(key)
            compiled = [cell.get((i, "fp32", n, b), {}).get(key) for i in ("compiled", "compiled_static")]
            co = faster(compiled)
            if tr and co:
                extra = f", Triton {tr:.3f} ms {'<=' if tr <= 0.1 else '>'} 0.1 ms" if (b, key) == (1, "fwd_ms") else ""
                shown = ", ".join(f"{name} {c:.3f}" for name, c in zip(("N dynamic", "static"), compiled) if c)
                lines.append(f"- {n} / B={b} / {key}: {co / tr:.1f}x faster than compiled ({shown} ms; target {target}x): "
                             f"{'met' if co / tr >= target and (tr <= 0.1 or (b, key) != (1, 'fwd_ms')) else 'NOT met'}{extra}")
    if results.get("graphs"):
        lines += ["", "## fwd+bwd eager and replayed from a CUDA graph, fp32, 200k Gaussians (ms)", "",
                  "| B | impl | eager | CUDA graph |", "| --- | --- | --- | --- |"]
        for r in results["graphs"]:
            cols = [f"{r[k]:.3f}" if k in r else r.get("error", r.get("skipped", "-")) for k in ("eager_ms", "graph_ms")]
            same = {True: " (gradients bit-identical to eager)", False: " (gradients differ from eager)"}
            lines.append(f"| {r['b']} | {r['impl']}{same.get(r.get('graph_bits_equal_eager'), '')} | "
                         + " | ".join(cols) + " |")
        graph = {(r["impl"], r["b"]): r.get("graph_ms") for r in results["graphs"]}
        for b in (1, 8):
            co = faster([graph.get((i, b)) for i in ("compiled", "compiled_static")])
            if graph.get(("triton", b)) and co:
                lines.append(f"\n- B={b}, both replayed from CUDA graphs: {co / graph[('triton', b)]:.1f}x faster than the "
                             "faster compiled twin (target 5x)")
    if results.get("sweep"):
        lines += ["", "## Launch sweep, 200k Gaussians, fp32 (launchers alone; the other kernels at their defaults; ms)", "",
                  "| kernel | B | block_n | warps | stages | programs/SM | ms (forward, or both backward kernels) |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in results["sweep"]:
            la = r["launch"]
            value = f"{r['ms']:.3f}" if "ms" in r else r.get("error", "-")
            lines.append(f"| {r['kernel']} | {r['b']} | {la['block_n']} | {la['num_warps']} | "
                         f"{la['num_stages']} | {la['programs_per_sm']} | {value} |")
    if results.get("host"):
        lines += ["", "## Host time per call (N = 1024, B = 1, fp32)", "", "| call | host us | do_bench us |", "| --- | --- | --- |"]
        lines += [f"| {r['call']} | {r['host_us']:.1f} | {r['do_bench_us']:.1f} |" for r in results["host"]]
    if results.get("host_profile"):
        lines += ["", "## Host profile (cProfile)", "", "```", results["host_profile"], "```"]
    if results.get("profile"):
        lines += ["", "## Kernels in one public fwd+bwd, 200k Gaussians, fp32 (torch.profiler, us per step)", "",
                  "| B | kernel | calls per step | us per step |", "| --- | --- | --- | --- |"]
        lines += [f"| {r['b']} | `{r['kernel']}` | {r['calls'] / 10:g} | {r['us_per_step']:.1f} |" for r in results["profile"]]
    if results.get("registers"):
        lines += ["", "## Compiled kernels", "", "| kernel | warps | registers | spills | shared bytes |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {r['kernel']} | {r.get('warps')} | {r.get('regs')} | {r.get('spills')} | {r.get('shared', r.get('error'))} |"
                  for r in results["registers"]]
    if results.get("warm"):
        lines += ["", "Warm-up builds (s): " + "; ".join(f"{j[0]}/{j[1]}/{j[2]}: {t}{' ' + e if e else ''}"
                                                         for j, t, e in results["warm"])]
    return "\n".join(lines) + "\n"


def save(results) -> str:
    os.makedirs(OUT, exist_ok=True)
    text = markdown(results)
    with open(os.path.join(OUT, "fusion.md"), "w") as f:
        f.write(text)
    with open(os.path.join(OUT, "fusion.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    return text


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=float, default=370.0, help="seconds after which remaining work is skipped")
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--sweep", action="store_true", help="sweep launch shapes; time only the done-when cells")
    parser.add_argument("--impls", default="triton,eager,compiled", help="implementations in the timing matrix")
    parser.add_argument("--smoke", action="store_true", help="CPU, Triton interpreter, tiny sizes: does it run?")
    args = parser.parse_args()
    impls = args.impls.split(",")
    if os.environ.get("FUSION_CACHE") and os.path.exists(os.environ["FUSION_CACHE"]):
        with tarfile.open(os.environ["FUSION_CACHE"]) as tar:
            tar.extractall("/")
    props = torch.cuda.get_device_properties(0) if not SMOKE else argparse.Namespace(name="cpu (smoke)",
                                                                                     multi_processor_count=1)
    results = dict(device=props.name, sms=props.multi_processor_count, torch=torch.__version__,
                   triton=triton.__version__, python=sys.version.split()[0], commit=source_tree(),
                   date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                   command="PYTHONPATH=. python scripts/gpu_fusion.py " + " ".join(sys.argv[1:]), equivalence={})
    if not SMOKE:
        print(subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout, flush=True)
    results["warm"] = warm_all(args.workers, args.sweep, impls)
    print("warm", results["warm"], f"{time.time() - START:.0f}s", flush=True)
    results["copy_bandwidth_bytes_per_s"] = copy_bandwidth()
    for title, config, dtype in (("fp32 inputs, bf16 dot operands (default)", FusionConfig(), torch.float32),
                                 ("bf16 inputs", FusionConfig(), torch.bfloat16),
                                 ("fp32 inputs, fp16 dot operands", FusionConfig(dot_operands="fp16"), torch.float32)):
        results["equivalence"][title] = check_equivalence(config, dtype)
        print(title, results["equivalence"][title], flush=True)
        save(results)
    print(equivalence_summary(results["equivalence"]), flush=True)
    cells = {("fp32", DONE_WHEN_N, 1), ("fp32", DONE_WHEN_N, 8)} if args.sweep else None
    time_matrix(results, [i for i in impls if i == "triton"], args.budget, cells)
    host_times(results)
    try:
        kernel_profile(results)
    except Exception as exc:  # the profile only explains the timings: keep the run going
        results["profile_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    save(results)
    if args.sweep:
        sweep(results, args.budget - 40)
        save(results)
    time_matrix(results, [i for i in impls if i != "triton"], args.budget, cells)
    save(results)
    if "compiled" in impls:  # the faster baseline may be the twin compiled per shape, and both without host time
        time_matrix(results, ["compiled_static"], args.budget, {("fp32", DONE_WHEN_N, 1), ("fp32", DONE_WHEN_N, 8)})
        time_graphs(results, args.budget)
    print(save(results), flush=True)
    if not os.path.exists(CACHE):
        return
    with tarfile.open(os.path.join(OUT, "fusion_cache.tar.gz"), "w:gz") as tar:
        tar.add(CACHE)
    if os.path.getsize(os.path.join(OUT, "fusion_cache.tar.gz")) > 15 * 2**20:
        os.remove(os.path.join(OUT, "fusion_cache.tar.gz"))


if __name__ == "__main__":
    main()
