"""GPU: the done-when cells' Triton timings again (fp32, 200k Gaussians, B = 1 and 8, forward and
forward+backward, three repeats) with gpu_fusion's own timers, and the equivalence check (its rule, N =
20001, B = 3) at F / Hd = 32 / 64 and 64 / 96, the other widths that reach the saving forward's
four-program launch. For a quick look after a full gpu_fusion.py run on a noisy host.

    cd scripts && PYTHONPATH=$PWD/..:$PWD python gpu_fusion_recheck.py
"""
import sys

sys.argv = ["gpu_fusion.py"]  # gpu_fusion reads its own flags at import
import torch  # noqa: E402

import gpu_fusion as g  # noqa: E402
from instant4d.kernels.fusion import FusionConfig  # noqa: E402

config = FusionConfig()
fn = g.triton_fn(config)
for rep in range(3):
    for n, b in ((g.DONE_WHEN_N, 1), (g.DONE_WHEN_N, 8)):
        inputs = g.inputs_for(config, n, b, torch.float32)
        print(f"rep {rep} fp32 {n} B={b}: Triton fwd {g.ms(g.forward_step(fn, inputs)):.3f} ms, "
              f"fwd+bwd {g.ms(g.backward_step(fn, inputs, g.output_grads(config, n, b, torch.float32))):.3f} ms",
              flush=True)
for f, hd, d in ((32, 64, 3), (64, 96, 3)):
    for dot, dtype in (("bf16", torch.float32), ("fp16", torch.float32), ("bf16", torch.bfloat16)):
        rows = g.check_equivalence(FusionConfig(feature_dim=f, hidden_dim=hd, color_dim=d, dot_operands=dot), dtype,
                                   n=20_001, b=3)
        print(f"F={f} Hd={hd} D={d} {dot} {dtype}: {g.equivalence_verdict(rows)}", flush=True)
