"""Host time of local_fusion's pieces, one frame (B = 1) at N = 1024 and 200k: the saving forward's
launcher, the backward launchers (op_backward), the public forward with grad, and the public forward +
autograd.grad (gpu_fusion's backward_step), each over 300 back-to-back calls (gpu_fusion.host_us), then
op_backward and the step without the backward's second stream. What it showed (H100 machine, 2026-11-27):
autograd's own share of the step (its CUDA worker thread) is most of a one-frame step's host time.
(gpu_fusion.py's host table and cProfile cover the public calls at N = 1024.)

    PYTHONPATH=.:scripts python scripts/gpu_fusion_host.py
"""
import sys

import torch

sys.argv = ["gpu_fusion.py"]  # gpu_fusion reads its own flags at import
import gpu_fusion  # noqa: E402
from instant4d.kernels import fusion  # noqa: E402
from instant4d.kernels.fusion import FusionConfig  # noqa: E402

config = FusionConfig()
for N in (1024, 200_000):
    f, m, p, ss, *w = inputs = gpu_fusion.inputs_for(config, N, 1, torch.float32)
    packed = fusion.FusionWeights(*w).packed(config, f.dtype, f.device)
    _, saved = fusion.op_forward(f, m, p, ss, packed, config, False, save=True)
    v_out = gpu_fusion.output_grads(config, N, 1, torch.float32)
    public = gpu_fusion.triton_fn(config)
    step = gpu_fusion.backward_step(public, inputs, v_out)
    leaves = [t.detach().requires_grad_() for t in inputs]
    rows = {
        "op_forward(save)": lambda: fusion.op_forward(f, m, p, ss, packed, config, False, save=True),
        "op_backward": lambda: fusion.op_backward(m, ss, packed, saved, config, v_out),
        "forward with grad": lambda: public(*leaves),
        "step (forward + autograd.grad)": step,
    }
    for name, call in rows.items():
        print(f"N={N} {name}: host {gpu_fusion.host_us(call, 300, 10):.1f} us", flush=True)
    side_stream = fusion._side_stream
    fusion._side_stream = lambda device: None
    print(f"N={N} op_backward, no side stream: host {gpu_fusion.host_us(rows['op_backward'], 300, 10):.1f} us", flush=True)
    print(f"N={N} step, no side stream: host {gpu_fusion.host_us(step, 300, 10):.1f} us", flush=True)
    fusion._side_stream = side_stream
