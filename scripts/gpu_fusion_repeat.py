"""GPU: does local_fusion's backward give finite gradients that repeat bit for bit? Four ``op_backward``
calls on the same saved activations (default launches, paper widths, fp32 inputs) at 50k / B = 3 and
200k / B = 8, for fp16 and bf16 tl.dot operands; per case: which runs are finite, which equal the
first, which gradients are non-finite. (With it, 2026-11-26, a reverted change was found to give
non-finite, changing gradients with fp16 operands: docs/benchmarks.md.)

    PYTHONPATH=. python scripts/gpu_fusion_repeat.py LABEL
"""
import sys

import torch

from instant4d.kernels import fusion
from instant4d.kernels.fusion import FusionConfig, example_inputs

NAMES = ("v_features", "v_motion_basis", "v_anchors", "v_scale_shift", "v_weights")
for dot in ("fp16", "bf16"):
    config = FusionConfig(dot_operands=dot)
    for n, b in ((50_001, 3), (200_000, 8)):
        f, m, p, ss, w = example_inputs(config, n, b, device="cuda", seed=5)
        packed = w.packed(config, f.dtype, f.device)
        outputs, saved = fusion.op_forward(f, m, p, ss, packed, config, False, save=True)
        gen = torch.Generator(device="cuda").manual_seed(0)
        v_out = [torch.randn(o.shape, device="cuda", generator=gen) for o in outputs]
        runs = [fusion.op_backward(m, ss, packed, saved, config, v_out) for _ in range(4)]
        finite = [all(bool(torch.isfinite(g).all()) for g in r) for r in runs]
        same = [all(torch.equal(a, c) for a, c in zip(runs[0], r)) for r in runs[1:]]
        bad = [name for name, g in zip(NAMES, runs[0]) if not torch.isfinite(g).all()]
        print(sys.argv[1], dot, n, b, "finite", finite, "same", same, "nonfinite", bad, flush=True)
