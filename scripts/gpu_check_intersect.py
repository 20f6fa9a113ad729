"""GPU check of the tile-intersection kernels with the reach test (conics and opacities given):
Triton against the twin on the same device, on the benchmark scenes and the avatar's frame, and how
many intersections the test leaves out of the tile rectangles, with ``do_bench`` timings of
``isect_tiles`` with and without it.

    PYTHONPATH=. python scripts/gpu_check_intersect.py

The twin and the kernels make the same float32 operations, but the GPU compiler may fuse a multiply
and an add (FMA) where PyTorch rounds twice, so a tile whose least sigma lies within rounding of the
threshold (plus slack) may be decided differently; such pairs are counted and reported, not errors:
both decisions are safe, because a dropped tile's alpha is below 1/255 by more than the slack.
"""

from __future__ import annotations

import math

import torch
import triton.testing

from instant4d.gaussians import head_like_scene, random_scene
from instant4d.kernels import reference
from instant4d.kernels.intersect import isect_tiles
from instant4d.kernels.projection import fully_fused_projection


def scenes():
    for name, make, n, px, cams in (("head", head_like_scene, 100_000, 512, 1), ("head", head_like_scene, 1_000_000, 1024, 1),
                                    ("head", head_like_scene, 250_000, 512, 8), ("uniform", random_scene, 100_000, 512, 1)):
        s = make(n, px, px, n_cameras=cams, seed=0).to("cuda")
        yield f"{name} {n // 1000}k {px}px {cams} cam", s.means, s.quats, s.scales, s.opacities, s.viewmats, s.Ks, px
    from instant4d.kernels.deform import deform_gaussians
    from gpu_avatar import VIEW, frame_codes
    from instant4d.model import Avatar, EncoderConfig

    avatar = Avatar.sample(EncoderConfig(resolution=256)).to("cuda")
    codes, poses = frame_codes(avatar)
    g = avatar.gaussians
    means, quats, opacities = deform_gaussians(g.means, g.quats, g.opacities, g.basis, g.opacity_basis, g.rigid,
                                               g.pivot, codes, poses)
    viewmat, K = VIEW.cameras(avatar.config, 512, device="cuda")
    yield "avatar 54.5k 512px", means[0], quats[0], g.scales, opacities[0], viewmat[None], K[None], 512


def main() -> None:
    print(f"Device: {torch.cuda.get_device_name()}; torch {torch.__version__}; triton {triton.__version__}")
    print("| scene | rectangle intersections | reached | left out | Gaussians whose count differs from the twin "
          "| keys equal | isect_tiles ms (rectangle / reach) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, means, quats, scales, opacities, viewmats, Ks, px in scenes():
        with torch.no_grad():
            radii, means2d, depths, conics, _ = fully_fused_projection(
                means, None, quats, scales, viewmats, Ks, px, px, opacities=opacities, backend="triton")
            opac = torch.broadcast_to(opacities, radii.shape[:-1])
            tiles = (16, math.ceil(px / 16), math.ceil(px / 16))
            rect = isect_tiles(means2d, radii, depths, *tiles, backend="triton")
            reach = isect_tiles(means2d, radii, depths, *tiles, conics=conics, opacities=opac, backend="triton")
            twin = reference.isect_tiles(means2d, radii, depths, *tiles, conics=conics, opacities=opac)
            differ = int((reach[0] != twin[0]).sum())
            keys_equal = torch.equal(reach[1], twin[1]) and torch.equal(reach[2], twin[2])
            t_rect = triton.testing.do_bench(lambda: isect_tiles(means2d, radii, depths, *tiles, backend="triton"))
            t_reach = triton.testing.do_bench(lambda: isect_tiles(means2d, radii, depths, *tiles, conics=conics,
                                                                  opacities=opac, backend="triton"))
        m_rect, m_reach = rect[1].numel(), reach[1].numel()
        print(f"| {name} | {m_rect} | {m_reach} | {1 - m_reach / m_rect:.1%} | {differ} | {keys_equal} | "
              f"{t_rect:.3f} / {t_reach:.3f} |", flush=True)


if __name__ == "__main__":
    main()
