"""Motion codes: what one frame asks of an avatar, an expression (one amplitude per component of
``basis.COMPONENTS``) plus a rigid head pose.

A code comes from a preset (``MotionCode.preset("smile")``), a blend of presets or codes, raw values
(``MotionCode.from_values(jaw_open=0.5)``) or a face image: its MediaPipe landmarks are aligned to a
neutral reference face by a similarity transform on landmarks that expressions barely move (which gives
the head pose), and the remaining displacements are fitted onto the expression basis by bounded least
squares.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from typing import Iterable, Iterator, Mapping

import numpy as np
import torch

from . import basis as expression
from . import landmarks as lm
from .geometry import angles_from_rotation, matrix_to_quaternion, procrustes, rotation_from_angles

COMPONENTS = expression.COMPONENTS
K = len(COMPONENTS)
MAX_AMPLITUDE = 1.2  # fitted amplitudes are kept in [0, MAX_AMPLITUDE]


@dataclass(frozen=True)
class HeadPose:
    """A rigid head motion about the neck: angles in degrees (see ``geometry.py`` for the axes), a
    translation in world units (the face is about 0.48 units tall)."""

    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    x: float = 0.0
    y: float = 0.0
    z: float = 0.0

    def rotation(self) -> np.ndarray:
        return rotation_from_angles(self.yaw, self.pitch, self.roll)

    def to_tensor(self, dtype=torch.float32, device=None) -> torch.Tensor:
        """pose: [7], the rotation quaternion (wxyz) then the translation."""
        q = matrix_to_quaternion(self.rotation())
        return torch.tensor([*q, self.x, self.y, self.z], dtype=dtype, device=device)

    @classmethod
    def from_rotation(cls, rotation: np.ndarray, translation=(0.0, 0.0, 0.0)) -> "HeadPose":
        yaw, pitch, roll = angles_from_rotation(rotation)
        return cls(yaw, pitch, roll, *(float(t) for t in translation))

    def __add__(self, other: "HeadPose") -> "HeadPose":
        return HeadPose(*(a + b for a, b in zip(self._values(), other._values())))

    def scaled(self, weight: float) -> "HeadPose":
        return HeadPose(*(weight * a for a in self._values()))

    def _values(self) -> tuple[float, ...]:
        return (self.yaw, self.pitch, self.roll, self.x, self.y, self.z)


@dataclass(frozen=True)
class MotionCode:
    """One frame of motion: ``expression`` holds one amplitude per name in ``MotionCode.names()``."""

    expression: tuple[float, ...] = (0.0,) * K
    pose: HeadPose = field(default_factory=HeadPose)

    def __post_init__(self):
        values = tuple(float(v) for v in self.expression)
        if len(values) != K:
            raise ValueError(f"expression must have {K} values ({', '.join(COMPONENTS)}), got {len(values)}")
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"expression values must be finite, got {values}")
        object.__setattr__(self, "expression", values)

    @staticmethod
    def names() -> tuple[str, ...]:
        return COMPONENTS

    @staticmethod
    def presets() -> tuple[str, ...]:
        return tuple(expression.PRESETS)

    @classmethod
    def from_values(cls, pose: HeadPose | None = None, **values: float) -> "MotionCode":
        unknown = sorted(set(values) - set(COMPONENTS))
        if unknown:
            raise ValueError(f"unknown expression components {unknown}; known: {', '.join(COMPONENTS)}")
        return cls(tuple(float(values.get(name, 0.0)) for name in COMPONENTS), pose or HeadPose())

    @classmethod
    def preset(cls, name: str, pose: HeadPose | None = None) -> "MotionCode":
        if name not in expression.PRESETS:
            raise ValueError(f"unknown preset {name!r}; presets: {', '.join(expression.PRESETS)}")
        return cls.from_values(pose=pose, **expression.PRESETS[name])

    @classmethod
    def blend(cls, weights: Mapping["str | MotionCode", float]) -> "MotionCode":
        """The weighted sum of presets (by name) and codes, e.g. ``{"smile": 0.5, "blink": 1.0}``."""
        total, pose = np.zeros(K), HeadPose()
        for part, weight in weights.items():
            code = cls.preset(part) if isinstance(part, str) else part
            total += weight * np.asarray(code.expression)
            pose = pose + code.pose.scaled(weight)
        return cls(tuple(total), pose)

    def lerp(self, other: "MotionCode", t: float) -> "MotionCode":
        return MotionCode.blend({self: 1.0 - t, other: t})

    def with_pose(self, pose: HeadPose) -> "MotionCode":
        return replace(self, pose=pose)

    def to_tensor(self, dtype=torch.float32, device=None) -> torch.Tensor:
        """code: [K]."""
        return torch.tensor(self.expression, dtype=dtype, device=device)

    def __hash__(self):
        return hash((self.expression, self.pose))

    @classmethod
    def from_image(cls, image, reference: np.ndarray | None = None) -> "MotionCode":
        """The expression and head pose of the largest face in ``image`` (needs ``instant4d[face]``)."""
        from .face import FaceTracker
        from .media import InputError, load_image

        with FaceTracker() as tracker:
            points = tracker.mesh(load_image(image))
        if points is None:
            raise InputError(f"{image if isinstance(image, str) else 'the driving image'}: no face found")
        return cls.from_landmarks(points, reference)

    @classmethod
    def from_landmarks(
        cls, points: np.ndarray, reference: np.ndarray | None = None, neutral: np.ndarray | None = None
    ) -> "MotionCode":
        """The code of a face with landmarks ``points`` [478, 3] (pixels, MediaPipe's axes).

        ``reference``: the neutral face [478, 3] in world units that the basis is rigged on (default: the
        sample avatar's). ``neutral``: this driver's own neutral face, already canonicalised (see
        :func:`canonicalise`); when given, expressions are measured relative to it, which removes the
        driver's identity from the code (how videos are driven), and the rig is built on it.
        """
        reference = default_reference() if reference is None else np.asarray(reference, dtype=np.float64)
        canonical, rotation = canonicalise(points, reference)
        rest = reference if neutral is None else np.asarray(neutral, dtype=np.float64)
        # with the driver's own neutral face, its own rig explains its motion best
        amplitudes = fit_expression(canonical - rest, rest)
        return cls(tuple(amplitudes), HeadPose.from_rotation(rotation))


def canonicalise(points: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(canonical [478, 3], R [3, 3]): ``points`` moved onto ``reference``'s frame and scale by the
    similarity that best aligns their rigid landmarks, and the head rotation (reference -> points)."""
    points = np.asarray(points, dtype=np.float64)[: lm.NUM_LANDMARKS]
    rigid = list(lm.RIGID)
    scale, rotation, translation = procrustes(reference[rigid], points[rigid])
    return (points - translation) @ rotation / scale, rotation


@functools.lru_cache(maxsize=8)
def _fit_system(reference_bytes: bytes) -> tuple[np.ndarray, np.ndarray]:
    reference = np.frombuffer(reference_bytes).reshape(-1, 3)
    matrix = expression.expression_basis(reference).astype(np.float64)  # [478, K, 3]
    weights = np.full(lm.NUM_LANDMARKS, 0.25)
    weights[list(lm.LIPS_OUTER + lm.LIPS_INNER + lm.RIGHT_EYE + lm.LEFT_EYE + lm.RIGHT_BROW + lm.LEFT_BROW)] = 1.0
    a = matrix.transpose(0, 2, 1).reshape(-1, K)  # [478 * 3, K]
    # a face-mesh model's depth is far less reliable than its image positions: z counts a tenth
    w = (weights[:, None] * np.array([1.0, 1.0, 0.1])).reshape(-1, 1)
    scale = expression.face_scale(reference)
    gram = a.T @ (w * a) + 1e-4 * scale**2 * np.eye(K)
    return gram, (w * a).T


def fit_expression(displacement: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """amplitudes: [K] in [0, MAX_AMPLITUDE] minimising the weighted squared error between
    ``displacement`` [478, 3] and the basis (coordinate descent on the box-constrained problem)."""
    gram, projector = _fit_system(np.ascontiguousarray(reference, dtype=np.float64).tobytes())
    rhs = projector @ displacement.reshape(-1)
    code = np.zeros(K)
    for _ in range(100):
        for k in range(K):
            residual = rhs[k] - gram[k] @ code + gram[k, k] * code[k]
            code[k] = np.clip(residual / gram[k, k], 0.0, MAX_AMPLITUDE)
    return code


@functools.lru_cache(maxsize=1)
def default_reference() -> np.ndarray:
    """The neutral landmarks [478, 3] (world units) of the bundled sample portrait."""
    from .encoder import world_landmarks
    from .face import FaceObservation, sample_observation_path

    return world_landmarks(FaceObservation.load(sample_observation_path()))


def track(frames: Iterable[np.ndarray], reference: np.ndarray | None = None, relative: bool = True) -> Iterator["MotionCode | None"]:
    """One code per frame of a driving video (None where no face was found). ``relative``: measure
    expressions against the driver's first tracked frame (taken as their neutral face)."""
    from .face import FaceTracker

    reference = default_reference() if reference is None else reference
    neutral = None
    with FaceTracker(video=True) as tracker:
        for frame in frames:
            points = tracker.mesh(frame)
            if points is None:
                yield None
                continue
            if relative and neutral is None:
                neutral = canonicalise(points, reference)[0]
            yield MotionCode.from_landmarks(points, reference, neutral)
