"""Gaussian scenes as plain tensors, and the synthetic scenes used by tests and benchmarks.

A scene is what :func:`instant4d.rasterization` takes: ``means [N, 3]``, ``quats [N, 4]`` (wxyz),
``scales [N, 3]`` (linear), ``opacities [N]`` in [0, 1], ``colors [N, D]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .camera import intrinsics, orbit_viewmat

HEAD_SEMI_AXES = (0.425, 0.5, 0.45)


@dataclass
class Scene:
    """One Gaussian scene plus the cameras that look at it."""

    means: torch.Tensor  # [N, 3]
    quats: torch.Tensor  # [N, 4]
    scales: torch.Tensor  # [N, 3]
    opacities: torch.Tensor  # [N]
    colors: torch.Tensor  # [N, D] or [N, K, 3]
    viewmats: torch.Tensor  # [C, 4, 4]
    Ks: torch.Tensor  # [C, 3, 3]
    width: int
    height: int

    def to(self, device=None, dtype=None) -> "Scene":
        fields = {k: v for k, v in self.__dict__.items()}
        for key, value in fields.items():
            if isinstance(value, torch.Tensor):
                fields[key] = value.to(device=device, dtype=dtype if value.is_floating_point() else None)
        return Scene(**fields)

    def requires_grad_(self) -> "Scene":
        for t in (self.means, self.quats, self.scales, self.opacities, self.colors):
            t.requires_grad_(True)
        return self


def _cameras(n_cameras: int, width: int, height: int, fov: float, distance: float, generator):
    yaws = [0.0] + [float(v) for v in (torch.rand(n_cameras - 1, generator=generator) * 60 - 30)]
    pitches = [0.0] + [float(v) for v in (torch.rand(n_cameras - 1, generator=generator) * 30 - 15)]
    viewmats = torch.stack([orbit_viewmat(y, p, distance) for y, p in zip(yaws, pitches)])
    Ks = intrinsics(fov, width, height).expand(n_cameras, 3, 3).clone()
    return viewmats, Ks


def head_like_scene(
    n: int,
    width: int = 512,
    height: int = 512,
    n_cameras: int = 1,
    channels: int = 3,
    sh_degree: int | None = None,
    seed: int = 0,
) -> Scene:
    """The benchmark scene of docs/kernels.md: 80% of the Gaussians on the shell of an ellipsoid with
    semi-axes (0.425, 0.5, 0.45), 20% inside; scales half the mean shell spacing times a log-normal
    factor (sigma 0.4); random rotations; opacities in [0.3, 1]; random colours; cameras at distance
    2.7 with a 20 degree field of view (the head fills the frame); the first camera is frontal."""
    g = torch.Generator().manual_seed(seed)
    axes = torch.tensor(HEAD_SEMI_AXES)
    n_shell = int(round(0.8 * n))
    directions = torch.randn(n, 3, generator=g)
    directions = directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    radius = torch.ones(n)
    radius[n_shell:] = torch.rand(n - n_shell, generator=g) ** (1 / 3)
    means = directions * radius[:, None] * axes
    # surface area of the ellipsoid (Knud Thomsen's approximation) / shell count -> mean spacing
    p = 1.6075
    a, b, c = HEAD_SEMI_AXES
    area = 4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)
    spacing = math.sqrt(area / max(n_shell, 1))
    scales = 0.5 * spacing * torch.exp(0.4 * torch.randn(n, 3, generator=g))
    quats = torch.randn(n, 4, generator=g)
    opacities = 0.3 + 0.7 * torch.rand(n, generator=g)
    colors = _random_colors(n, channels, sh_degree, g)
    viewmats, Ks = _cameras(n_cameras, width, height, 20.0, 2.7, g)
    return Scene(means, quats, scales, opacities, colors, viewmats, Ks, width, height)


def random_scene(
    n: int,
    width: int = 64,
    height: int = 48,
    n_cameras: int = 1,
    channels: int = 3,
    sh_degree: int | None = None,
    seed: int = 0,
) -> Scene:
    """A uniform random cloud in a cube of side 2 at the origin seen from distance 4 (fov 40 degrees),
    with a spread of scales, some Gaussians behind or beside the camera, some nearly transparent."""
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 3, generator=g) * 2 - 1
    scales = 0.02 * torch.exp(0.8 * torch.randn(n, 3, generator=g))
    quats = torch.randn(n, 4, generator=g)
    opacities = torch.rand(n, generator=g)
    colors = _random_colors(n, channels, sh_degree, g)
    viewmats, Ks = _cameras(n_cameras, width, height, 40.0, 4.0, g)
    return Scene(means, quats, scales, opacities, colors, viewmats, Ks, width, height)


def _random_colors(n: int, channels: int, sh_degree: int | None, g) -> torch.Tensor:
    if sh_degree is None:
        return torch.rand(n, channels, generator=g)
    k = (sh_degree + 1) ** 2
    coeffs = 0.3 * torch.randn(n, k, 3, generator=g)
    coeffs[:, 0] = (torch.rand(n, 3, generator=g) - 0.5) / 0.28209479177387814
    return coeffs
