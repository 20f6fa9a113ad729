"""GPU: instant4d vs gsplat 1.5.3 in one process: equivalence (images, alphas, depths, radii, tile
counts, gradients), Triton vs twin, and the timing matrix of docs/benchmarks.md (each cell: the median of
ROUNDS interleaved rounds of do_bench medians, see ROUNDS).

    PYTHONPATH=. python scripts/gpu_compare.py [--part equivalence|timing|all] [--quick] [--eager]

``--eager`` times our calls with ``cuda_graphs=False`` (every call eager, as gsplat's): the table of the
eager path, whose memory the graph replays of repeated calls trade for host time.

Writes markdown tables (and a JSON of every number) to $OUT (or ./gpu-results) and prints them.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import inspect
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import triton
import triton.testing

import instant4d
from instant4d.gaussians import head_like_scene, random_scene

OUT = os.environ.get("OUT", "gpu-results")


def source_tree() -> str:
    """The git tree hash of the working tree as it is (tracked and untracked, unignored files): the
    GPU machine receives the working tree but a stale history, so HEAD would name the wrong commit.
    ``git log --format='%h %T'`` finds the commit whose tree this is."""
    env = dict(os.environ, GIT_INDEX_FILE=os.path.join(tempfile.mkdtemp(), "index"))
    added = subprocess.run(["git", "add", "-A"], env=env, capture_output=True, text=True)
    tree = subprocess.run(["git", "write-tree"], env=env, capture_output=True, text=True).stdout.strip()
    return f"tree {tree[:10]}" if added.returncode == 0 and tree else "unknown"


def device_info() -> dict:
    import gsplat

    return dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                gsplat=gsplat.__version__, python=sys.version.split()[0], commit=source_tree(),
                date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


def render(lib: str, scene, packed: bool, **kwargs):
    if lib == "gsplat":
        import gsplat

        fn = gsplat.rasterization
    else:
        fn = instant4d.rasterization
        if lib == "twin":
            kwargs["backend"] = "torch"
        elif lib == "instant4d":
            kwargs["backend"] = "triton"
    return fn(scene.means, scene.quats, scene.scales, scene.opacities, scene.colors, scene.viewmats, scene.Ks,
              scene.width, scene.height, packed=packed, **kwargs)


def with_grads(lib, scene, packed, **kwargs):
    leaves = [t.detach().clone().requires_grad_() for t in (scene.means, scene.quats, scene.scales, scene.opacities, scene.colors)]
    s = type(scene)(*leaves, scene.viewmats, scene.Ks, scene.width, scene.height)
    colors, alphas, meta = render(lib, s, packed, **kwargs)
    g = torch.Generator(device="cuda").manual_seed(0)
    wc = torch.rand(colors.shape, device="cuda", generator=g)
    wa = torch.rand(alphas.shape, device="cuda", generator=g)
    ((colors * wc).sum() + (alphas * wa).sum()).backward()
    return colors.detach(), alphas.detach(), meta, [t.grad for t in leaves]


def psnr(a, b) -> float:
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def grad_stats(a, b) -> tuple[float, float]:
    a, b = a.double().flatten(), b.double().flatten()
    cos = float(torch.nn.functional.cosine_similarity(a, b, dim=0)) if b.norm() > 0 else float(a.norm() == 0)
    rel = float((a - b).norm() / b.norm().clamp_min(1e-30))
    return cos, rel


def compare(name, scene, ref_lib, test_lib, packed=False, **kwargs) -> dict:
    ref = with_grads(ref_lib, scene, packed, **kwargs)
    test = with_grads(test_lib, scene, packed, **kwargs)
    depth_kwargs = dict(kwargs, render_mode="RGB+ED")
    ref_d = render(ref_lib, scene, packed, **depth_kwargs)[0][..., -1]
    test_d = render(test_lib, scene, packed, **depth_kwargs)[0][..., -1]
    row = dict(scene=name, ref=ref_lib, test=test_lib, psnr=psnr(test[0], ref[0]),
               alpha_max_err=float((test[1] - ref[1]).abs().max()),
               depth_rel_err=float((test_d - ref_d).norm() / ref_d.norm()))
    r_ref, r_test = ref[2]["radii"], test[2]["radii"]
    if r_ref.shape == r_test.shape:
        row["radii_equal"] = float((r_ref == r_test).all(-1).float().mean())
        row["radii_max_diff"] = int((r_ref - r_test).abs().max()) if r_ref.numel() else 0
        t_ref, t_test = ref[2]["tiles_per_gauss"], test[2]["tiles_per_gauss"]
        row["tiles_equal"] = float((t_ref == t_test).float().mean())
    for key, a, b in zip(("means", "quats", "scales", "opacities", "colors"), test[3], ref[3]):
        row[f"cos_{key}"], row[f"rel_{key}"] = grad_stats(a, b)
    return row


def equivalence(quick: bool) -> list[dict]:
    cases = [
        ("random 20k, 256x192, 2 cams", random_scene(20_000, 256, 192, n_cameras=2, seed=1), {}),
        ("head 100k, 512x512", head_like_scene(100_000, 512, 512), {}),
        ("head 100k, 512x512, SH3", head_like_scene(100_000, 512, 512, sh_degree=3), dict(sh_degree=3)),
        ("head 100k, 512x512, antialiased", head_like_scene(100_000, 512, 512), dict(rasterize_mode="antialiased")),
        ("head 250k, 1024x1024", head_like_scene(250_000, 1024, 1024), {}),
        ("head 100k, 512x512, 8 cams", head_like_scene(100_000, 512, 512, n_cameras=8), {}),
        ("head 1M, 1024x1024, 8 cams, SH3, antialiased",
         head_like_scene(1_000_000, 1024, 1024, n_cameras=8, sh_degree=3), dict(sh_degree=3, rasterize_mode="antialiased")),
    ]
    if quick:
        cases = cases[:2]
    rows = []
    for name, scene, kwargs in cases:
        scene = scene.to("cuda")
        rows.append(compare(name, scene, "gsplat", "instant4d", **kwargs))
        print(rows[-1], flush=True)
    # Triton vs its twin on the GPU (the twin walks tiles in Python: keep these small)
    for name, scene, kwargs in cases[:2] + [cases[2]]:
        if "1M" in name:
            continue
        rows.append(compare(name, scene.to("cuda"), "twin", "instant4d", **kwargs))
        print(rows[-1], flush=True)
    return rows


def eager(rasterization):
    """``rasterization`` with every call eager (``cuda_graphs=False``) where the package has CUDA graphs of
    repeated calls: scripts that time kernels, launches or the eager path use it (older copies of the
    package, and gsplat, are eager anyway)."""
    if "cuda_graphs" in inspect.signature(rasterization).parameters:
        return functools.partial(rasterization, cuda_graphs=False)
    return rasterization


def bench_ms(fn, warmup: int = 25, rep: int = 100) -> float:
    return float(triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))


# This machine's host speed drifts (up to 2x from minute to minute, docs/benchmarks.md "Host time of an
# eager call"), and host-bound cells (one camera, small scenes) drift with it: each cell times every
# library ROUNDS times, interleaved, and keeps the median of the rounds (the spread goes to the JSON).
ROUNDS = 5


def peak_mb(fn) -> float:
    """The memory a call needs, MB: the rise of max_memory_allocated over three calls from a clean start,
    so that it includes what instant4d's CUDA graphs of repeated calls keep between calls."""
    instant4d.graphs.RASTERIZATION_GRAPHS.clear()
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def timing(quick: bool, eager: bool = False) -> list[dict]:
    sizes = [20_000, 100_000, 250_000, 1_000_000]
    images = [512, 1024]
    cams = [1, 8]
    scenes = [("head", n, px, c) for n in sizes for px in images for c in cams] + [("uniform", 100_000, 512, 1)]
    if quick:
        scenes = [("head", 100_000, 512, 1)]
    rows = []
    for kind, n, px, c in scenes:
        make = head_like_scene if kind == "head" else random_scene
        scene = make(n, px, px, n_cameras=c, seed=0).to("cuda")
        leaves = [t.detach().clone().requires_grad_() for t in (scene.means, scene.quats, scene.scales, scene.opacities, scene.colors)]
        sg = type(scene)(*leaves, scene.viewmats, scene.Ks, scene.width, scene.height)
        row = dict(scene=kind, n=n, size=px, cameras=c)
        calls = {}
        for label, lib, packed in (("gsplat_packed", "gsplat", True), ("gsplat_unpacked", "gsplat", False),
                                   ("instant4d", "instant4d", False)):
            kwargs = dict(cuda_graphs=False) if eager and lib == "instant4d" else {}
            calls[f"{label}_fwd"] = lambda lib=lib, packed=packed, kw=kwargs: render(lib, scene, packed, **kw)
            calls[f"{label}_fwdbwd"] = lambda lib=lib, packed=packed, kw=kwargs: render(lib, sg, packed, **kw)[0].sum().backward()
        rounds = {name: [] for name in calls}
        for _ in range(ROUNDS):
            for name, fn in calls.items():
                rounds[name].append(bench_ms(fn, warmup=10, rep=40))
        for name, fn in calls.items():
            row[f"{name}_ms"] = statistics.median(rounds[name])
            row[f"{name}_ms_rounds"] = rounds[name]
            row[f"{name}_mb"] = peak_mb(fn)
        for mode in ("fwd", "fwdbwd"):
            best = min(row[f"gsplat_packed_{mode}_ms"], row[f"gsplat_unpacked_{mode}_ms"])
            best_label = "packed" if best == row[f"gsplat_packed_{mode}_ms"] else "unpacked"
            row[f"speedup_{mode}"] = best / row[f"instant4d_{mode}_ms"]
            row[f"gsplat_best_{mode}"] = best_label
            row[f"mem_ratio_{mode}"] = row[f"instant4d_{mode}_mb"] / max(row[f"gsplat_{best_label}_{mode}_mb"], 1e-9)
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items() if not k.endswith("_rounds")},
              flush=True)
        rows.append(row)
    return rows


