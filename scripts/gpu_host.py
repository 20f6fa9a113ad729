"""GPU: host time of one eager ``rasterization()`` call, forward and forward+backward (unpacked),
measured with the device idle before each call (a sync before it): the Python and launch work of a
call, plus, unbounded, its one wait on the device; the eager calls' do_bench times, and each call's
peak memory (the rise of max_memory_allocated over one call). Also what single host-side operations
cost on this machine. Scenes: head-like at 512², 1 camera, 20k and 100k Gaussians, or those of
SCENES=kind:N:pixels:cameras,... (kind head or uniform, gpu_compare's scene makers).

    PYTHONPATH=.:scripts python scripts/gpu_host.py [PACKAGE ...]

With other packages named (e.g. a copy of an older instant4d, renamed instant4d_old, on PYTHONPATH;
the package imports itself relatively), every measurement alternates between them and instant4d in
rounds, and the table gives each one's median over the rounds: this machine's host speed drifts by
up to 2x between minutes, which rounds see alike.
"""

from __future__ import annotations

import importlib
import os
import statistics
import sys
import time

import torch

from gpu_compare import bench_ms, eager

ROUNDS = 7


def host_us(fn, calls: int = 40) -> float:
    """Median host time of one call (us), the device idle before each."""
    times = []
    for _ in range(calls):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    torch.cuda.synchronize()
    return 1e6 * statistics.median(times)


def peak_mb(fn) -> float:
    """The rise of max_memory_allocated over one call, MB."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 1e6


def scenes_from_env(default: str) -> list[tuple[str, int, int, int]]:
    """(kind, N, pixels, cameras) of each scene of SCENES=kind:N:pixels:cameras,... (or of ``default``)."""
    return [(kind, int(n), int(px), int(cams)) for kind, n, px, cams in
            (item.split(":") for item in os.environ.get("SCENES", default).split(","))]


def make_scene(lib, kind: str, n: int, pixels: int, cameras: int):
    """gpu_compare's head-like or uniform scene, from ``lib``'s own scene makers, on the GPU."""
    make = lib.gaussians.head_like_scene if kind == "head" else lib.gaussians.random_scene
    return make(n, pixels, pixels, n_cameras=cameras, seed=0).to("cuda")


def calls(lib, kind: str, n: int, pixels: int, cameras: int) -> dict:
    """The timed calls of one package on a scene: name -> function."""
    s = make_scene(lib, kind, n, pixels, cameras)
    args = (s.means, s.quats, s.scales, s.opacities, s.colors, s.viewmats, s.Ks, s.width, s.height)
    leaves = [t.detach().clone().requires_grad_() for t in args[:5]]

    rasterization = eager(lib.rasterization)

    def forward():
        return rasterization(*args, packed=False)

    def forward_backward():
        colors, _, _ = rasterization(*leaves, *args[5:], packed=False)
        torch.autograd.grad((colors.sum(),), leaves)

    return {"forward": forward, "forward+backward": forward_backward}


def main():
    libs = [importlib.import_module(name) for name in ["instant4d"] + sys.argv[1:]]
    for lib in libs:
        importlib.import_module(lib.__name__ + ".gaussians")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; medians over {ROUNDS} rounds")
    x = torch.zeros(100_000, device="cuda", dtype=torch.int32)
    units = {"torch.empty": lambda: torch.empty(100_000, device="cuda"),
             "torch.zeros": lambda: torch.zeros(100_000, device="cuda"),
             "torch.cumsum int32 -> int64": lambda: torch.cumsum(x, 0),
             "a view": lambda: x.view(1, -1)}
    print(", ".join(f"{name} {host_us(fn, 300):.1f} us" for name, fn in units.items()))
    for scene in scenes_from_env("head:20000:512:1,head:100000:512:1"):
        fns = {lib.__name__: calls(lib, *scene) for lib in libs}
        for per_lib in fns.values():
            for fn in per_lib.values():
                for _ in range(5):
                    fn()  # compiles, warms the allocator
        samples = {(lib, name, kind): [] for lib in fns for name in fns[lib] for kind in ("host us", "do_bench ms")}
        for _ in range(ROUNDS):
            for lib, per_lib in fns.items():
                for name, fn in per_lib.items():
                    samples[(lib, name, "host us")].append(host_us(fn))
                    samples[(lib, name, "do_bench ms")].append(bench_ms(fn))
        kind, n, px, cams = scene
        print(f"\n{kind} {n} Gaussians, {px}², {cams} camera(s)\n\n| package | call | host us | do_bench ms | peak MB |\n"
              "| --- | --- | --- | --- | --- |")
        for lib, per_lib in fns.items():
            for name, fn in per_lib.items():
                print(f"| {lib} | {name} | {statistics.median(samples[(lib, name, 'host us')]):.1f} | "
                      f"{statistics.median(samples[(lib, name, 'do_bench ms')]):.3f} | {peak_mb(fn):.1f} |", flush=True)


if __name__ == "__main__":
    main()
