"""The face pipeline: detection, alignment, a dense 3D face mesh and a person mask, from the models that
ship inside the ``mediapipe==0.10.14`` wheel (the optional extra ``instant4d[face]``).

A source photo becomes a :class:`FaceObservation`: the photo cropped and rotated so that the face is
upright and centred (the crop is ``CROP_SCALE`` face heights wide), the 478 mesh landmarks in crop
pixels, and the person mask. The encoder lifts an observation into Gaussians with no further use of
MediaPipe, so a saved observation (``assets/astronaut.face.safetensors``) needs only the core
dependencies.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import landmarks as lm
from .media import InputError, load_image

OBSERVATION_SIZE = 512  # side of the aligned crop, pixels
CROP_SCALE = 2.0  # crop side / face height (forehead landmark to chin)
MIN_FACE_PIXELS = 40  # faces shorter than this (forehead to chin) are refused
FACE_EXTRA = "pip install 'instant4d[face]'  (it installs mediapipe==0.10.14, whose wheel ships the face models)"


def require_mediapipe():
    """The mediapipe module, or an ImportError that says exactly what to install."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        from mediapipe.python.solutions import face_detection, face_mesh, selfie_segmentation
    except ImportError as exc:
        raise ImportError(
            "Reading faces from your own photos and videos needs the face models. Install them with:\n"
            f"    {FACE_EXTRA}\n(the bundled sample avatar, `instant4d demo` and presets work without it)"
        ) from exc
    return face_detection, face_mesh, selfie_segmentation


@dataclass
class FaceObservation:
    """One face, aligned: what the encoder needs from a photo."""

    image: np.ndarray  # [S, S, 3] uint8, the aligned crop
    landmarks: np.ndarray  # [478, 3] float32: x, y in crop pixels; z in crop pixels, head centre 0, + away
    mask: np.ndarray  # [S, S] float32 in [0, 1], the person
    faces_found: int = 1

    @property
    def size(self) -> int:
        return self.image.shape[0]

    def save(self, path) -> None:
        from safetensors.torch import save_file

        save_file(
            {
                "image": torch.from_numpy(np.ascontiguousarray(self.image)),
                "landmarks": torch.from_numpy(self.landmarks.astype(np.float32)),
                "mask": torch.from_numpy(np.rint(self.mask * 255).astype(np.uint8)),
            },
            str(path),
            metadata={"format": "instant4d.face", "version": "1"},
        )

    @classmethod
    def load(cls, path) -> "FaceObservation":
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        return cls(
            image=tensors["image"].numpy(),
            landmarks=tensors["landmarks"].numpy(),
            mask=tensors["mask"].numpy().astype(np.float32) / 255.0,
        )


class FaceTracker:
    """MediaPipe face detection + face mesh + selfie segmentation. ``video=True`` tracks the face from
    frame to frame (faster, steadier) instead of detecting it anew in each image."""

    def __init__(self, video: bool = False):
        face_detection, face_mesh, selfie_segmentation = require_mediapipe()
        self._detector = face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5)
        self._mesh = face_mesh.FaceMesh(
            static_image_mode=not video, max_num_faces=1, refine_landmarks=True, min_detection_confidence=0.5
        )
        self._segmenter = selfie_segmentation.SelfieSegmentation(model_selection=0)

    def close(self) -> None:
        for model in (self._detector, self._mesh, self._segmenter):
            model.close()

    def __enter__(self) -> "FaceTracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def mesh(self, image: np.ndarray) -> np.ndarray | None:
        """landmarks: [478, 3] in pixels of ``image`` (z scaled like x), or None when no face is found."""
        result = self._mesh.process(np.ascontiguousarray(image))
        if not result.multi_face_landmarks:
            return None
        height, width = image.shape[:2]
        points = np.array([[p.x, p.y, p.z] for p in result.multi_face_landmarks[0].landmark], dtype=np.float64)
        return (points * np.array([width, height, width])).astype(np.float32)

    def faces(self, image: np.ndarray) -> list[tuple[float, float, float, float]]:
        """Face boxes (x, y, width, height) in pixels, largest first."""
        result = self._detector.process(np.ascontiguousarray(image))
        height, width = image.shape[:2]
        boxes = []
        for detection in result.detections or []:
            box = detection.location_data.relative_bounding_box
            boxes.append((box.xmin * width, box.ymin * height, box.width * width, box.height * height))
        return sorted(boxes, key=lambda b: -b[2] * b[3])

    def observe(self, source, name: str = "the photo") -> FaceObservation:
        """Detect the largest face of a photo, align it and measure it."""
        photo = load_image(source)
        if isinstance(source, (str, os.PathLike)):
            name = str(source)
        boxes = self.faces(photo)
        if len(boxes) > 1:
            x, y, w, h = boxes[0]
            warnings.warn(f"{name}: found {len(boxes)} faces; using the largest ({w:.0f}x{h:.0f} px at {x:.0f},{y:.0f})")
        if boxes:
            x, y, w, h = boxes[0]
            side = 2.2 * max(w, h)
            first = crop_transform((x + w / 2, y + h / 2), side, 0.0)
            points = self.mesh(warp(photo, first))
            points = None if points is None else apply_inverse(first, points)
        else:
            points = self.mesh(photo)
        if points is None:
            raise InputError(
                f"{name}: no face found. Use a photo with one face clearly visible, roughly frontal, "
                "not covered, at least 100 pixels tall"
            )
        centre, height, roll = face_frame(points)
        if height < MIN_FACE_PIXELS:
            raise InputError(
                f"{name}: the face is only {height:.0f} pixels tall; use a photo where it is at least "
                f"{MIN_FACE_PIXELS} (better 200+) pixels tall"
            )
        aligned = crop_transform(centre, CROP_SCALE * height, roll)
        image = warp(photo, aligned)
        refined = self.mesh(image)
        if refined is None:  # keep the first measurement, moved into the aligned crop
            refined = apply(aligned, points)
        mask = self._segmenter.process(image).segmentation_mask.astype(np.float32)
        return FaceObservation(image=image, landmarks=refined, mask=np.clip(mask, 0, 1), faces_found=max(1, len(boxes)))


