"""GPU: what is alive at the peak of one forward+backward, instant4d against gsplat 1.5.3 (unpacked),
from torch's allocator trace (``torch.cuda.memory._record_memory_history``): the peak over the call
(as gpu_compare.py's peak column: above what was allocated before it) and the allocations live at that
moment, grouped by the source line that made them.

    PYTHONPATH=/tmp/site:.:scripts python scripts/gpu_memory.py [--scenes head:100000:512:1,head:1000000:1024:8]
"""

from __future__ import annotations

import argparse
import collections

import torch

from gpu_compare import render
from instant4d.gaussians import head_like_scene, random_scene


def origin(frames) -> str:
    """The innermost frame in instant4d or gsplat code (else the innermost Python frame)."""
    for frame in frames:
        name = frame["filename"]
        if ("instant4d" in name or "gsplat" in name) and "scripts" not in name:
            return f"{name.split('site-packages/')[-1].split('/work/')[-1]}:{frame['line']} ({frame['name']})"
    return f"{frames[0]['filename']}:{frames[0]['line']}" if frames else "?"


def peak_breakdown(fn) -> tuple[float, list[tuple[str, float, int]]]:
    torch.cuda.synchronize()
    torch.cuda.memory._record_memory_history(max_entries=1_000_000, stacks="python")
    try:
        fn()
        torch.cuda.synchronize()
        snapshot = torch.cuda.memory._snapshot()
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    trace = snapshot["device_traces"][0]
    live, now, peak, at_peak = {}, 0, 0, {}
    for event in trace:
        if event["action"] == "alloc":
            live[event["addr"]] = event
            now += event["size"]
            if now > peak:
                peak, at_peak = now, dict(live)
        elif event["action"] in ("free_requested",) and event["addr"] in live:
            now -= live.pop(event["addr"])["size"]
    groups = collections.defaultdict(lambda: [0, 0])
    for event in at_peak.values():
        key = origin(event.get("frames", []))
        groups[key][0] += event["size"]
        groups[key][1] += 1
    rows = sorted(((k, v[0] / 2**20, v[1]) for k, v in groups.items()), key=lambda r: -r[1])
    return peak / 2**20, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", default="head:100000:512:1,head:100000:512:8,head:1000000:1024:8")
    args = parser.parse_args()
    print(f"{torch.cuda.get_device_name()}; torch {torch.__version__}")
    for spec in args.scenes.split(","):
        kind, n, px, cams = spec.split(":")
        n, px, cams = int(n), int(px), int(cams)
        scene = (head_like_scene if kind == "head" else random_scene)(n, px, px, n_cameras=cams, seed=0).to("cuda")
        leaves = [t.detach().clone().requires_grad_() for t in (scene.means, scene.quats, scene.scales,
                                                                scene.opacities, scene.colors)]
        sg = type(scene)(*leaves, scene.viewmats, scene.Ks, scene.width, scene.height)
        for lib in ("gsplat", "instant4d"):
            # (our calls eager: a repeated call would otherwise be captured and replayed from CUDA graphs)
            kwargs = dict(cuda_graphs=False) if lib == "instant4d" else {}
            call = lambda: render(lib, sg, False, **kwargs)[0].sum().backward()  # noqa: E731
            call()  # gradients allocated, kernels compiled: the peak is then the call's own
            peak, rows = peak_breakdown(call)
            print(f"\n{kind} {n // 1000}k {px}² {cams} cam, {lib}: peak {peak:.1f} MB above the call's start")
            for key, mb, count in rows[:14]:
                print(f"  {mb:9.1f} MB  {count:3d}x  {key}")


if __name__ == "__main__":
    main()
