"""GPU timing of the avatar's per-frame work: animate (deform every Gaussian from its motion basis and
a given motion code) + render one 512x512 frame at batch 1.

Pipelines in one process, on the same avatar, code and camera:
  ours:       kernels/deform.py (fused Triton) + instant4d.rasterization (Triton)
  ours graph: the same, captured once and replayed from a CUDA graph (``renderer(cuda_graph=True)``,
              instant4d.graphs; includes the per-frame copy of the code in and the overflow check)
  baseline:   torch.compile'd PyTorch twin of the deformation + gsplat.rasterization (gsplat 1.5.3, CUDA),
              timed with 16x16 tiles (gsplat's default) and with 8x8 (ours): the faster counts
Both render unpacked (packed=False), RGB, white background, float32. Timings are
``triton.testing.do_bench`` medians of the whole frame (deform + rasterize), and of each stage alone.
The images of the two pipelines are compared (PSNR) so that the speed is for the same picture.

    PYTHONPATH=. python scripts/gpu_avatar.py            # writes $OUT/avatar.md when OUT is set
    PYTHONPATH=. python scripts/gpu_avatar.py --resolutions 128,256   # encoder grids (default 256,384)

The avatar is the bundled sample (built from its shipped face observation: no mediapipe needed).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from instant4d.kernels import reference  # noqa: E402
from instant4d.kernels.deform import deform_gaussians  # noqa: E402
from instant4d.model import Avatar, EncoderConfig, HeadPose, MotionCode, View  # noqa: E402

SIZE = 512
VIEW = View(yaw=15.0)  # the timed frame's camera


def frame_codes(avatar) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, poses) of the timed frame: a blend of presets with a head pose (every GPU script that
    times the avatar's frame uses this one)."""
    return avatar.code_tensors(MotionCode.blend({"smile": 0.7, "open_mouth": 0.5, "wink": 1.0})
                               .with_pose(HeadPose(yaw=10, pitch=-5)))


def bench(fn) -> float:
    """Median milliseconds of ``fn()`` (do_bench: warm-up, L2 flush between runs)."""
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=50, rep=500, return_mode="median"))


def overflow_check(avatar, view) -> str:
    """A graph sized exactly (headroom 1) for the frame with the fewest intersections among a few codes,
    then given the one with the most: it must capture again and return the eager path's image."""
    eager = avatar.renderer(SIZE, view, backend="triton")
    codes = [avatar.code_tensors(MotionCode.preset(name).with_pose(HeadPose(yaw=yaw)))
             for name, yaw in (("neutral", 0), ("open_mouth", 15), ("surprise", -20), ("smile", 25))]
    counts = [int(eager(*c, max_intersections=1 << 22)[1].max()) for c in codes]
    few, most = codes[counts.index(min(counts))], codes[counts.index(max(counts))]
    graphed = avatar.renderer(SIZE, view, backend="triton", cuda_graph=True)
    graphed.headroom = 1.0
    graphed(*few)
    bound_before, captures_before = graphed.max_intersections, graphed.captures
    image = graphed(*most)[0].clone()
    diff = float((image - eager(*most)[0]).abs().max())
    return (f"overflow check: counts {counts}; bound {bound_before} after {captures_before} capture(s), then "
            f"{graphed.max_intersections} after {graphed.captures}; max |graph - eager| of the larger frame {diff:.1e}")


