"""local_fusion's backward timed at the issue's sizes (200k Gaussians, B = 1 and 8, fp32, default
launches), for A/B runs of a kernel change in one GPU call: swap instant4d/kernels/fusion.py between
runs and label each run. Prints ``op_forward`` without and with saving activations, ``op_backward`` (the backward
kernels) and the public forward + ``autograd.grad`` (gpu_fusion's backward_step), eager ("fwd+bwd") and replayed
from a CUDA graph (gpu_fusion's graph_replay; "graph", the issue's one-frame measure with the host out of the
step), do_bench medians in ms, and a checksum of the gradients (equal checksums: same bits).
With AB_REF=path, the first run saves its gradients there and later runs print their largest
difference from them, relative to each gradient's largest magnitude. LAUNCH_<KERNEL>=block_n,warps,stages,programs_per_sm
(KERNEL one of fusion.KERNELS, upper case) replaces that kernel's default launch. AB_TIMELINE=1 prints
each kernel of one graph replay (torch.profiler): its start and end in us from the replay's first kernel.
AB_EQUIV=1 runs gpu_fusion's equivalence check (float64 twin, and two runs bit-equal) at B = 1 and 3.
AB_FRAMES=1 (or 8) times only that B (default: both).

    PYTHONPATH=. python scripts/gpu_fusion_ab.py LABEL
"""

import json
import os
import sys
import tempfile
import time

import torch
import triton.testing

import gpu_fusion

from instant4d.kernels import fusion
from instant4d.kernels.fusion import FusionConfig, example_inputs
from fusion_launch_env import use_launches_from_env

config = FusionConfig()
line = [sys.argv[1]]
use_launches_from_env()
reference = {}
ref_path = os.environ.get("AB_REF")
if ref_path and os.path.exists(ref_path):
    reference = torch.load(ref_path)
saving = {}
for b in [int(x) for x in os.environ.get("AB_FRAMES", "1,8").split(",")]:
    f, m, p, ss, w = example_inputs(config, 200_000, b, device="cuda")
    packed = w.packed(config, f.dtype, f.device)
    outputs, saved = fusion.op_forward(f, m, p, ss, packed, config, False, save=True)
    gen = torch.Generator(device="cuda").manual_seed(0)
    v_out = [torch.randn(o.shape, device="cuda", generator=gen) for o in outputs]
    grads = fusion.op_backward(m, ss, packed, saved, config, v_out)
    checksum = sum(float(g.double().abs().sum()) for g in grads)
    saving[b] = [g.double().cpu() for g in grads]
    if b in reference:
        diff = max(float((g.double().cpu() - r).abs().max() / r.abs().max().clamp_min(1e-30))
                   for g, r in zip(grads, reference[b]))
        checksum_note = f", max rel. diff to ref {diff:.2e}"
    else:
        checksum_note = ""
    t_fwd_plain = triton.testing.do_bench(lambda: fusion.op_forward(f, m, p, ss, packed, config, False),
                                          warmup=25, rep=200, return_mode="median")
    t_fwd = triton.testing.do_bench(lambda: fusion.op_forward(f, m, p, ss, packed, config, False, save=True),
                                    warmup=25, rep=200, return_mode="median")
    t_bwd = triton.testing.do_bench(lambda: fusion.op_backward(m, ss, packed, saved, config, v_out), warmup=25,
                                    rep=200, return_mode="median")
    step = gpu_fusion.backward_step(gpu_fusion.triton_fn(config), [f, m, p, ss, *w.tensors()], v_out)
    t_step = triton.testing.do_bench(step, warmup=25, rep=200, return_mode="median")
    replay = gpu_fusion.graph_replay(step)
    t_graph = triton.testing.do_bench(replay, warmup=25, rep=200, return_mode="median")
    if os.environ.get("AB_TIMELINE"):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(3):  # apart in time, so that the last replay's kernels are told from the others
                replay()
                torch.cuda.synchronize()
                time.sleep(0.002)
        trace = os.path.join(tempfile.mkdtemp(), "trace.json")
        prof.export_chrome_trace(trace)
        kernels = sorted((e for e in json.load(open(trace))["traceEvents"] if e.get("cat") == "kernel"),
                         key=lambda e: e["ts"])
        last = [kernels[-1]]  # back to the previous replay's last kernel, which ended >= 2 ms before
        for e in reversed(kernels[:-1]):
            if e["ts"] + e["dur"] < last[0]["ts"] - 1500:
                break
            last.insert(0, e)
        t0 = last[0]["ts"]
        print(f"{sys.argv[1]} B={b} timeline (us from the first kernel of a graph replay):", flush=True)
        for e in last:
            print(f"  {e['ts'] - t0:8.1f} {e['ts'] + e['dur'] - t0:8.1f}  {e['name'][:70]}", flush=True)
    kernels = ""
    if os.environ.get("AB_PROFILE"):  # device time per kernel of one op_backward
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                fusion.op_backward(m, ss, packed, saved, config, v_out)
            torch.cuda.synchronize()
        kernels = " [" + ", ".join(f"{e.key[:28]} {e.self_device_time_total / 10:.0f} us" for e in prof.key_averages()
                                   if e.self_device_time_total > 0) + "]"
    line.append(f"B={b}: op_forward {t_fwd_plain:.3f} ms, op_forward(save) {t_fwd:.3f} ms, op_backward {t_bwd:.3f} ms, fwd+bwd {t_step:.3f} ms, graph {t_graph:.3f} ms (checksum {checksum:.6e}{checksum_note}){kernels}")
print(" | ".join(line), flush=True)
if os.environ.get("AB_EQUIV"):  # gpu_fusion's equivalence rule against the float64 twin, and determinism
    for dot, dtype, b in (("bf16", torch.float32, 1), ("bf16", torch.float32, 3), ("fp16", torch.float32, 1),
                          ("bf16", torch.bfloat16, 1)):
        rows = gpu_fusion.check_equivalence(FusionConfig(dot_operands=dot), dtype, b=b)
        print(f"{sys.argv[1]} equivalence {dot} {dtype} B={b}: {gpu_fusion.equivalence_verdict(rows)}", flush=True)
if ref_path and not reference:
    torch.save(saving, ref_path)
