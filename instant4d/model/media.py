"""Reading images and videos, writing mp4 files: every bad input ends in an ``InputError`` that
says what is wrong and what to do.

Images come back as uint8 RGB arrays [H, W, 3] (greyscale, palette, RGBA, 16-bit and float images are
converted). Videos are read and written frame by frame with PyAV, so a clip of any length streams
through in constant memory, and a writer closed by an exception still leaves a playable file holding
every frame written before it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

MIN_IMAGE_SIDE = 64
MAX_IMAGE_SIDE = 4096
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".gif")


class InputError(ValueError):
    """A photo, video or avatar file that instant4d cannot use; the message says why."""


def load_image(source) -> np.ndarray:
    """image: [H, W, 3] uint8 RGB from a path, a PIL image, a numpy array or a torch tensor
    ([H, W], [H, W, 1|3|4], uint8, uint16 or float in [0, 1])."""
    if isinstance(source, (str, os.PathLike)):
        array = _read_image_file(Path(source))
        name = str(source)
    elif hasattr(source, "convert") and hasattr(source, "mode"):  # a PIL image
        array = _pil_to_array(source)
        name = "the image"
    else:
        array = np.asarray(source.detach().cpu().numpy() if hasattr(source, "detach") else source)
        name = "the image array"
    return _check_size(_to_rgb8(array, name), name)


def _read_image_file(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with Image.open(path) as image:
            image.load()
            return _pil_to_array(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: cannot be read as an image ({exc}); is the file complete and a JPEG/PNG?") from exc


def _pil_to_array(image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        return np.asarray(image, dtype=np.float64) / 65535.0
    if image.mode == "F":
        return np.asarray(image, dtype=np.float64)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        return np.asarray(image.convert("RGBA"))
    return np.asarray(image.convert("RGB"))


def _to_rgb8(array: np.ndarray, name: str) -> np.ndarray:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise InputError(f"{name} has shape {list(array.shape)}; expected [H, W], [H, W, 3] or [H, W, 4]")
    if array.dtype == np.uint8:
        values = array.astype(np.float64) / 255.0
    elif array.dtype == np.uint16:
        values = array.astype(np.float64) / 65535.0
    elif np.issubdtype(array.dtype, np.floating):
        values = array.astype(np.float64)
        if not np.isfinite(values).all():
            raise InputError(f"{name} contains NaN or infinite values")
        if values.max(initial=0.0) > 1.0 + 1e-6:
            values = values / 255.0
    else:
        raise InputError(f"{name} has dtype {array.dtype}; expected uint8, uint16 or float")
    if values.shape[-1] == 4:  # composite transparent pixels over white, as viewers show them
        alpha = values[..., 3:]
        values = values[..., :3] * alpha + (1.0 - alpha)
    return np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)


def _check_size(image: np.ndarray, name: str) -> np.ndarray:
    height, width = image.shape[:2]
    if min(height, width) < MIN_IMAGE_SIDE:
        raise InputError(
            f"{name} is {width}x{height} pixels; a portrait needs at least {MIN_IMAGE_SIDE} pixels on each "
            "side (ideally the face alone 200+ pixels tall)"
        )
    if max(height, width) > MAX_IMAGE_SIDE:
        from PIL import Image

        scale = MAX_IMAGE_SIDE / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        warnings.warn(f"{name} is {width}x{height} pixels; working on a copy downscaled to {size[0]}x{size[1]}")
        image = np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS))
    return image


def is_video(path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def read_video(path) -> Iterator[np.ndarray]:
    """Frames [H, W, 3] uint8 of a video file, decoded one at a time."""
    import av

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise InputError(f"{path}: cannot be opened as a video ({exc})") from exc
    with container:
        if not container.streams.video:
            raise InputError(f"{path}: has no video stream")
        try:
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as exc:
            raise InputError(f"{path}: the video is damaged after some frames ({exc})") from exc


def video_frame_rate(path, default: float = 25.0) -> float:
    import av

    try:
        with av.open(str(path)) as container:
            rate = container.streams.video[0].average_rate
            return float(rate) if rate else default
    except (av.error.FFmpegError, OSError, IndexError):
        return default


class VideoWriter:
    """An H.264 mp4 written frame by frame; use as a context manager so that an exception still
    closes the file with every frame written so far."""

    def __init__(self, path, fps: float = 25.0):
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps = fps
        self.frames = 0
        self._container = av.open(str(self.path), "w")
        self._stream = None

    def write(self, frame) -> None:
        """frame: [H, W, 3] uint8 array, or float tensor/array in [0, 1]."""
        import av

        frame = _frame_to_uint8(frame)
        if self._stream is None:
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
            self._stream = self._container.add_stream(codec, rate=round(self.fps))
            self._stream.width, self._stream.height = frame.shape[1] - frame.shape[1] % 2, frame.shape[0] - frame.shape[0] % 2
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": "20"} if codec == "libx264" else {}
        frame = frame[: self._stream.height, : self._stream.width]
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._container is None:
            return
        if self._stream is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()
        self._container = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _frame_to_uint8(frame) -> np.ndarray:
    if hasattr(frame, "detach"):
        frame = frame.detach().float().cpu().numpy()
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        frame = np.clip(np.rint(frame * 255.0), 0, 255).astype(np.uint8)
    return frame


def save_image(path, image) -> None:
    from PIL import Image

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_frame_to_uint8(image)).save(path)
