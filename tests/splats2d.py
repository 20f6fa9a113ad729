"""Random projected (2D) Gaussians for the tile-intersection and compositing tests."""

from __future__ import annotations

import math

import torch

from instant4d.kernels import reference


def random_splats(n_images: int, n: int, width: int, height: int, channels: int, seed: int, tile_size: int = 16):
    """2D Gaussians scattered over and around a width x height image, with their sorted tile lists.

    Covariances span tiny (sub-pixel) to larger-than-a-tile; a fifth are culled (radius 0); some lie
    off-screen; opacities include values near 1 (to reach the transmittance floor) and below 1/255.
    Returns a dict of float64 tensors plus int tile data computed by the twin.
    """
    g = torch.Generator().manual_seed(seed)
    size = torch.tensor([width, height], dtype=torch.float64)
    means2d = torch.rand(n_images, n, 2, generator=g, dtype=torch.float64) * size * 1.3 - 0.15 * size
    scale = torch.exp(torch.randn(n_images, n, 1, 1, generator=g, dtype=torch.float64) * 1.2) * 2.0
    factor = torch.randn(n_images, n, 2, 2, generator=g, dtype=torch.float64) * scale
    cov = factor @ factor.transpose(-1, -2) + 0.3 * torch.eye(2, dtype=torch.float64)
    inverse = torch.linalg.inv(cov)
    conics = torch.stack([inverse[..., 0, 0], inverse[..., 0, 1], inverse[..., 1, 1]], -1)
    radii = torch.ceil(3.33 * torch.sqrt(torch.diagonal(cov, dim1=-2, dim2=-1))).int()
    radii[torch.rand(n_images, n, generator=g) < 0.2] = 0
    depths = torch.rand(n_images, n, generator=g, dtype=torch.float64) * 5 + 0.5
    opacities = torch.rand(n_images, n, generator=g, dtype=torch.float64)
    opacities[torch.rand(n_images, n, generator=g) < 0.3] = 0.995
    colors = torch.rand(n_images, n, channels, generator=g, dtype=torch.float64)
    backgrounds = torch.rand(n_images, channels, generator=g, dtype=torch.float64)
    tile_width, tile_height = math.ceil(width / tile_size), math.ceil(height / tile_size)
    _, isect_ids, flatten_ids = reference.isect_tiles(means2d, radii, depths, tile_size, tile_width, tile_height)
    offsets = reference.isect_offset_encode(isect_ids, n_images, tile_width, tile_height)
    return dict(
        means2d=means2d, conics=conics, radii=radii, depths=depths, opacities=opacities, colors=colors,
        backgrounds=backgrounds, isect_offsets=offsets, flatten_ids=flatten_ids, tile_width=tile_width,
        tile_height=tile_height,
    )
