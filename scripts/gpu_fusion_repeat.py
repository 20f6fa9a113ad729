"""GPU: does local_fusion's backward give finite gradients that repeat bit for bit? REPEATS (default 4)
``op_backward`` calls on the same saved activations (default launches, fp32 inputs) at 50k / B = 3 and
200k / B = 8, for fp16 and bf16 tl.dot operands; per case: which runs are finite, which equal the
first, which gradients are non-finite and which differ between runs (the packed weight gradient by
weight). CONFIG=F,Hd picks other widths, DOTS=bf16 one operand kind, LAUNCH_<KERNEL>=block_n,warps,stages,
programs_per_sm (KERNEL one of fusion.KERNELS, upper case) another launch. (With it, 2026-11-26, a reverted
change was found to give non-finite, changing gradients with fp16 operands: docs/benchmarks.md.)

    PYTHONPATH=. python scripts/gpu_fusion_repeat.py LABEL
"""
import math
import os
import sys

import torch

from instant4d.kernels import fusion
from instant4d.kernels.fusion import FusionConfig, example_inputs
from fusion_launch_env import use_launches_from_env

use_launches_from_env()
NAMES = ("v_features", "v_motion_basis", "v_anchors", "v_scale_shift", "v_weights")
widths = {}
if os.environ.get("CONFIG"):
    widths = dict(zip(("feature_dim", "hidden_dim"), map(int, os.environ["CONFIG"].split(","))))
repeats = int(os.environ.get("REPEATS", "4"))
for dot in os.environ.get("DOTS", "fp16,bf16").split(","):
    config = FusionConfig(dot_operands=dot, **widths)
    weight_sizes = {k: math.prod(s) for k, s in config.weight_shapes().items()}
    for n, b in ((50_001, 3), (200_000, 8)):
        f, m, p, ss, w = example_inputs(config, n, b, device="cuda", seed=5)
        packed = w.packed(config, f.dtype, f.device)
        outputs, saved = fusion.op_forward(f, m, p, ss, packed, config, False, save=True)
        gen = torch.Generator(device="cuda").manual_seed(0)
        v_out = [torch.randn(o.shape, device="cuda", generator=gen) for o in outputs]
        runs = [fusion.op_backward(m, ss, packed, saved, config, v_out) for _ in range(repeats)]
        finite = [all(bool(torch.isfinite(g).all()) for g in r) for r in runs]
        same = [all(torch.equal(a, c) for a, c in zip(runs[0], r)) for r in runs[1:]]
        bad = [name for name, g in zip(NAMES, runs[0]) if not torch.isfinite(g).all()]
        differing = set()
        for r in runs[1:]:
            differing |= {name for name, a, c in zip(NAMES[:4], runs[0], r) if not torch.equal(a, c)}
            parts = zip(runs[0][4].split(list(weight_sizes.values())), r[4].split(list(weight_sizes.values())))
            differing |= {"v_" + k for k, (a, c) in zip(weight_sizes, parts) if not torch.equal(a, c)}
        print(sys.argv[1], dot, config.feature_dim, config.hidden_dim, n, b, "finite", finite, "same", same,
              "nonfinite", bad, "differing", sorted(differing), flush=True)
