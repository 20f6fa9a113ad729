"""GPU: does ``launch_kernel``'s direct launch give the same results as Triton's own launch, and what
host time does it save?

    PYTHONPATH=. python scripts/gpu_launch.py

For each call below, runs it through the direct launch (the default) and through Triton's own
``kernel[grid](...)`` (forced by reporting a launch hook as set), checks that every output and
gradient is bitwise equal (the rasterizer in ``deterministic=True`` mode, whose gradients repeat bit
for bit), and reports per call: host time (50 calls issued back to back without a sync, queue not
full, over 50) and the ``triton.testing.do_bench`` median.
"""

from __future__ import annotations

import time

import torch
import triton.testing

import instant4d
from instant4d.gaussians import head_like_scene
from instant4d.kernels import _triton
from instant4d.kernels.fusion import FusionConfig, example_inputs, local_fusion

LEAVES = ("means", "quats", "scales", "opacities", "colors")


def host_us(fn, calls: int = 50) -> float:
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    host = time.perf_counter() - start
    torch.cuda.synchronize()
    return host / calls * 1e6


def calls():
    scene = head_like_scene(100_000, 512, 512, n_cameras=1).to("cuda")
    leaves = [getattr(scene, k).detach().clone().requires_grad_() for k in LEAVES]

    def raster_forward():
        with torch.no_grad():
            return instant4d.rasterization(*leaves, scene.viewmats, scene.Ks, 512, 512, packed=False,
                                           cuda_graphs=False)[:2]

    def raster_bounded():
        with torch.no_grad():
            return instant4d.rasterization(*leaves, scene.viewmats, scene.Ks, 512, 512, packed=False,
                                           max_intersections=4_000_000)[:2]

    def raster_fwd_bwd():
        colors, alphas, _ = instant4d.rasterization(*leaves, scene.viewmats, scene.Ks, 512, 512, packed=False,
                                                    deterministic=True)
        return torch.autograd.grad(colors.sum() + alphas.sum(), leaves)

    config = FusionConfig()
    features, motion_basis, anchors, scale_shift, weights = example_inputs(config, 200_000, 1, device="cuda")
    inputs = [t.requires_grad_() for t in (features, motion_basis, anchors, scale_shift)]

    def fusion_forward():
        with torch.no_grad():
            out = local_fusion(*inputs, weights, config)
        return out.means, out.quats, out.scales, out.opacities, out.colors

    def fusion_fwd_bwd():
        out = local_fusion(*inputs, weights, config)
        loss = sum(t.sum() for t in (out.means, out.quats, out.scales, out.opacities, out.colors))
        return torch.autograd.grad(loss, inputs)

    return dict(raster_forward=raster_forward, raster_bounded=raster_bounded, raster_fwd_bwd_deterministic=raster_fwd_bwd,
                fusion_forward_200k=fusion_forward, fusion_fwd_bwd_200k=fusion_fwd_bwd)


def main():
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    direct_hooks_set = _triton._hooks_set
    print("| call | identical | host us, Triton launch | host us, direct | do_bench ms, Triton launch | do_bench ms, direct |")
    print("| --- | --- | --- | --- | --- | --- |")
    fns = calls()
    for name, fn in fns.items():
        results = {}
        for mode in ("triton", "direct"):
            _triton._hooks_set = (lambda: True) if mode == "triton" else direct_hooks_set
            out = fn()
            results[mode] = ([t.clone() for t in out], host_us(fn),
                             triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median"))
        _triton._hooks_set = direct_hooks_set
        same = all(torch.equal(a, b) for a, b in zip(results["triton"][0], results["direct"][0]))
        print(f"| {name} | {same} | {results['triton'][1]:.1f} | {results['direct'][1]:.1f} | "
              f"{results['triton'][2]:.3f} | {results['direct'][2]:.3f} |", flush=True)
    for name, fn in fns.items():
        if name in ("raster_forward", "fusion_fwd_bwd_200k"):
            print(f"\n### host profile, {name}, 200 calls")
            profile(fn)


def profile(fn, calls: int = 200) -> None:
    """Host hotspots of fn (direct launches), by own time."""
    import cProfile
    import pstats

    fn()
    torch.cuda.synchronize()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        fn()
    profiler.disable()
    torch.cuda.synchronize()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(22)


if __name__ == "__main__":
    main()