def main() -> None:
    import gsplat

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", default="256,384", help="encoder grid sizes, comma-separated")
    resolutions = [int(r) for r in parser.parse_args().resolutions.split(",")]

    assert torch.cuda.is_available(), "this script times CUDA kernels"
    device = torch.device("cuda")
    rows = []
    for resolution in resolutions:
        avatar = Avatar.sample(EncoderConfig(resolution=resolution)).to(device)
        codes, poses = frame_codes(avatar)
        view = VIEW
        compiled_twin = torch.compile(reference.deform_gaussians)
        ours = avatar.renderer(SIZE, view, backend="triton")
        graphed = avatar.renderer(SIZE, view, backend="triton", cuda_graph=True)
        baselines = {tile: avatar.renderer(SIZE, view, deform=compiled_twin, rasterize=gsplat.rasterization, tile_size=tile)
                     for tile in (16, 8)}
        baseline = baselines[16]
        g = avatar.gaussians
        inputs = (g.means, g.quats, g.opacities, g.basis, g.opacity_basis, g.rigid, g.pivot, codes, poses)

        with torch.no_grad():
            image_ours, _ = ours(codes, poses)
            image_base, _ = baseline(codes, poses)
            image_graph = graphed(codes, poses)[0].clone()
            mse = float(((image_ours - image_base) ** 2).mean())
            psnr = 10 * math.log10(1.0 / max(mse, 1e-12))
            graph_err = float((image_graph - image_ours).abs().max())
            deformed = deform_gaussians(*inputs, backend="triton")
            twin = reference.deform_gaussians(*inputs)
            deform_err = max(float((a - b).abs().max()) for a, b in zip(deformed, twin))

            t_ours = bench(lambda: ours(codes, poses))
            t_graph = bench(lambda: graphed(codes, poses))
            t_bases = {tile: bench(lambda: b(codes, poses)) for tile, b in baselines.items()}
            base_tile = min(t_bases, key=t_bases.get)
            t_base = t_bases[base_tile]
            t_deform_ours = bench(lambda: deform_gaussians(*inputs, backend="triton"))
            t_deform_base = bench(lambda: compiled_twin(*inputs))
            overflow = overflow_check(avatar, view)
        rows.append(
            dict(
                n=avatar.num_gaussians, resolution=resolution, ours=t_ours, graph=t_graph, graph_err=graph_err,
                captures=graphed.captures, bound=graphed.max_intersections, base=t_base, base_tile=base_tile,
                base_tiles=t_bases,
                deform_ours=t_deform_ours, deform_base=t_deform_base, psnr=psnr, deform_err=deform_err,
                overflow=overflow,
            )  # fmt: skip
        )
        r = rows[-1]
        print(
            f"N={r['n']:>6} (grid {resolution}): ours {r['ours']:.4f} ms = {1000 / r['ours']:.0f} FPS | "
            f"graph {r['graph']:.4f} ms = {1000 / r['graph']:.0f} FPS (max |graph - eager| {r['graph_err']:.1e}, "
            f"{r['captures']} captures, bound {r['bound']}) | "
            f"gsplat + compiled twin {r['base']:.4f} ms = {1000 / r['base']:.0f} FPS (tile {r['base_tile']}; "
            + ", ".join(f"tile {t}: {v:.4f} ms" for t, v in r['base_tiles'].items())
            + f") | speed-up {r['base'] / r['ours']:.2f}x | "
            f"deform alone {r['deform_ours'] * 1000:.1f} us vs {r['deform_base'] * 1000:.1f} us | "
            f"image PSNR ours vs gsplat {psnr:.1f} dB | deform max |triton - twin| {deform_err:.2e}",
            flush=True,
        )

    table = [
        f"Device: {torch.cuda.get_device_name()}; torch {torch.__version__}; gsplat {gsplat.__version__}; "
        f"{SIZE}x{SIZE}, batch 1, motion code given, camera yaw 15 deg, head pose (10, -5, 0) deg.",
        "",
        "| Gaussians | ours, CUDA graph | ours, eager | gsplat + torch.compile'd twin (faster tile size) | speed-up (graph / eager) | "
        "deform alone (ours / compiled twin) | images agree (PSNR vs gsplat; max abs graph vs eager) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        table.append(
            f"| {r['n']} | {r['graph']:.4f} ms ({1000 / r['graph']:.0f} FPS) | {r['ours']:.4f} ms ({1000 / r['ours']:.0f} FPS) | "
            f"{r['base']:.4f} ms ({1000 / r['base']:.0f} FPS, tile {r['base_tile']}) | {r['base'] / r['graph']:.2f}x / {r['base'] / r['ours']:.2f}x | "
            f"{r['deform_ours'] * 1000:.1f} us / {r['deform_base'] * 1000:.1f} us | {r['psnr']:.1f} dB; {r['graph_err']:.1e} |"
        )
    table += ["", *(f"Grid {r['resolution']}: {r['overflow']}" for r in rows)]
    text = "\n".join(table)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "avatar.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
