"""PyTorch twins of every Triton kernel: the readable spec, the CPU path and the test oracle.

Each function here has the same signature as the Triton-backed function of the same name in
``instant4d/kernels/<op>.py``; gradients come from autograd. They favour clarity over speed, but
are vectorised so that they are usable as the CPU renderer.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..shapes import ALPHA_THRESHOLD, MAX_ALPHA, RADIUS_EXTENT, TRANSMITTANCE_MIN

# ---------------------------------------------------------------------------------------------
# projection and spherical harmonics (kernels/projection.py, kernels/spherical_harmonics.py)
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# tile intersection and compositing (kernels/intersect.py, kernels/composite.py)
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# per-Gaussian local motion fusion + Gaussian decoder (kernels/fusion.py)
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# avatar deformation: motion basis x motion code -> Gaussians (kernels/deform.py)
# ---------------------------------------------------------------------------------------------
