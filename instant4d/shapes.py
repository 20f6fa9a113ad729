"""The one alphabet of tensor dimensions, and the checks that public functions run on inputs.

Dimensions (used in every docstring and shape comment):
    ...  leading batch dims (B scenes in total)
    N    Gaussians per scene          C    cameras per scene
    I    images = B * C               H, W image height and width in pixels
    TH, TW  tiles per column / row    D    channels rendered per pixel
    K    spherical-harmonic bases     M    intersections (Gaussian, tile) pairs
    nnz  visible (image, Gaussian) pairs in packed mode
    F    per-Gaussian feature width   Hd   hidden width of the per-Gaussian MLPs
    Cm   motion-code width
"""

from __future__ import annotations

from typing import Sequence

import torch

ALPHA_THRESHOLD = 1.0 / 255.0  # alpha below this contributes nothing (gsplat, Inria)
MAX_ALPHA = 0.999  # per-Gaussian alpha is clamped here (Inria uses 0.99)
TRANSMITTANCE_MIN = 1e-4  # stop compositing before T would fall to this
RADIUS_EXTENT = 3.33  # radius in standard deviations when no opacity bounds it


def check_tensor(
    name: str,
    tensor: object,
    shape: Sequence[int | None],
    *,
    dtypes: Sequence[torch.dtype] | None = (torch.float32, torch.float64, torch.float16, torch.bfloat16),
    device: torch.device | None = None,
) -> torch.Tensor:
    """Raise a ``ValueError`` naming ``name`` unless ``tensor`` has ``shape`` (None = any size)."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    fits = tensor.dim() == len(shape)
    for got, want in zip(tensor.shape, shape):  # a plain loop: every public call runs this (host time)
        if want is not None and got != want:
            fits = False
    if not fits:
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name} must have shape {want}, got {list(tensor.shape)}")
    if dtypes is not None and tensor.dtype not in dtypes:
        raise ValueError(f"{name} must have dtype in {[str(d) for d in dtypes]}, got {tensor.dtype}")
    if device is not None and tensor.device != device:
        raise ValueError(f"{name} is on {tensor.device} but the other inputs are on {device}")
    return tensor


def check_image_size(width: object, height: object, names: tuple[str, str] = ("width", "height")) -> None:
    for name, value in zip(names, (width, height)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
