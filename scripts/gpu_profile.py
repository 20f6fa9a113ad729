"""GPU: where the time goes, stage by stage, for instant4d and gsplat 1.5.3 in one process (the
compositing kernels' variants: scripts/gpu_composite_variants.py).

    PYTHONPATH=. python scripts/gpu_profile.py [--no-gsplat] [--kernels-only] [--host-only]

``--kernels-only``: device time per kernel of an eager forward+backward, gsplat's and instant4d's (or,
with ``--libs=A,B``, those packages', e.g. a renamed copy of an older instant4d on PYTHONPATH), on the
scenes of SCENES (gpu_host.py's format; default head 100k, 512², 1 and 8 cameras).

``--host-only``: where the host time of an eager call goes (cProfile, torch.profiler's CPU ops), at
20k and 100k Gaussians, 512², 1 camera.

Prints a table per scene and writes $OUT/profile.json.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
import time

import torch

import instant4d
from instant4d.gaussians import head_like_scene
from gpu_compare import bench_ms as ms  # one timing protocol for every GPU table
from gpu_compare import eager  # the profiles are of eager calls
from gpu_host import make_scene, scenes_from_env

OUT = os.environ.get("OUT", "gpu-results")




def host_ms(fn, iters: int = 200) -> float:
    """Wall time per call with no sync between calls: the larger of host and device time."""
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - start) / iters


def stages(lib, scene) -> dict:
    if lib == "gsplat":
        from gsplat.cuda import _wrapper as w
    else:
        w = instant4d
    width, height, tile = scene.width, scene.height, 16
    tw, th = math.ceil(width / tile), math.ceil(height / tile)
    n_images = scene.viewmats.shape[0]
    proj = lambda: w.fully_fused_projection(scene.means, None, scene.quats, scene.scales, scene.viewmats, scene.Ks,
                                            width, height, opacities=scene.opacities)
    radii, means2d, depths, conics, _ = proj()
    isect = lambda: w.isect_tiles(means2d, radii, depths, tile, tw, th)
    _, isect_ids, flatten_ids = isect()
    offsets = lambda: w.isect_offset_encode(isect_ids, n_images, tw, th)
    isect_offsets = offsets().reshape(n_images, th, tw)
    colors = scene.colors[None].expand(n_images, -1, -1).contiguous()
    opac = scene.opacities[None].expand(n_images, -1).contiguous()
    leaves = [t.detach().clone().requires_grad_() for t in (means2d, conics, colors, opac)]
    raster = lambda: w.rasterize_to_pixels(means2d, conics, colors, opac, width, height, tile, isect_offsets, flatten_ids)

    def raster_bwd():
        out, alpha = w.rasterize_to_pixels(*leaves, width, height, tile, isect_offsets, flatten_ids)
        out.sum().backward()

    rasterization = eager(w.rasterization) if lib != "gsplat" else __import__("gsplat").rasterization
    full = lambda: rasterization(scene.means, scene.quats, scene.scales, scene.opacities, scene.colors,
                                 scene.viewmats, scene.Ks, width, height, packed=False)
    grads = [t.detach().clone().requires_grad_() for t in (scene.means, scene.quats, scene.scales, scene.opacities,
                                                            scene.colors)]
    full_bwd = lambda: rasterization(*grads, scene.viewmats, scene.Ks, width, height, packed=False)[0].sum().backward()
    return dict(projection=ms(proj), isect_tiles=ms(isect), offsets=ms(offsets), composite_fwd=ms(raster),
                composite_fwd_bwd=ms(raster_bwd), full_forward=ms(full), full_forward_backward=ms(full_bwd),
                wall_projection=host_ms(proj), wall_isect_tiles=host_ms(isect), wall_composite_fwd=host_ms(raster),
                wall_full_forward=host_ms(full),
                n_isects=int(isect_ids.numel()))


def python_hotspots(scene, calls: int = 200) -> str:
    """cProfile of ``calls`` forward calls (bounded buffers: no sync, so this is host time only) and
    the host time per call of each variant: where the Python side of a frame goes."""
    import cProfile
    import io
    import pstats

    args = (scene.means, scene.quats, scene.scales, scene.opacities, scene.colors, scene.viewmats, scene.Ks,
            scene.width, scene.height)
    rasterization = eager(instant4d.rasterization)
    _, _, meta = rasterization(*args, packed=False)
    bound = int(meta["isect_ids"].numel() * 1.25)
    lines = []
    for name, fn in (("unbounded", lambda: rasterization(*args, packed=False)),
                     ("bounded", lambda: instant4d.rasterization(*args, packed=False, max_intersections=bound))):
        fn()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        host = 1e3 * (time.perf_counter() - start) / calls
        torch.cuda.synchronize()
        lines.append(f"{name}: {host:.3f} ms host per forward call (no sync between calls), wall {host_ms(fn):.3f} ms")
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        instant4d.rasterization(*args, packed=False, max_intersections=bound)
    torch.cuda.current_stream().wait_stream(stream)
    with torch.cuda.graph(graph):
        instant4d.rasterization(*args, packed=False, max_intersections=bound)
    lines.append(f"graph replay: {ms(graph.replay):.3f} ms (do_bench), wall {host_ms(graph.replay):.3f} ms")
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        instant4d.rasterization(*args, packed=False, max_intersections=bound)
    profiler.disable()
    torch.cuda.synchronize()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(35)
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(35)
    return "\n".join(lines) + "\n" + text.getvalue()


def host_profile(scene, backward: bool = True) -> str:
    """torch.profiler table of one forward(+backward) of instant4d.rasterization: host time per op."""
    from torch.profiler import ProfilerActivity, profile

    grads = [t.detach().clone().requires_grad_(backward) for t in (scene.means, scene.quats, scene.scales,
                                                                    scene.opacities, scene.colors)]

    def step():
        colors, _, _ = eager(instant4d.rasterization)(*grads, scene.viewmats, scene.Ks, scene.width,
                                                      scene.height, packed=False)
        if backward:
            colors.sum().backward()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            step()
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=40)


def kernel_table(lib, scene, steps: int = 10) -> str:
    """torch.profiler of ``steps`` eager forward+backward calls of ``lib``'s rasterization (unpacked):
    device time per kernel and per step, the kernels that make up a step."""
    from torch.profiler import ProfilerActivity, profile

    rasterization = eager(importlib.import_module(lib).rasterization)
    grads = [t.detach().clone().requires_grad_() for t in (scene.means, scene.quats, scene.scales,
                                                            scene.opacities, scene.colors)]

    def step():
        colors, _, _ = rasterization(*grads, scene.viewmats, scene.Ks, scene.width, scene.height, packed=False)
        colors.sum().backward()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    rows = [(e.key, e.device_time_total / steps, e.count / steps) for e in prof.key_averages()
            if e.device_time_total > 0]
    rows.sort(key=lambda r: -r[1])
    lines = [f"| kernel ({lib}) | us a step | launches a step |", "| --- | --- | --- |"]
    lines += [f"| {name[:90]} | {us:.1f} | {count:g} |" for name, us, count in rows]
    lines.append(f"| total | {sum(r[1] for r in rows):.1f} | {sum(r[2] for r in rows):g} |")
    return "\n".join(lines)


def main():
    libs = ("instant4d",) if "--no-gsplat" in sys.argv else ("gsplat", "instant4d")
    libs = next((a.split("=", 1)[1].split(",") for a in sys.argv if a.startswith("--libs=")), libs)
    os.makedirs(OUT, exist_ok=True)
    results = {}
    if "--kernels-only" in sys.argv:
        tables = []
        for kind, n, px, cams in scenes_from_env("head:100000:512:1,head:100000:512:8"):
            scene = make_scene(instant4d, kind, n, px, cams)
            tables += [f"### {kind} {n}, {px}x{px}, {cams} camera(s)"] + [kernel_table(lib, scene) for lib in libs]
        text = "\n\n".join(tables)
        print(text, flush=True)
        with open(os.path.join(OUT, "kernels.md"), "w") as f:
            f.write(text)
        return
    if "--host-only" in sys.argv:
        tables = []
        for n in (20_000, 100_000):
            scene = head_like_scene(n, 512, 512).to("cuda")
            tables += [f"### {n} Gaussians, 512x512, 1 camera", python_hotspots(scene),
                       "forward:\n" + host_profile(scene, backward=False), "forward+backward:\n" + host_profile(scene)]
        text = "\n\n".join(tables)
        print(text, flush=True)
        with open(os.path.join(OUT, "host.md"), "w") as f:
            f.write(text)
        return
    for name, scene in (("100k 512x512 1cam", head_like_scene(100_000, 512, 512)),
                        ("1M 1024x1024 1cam", head_like_scene(1_000_000, 1024, 1024)),
                        ("100k 512x512 8cam", head_like_scene(100_000, 512, 512, n_cameras=8))):
        scene = scene.to("cuda")
        results[name] = {lib: stages(lib, scene) for lib in libs}
        print(name, json.dumps(results[name], indent=1), flush=True)
    scene = head_like_scene(100_000, 512, 512).to("cuda")
    table = python_hotspots(scene) + "\n" + host_profile(scene)
    print(table, flush=True)
    with open(os.path.join(OUT, "host_profile.txt"), "w") as f:
        f.write(table)

    with open(os.path.join(OUT, "profile.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
