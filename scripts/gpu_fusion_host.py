"""Host time of local_fusion's pieces, one frame (B = 1) at N = 1024 and 200k: the saving forward's
launcher, the backward launchers (op_backward), the public forward with grad, and the public forward +
autograd.grad (gpu_fusion's backward_step), each over 300 back-to-back calls (perf_counter, no sync
inside), then op_backward and the step without the backward's second stream; and a cProfile of 100 steps
at N = 1024. What it showed (H100 machine, 2026-11-27): autograd's own share of the step (its CUDA worker
thread) is most of a one-frame step's host time.

    PYTHONPATH=.:scripts python scripts/gpu_fusion_host.py
"""
import cProfile
import io
import pstats
import sys
import time

import torch

sys.argv = ["gpu_fusion.py"]  # gpu_fusion reads its own flags at import
import gpu_fusion  # noqa: E402
from instant4d.kernels import fusion  # noqa: E402
from instant4d.kernels.fusion import FusionConfig, example_inputs  # noqa: E402

config = FusionConfig()


def host_us(fn, n=300):
    """Host microseconds a call over n back-to-back calls (the GPU work of a call is queued, not waited for)."""
    for _ in range(10): fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n): fn()
    host = (time.perf_counter() - t) / n * 1e6
    torch.cuda.synchronize()
    return host


for N in (1024, 200_000):
    f, m, p, ss, w = example_inputs(config, N, 1, device="cuda")
    packed = w.packed(config, f.dtype, f.device)
    outs, saved = fusion.op_forward(f, m, p, ss, packed, config, False, save=True)
    v_out = gpu_fusion.output_grads(config, N, 1, torch.float32)
    step = gpu_fusion.backward_step(gpu_fusion.triton_fn(config), [f, m, p, ss, *w.tensors()], v_out)
    leaves = [t.detach().requires_grad_() for t in [f, m, p, ss, *w.tensors()]]
    fn = gpu_fusion.triton_fn(config)
    rows = {
        "op_forward(save)": lambda: fusion.op_forward(f, m, p, ss, packed, config, False, save=True),
        "op_backward": lambda: fusion.op_backward(m, ss, packed, saved, config, v_out),
        "forward with grad": lambda: fn(*leaves),
        "step (forward + autograd.grad)": step,
    }
    for k, r in rows.items():
        print(f"N={N} {k}: host {host_us(r):.1f} us", flush=True)
    orig = fusion._side_stream
    fusion._side_stream = lambda d: None
    print(f"N={N} op_backward, no side stream: host {host_us(rows['op_backward']):.1f} us", flush=True)
    print(f"N={N} step, no side stream: host {host_us(step):.1f} us", flush=True)
    fusion._side_stream = orig
    if N == 1024:
        pr = cProfile.Profile(); pr.enable()
        for _ in range(100): step()
        torch.cuda.synchronize(); pr.disable()
        s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("cumulative").print_stats(35); print(s.getvalue()[:7000])
