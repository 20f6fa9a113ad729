"""The avatar: photo -> ``Encoder`` -> canonical Gaussians; ``MotionCode`` + ``HeadPose`` -> deformed
Gaussians -> ``instant4d.rasterization``."""

from .avatar import Avatar, View
from .encoder import Encoder, EncoderConfig
from .media import InputError
from .motion import HeadPose, MotionCode

__all__ = ["Avatar", "Encoder", "EncoderConfig", "HeadPose", "InputError", "MotionCode", "View"]
