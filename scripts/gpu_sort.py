"""A/B of the tile sort in ``isect_tiles``: the bucket sort (per-tile buckets, then each tile's keys
ranked in one program) against one stable ``torch.sort`` of all 64-bit keys (the radix sort it
replaced where tiles are short on average), in one process. Checks that both give the same keys and
ids, then times ``isect_tiles`` alone (at several ``SORT_BLOCK`` / ``SORT_CHUNK`` / ``SORT_WARPS`` /
``SORT_RUN``, the bucket sort forced at every size), ``rasterization`` forward and forward+backward
(the default, with its threshold, against the radix sort everywhere), and the avatar's CUDA-graph frame.

    PYTHONPATH=.:scripts python scripts/gpu_sort.py [--quick] [--no-render] [--profile] [--configs ...]
"""

from __future__ import annotations

import argparse

import torch
import triton.testing

from instant4d import rasterization
from instant4d.gaussians import head_like_scene, random_scene
from instant4d.kernels import intersect
from instant4d.kernels.intersect import isect_tiles
from gpu_reach import avatar_frame, ms, time_scene  # one timing protocol for both A/B scripts


def radix_sorted(*args, sort=True, **kwargs):
    """isect_tiles with the global stable torch.sort of gsplat's keys instead of the bucket sort."""
    counts, isect_ids, flatten_ids = isect_tiles(*args, sort=False, **kwargs)
    if sort:
        isect_ids, order = torch.sort(isect_ids, stable=True)
        flatten_ids = flatten_ids[order]
    return counts, isect_ids, flatten_ids


def projected(scene):
    """The inputs rasterization gives isect_tiles for this scene (its meta), and the tile grid."""
    _, _, meta = rasterization(scene.means, scene.quats, scene.scales, scene.opacities, scene.colors,
                               scene.viewmats, scene.Ks, scene.width, scene.height, packed=False)
    tw, th = meta["tile_width"], meta["tile_height"]
    args = (meta["means2d"], meta["radii"], meta["depths"], meta["tile_size"], tw, th)
    return args, dict(conics=meta["conics"], opacities=meta["opacities"])


def sort_config(config=None) -> tuple[int, ...]:
    """The bucket sort's (SORT_BLOCK, SORT_CHUNK, SORT_WARPS, SORT_RUN, SORT_BUCKET_MAX_AVERAGE), set to
    config when given."""
    names = ("SORT_BLOCK", "SORT_CHUNK", "SORT_WARPS", "SORT_RUN", "SORT_BUCKET_MAX_AVERAGE")
    for name, value in zip(names, config or ()):
        setattr(intersect, name, value)
    return tuple(getattr(intersect, name) for name in names)


def profile() -> None:
    """Average device time per call of each kernel of isect_tiles, both sorts (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    for kind, n, px, cams in (("head", 100_000, 512, 1), ("head", 100_000, 512, 8), ("head", 1_000_000, 512, 1),
                              ("uniform", 100_000, 512, 1)):
        scene = (head_like_scene if kind == "head" else random_scene)(n, px, px, n_cameras=cams, seed=0).to("cuda")
        positional, keywords = projected(scene)
        for name, fn in (("bucket", isect_tiles), ("torch.sort", radix_sorted)):
            for _ in range(3):
                fn(*positional, **keywords)
            torch.cuda.synchronize()
            with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(10):
                    fn(*positional, **keywords)
                torch.cuda.synchronize()
            rows = sorted(((e.device_time_total / 10, e.key) for e in prof.key_averages() if e.device_time_total > 0),
                          reverse=True)
            total = sum(t for t, _ in rows)
            print(f"\n{kind} {n // 1000}k {px}² {cams} cam, {name}: {total:.1f} us of kernels a call")
            for t, key in rows[:12]:
                print(f"  {t:8.1f} us  {key[:100]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--configs", default="128x32x8x128,128x32x4x128,128x64x8x128,64x32x4x64,64x64x8x64,64x16x4x64",
                        help="SORT_BLOCK x SORT_CHUNK x SORT_WARPS x SORT_RUN to time")
    parser.add_argument("--no-render", action="store_true", help="skip the rasterization table")
    parser.add_argument("--profile", action="store_true", help="device time per kernel of a few scenes, then stop")
    args = parser.parse_args()
    configs = [tuple(int(v) for v in c.split("x")) for c in args.configs.split(",")]
    print(f"Device: {torch.cuda.get_device_name()}; torch {torch.__version__}; triton {triton.__version__}")
    scenes = [("head", n, px, c) for n in (20_000, 100_000, 250_000, 1_000_000) for px in (512, 1024) for c in (1, 8)]
    scenes = ([("head", 100_000, 512, 1)] if args.quick else scenes) + [("uniform", 100_000, 512, 1),
                                                                         ("uniform", 1_000_000, 1024, 8)]
    if args.profile:
        return profile()
    default = sort_config()
    print("\nisect_tiles alone (ms), bucket sort at (SORT_BLOCK x SORT_CHUNK x SORT_WARPS x SORT_RUN, "
          "used at any average tile length) " + args.configs
          + " against torch.sort; outputs equal at every config?")
    print("| scene | N | image | cams | intersections | longest tile | bucket | torch.sort | equal |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    timed = []
    for kind, n, px, cams in scenes:
        scene = (head_like_scene if kind == "head" else random_scene)(n, px, px, n_cameras=cams, seed=0).to("cuda")
        positional, keywords = projected(scene)
        old = radix_sorted(*positional, **keywords)
        tile_keys = old[1] >> 32
        longest = int(torch.unique_consecutive(tile_keys, return_counts=True)[1].max()) if tile_keys.numel() else 0
        times, equal = [], True
        for config in configs:
            sort_config(config + (1 << 40,))
            new = isect_tiles(*positional, **keywords)
            equal &= all(torch.equal(a, b) for a, b in zip(new, old))
            times.append(ms(lambda: isect_tiles(*positional, **keywords)))
        sort_config(default)
        radix = ms(lambda: radix_sorted(*positional, **keywords))
        print(f"| {kind} | {n // 1000}k | {px}² | {cams} | {old[1].numel()} | {longest} | "
              f"{' / '.join(f'{t:.3f}' for t in times)} | {radix:.3f} | {equal} |", flush=True)
        timed.append((kind, n, px, cams, scene))
    print(f"\nrasterization with the default sort config {default} (ms; bucket / torch.sort)")
    print("| scene | N | image | cams | fwd | fwd+bwd |")
    print("| --- | --- | --- | --- | --- | --- |")
    for kind, n, px, cams, scene in [] if args.no_render else timed:
        new = time_scene(scene)
        sort_config(default[:4] + (0,))  # the radix sort everywhere
        old = time_scene(scene)
        sort_config(default)
        print(f"| {kind} | {n // 1000}k | {px}² | {cams} | {new[0]:.3f} / {old[0]:.3f} ({old[0] / new[0]:.2f}x) | "
              f"{new[1]:.3f} / {old[1]:.3f} ({old[1] / new[1]:.2f}x) |", flush=True)
    frames = []
    for config in configs:
        sort_config(config + (1 << 40,))
        frames.append(avatar_frame())
    sort_config(default[:4] + (0,))
    old = avatar_frame()
    sort_config(default)
    print(f"\nAvatar CUDA-graph frame (54.5k, 512², grid 256), ms: bucket sort at " + args.configs + ": "
          + " / ".join(f"{t:.4f}" for t in frames) + f"; torch.sort {old:.4f}")

if __name__ == "__main__":
    main()