def face_frame(points: np.ndarray) -> tuple[tuple[float, float], float, float]:
    """(centre, height, roll) of a face from its landmarks in pixels: the centre sits a tenth of a face
    height above the forehead-chin midpoint (to take in hair); roll is the eye line's angle."""
    top, chin = points[lm.FOREHEAD, :2], points[lm.CHIN, :2]
    height = float(np.linalg.norm(chin - top))
    right_eye = points[list(lm.RIGHT_EYE), :2].mean(0)
    left_eye = points[list(lm.LEFT_EYE), :2].mean(0)
    roll = math.atan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0])
    up = (top - chin) / max(height, 1e-6)
    centre = (top + chin) / 2 + 0.1 * height * up
    return (float(centre[0]), float(centre[1])), height, roll


def crop_transform(centre, side: float, roll: float, size: int = OBSERVATION_SIZE) -> np.ndarray:
    """[2, 3] affine map from photo pixels to the pixels of a ``size`` crop of ``side`` photo pixels
    centred at ``centre`` and rotated by ``-roll`` (so a face rolled by ``roll`` comes out upright)."""
    scale = size / side
    c, s = math.cos(-roll) * scale, math.sin(-roll) * scale
    rotation = np.array([[c, -s], [s, c]])
    offset = np.array([size / 2, size / 2]) - rotation @ np.asarray(centre, dtype=np.float64)
    return np.concatenate([rotation, offset[:, None]], axis=1)


def apply(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map landmarks [P, 3] through a similarity transform; z scales like x and y."""
    scale = math.sqrt(abs(np.linalg.det(transform[:, :2])))
    out = points.astype(np.float64).copy()
    out[:, :2] = points[:, :2] @ transform[:, :2].T + transform[:, 2]
    out[:, 2] = points[:, 2] * scale
    return out.astype(np.float32)


def apply_inverse(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    inverse = np.linalg.inv(np.vstack([transform, [0, 0, 1]]))[:2]
    return apply(inverse, points)


def warp(photo: np.ndarray, transform: np.ndarray, size: int = OBSERVATION_SIZE) -> np.ndarray:
    """The ``size`` x ``size`` crop of ``photo`` that ``transform`` maps it to (edges replicated)."""
    from PIL import Image

    inverse = np.linalg.inv(np.vstack([transform, [0, 0, 1]]))[:2]
    # PIL samples at pixel corners: shift by half a pixel on both sides
    shift = inverse[:, :2] @ np.array([0.5, 0.5]) + inverse[:, 2] - 0.5
    coefficients = (*inverse[0, :2], shift[0], *inverse[1, :2], shift[1])
    height, width = photo.shape[:2]
    pad = max(height, width)
    padded = np.pad(photo, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    coefficients = (coefficients[0], coefficients[1], coefficients[2] + pad, coefficients[3], coefficients[4], coefficients[5] + pad)
    out = Image.fromarray(padded).transform((size, size), Image.AFFINE, coefficients, resample=Image.BICUBIC)
    return np.asarray(out)


def observe(source) -> FaceObservation:
    """One photo (path, array or PIL image) -> its aligned :class:`FaceObservation`."""
    with FaceTracker() as tracker:
        return tracker.observe(source)


def sample_observation_path() -> Path:
    return Path(__file__).resolve().parent.parent / "assets" / "astronaut.face.safetensors"
