"""GPU check of the projection and spherical-harmonics kernels: the Triton path against the float64
twin (every output and gradient) on the benchmark head scene, then forward and forward+backward
timings (``triton.testing.do_bench`` medians) of the Triton path and of the float32 twin.

    PYTHONPATH=. python scripts/gpu_check_projection.py [--n 100000] [--cameras 8] [--size 512] [--gsplat]

Accuracy rule (the tests' rule): |triton - fp64| <= floor * max|fp64| + k * |twin_fp32 - fp64| + 1e-4 |fp64|
elementwise, with floor, k = 1e-5, 2 for outputs and 1e-4, 3 for gradients. Radii are compared with
both twins; a radius that differs by one where extent * sqrt(S_xx) lies within float32 rounding of an
integer is a ceil() boundary case, not an error. ``--gsplat`` also compares with and times gsplat's
CUDA ``fully_fused_projection`` (needs gsplat 1.5.3 installed). Without CUDA it runs the comparison
only, under the Triton interpreter (use a small --n).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

from instant4d.gaussians import head_like_scene  # noqa: E402
from instant4d.kernels.projection import fully_fused_projection  # noqa: E402
from instant4d.kernels.spherical_harmonics import spherical_harmonics  # noqa: E402

PROJECTED = ("means2d", "depths", "conics", "compensations")


def covars_of(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:  # [N, 6] from [N, 4], [N, 3]
    w, x, y, z = (quats.double() / quats.double().norm(dim=-1, keepdim=True)).unbind(-1)
    rot = torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                       2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                       2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1).unflatten(-1, (3, 3))
    m = rot * scales.double()[:, None, :]
    return (m @ m.mT)[:, [0, 0, 0, 1, 1, 2], [0, 1, 2, 1, 2, 2]].to(quats.dtype)


def project(inputs: dict, dtype, backend: str, **options):
    """Projection on leaf copies of ``inputs`` in ``dtype``: (leaves, radii, float outputs)."""
    leaves = {k: v.to(dtype).clone().requires_grad_(k not in ("Ks", "opacities")) if v is not None else None
              for k, v in inputs.items()}
    radii, *floats = fully_fused_projection(**leaves, **options, backend=backend)
    return leaves, radii, floats


def gradients(leaves: dict, floats: list, weights: list) -> dict:
    used = [(f, w.to(f.dtype)) for f, w in zip(floats, weights) if f is not None]
    torch.autograd.backward([f for f, _ in used], [w for _, w in used])
    return {k: v.grad for k, v in leaves.items() if v is not None and v.requires_grad}


def error_row(name, actual, twin32, expected, floor, factor):
    e = expected.double()
    scale = max(float(e.abs().max()), 1.0)
    err = (actual.double() - e).abs()
    err32 = (twin32.double() - e).abs()
    ok = bool((err <= floor * scale + factor * err32 + 1e-4 * e.abs()).all())
    return f"| {name} | {float(err.max()) / scale:.2e} | {float(err32.max()) / scale:.2e} | {'yes' if ok else 'NO'} |", ok


def compare(scene, label: str, use_covars: bool, options: dict, device) -> bool:
    inputs = dict(means=scene.means, covars=covars_of(scene.quats, scene.scales) if use_covars else None,
                  quats=None if use_covars else scene.quats, scales=None if use_covars else scene.scales,
                  viewmats=scene.viewmats, Ks=scene.Ks, opacities=None if use_covars else scene.opacities)
    runs = [project(inputs, torch.float32, "triton", **options), project(inputs, torch.float32, "torch", **options),
            project(inputs, torch.float64, "torch", **options)]
    (_, r_t, _), (_, r_32, _), (_, r_64, _) = runs
    vis_t, vis_64 = (r_t > 0).all(-1), (r_64 > 0).all(-1)
    agree = vis_t == vis_64  # [C, N]: pairs both precisions keep or both cull
    print(f"\n### {label}: {int(vis_t.sum())} visible pairs of {vis_t.numel()}; radii differing from the "
          f"float32 twin: {int((r_t != r_32).any(-1).sum())} (by more than 1: {int(((r_t - r_32).abs() > 1).sum())}), "
          f"from the float64 twin: {int((r_t != r_64).any(-1).sum())}; visibility flips vs float64: "
          f"{int((~agree).sum())}")
    print("| quantity | max err / max (triton) | max err / max (twin fp32) | within rule |\n|---|---|---|---|")
    g = torch.Generator(device=device).manual_seed(0)
    weights, all_ok = [], True
    for name, a, t, e in zip(PROJECTED, *(floats for _, _, floats in runs)):
        if e is None:
            weights.append(None)
            continue
        keep = agree.reshape(agree.shape + (1,) * (e.dim() - 2))
        row, ok = error_row(name, *(torch.where(keep, x.detach(), 0.0) for x in (a, t, e)), 1e-5, 2)
        print(row)
        all_ok &= ok
        weights.append(torch.randn(e.shape, generator=g, device=device, dtype=torch.float64) * keep)
    g_t, g_32, g_64 = (gradients(leaves, floats, weights) for leaves, _, floats in runs)
    for name in g_64:
        row, ok = error_row("v_" + name, g_t[name], g_32[name], g_64[name], 1e-4, 3)
        print(row)
        all_ok &= ok
    return all_ok


def timings(scene, gsplat_module):
    import triton.testing

    bench = lambda fn, leaves=(): triton.testing.do_bench(fn, grad_to_none=list(leaves), return_mode="median")  # noqa: E731
    leaves = [t.detach().clone().requires_grad_() for t in (scene.means, scene.quats, scene.scales)]
    rows = []
    for packed in (False, True):
        for name, fn in (("instant4d", fully_fused_projection), ("twin fp32", None), ("gsplat", None)):
            if name == "gsplat" and gsplat_module is None:
                continue
            if name == "gsplat":
                call = lambda *a, **k: gsplat_module.fully_fused_projection(*a, **k)  # noqa: E731
            else:
                backend = "triton" if name == "instant4d" else "torch"
                call = lambda *a, backend=backend, **k: fully_fused_projection(*a, **k, backend=backend)  # noqa: E731

            def forward(call=call, packed=packed):
                return call(leaves[0], None, leaves[1], leaves[2], scene.viewmats, scene.Ks, scene.width,
                            scene.height, packed=packed, opacities=scene.opacities)

            def forward_backward(forward=forward, packed=packed):
                out = forward()
                floats = out[4 if packed else 1:][:3]
                torch.autograd.backward(floats, [torch.ones_like(f) for f in floats])

            with torch.no_grad():
                fwd = bench(forward)
            rows.append(f"| projection | {name} | {'packed' if packed else 'unpacked'} | {fwd:.3f} | "
                        f"{bench(forward_backward, leaves):.3f} |")
    n_cameras, n = scene.viewmats.shape[0], scene.means.shape[0]
    dirs = (scene.means[None] - torch.linalg.inv(scene.viewmats)[:, None, :3, 3]).contiguous()  # [C, N, 3]
    coeffs = torch.randn(n_cameras, n, 16, 3, device=dirs.device, requires_grad=True)
    for name, backend in (("instant4d", "triton"), ("twin fp32", "torch")):
        def sh_forward(backend=backend):
            return spherical_harmonics(3, dirs, coeffs, backend=backend)

        def sh_forward_backward(sh_forward=sh_forward):
            sh_forward().sum().backward()

        with torch.no_grad():
            fwd = bench(sh_forward)
        rows.append(f"| SH degree 3 | {name} | [C, N] points | {fwd:.3f} | {bench(sh_forward_backward, [coeffs]):.3f} |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--gsplat", action="store_true", help="also compare with and time gsplat 1.5.3")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    scene = head_like_scene(args.n, args.size, args.size, n_cameras=args.cameras).to(device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (Triton interpreter)"
    print(f"## projection / SH check: {args.n} Gaussians x {args.cameras} cameras, {args.size}x{args.size}, {name}")

    ok = compare(scene, "quats + scales, opacities, compensations", False,
                 dict(width=scene.width, height=scene.height, calc_compensations=True), device)
    ok &= compare(scene, "covars, no opacities, radius_clip 1", True,
                  dict(width=scene.width, height=scene.height, radius_clip=1.0, calc_compensations=True), device)

    gsplat_module = None
    if args.gsplat:
        import gsplat

        gsplat_module = gsplat
        ours = fully_fused_projection(scene.means, None, scene.quats, scene.scales, scene.viewmats, scene.Ks,
                                      scene.width, scene.height, opacities=scene.opacities, backend="triton")
        theirs = gsplat.fully_fused_projection(scene.means, None, scene.quats, scene.scales, scene.viewmats,
                                               scene.Ks, scene.width, scene.height, opacities=scene.opacities)
        visible = (theirs[0] > 0).all(-1)
        print(f"\n### vs gsplat {gsplat.__version__}: radii differing in {int((ours[0] != theirs[0]).any(-1).sum())} "
              f"of {visible.numel()} pairs ({int(visible.sum())} visible in gsplat)")
        for i, label in enumerate(PROJECTED[:3], start=1):
            diff = (ours[i] - theirs[i]).abs()[visible]
            print(f"- {label}: max |ours - gsplat| / max|gsplat| = "
                  f"{float(diff.max()) / max(float(theirs[i][visible].abs().max()), 1e-30):.2e}")

    if device.type == "cuda":
        print("\n| stage | implementation | mode | forward ms | forward+backward ms |\n|---|---|---|---|---|")
        print("\n".join(timings(scene, gsplat_module)))
    print("\nall within the accuracy rule" if ok else "\nSOME QUANTITIES OUTSIDE THE ACCURACY RULE")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
