"""GPU: host time of one eager ``rasterization()`` call, forward and forward+backward (unpacked, 512²,
1 camera, 20k and 100k Gaussians), measured with the device idle before each call (a sync before
it): the Python and launch work of a call, plus, unbounded, its one wait on the device; and the
eager calls' do_bench times. Also what single host-side operations cost on this machine.

    PYTHONPATH=.:scripts python scripts/gpu_host.py [PACKAGE ...]

With other packages named (e.g. a copy of an older instant4d, renamed instant4d_old, on PYTHONPATH;
the package imports itself relatively), every measurement alternates between them and instant4d in
rounds, and the table gives each one's median over the rounds: this machine's host speed drifts by
up to 2x between minutes, which rounds see alike.
"""

from __future__ import annotations

import importlib
import statistics
import sys
import time

import torch

from gpu_compare import bench_ms

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


def calls(lib, n: int) -> dict:
    """The timed calls of one package on the n-Gaussian scene: name -> function."""
    s = lib.gaussians.head_like_scene(n, 512, 512).to("cuda")
    args = (s.means, s.quats, s.scales, s.opacities, s.colors, s.viewmats, s.Ks, s.width, s.height)
    leaves = [t.detach().clone().requires_grad_() for t in args[:5]]

    def forward():
        return lib.rasterization(*args, packed=False)

    def forward_backward():
        colors, _, _ = lib.rasterization(*leaves, *args[5:], packed=False)
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
    for n in (20_000, 100_000):
        fns = {lib.__name__: calls(lib, n) for lib in libs}
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
        print(f"\n{n} Gaussians, 512², 1 camera\n\n| package | call | host us | do_bench ms |\n| --- | --- | --- | --- |")
        for lib, per_lib in fns.items():
            for name in per_lib:
                print(f"| {lib} | {name} | {statistics.median(samples[(lib, name, 'host us')]):.1f} | "
                      f"{statistics.median(samples[(lib, name, 'do_bench ms')]):.3f} |", flush=True)


if __name__ == "__main__":
    main()
