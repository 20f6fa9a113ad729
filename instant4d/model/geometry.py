"""Rotations and rigid alignment used by the avatar (quaternions are wxyz, as in gsplat).

Head-pose angles, in the OpenCV-like world of ``instant4d/camera.py`` (x right, y down, the face
looking towards -z): R = Ry(yaw) Rx(pitch) Rz(roll), so yaw > 0 turns the face towards the image's
left, pitch > 0 tilts it down, roll > 0 tilts its top towards the image's right.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def rotation_from_angles(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """R: [3, 3] from angles in degrees."""
    a, b, c = (math.radians(v) for v in (yaw, pitch, roll))
    ry = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return ry @ rx @ rz


def angles_from_rotation(rotation: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of R = Ry(yaw) Rx(pitch) Rz(roll)."""
    r = np.asarray(rotation, dtype=np.float64)
    pitch = math.asin(float(np.clip(-r[1, 2], -1.0, 1.0)))
    yaw = math.atan2(r[0, 2], r[2, 2])
    roll = math.atan2(r[1, 0], r[1, 1])
    return math.degrees(yaw), math.degrees(pitch), math.degrees(roll)


def matrix_to_quaternion(matrix: np.ndarray) -> np.ndarray:
    """quaternions: [..., 4] wxyz (w >= 0) of rotation matrices [..., 3, 3]."""
    m = np.asarray(matrix, dtype=np.float64)
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    candidates = np.stack(
        [
            np.stack([1 + trace, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
            np.stack([m[..., 2, 1] - m[..., 1, 2], 1 + 2 * m[..., 0, 0] - trace, m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
            np.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 + 2 * m[..., 1, 1] - trace, m[..., 1, 2] + m[..., 2, 1]], -1),
            np.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1 + 2 * m[..., 2, 2] - trace], -1),
        ],
        axis=-2,
    )  # [..., 4, 4]: row i is 4 q_i q (unnormalised); the row with the largest diagonal is stable
    diagonal = np.stack([1 + trace, 1 + 2 * m[..., 0, 0] - trace, 1 + 2 * m[..., 1, 1] - trace, 1 + 2 * m[..., 2, 2] - trace], -1)
    best = np.take_along_axis(candidates, diagonal.argmax(-1)[..., None, None].repeat(4, -1), axis=-2)[..., 0, :]
    q = best / np.linalg.norm(best, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0, -q, q)


def procrustes(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(scale, R [3, 3], t [3]) minimising |scale * R @ source_i + t - target_i|^2 over points [P, 3]."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    s, t = source - mu_s, target - mu_t
    u, sigma, vt = np.linalg.svd(t.T @ s)
    d = np.sign(np.linalg.det(u @ vt))
    correction = np.diag([1.0, 1.0, d])
    rotation = u @ correction @ vt
    scale = float((sigma * np.diag(correction)).sum() / max((s**2).sum(), 1e-12))
    return scale, rotation, mu_t - scale * rotation @ mu_s


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """R: [..., 3, 3] of (not necessarily unit) quaternions [..., 4] wxyz."""
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(q.shape[:-1] + (3, 3))
