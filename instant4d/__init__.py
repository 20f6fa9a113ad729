"""instant4d: one portrait photo to an animatable 3D Gaussian head avatar, rendered by Triton kernels.

The rasterizer is a drop-in for gsplat 1.5.3: ``from instant4d import rasterization`` (and the stage
functions under gsplat's names). The avatar API (``Avatar``, ``MotionCode``, ``HeadPose``,
``Encoder``, ...) and the ``LocalFusion`` module are imported on first use.
"""

from .kernels.composite import rasterize_to_pixels
from .kernels.fusion import FusedGaussians, FusionConfig, FusionWeights, local_fusion
from .kernels.intersect import isect_offset_encode, isect_tiles
from .kernels.projection import fully_fused_projection
from .kernels.spherical_harmonics import spherical_harmonics
from .render import rasterization

__version__ = "0.1.0"

_MODEL_NAMES = ("Avatar", "Encoder", "EncoderConfig", "HeadPose", "InputError", "LocalFusion", "MotionCode", "View")

__all__ = [
    "rasterization",
    "fully_fused_projection",
    "spherical_harmonics",
    "isect_tiles",
    "isect_offset_encode",
    "rasterize_to_pixels",
    "local_fusion",
    "FusionConfig",
    "FusionWeights",
    "FusedGaussians",
    *_MODEL_NAMES,
]


def __getattr__(name):
    # The avatar pulls in more code (and optional face models): load it only when asked for.
    if name == "LocalFusion":
        from .model.fusion import LocalFusion

        return LocalFusion
    if name in _MODEL_NAMES:
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module 'instant4d' has no attribute {name!r}")