def markdown(info, equiv_rows, timing_rows) -> str:
    lines = [f"Device: {info['device']}; torch {info['torch']}, Triton {info['triton']}, gsplat {info['gsplat']}, "
             f"Python {info['python']}; commit {info['commit']}; {info['date']}.", ""]
    if equiv_rows:
        lines += ["| scene | reference | PSNR dB | alpha max err | depth rel err | radii equal | tiles equal | "
                  "grad cos (means/quats/scales/opac/colors) | grad rel err (same order) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in equiv_rows:
            keys = ("means", "quats", "scales", "opacities", "colors")
            cos = " / ".join(f"{r['cos_' + k]:.6f}" for k in keys)
            rel = " / ".join(f"{r['rel_' + k]:.1e}" for k in keys)
            lines.append(f"| {r['scene']} | {r['ref']} | {r['psnr']:.1f} | {r['alpha_max_err']:.1e} | "
                         f"{r['depth_rel_err']:.1e} | {r.get('radii_equal', float('nan')):.6f} | "
                         f"{r.get('tiles_equal', float('nan')):.6f} | {cos} | {rel} |")
        lines.append("")
    if timing_rows:
        lines += ["| scene | N | image | cams | gsplat fwd ms (best mode) | ours fwd ms | fwd speedup | "
                  "gsplat fwd+bwd ms | ours fwd+bwd ms | fwd+bwd speedup | peak MB ours / gsplat (fwd+bwd) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in timing_rows:
            gsplat_mb = r["gsplat_" + r["gsplat_best_fwdbwd"] + "_fwdbwd_mb"]
            gf = min(r["gsplat_packed_fwd_ms"], r["gsplat_unpacked_fwd_ms"])
            gb = min(r["gsplat_packed_fwdbwd_ms"], r["gsplat_unpacked_fwdbwd_ms"])
            lines.append(
                f"| {r['scene']} | {r['n'] // 1000}k | {r['size']}² | {r['cameras']} | {gf:.3f} ({r['gsplat_best_fwd']}) | "
                f"{r['instant4d_fwd_ms']:.3f} | {r['speedup_fwd']:.2f}x | {gb:.3f} ({r['gsplat_best_fwdbwd']}) | "
                f"{r['instant4d_fwdbwd_ms']:.3f} | {r['speedup_fwdbwd']:.2f}x | "
                f"{r['instant4d_fwdbwd_mb']:.0f} / {gsplat_mb:.0f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=["equivalence", "timing", "all"], default="all")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--eager", action="store_true", help="our calls with cuda_graphs=False")
    args = parser.parse_args()
    os.makedirs(OUT, exist_ok=True)
    t0 = time.time()
    info = device_info()
    # warm gsplat's JIT build and our Triton compiles before anything is timed
    warm = head_like_scene(1000, 64, 64).to("cuda")
    render("gsplat", warm, False)
    render("instant4d", warm, False)
    print(f"warm-up (gsplat JIT + Triton compile): {time.time() - t0:.0f} s", flush=True)
    equiv_rows = equivalence(args.quick) if args.part in ("equivalence", "all") else []
    timing_rows = timing(args.quick, args.eager) if args.part in ("timing", "all") else []
    text = markdown(info, equiv_rows, timing_rows)
    if args.eager:
        text = "instant4d calls with `cuda_graphs=False`: every call eager.\n\n" + text
    name = f"compare-{args.part}{'-eager' if args.eager else ''}"
    with open(os.path.join(OUT, f"{name}.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(OUT, f"{name}.json"), "w") as f:
        json.dump(dict(info=info, equivalence=equiv_rows, timing=timing_rows), f, indent=1)
    print(text)
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
