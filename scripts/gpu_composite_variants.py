"""GPU: device time of the compositing kernels (torch.profiler, forward and backward per call) for several
copies of instant4d/kernels/composite.py loaded side by side in one process, on head-like and uniform scenes,
and each copy's gradients against the first's (or, with EQUIV=1, against the float64 twin's): max |x - ref|
/ max |ref| over the four gradients. Two rounds, so that the spread shows.

    git show fd6c1ed:instant4d/kernels/composite.py > /tmp/before.py
    PYTHONPATH=.:scripts python scripts/gpu_composite_variants.py /tmp/before.py instant4d/kernels/composite.py
    SCENES=head:20000:256:8 EQUIV=1 PYTHONPATH=.:scripts python scripts/gpu_composite_variants.py ...

SCENES=kind:N:pixels:cameras,... (kind head or uniform) picks the scenes.
"""
import importlib.util
import os
import sys

import torch

from instant4d.gaussians import head_like_scene, random_scene
from instant4d.kernels import reference
from instant4d.kernels.intersect import isect_offset_encode, isect_tiles
from instant4d.kernels.projection import fully_fused_projection


def load(path: str, index: int):
    """A copy of composite.py as a module of the package (its relative imports resolve), under its own name."""
    spec = importlib.util.spec_from_file_location(f"instant4d.kernels._composite_variant{index}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main():
    variants = {path: load(path, i) for i, path in enumerate(sys.argv[1:])}
    deterministic = bool(os.environ.get("DETERMINISTIC"))
    scenes = os.environ.get("SCENES", "head:100000:512:1,head:100000:512:8,uniform:100000:512:1,head:1000000:1024:1")
    print(torch.cuda.get_device_name(), flush=True)
    for item in scenes.split(","):
        kind, n, px, cams = item.split(":")
        n, px, cams = int(n), int(px), int(cams)
        make = head_like_scene if kind == "head" else random_scene
        s = make(n, px, px, n_cameras=cams, seed=0).to("cuda")
        tiles = (px + 15) // 16
        with torch.no_grad():
            radii, means2d, depths, conics, _ = fully_fused_projection(
                s.means, None, s.quats, s.scales, s.viewmats, s.Ks, px, px, opacities=s.opacities)
            opacities = s.opacities[None].expand(cams, -1).contiguous()
            _, ids, flatten_ids = isect_tiles(means2d, radii, depths, 16, tiles, tiles, conics=conics, opacities=opacities)
            offsets = isect_offset_encode(ids, cams, tiles, tiles)
        colors = s.colors[None].expand(cams, -1, -1).contiguous()
        gen = torch.Generator(device="cuda").manual_seed(0)
        v_colors = torch.randn(cams, px, px, 3, device="cuda", generator=gen)
        v_alphas = torch.randn(cams, px, px, 1, device="cuda", generator=gen)
        ref = None
        if os.environ.get("EQUIV"):
            leaves = [t.detach().double().requires_grad_() for t in (means2d, conics, colors, opacities)]
            out = reference.rasterize_to_pixels(*leaves, px, px, 16, offsets, flatten_ids)
            ref = [g.float() for g in torch.autograd.grad(out, leaves, (v_colors.double(), v_alphas.double()))]
        line = [item]
        for _ in range(2):
            for path, module in variants.items():
                leaves = [t.detach().clone().requires_grad_() for t in (means2d, conics, colors, opacities)]

                def step():
                    out = module.rasterize_to_pixels(*leaves, px, px, 16, offsets, flatten_ids, deterministic=deterministic)
                    return torch.autograd.grad(out, leaves, (v_colors, v_alphas))
                step()
                grads = step()
                torch.cuda.synchronize()
                ref = ref or grads
                diff = max(float((g - r).abs().max() / r.abs().max()) for g, r in zip(grads, ref))
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                    for _ in range(10):
                        step()
                    torch.cuda.synchronize()
                times = {e.key: e.self_device_time_total / 10 for e in prof.key_averages() if "_composite" in e.key}
                forward = sum(t for k, t in times.items() if "forward" in k)
                backward = sum(t for k, t in times.items() if "backward" in k)
                line.append(f"{path}: fwd {forward:.1f} bwd {backward:.1f} us (grad diff {diff:.1e})")
        print(" | ".join(line), flush=True)


if __name__ == "__main__":
    main()
