"""GPU: where the host time of a small local_fusion forward+backward goes (N = 1024, B = 1, fp32).

    PYTHONPATH=. python scripts/gpu_autograd_host.py

At N = 1024 the GPU work takes microseconds, so a loop of calls runs at the host's pace: host us = 300
calls without a sync, over 300. Besides our launchers and the public step, it times autograd.Function
stand-ins with the same 14 differentiable inputs and 5 outputs that do no work, so that the autograd
engine's own cost per step can be told apart from ours; then cProfile of our backward launcher and of
the whole step, and torch.profiler's host-side table of the stand-in.
"""

import cProfile
import io
import pstats
import time

import torch

from instant4d.kernels.fusion import FusionConfig, FusionWeights, example_inputs, local_fusion, op_backward, op_forward

DEVICE = "cuda"
N = 1024
WIDTHS = (3, 4, 3, 0, 3)  # means, quats, scales, opacities (no channel axis), colors


def outputs_like() -> tuple:
    return tuple(torch.empty((1, N, w) if w else (1, N), device=DEVICE) for w in WIDTHS)


class NoWork(torch.autograd.Function):
    """Our Function's inputs and outputs, no work; returns None gradients."""

    @staticmethod
    def forward(ctx, *inputs):
        ctx.n_inputs = len(inputs)
        return outputs_like()

    @staticmethod
    def backward(ctx, *grads):
        return (None,) * ctx.n_inputs


class NoWorkGrads(torch.autograd.Function):
    """Our Function's inputs and outputs, no work; returns a fresh (uninitialised) gradient per input."""

    @staticmethod
    def forward(ctx, *inputs):
        ctx.shapes = [x.shape for x in inputs]
        return outputs_like()

    @staticmethod
    def backward(ctx, *grads):
        return tuple(torch.empty(shape, device=DEVICE) for shape in ctx.shapes)


def main() -> None:
    config = FusionConfig()
    f, m, p, ss, w = example_inputs(config, N, 1, device=DEVICE)
    leaves = [t.detach().requires_grad_() for t in (f, m, p, ss)]
    weights = FusionWeights(*[t.detach().requires_grad_() for t in w.tensors()])
    inputs = leaves + list(weights.tensors())
    v_out = [torch.randn(o.shape, device=DEVICE) for o in outputs_like()]
    packed = weights.packed(config, torch.float32, f.device)
    _, saved = op_forward(f, m, p, ss, packed, config, False, save=True)

    def step():
        out = local_fusion(*leaves, weights, config)
        return torch.autograd.grad((out.means, out.quats, out.scales, out.opacities, out.colors), inputs, v_out)

    def builtin_graph():  # the same leaves and output shapes through builtin ops
        total = sum(t.sum() for t in inputs)
        return tuple(total * torch.ones_like(o) for o in v_out)

    calls = {
        "op_forward (saving activations)": lambda: op_forward(f, m, p, ss, packed, config, False, save=True),
        "op_backward": lambda: op_backward(m, ss, packed, saved, config, v_out),
        "local_fusion forward, grad mode": lambda: local_fusion(*leaves, weights, config),
        "local_fusion forward + autograd.grad": step,
        "no-work Function + autograd.grad, None gradients": lambda: torch.autograd.grad(
            NoWork.apply(*inputs), inputs, v_out, allow_unused=True),
        "no-work Function + autograd.grad, 14 gradients": lambda: torch.autograd.grad(
            NoWorkGrads.apply(*inputs), inputs, v_out),
        "no-work Function + autograd.grad, 1 input": lambda: torch.autograd.grad(
            NoWorkGrads.apply(inputs[0]), inputs[:1], v_out),
        "builtin ops, 14 leaves + autograd.grad": lambda: torch.autograd.grad(builtin_graph(), inputs, v_out),
    }
    print(torch.cuda.get_device_name(), torch.__version__)
    print("| call | host us |\n| --- | --- |")
    for name, call in calls.items():
        for _ in range(30):
            call()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(300):
            call()
        host_us = (time.perf_counter() - start) / 300 * 1e6
        torch.cuda.synchronize()
        print(f"| {name} | {host_us:.1f} |", flush=True)

    for name in ("op_backward", "local_fusion forward + autograd.grad"):
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(200):
            calls[name]()
        profiler.disable()
        torch.cuda.synchronize()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(18)
        print(f"\ncProfile, {name}, 200 calls\n{text.getvalue()[-5000:]}", flush=True)

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(50):
            calls["no-work Function + autograd.grad, 14 gradients"]()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
