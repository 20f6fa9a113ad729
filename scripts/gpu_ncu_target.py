"""Launches of the kernels under study, for Nsight Compute (``ncu``) to profile: the fusion kernels
(forward with saving, forward without, and the three backward kernels) at 200k Gaussians x B frames, and the compositing
backward at 100k Gaussians / 512x512 / 1 camera.

    ncu --kernel-name regex:"_fusion_forward|_backward_rows|_backward_gaussians|_weight_grad" \\
        --launch-skip 5 --launch-count 5 --section SpeedOfLight --section WarpStateStats \\
        --section Occupancy --section LaunchStats python scripts/gpu_ncu_target.py fusion 8
    ncu --kernel-name regex:"_composite_backward" --launch-skip 1 --launch-count 1 ... \\
        python scripts/gpu_ncu_target.py composite

Every kernel runs twice: the first launch of each compiles (skip it).
"""

import sys

import torch

import instant4d
from instant4d.gaussians import head_like_scene
from instant4d.kernels import fusion
from instant4d.kernels.fusion import FusionConfig, example_inputs

what = sys.argv[1]
if what == "fusion":
    b = int(sys.argv[2])
    config = FusionConfig()
    f, m, p, ss, w = example_inputs(config, 200_000, b, device="cuda")
    packed = w.packed(config, f.dtype, f.device)
    for _ in range(2):
        outputs, saved = fusion.op_forward(f, m, p, ss, packed, config, False, save=True)
        fusion.op_forward(f, m, p, ss, packed, config, False)  # without saving, to compare
        v_out = [torch.randn_like(o) for o in outputs]
        fusion.op_backward(m, ss, packed, saved, config, v_out)
elif what == "composite":
    scene = head_like_scene(100_000, 512, 512, n_cameras=1).to("cuda")
    leaves = [getattr(scene, k).detach().clone().requires_grad_() for k in ("means", "quats", "scales", "opacities", "colors")]
    for _ in range(2):
        colors, alphas, _ = instant4d.rasterization(*leaves, scene.viewmats, scene.Ks, 512, 512, packed=False,
                                                    cuda_graphs=False)
        torch.autograd.grad(colors.sum() + alphas.sum(), leaves)
else:
    raise SystemExit(f"unknown target {what!r}: fusion B | composite")
torch.cuda.synchronize()
