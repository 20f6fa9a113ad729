"""GPU: cost of rasterization(deterministic=True) and whether its gradients repeat bit for bit.

    PYTHONPATH=. python scripts/gpu_deterministic.py

For head-like scenes, times forward+backward with float atomics and with the deterministic sums
(`triton.testing.do_bench` medians) and runs each mode 5 times, counting the gradient tensors that
differ from the first run in any bit.
"""

from __future__ import annotations

import torch

import instant4d
from instant4d.gaussians import head_like_scene
from gpu_compare import bench_ms, eager

LEAVES = ("means", "quats", "scales", "opacities", "colors")


def grads(scene, deterministic):
    leaves = [getattr(scene, k).detach().clone().requires_grad_() for k in LEAVES]
    colors, alphas, _ = eager(instant4d.rasterization)(*leaves, scene.viewmats, scene.Ks, scene.width,
                                                       scene.height, packed=False, deterministic=deterministic)
    (colors.sum() + alphas.sum()).backward()
    return [t.grad for t in leaves]


def main():
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("| scene | fwd+bwd ms, atomics | fwd+bwd ms, deterministic | cost | runs differing from the first (atomics / deterministic) |")
    print("| --- | --- | --- | --- | --- |")
    for n, size, cams in ((100_000, 512, 1), (1_000_000, 1024, 1), (100_000, 512, 8)):
        scene = head_like_scene(n, size, size, n_cameras=cams).to("cuda")
        times, differing = [], []
        for deterministic in (False, True):
            times.append(bench_ms(lambda: grads(scene, deterministic)))
            first = grads(scene, deterministic)
            differing.append(sum(any(not torch.equal(a, b) for a, b in zip(first, grads(scene, deterministic)))
                                 for _ in range(4)))
        print(f"| {n // 1000}k, {size}², {cams} cam | {times[0]:.3f} | {times[1]:.3f} | {times[1] / times[0]:.2f}x | "
              f"{differing[0]} of 4 / {differing[1]} of 4 |", flush=True)


if __name__ == "__main__":
    main()
