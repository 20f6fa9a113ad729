"""Compositing kernels timed on the avatar frame's, the 100k / 512² head scene's and the 100k uniform scene's inputs, plus the
avatar's CUDA-graph frame (do_bench medians, us), for A/B runs of a kernel change in one GPU call:
swap instant4d/kernels/composite.py between runs and label each run.

    PYTHONPATH=. python scripts/gpu_composite_ab.py LABEL
"""
import sys, torch, triton.testing
from instant4d.gaussians import head_like_scene, random_scene
from instant4d.kernels.deform import deform_gaussians
from instant4d.kernels.projection import fully_fused_projection
from instant4d.kernels.intersect import isect_tiles, isect_offset_encode
from instant4d.kernels.composite import rasterize_to_pixels
from gpu_avatar import VIEW, frame_codes
from instant4d.model import Avatar, EncoderConfig

ms = lambda f: triton.testing.do_bench(f, warmup=50, rep=400, return_mode="median") * 1000
avatar = Avatar.sample(EncoderConfig(resolution=256)).to("cuda")
codes, poses = frame_codes(avatar)
g = avatar.gaussians
scene = head_like_scene(100_000, 512, 512).to("cuda")
uniform = random_scene(100_000, 512, 512, seed=0).to("cuda")
out = [sys.argv[1]]
with torch.no_grad():
    means, quats, opacities = deform_gaussians(g.means, g.quats, g.opacities, g.basis, g.opacity_basis, g.rigid, g.pivot, codes, poses)
    viewmat, K = VIEW.cameras(avatar.config, 512, device="cuda")
bg = torch.ones(1, 3, device="cuda")
for name, (m, q, sc, o, c, vm, k) in {"avatar": (means[0], quats[0], g.scales, opacities[0], g.colors, viewmat[None], K[None]),
                                      "head100k": (scene.means, scene.quats, scene.scales, scene.opacities, scene.colors, scene.viewmats, scene.Ks),
                                      "uniform100k": (uniform.means, uniform.quats, uniform.scales, uniform.opacities, uniform.colors, uniform.viewmats, uniform.Ks)}.items():
    with torch.no_grad():
        radii, means2d, depths, conics, _ = fully_fused_projection(m, None, q, sc, vm, k, 512, 512, opacities=o)
        opac = o[None].contiguous()
        _, ids, flat = isect_tiles(means2d, radii, depths, 16, 32, 32, conics=conics, opacities=opac)
        offsets = isect_offset_encode(ids, 1, 32, 32)
    col = c[None].contiguous()
    leaves = [t.detach().clone().requires_grad_() for t in (means2d, conics, col, opac)]
    with torch.no_grad():
        fwd = ms(lambda: rasterize_to_pixels(means2d, conics, col, opac, 512, 512, 16, offsets, flat, backgrounds=bg))
        img = rasterize_to_pixels(means2d, conics, col, opac, 512, 512, 16, offsets, flat, backgrounds=bg)[0]
    def fb():
        o2, a2 = rasterize_to_pixels(*leaves, 512, 512, 16, offsets, flat, backgrounds=bg)
        torch.autograd.grad(o2.sum() + a2.sum(), leaves)
    out.append(f"{name}: fwd {fwd:.1f} fwd+bwd {ms(fb):.1f} (image sum {float(img.double().sum()):.6f})")
graphed = avatar.renderer(512, VIEW, backend="triton", cuda_graph=True)
with torch.no_grad():
    out.append(f"avatar graph frame {ms(lambda: graphed(codes, poses)):.1f}")
print(" | ".join(out), flush=True)
