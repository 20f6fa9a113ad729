"""A/B of the reach test in instant4d.rasterization (``isect_tiles`` given conics and opacities, the
default) against gsplat's tile rectangles, in one process: forward and forward+backward
``do_bench`` medians over the benchmark matrix, plus the avatar's CUDA-graph frame.

    PYTHONPATH=. python scripts/gpu_reach.py [--quick]
"""

from __future__ import annotations

import argparse
import functools

import torch
import triton.testing

import instant4d.render
from instant4d import rasterization
from instant4d.gaussians import head_like_scene, random_scene
from instant4d.kernels.intersect import intersect_tiles


def rectangles(*args, conics=None, opacities=None, **kwargs):  # the reach test off
    return intersect_tiles(*args, **kwargs)


def ms(fn) -> float:
    return float(triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median"))


def time_scene(scene) -> tuple[float, float]:
    leaves = [t.detach().clone().requires_grad_() for t in (scene.means, scene.quats, scene.scales,
                                                            scene.opacities, scene.colors)]
    render = functools.partial(rasterization, viewmats=scene.viewmats, Ks=scene.Ks, width=scene.width,
                               height=scene.height, packed=False)
    fwd = ms(lambda: render(scene.means, scene.quats, scene.scales, scene.opacities, scene.colors))
    fwdbwd = ms(lambda: render(*leaves)[0].sum().backward())
    return fwd, fwdbwd


def avatar_frame() -> float:
    from gpu_avatar import SIZE, VIEW, frame_codes
    from instant4d.model import Avatar, EncoderConfig

    avatar = Avatar.sample(EncoderConfig(resolution=256)).to("cuda")
    codes, poses = frame_codes(avatar)
    graphed = avatar.renderer(SIZE, VIEW, backend="triton", cuda_graph=True)
    with torch.no_grad():
        return ms(lambda: graphed(codes, poses))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    quick = parser.parse_args().quick
    print(f"Device: {torch.cuda.get_device_name()}; torch {torch.__version__}; triton {triton.__version__}")
    scenes = [("head", n, px, c) for n in (20_000, 100_000, 250_000, 1_000_000) for px in (512, 1024) for c in (1, 8)]
    scenes = ([("head", 100_000, 512, 1)] if quick else scenes) + [("uniform", 100_000, 512, 1)]
    print("| scene | N | image | cams | fwd ms reach / rectangles | fwd+bwd ms reach / rectangles |")
    print("| --- | --- | --- | --- | --- | --- |")
    for kind, n, px, cams in scenes:
        scene = (head_like_scene if kind == "head" else random_scene)(n, px, px, n_cameras=cams, seed=0).to("cuda")
        instant4d.render.intersect_tiles = intersect_tiles
        reach = time_scene(scene)
        instant4d.render.intersect_tiles = rectangles
        rect = time_scene(scene)
        print(f"| {kind} | {n // 1000}k | {px}² | {cams} | {reach[0]:.3f} / {rect[0]:.3f} ({rect[0] / reach[0]:.2f}x) | "
              f"{reach[1]:.3f} / {rect[1]:.3f} ({rect[1] / reach[1]:.2f}x) |", flush=True)
    instant4d.render.intersect_tiles = intersect_tiles
    reach = avatar_frame()
    instant4d.render.intersect_tiles = rectangles
    rect = avatar_frame()
    instant4d.render.intersect_tiles = intersect_tiles
    print(f"\nAvatar CUDA-graph frame (54.5k, 512², grid 256): {reach:.4f} ms with the reach test, {rect:.4f} ms "
          f"with rectangles ({rect / reach:.2f}x)")


if __name__ == "__main__":
    main()
