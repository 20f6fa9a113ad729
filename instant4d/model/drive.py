"""What can drive an avatar, turned into a stream of motion codes: a video file (faces tracked frame by
frame), a face image, a preset name, or motion codes."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

from .media import InputError, is_video, read_video, video_frame_rate
from .motion import MotionCode, track

PRESET_SECONDS = 2.0  # a still driver (image or preset) is held this long


def driving_codes(driver, relative: bool = True, fps: float = 25.0) -> tuple[Iterator[MotionCode | None], int | None, float]:
    """(codes, frame count if known, frame rate): codes are None for video frames without a face."""
    if isinstance(driver, MotionCode):
        return iter([driver] * int(PRESET_SECONDS * fps)), int(PRESET_SECONDS * fps), fps
    if isinstance(driver, str) and driver in MotionCode.presets():
        code = MotionCode.preset(driver)
        return iter([code] * int(PRESET_SECONDS * fps)), int(PRESET_SECONDS * fps), fps
    if isinstance(driver, (str, Path)):
        path = Path(driver)
        if not path.exists():
            raise InputError(
                f"{driver}: neither a file nor a preset (presets: {', '.join(MotionCode.presets())})"
            )
        if is_video(path):
            return track(read_video(path), relative=relative), _frame_count(path), video_frame_rate(path)
        code = MotionCode.from_image(path)
        return iter([code] * int(PRESET_SECONDS * fps)), int(PRESET_SECONDS * fps), fps
    if not isinstance(driver, Iterable):
        raise InputError(f"cannot drive an avatar by {type(driver).__name__}: give a video, an image, a preset or MotionCodes")
    return iter(driver), len(driver) if hasattr(driver, "__len__") else None, fps


def _frame_count(path: Path) -> int | None:
    import av

    try:
        with av.open(str(path)) as container:
            return container.streams.video[0].frames or None
    except (av.error.FFmpegError, OSError, IndexError):
        return None
