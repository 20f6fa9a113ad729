"""Avatar deformation: motion basis x motion code -> Gaussians (placeholder header, kernels below)."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import shapes
from ..backend import resolve_backend
from . import reference


def deform_gaussians(means, quats, opacities, basis, opacity_basis, rigid, pivot, codes, poses, backend=None):
    if resolve_backend(backend, means) == "torch":
        return reference.deform_gaussians(means, quats, opacities, basis, opacity_basis, rigid, pivot, codes, poses)
    raise NotImplementedError
