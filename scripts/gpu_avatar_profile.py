"""GPU: the avatar's frame (deform + rasterize, 512x512, batch 1) at several encoder grids, tile sizes
and bucket-sort thresholds, in one process: the CUDA-graph frame's time, the gsplat + compiled-twin
pipeline's at the same tile size, and (``--profile``) device time per kernel of 20 eager frames with
bounded intersections, as the graph runs them.

    PYTHONPATH=.:scripts python scripts/gpu_avatar_profile.py [--resolutions 256,384] [--tiles 16,8]
        [--sort-max-average 256,1024] [--profile] [--config backing=False]
"""

from __future__ import annotations

import argparse
import functools
import math

import torch
from torch.profiler import ProfilerActivity, profile

import instant4d.render
from gpu_avatar import SIZE, VIEW, bench, frame_codes
from instant4d.kernels import intersect, reference
from instant4d.model import Avatar, EncoderConfig


def kernel_table(eager, codes, poses, bound) -> list[str]:
    for _ in range(3):
        eager(codes, poses, max_intersections=bound)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(20):
            eager(codes, poses, max_intersections=bound)
        torch.cuda.synchronize()
    rows = sorted(((e.device_time_total / 20, e.key) for e in prof.key_averages() if e.device_time_total > 0),
                  reverse=True)
    return [f"    {sum(t for t, _ in rows):8.1f} us of kernels a frame"] + [f"    {t:8.1f} us  {key[:90]}" for t, key in rows[:12]]


def main() -> None:
    import gsplat

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", default="256,384")
    parser.add_argument("--tiles", default="16,8")
    parser.add_argument("--sort-max-average", default=str(intersect.SORT_BUCKET_MAX_AVERAGE))
    parser.add_argument("--sort-configs", default="",
                        help="bucket-sort launches SORT_BLOCKxSORT_CHUNKxSORT_WARPSxSORT_RUN to try, comma-separated")
    parser.add_argument("--blocks", default="", help="intersect.BLOCK values (count / emit / bucket kernels) to try")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                        help="an EncoderConfig field for every grid (e.g. backing=False)")
    args = parser.parse_args()
    fields = {k: {"True": True, "False": False}.get(v, v) for k, v in (item.split("=") for item in args.config)}
    fields = {k: float(v) if isinstance(v, str) else v for k, v in fields.items()}
    original = instant4d.render.rasterization
    print(f"{torch.cuda.get_device_name()}; torch {torch.__version__}; gsplat {gsplat.__version__}")
    for resolution in (int(r) for r in args.resolutions.split(",")):
        avatar = Avatar.sample(EncoderConfig(resolution=resolution, **fields)).to("cuda")
        codes, poses = frame_codes(avatar)
        view = VIEW
        compiled_twin = torch.compile(reference.deform_gaussians)
        reference_image = None
        for tile in (int(t) for t in args.tiles.split(",")):
            baseline = avatar.renderer(SIZE, view, deform=compiled_twin,
                                       rasterize=functools.partial(gsplat.rasterization, tile_size=tile))
            with torch.no_grad():
                t_base = bench(lambda: baseline(codes, poses))
            variants = [("SORT_BUCKET_MAX_AVERAGE", int(a)) for a in args.sort_max_average.split(",")]
            variants += [(("SORT_BLOCK", "SORT_CHUNK", "SORT_WARPS", "SORT_RUN"), tuple(int(v) for v in c.split("x")))
                         for c in args.sort_configs.split(",") if c]
            variants += [("BLOCK", int(b)) for b in args.blocks.split(",") if b]
            defaults = {name: getattr(intersect, name) for name in
                        ("SORT_BUCKET_MAX_AVERAGE", "SORT_BLOCK", "SORT_CHUNK", "SORT_WARPS", "SORT_RUN", "BLOCK")}
            for names, values in variants:
                names, values = (names, values) if isinstance(names, tuple) else ((names,), (values,))
                for name, value in defaults.items():
                    setattr(intersect, name, value)
                for name, value in zip(names, values):
                    setattr(intersect, name, value)
                average = intersect.SORT_BUCKET_MAX_AVERAGE
                instant4d.render.rasterization = functools.partial(original, tile_size=tile)
                try:
                    eager = avatar.renderer(SIZE, view, backend="triton")
                    graphed = avatar.renderer(SIZE, view, backend="triton", cuda_graph=True)
                    with torch.no_grad():
                        count = int(eager(codes, poses, max_intersections=1 << 23)[1].max())
                        image = graphed(codes, poses)[0].clone()
                        if reference_image is None:
                            reference_image = image
                        mse = float(((image - reference_image) ** 2).mean())
                        t_graph = bench(lambda: graphed(codes, poses))
                        lines = kernel_table(eager, codes, poses, graphed.max_intersections) if args.profile else []
                finally:
                    instant4d.render.rasterization = original
                    for name, value in defaults.items():
                        setattr(intersect, name, value)
                print(f"grid {resolution} {fields or ''} ({avatar.num_gaussians} Gaussians), tile {tile}, "
                      f"{dict(zip(names, values))}, bucket sort up to {average} a tile: {count} intersections (bound {graphed.max_intersections}, "
                      f"{graphed.max_intersections / (math.ceil(SIZE / tile) ** 2):.0f} a tile); graph frame "
                      f"{t_graph * 1000:.1f} us; gsplat + compiled twin at tile {tile}: {t_base * 1000:.1f} us "
                      f"({t_base / t_graph:.2f}x); PSNR vs the first row's image "
                      f"{10 * math.log10(1 / max(mse, 1e-20)):.1f} dB", flush=True)
                print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
