"""Pinhole cameras in gsplat's convention: ``viewmats`` map world to camera (OpenCV axes:
x right, y down, z forward), ``Ks`` are 3x3 intrinsics in pixels."""

from __future__ import annotations

import math

import torch


def intrinsics(fov_degrees: float, width: int, height: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """K: [3, 3] for a vertical field of view, principal point at the image centre."""
    focal = 0.5 * height / math.tan(math.radians(fov_degrees) / 2)
    return torch.tensor(
        [[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]], dtype=dtype, device=device
    )


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, -1.0, 0.0), dtype=torch.float32, device=None) -> torch.Tensor:
    """viewmat: [4, 4] world-to-camera for a camera at ``eye`` looking at ``target``.

    ``up`` is the world direction that appears up in the image (OpenCV: image y points down).
    """
    eye_t = torch.as_tensor(eye, dtype=torch.float64)
    forward = torch.as_tensor(target, dtype=torch.float64) - eye_t
    forward = forward / forward.norm()
    down = -torch.as_tensor(up, dtype=torch.float64)
    right = torch.linalg.cross(down, forward)
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    rotation = torch.stack([right, down, forward])  # rows: camera axes in world coordinates
    view = torch.eye(4, dtype=torch.float64)
    view[:3, :3] = rotation
    view[:3, 3] = -rotation @ eye_t
    return view.to(dtype=dtype, device=device)


def orbit_viewmat(
    yaw_degrees: float, pitch_degrees: float = 0.0, distance: float = 2.7, dtype=torch.float32, device=None
) -> torch.Tensor:
    """viewmat: [4, 4] of a camera on a sphere around the origin, looking at it.

    Yaw 0 / pitch 0 puts the camera on the -z axis looking along +z, with world -y up
    (the world is OpenCV-like: a face at the origin looks towards -z, its top towards -y).
    """
    yaw, pitch = math.radians(yaw_degrees), math.radians(pitch_degrees)
    eye = (
        distance * math.sin(yaw) * math.cos(pitch),
        -distance * math.sin(pitch),
        -distance * math.cos(yaw) * math.cos(pitch),
    )
    return look_at(eye, dtype=dtype, device=device)
