"""The ``instant4d`` command line.

    instant4d demo [-o DIR]                          the bundled portrait, animated (core dependencies only)
    instant4d create PHOTO -o AVATAR                 photo -> avatar file (needs instant4d[face])
    instant4d animate PHOTO|AVATAR --driver VIDEO|IMAGE|PRESET -o OUT.mp4 [--orbit DEG]
    instant4d export AVATAR -o OUT.ply               standard 3DGS PLY
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

from .model.encoder import EncoderConfig

DEMO_PRESETS = ("smile", "open_mouth", "blink", "brows_up", "surprise", "frown", "wink", "pucker", "grin")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    warnings.showwarning = _print_warning
    try:
        return args.run(args)
    except ImportError as exc:  # the face extra is missing
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:  # InputError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; frames already written are kept", file=sys.stderr)
        return 130


def _print_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="instant4d", description="One portrait photo -> an animatable 3D Gaussian head.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="animate the bundled sample portrait (no extra dependencies)")
    demo.add_argument("-o", "--output", default="instant4d-demo", help="output folder (default ./instant4d-demo)")
    demo.add_argument("--size", type=int, default=256, help="frame side in pixels (default 256)")
    demo.add_argument("--resolution", type=int, default=128, help="encoder grid: up to resolution^2 Gaussians (default 128)")
    demo.add_argument("--frames-per-preset", type=int, default=7)
    demo.set_defaults(run=run_demo)

    create = commands.add_parser("create", help="encode a photo into an avatar file (needs instant4d[face])")
    create.add_argument("photo")
    create.add_argument("-o", "--output", required=True, help="avatar file (.safetensors)")
    create.add_argument("--resolution", type=int, default=EncoderConfig.resolution,
                        help=f"encoder grid: up to resolution^2 Gaussians (default {EncoderConfig.resolution})")
    create.set_defaults(run=run_create)

    animate = commands.add_parser("animate", help="drive a photo or avatar by a video, an image or a preset")
    animate.add_argument("source", help="a photo, or an avatar file from `instant4d create`")
    animate.add_argument("--driver", required=True, help="a video, a face image, or a preset name")
    animate.add_argument("-o", "--output", required=True, help="output .mp4")
    animate.add_argument("--orbit", type=float, nargs="?", const=30.0, default=0.0, help="swing the camera +-DEG (default 30)")
    animate.add_argument("--size", type=int, default=512)
    animate.add_argument("--absolute", action="store_true", help="driving video: expressions against a generic neutral face, not its first frame")
    animate.set_defaults(run=run_animate)

    export = commands.add_parser("export", help="write an avatar (or photo) as a standard 3DGS PLY")
    export.add_argument("avatar")
    export.add_argument("-o", "--output", required=True, help="output .ply")
    export.set_defaults(run=run_export)
    return parser


def _load_source(source: str, resolution: int = EncoderConfig.resolution):
    from .model import Avatar, Encoder
    from .model.media import InputError

    path = Path(source)
    if not path.is_file():
        raise InputError(f"{source}: no such file")
    if path.suffix == ".safetensors":
        return Avatar.load(path)
    return Avatar.from_image(path, Encoder(EncoderConfig(resolution=resolution)))


def run_create(args) -> int:
    start = time.perf_counter()
    avatar = _load_source(args.photo, args.resolution)
    avatar.save(args.output)
    print(f"{args.output}: {avatar.num_gaussians} Gaussians ({time.perf_counter() - start:.1f} s)")
    return 0


def run_animate(args) -> int:
    avatar = _load_source(args.source)
    report = avatar.render_video(args.driver, args.output, size=args.size, orbit=args.orbit, relative=not args.absolute)
    print(f"{report.path}: {report.frames} frames" + (f", {report.frames_without_face} without a face" if report.frames_without_face else ""))
    return 0


def run_export(args) -> int:
    avatar = _load_source(args.avatar)
    avatar.export_ply(args.output)
    print(f"{args.output}: {avatar.num_gaussians} Gaussians")
    return 0


def demo_codes(frames_per_preset: int):
    """(code, preset name) per frame: from neutral into each preset and back, eased."""
    from .model import MotionCode

    neutral = MotionCode()
    for name in DEMO_PRESETS:
        target = MotionCode.preset(name)
        for i in range(frames_per_preset):
            phase = math.sin(math.pi * (i + 1) / (frames_per_preset + 1))  # 0 -> 1 -> 0
            yield neutral.lerp(target, phase), name


def run_demo(args) -> int:
    import torch
    from tqdm import tqdm

    from .model import Avatar, View
    from .model.media import VideoWriter

    start = time.perf_counter()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    avatar = Avatar.sample(EncoderConfig(resolution=args.resolution))
    avatar.export_ply(out / "neutral.ply")
    codes = list(demo_codes(args.frames_per_preset))
    sheet = []
    with VideoWriter(out / "demo.mp4", fps=12) as writer, torch.no_grad():
        for index, (code, name) in enumerate(tqdm(codes, desc="rendering demo.mp4", unit="frame")):
            yaw = 30.0 * math.sin(2 * math.pi * index / len(codes))
            frame = avatar.render(motion=code, size=args.size, view=View(yaw=yaw))
            writer.write(frame)
            if index % args.frames_per_preset == args.frames_per_preset // 2:  # the preset at its peak
                sheet.append((frame, f"{name}  yaw {yaw:+.0f}"))
    contact_sheet(sheet, out / "contact_sheet.png")
    print(f"{out}/: demo.mp4 ({len(codes)} frames), neutral.ply ({avatar.num_gaussians} Gaussians), contact_sheet.png "
          f"in {time.perf_counter() - start:.0f} s")
    return 0


def contact_sheet(tiles, path, columns: int = 3) -> None:
    """Labelled frames [H, W, 3] in a grid, saved as PNG."""
    from PIL import Image, ImageDraw

    from .model.media import _frame_to_uint8

    height, width = tiles[0][0].shape[:2]
    rows = math.ceil(len(tiles) / columns)
    sheet = Image.new("RGB", (columns * width, rows * (height + 16)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (frame, label) in enumerate(tiles):
        x, y = (i % columns) * width, (i // columns) * (height + 16)
        sheet.paste(Image.fromarray(_frame_to_uint8(frame)), (x, y + 16))
        draw.text((x + 4, y + 2), label, fill="black")
    sheet.save(path)


if __name__ == "__main__":
    sys.exit(main())
