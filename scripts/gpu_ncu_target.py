"""One launch of each backward kernel under study, for Nsight Compute (``ncu``) to profile:
the fusion per-row backward at 200k Gaussians x 8 frames and the compositing backward at
100k Gaussians / 512x512 / 1 camera.

    ncu --kernel-name regex:"_backward_rows|_composite_backward" --launch-skip 1 --launch-count 2 \\
        --section SpeedOfLight --section WarpStateStats --section Occupancy python scripts/gpu_ncu_target.py
"""

import torch

import instant4d
from instant4d.gaussians import head_like_scene
from instant4d.kernels import fusion
from instant4d.kernels.fusion import FusionConfig, example_inputs

config = FusionConfig()
f, m, p, ss, w = example_inputs(config, 200_000, 8, device="cuda")
packed = w.packed(config, f.dtype, f.device)
_, saved = fusion.op_forward(f, m, p, ss, packed, config, False, save=True)
v_out = [torch.randn(8, 200_000, k, device="cuda") for k in (3, 4, 3)] + [torch.randn(8, 200_000, device="cuda"),
                                                                          torch.randn(8, 200_000, 3, device="cuda")]
scene = head_like_scene(100_000, 512, 512, n_cameras=1).to("cuda")
leaves = [getattr(scene, k).detach().clone().requires_grad_() for k in ("means", "quats", "scales", "opacities", "colors")]
for _ in range(2):  # the first of each is the compiling launch (skipped by --launch-skip 1)
    fusion.op_backward(m, ss, packed, saved, config, v_out)
    colors, alphas, _ = instant4d.rasterization(*leaves, scene.viewmats, scene.Ks, 512, 512, packed=False)
    torch.autograd.grad(colors.sum() + alphas.sum(), leaves)
torch.cuda.synchronize()
