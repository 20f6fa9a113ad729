"""A/B of ``intersect.BLOCK`` (Gaussians per program of the count, emit and bucketing kernels) on the
rasterizer's benchmark scenes, in one process: ``intersect_tiles`` with bounded buffers (its device
time: captured in a CUDA graph and replayed, so that host time does not hide it), at each BLOCK.
Checks that every BLOCK gives the same keys and ids.

    PYTHONPATH=.:scripts python scripts/gpu_intersect_block.py [--blocks 256,128,64] [--tile 16]
"""

from __future__ import annotations

import argparse

import torch

from gpu_reach import ms
from gpu_sort import projected
from instant4d.gaussians import head_like_scene, random_scene
from instant4d.kernels import intersect
from instant4d.kernels.intersect import intersect_tiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", default="256,128,64")
    parser.add_argument("--tile", type=int, default=16)
    args = parser.parse_args()
    blocks = [int(b) for b in args.blocks.split(",")]
    default = intersect.BLOCK
    print(f"Device: {torch.cuda.get_device_name()}; torch {torch.__version__}; tile {args.tile}")
    print("| scene | N | image | cams | intersections | " + " | ".join(f"BLOCK {b} us" for b in blocks) + " | same output |")
    print("| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in blocks) + " | --- |")
    scenes = [("head", n, px, c) for n in (20_000, 100_000, 250_000, 1_000_000) for px in (512, 1024) for c in (1, 8)]
    for kind, n, px, cams in scenes + [("uniform", 100_000, 512, 1)]:
        scene = (head_like_scene if kind == "head" else random_scene)(n, px, px, n_cameras=cams, seed=0).to("cuda")
        (means2d, radii, depths, *_), keywords = projected(scene)  # the projection is the same at any tile size
        tw = th = -(-px // args.tile)
        call = lambda bound: intersect_tiles(means2d, radii, depths, args.tile, tw, th, max_intersections=bound,  # noqa: E731
                                             **keywords)
        count = int(call(1 << 26).n_isects)
        bound = int(count * 1.25)
        times, outputs = [], []
        for block in blocks:
            intersect.BLOCK = block
            try:
                result = call(bound)
                outputs.append((result.isect_ids.clone(), result.flatten_ids.clone()))
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    call(bound)
                times.append(ms(graph.replay) * 1000)
            finally:
                intersect.BLOCK = default
        same = all(torch.equal(a, outputs[0][0]) and torch.equal(b, outputs[0][1]) for a, b in outputs)
        print(f"| {kind} | {n // 1000}k | {px}² | {cams} | {count} | " + " | ".join(f"{t:.1f}" for t in times)
              + f" | {same} |", flush=True)


if __name__ == "__main__":
    main()
