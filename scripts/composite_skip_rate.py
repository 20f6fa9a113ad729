"""CPU: how many of the Gaussians a compositing-backward program walks touch its pixels at all.

For sampled tiles of head-like and uniform scenes (the PyTorch twin's projection and tile intersection),
counts the (Gaussian, part of a tile) pairs where the part's pixels composite the Gaussian (sigma >= 0,
alpha >= 1/255, before the pixel's transmittance fell to 1e-4) among the pairs the part walks (up to its
pixels' last composited Gaussian), for parts of 8, 32, 64 and 256 pixels (row-major in a 16-px tile). The
backward skips the others after one vote (instant4d/kernels/composite.py).

    python scripts/composite_skip_rate.py [--tiles 60]
"""

from __future__ import annotations

import argparse

import torch

from instant4d import shapes
from instant4d.gaussians import head_like_scene, random_scene
from instant4d.kernels import reference

PARTS = (8, 32, 64, 256)
SCENES = (("head", 100_000, 512), ("head", 1_000_000, 512), ("head", 1_000_000, 1024), ("uniform", 100_000, 512))


def touched_fraction(kind: str, n: int, pixels: int, tiles: int) -> tuple[float, dict[int, float]]:
    scene = (head_like_scene if kind == "head" else random_scene)(n, pixels, pixels, seed=0)
    side = pixels // 16
    with torch.no_grad():
        radii, means2d, depths, conics, _ = reference.fully_fused_projection(
            scene.means, None, scene.quats, scene.scales, scene.viewmats, scene.Ks, pixels, pixels,
            opacities=scene.opacities)
        opacities = scene.opacities[None]
        _, isect_ids, flatten_ids = reference.isect_tiles(means2d, radii, depths, 16, side, side, conics=conics,
                                                          opacities=opacities)
        offsets = reference.isect_offset_encode(isect_ids, 1, side, side).reshape(-1)
    ends = torch.cat([offsets[1:], torch.tensor([flatten_ids.numel()])])
    means2d, conics, opacities = means2d.reshape(-1, 2), conics.reshape(-1, 3), opacities.reshape(-1)
    touched = {p: 0 for p in PARTS}
    walked = {p: 0 for p in PARTS}
    for tile in torch.randint(0, side * side, (tiles,), generator=torch.Generator().manual_seed(1)).tolist():
        ids = flatten_ids[int(offsets[tile]):int(ends[tile])].long()
        if ids.numel() == 0:
            continue
        ty, tx = divmod(tile, side)
        py, px = torch.meshgrid(torch.arange(16) + ty * 16 + 0.5, torch.arange(16) + tx * 16 + 0.5, indexing="ij")
        dx = means2d[ids, 0, None] - px.reshape(1, -1)
        dy = means2d[ids, 1, None] - py.reshape(1, -1)
        sigma = 0.5 * (conics[ids, 0, None] * dx * dx + conics[ids, 2, None] * dy * dy) + conics[ids, 1, None] * dx * dy
        alpha = torch.clamp(opacities[ids, None] * torch.exp(-sigma), max=shapes.MAX_ALPHA)
        valid = (sigma >= 0) & (alpha >= shapes.ALPHA_THRESHOLD)
        t_after = torch.cumprod(1 - torch.where(valid, alpha, 0.0), 0)
        composited = t_after > shapes.TRANSMITTANCE_MIN  # (the forward stops before the Gaussian that would bring T to 1e-4)
        # walked: up to each part's last composited Gaussian
        for p in PARTS:
            part_composited = (valid & composited).reshape(ids.numel(), 256 // p, p).any(-1)  # [G, parts]
            last = torch.where(part_composited, torch.arange(ids.numel())[:, None], -1).max(0).values  # [parts]
            walked[p] += int((last + 1).sum())
            touched[p] += int(part_composited.sum())
    return flatten_ids.numel() / side**2, {p: touched[p] / max(walked[p], 1) for p in PARTS}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiles", type=int, default=60)
    args = parser.parse_args()
    print(f"| scene | N | image | intersections a tile | touched, of the walked, at {' / '.join(map(str, PARTS))} px a part |")
    print("| --- | --- | --- | --- | --- |")
    for kind, n, pixels in SCENES:
        per_tile, fractions = touched_fraction(kind, n, pixels, args.tiles)
        print(f"| {kind} | {n // 1000}k | {pixels}² | {per_tile:.0f} | "
              f"{' / '.join(f'{fractions[p]:.2f}' for p in PARTS)} |", flush=True)


if __name__ == "__main__":
    main()
