"""Measure the avatar's acceptance numbers on CPU (needs the ``face`` extra; matplotlib and
scikit-image for the extra test photos):

1. fidelity: face-region PSNR of the neutral frontal render against the aligned photo;
2. presets: re-detect the face mesh on our renders and check that each preset moves the landmarks
   the way its name says (mouth opening, eye openings, brow heights, mouth width, corner lift);
3. coverage: alpha over the (re-detected) face at +-30 degrees of camera yaw;
4. transfer: drive the sample avatar by a video of another face (a render of the Grace Hopper avatar
   playing the presets) and compare the landmark expression features frame by frame;
5. the demo's wall time and the PLY round trip.

    PYTHONPATH=. python scripts/evaluate_avatar.py [--size 512] [--markdown out.md]
        [--photo NAME=PATH ...] [--only-extra] [--skip-transfer] [--skip-demo] [--drive PATH ...]
        [--resolution GRID]

Photos: the bundled astronaut (NASA, public domain), Grace Hopper (US Navy photograph, public domain;
shipped in matplotlib's sample data), "camera" (scikit-image, CC0; greyscale, three-quarter view),
and any given with --photo. docs/avatar.md adds two official White House portraits (US government
works, public domain) found in face_recognition 1.3.0's source distribution on PyPI:
``pip download --no-deps --no-binary :all: face_recognition==1.3.0``, then
``tests/test_images/obama.jpg`` and ``biden.jpg`` inside it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from instant4d.model import Avatar, Encoder, EncoderConfig, MotionCode, View
from instant4d.model import landmarks as lm
from instant4d.model.encoder import rasterize_polygon
from instant4d.model.face import FaceTracker, observe
from instant4d.model.media import VideoWriter, read_video
from instant4d.model.ply import read_ply

ROOT = Path(__file__).resolve().parent.parent

# what each preset must do to the re-detected landmarks: (feature, +1 grows / -1 shrinks)
EXPECTED = {
    "smile": [("corner_lift", +1)],
    "open_mouth": [("mouth_open", +1)],
    "blink": [("eye_left", -1), ("eye_right", -1)],
    "wink": [("eye_left", -1)],
    "brows_up": [("brow_left", +1), ("brow_right", +1)],
    "frown": [("brow_left", -1), ("brow_right", -1), ("corner_lift", -1)],
    "surprise": [("mouth_open", +1), ("brow_left", +1), ("brow_right", +1)],
    "pucker": [("mouth_width", -1)],
    "grin": [("mouth_width", +1), ("mouth_open", +1)],
}
MIN_CHANGE = 0.003  # in face heights: smaller changes count as "did not move"
OUTLINE_PIXELS = 2  # holes this close to the render's silhouette are reported apart (its soft edge)


def photos() -> dict[str, object]:
    import matplotlib
    import skimage.data

    sample = Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    return {"astronaut": ROOT / "instant4d" / "assets" / "astronaut.jpg", "grace_hopper": sample, "cameraman": skimage.data.camera()}


def features(points: np.ndarray) -> dict[str, float]:
    """Expression features of landmarks [478, 3] in pixels, in units of the face height."""
    p = points[:, :2].astype(np.float64)
    h = np.linalg.norm(p[lm.FOREHEAD] - p[lm.CHIN])

    def dist(a, b):
        return float(np.linalg.norm(p[a] - p[b]) / h)

    corners = p[list(lm.MOUTH_CORNERS)].mean(0)
    lips = p[[lm.UPPER_LIP_CENTRE, lm.LOWER_LIP_CENTRE]].mean(0)
    up = (p[lm.FOREHEAD] - p[lm.CHIN]) / h
    return {
        "mouth_open": dist(lm.UPPER_LIP_CENTRE, lm.LOWER_LIP_CENTRE),
        "mouth_width": dist(*lm.MOUTH_CORNERS),
        "corner_lift": float((corners - lips) @ up / h),
        "eye_left": dist(386, 374),
        "eye_right": dist(159, 145),
        "brow_left": float((p[list(lm.LEFT_BROW)].mean(0) - p[list(lm.LEFT_EYE)].mean(0)) @ up / h),
        "brow_right": float((p[list(lm.RIGHT_BROW)].mean(0) - p[list(lm.RIGHT_EYE)].mean(0)) @ up / h),
    }


def render(avatar, size, **kwargs):
    with torch.no_grad():
        image, alpha = avatar.render(size=size, return_alpha=True, **kwargs)
    return (image.numpy() * 255).round().astype(np.uint8), alpha.numpy()


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    err = ((a.astype(np.float64) - b.astype(np.float64)) ** 2)[mask].mean()
    return float(10 * math.log10(255.0**2 / max(err, 1e-12)))


def evaluate_photo(name, source, size, tracker, config: EncoderConfig = EncoderConfig()) -> dict:
    obs = observe(source)
    avatar = Avatar(Encoder(config).encode(obs), config)
    result = {"photo": name, "gaussians": avatar.num_gaussians}
    neutral, _ = render(avatar, size)
    reference = obs.image if size == obs.size else np.asarray(
        __import__("PIL.Image").Image.fromarray(obs.image).resize((size, size), 1))  # fmt: skip
    face = rasterize_polygon(obs.landmarks[list(lm.FACE_OVAL), :2] * size / obs.size, size)
    result["psnr_face_db"] = psnr(neutral, reference, face)
    base_points = tracker.mesh(neutral)
    base = features(base_points)
    presets = {}
    for preset, wanted in EXPECTED.items():
        image, _ = render(avatar, size, motion=MotionCode.preset(preset))
        points = tracker.mesh(image)
        if points is None:
            presets[preset] = {"ok": False, "why": "no face re-detected"}
            continue
        moved = {k: v - base[k] for k, v in features(points).items()}
        ok = all(sign * moved[feature] > MIN_CHANGE for feature, sign in wanted)
        presets[preset] = {"ok": ok, **{feature: round(moved[feature], 4) for feature, _ in wanted}}
    result["presets"] = presets
    for yaw in (-30, 30):
        image, alpha = render(avatar, size, view=View(yaw=yaw))
        points = tracker.mesh(image)
        if points is None:
            result[f"alpha_yaw{yaw:+d}"] = {"min": float("nan"), "covered": float("nan"), "why": "no face re-detected"}
            continue
        region = rasterize_polygon(points[list(lm.FACE_OVAL), :2], size)
        holes = region & (alpha < 0.99)
        # holes within OUTLINE_PIXELS of the render's silhouette (alpha < 0.5): its anti-aliased edge
        outside = torch.as_tensor(alpha < 0.5, dtype=torch.float32)[None, None]
        near_outline = torch.nn.functional.max_pool2d(outside, 2 * OUTLINE_PIXELS + 1, stride=1, padding=OUTLINE_PIXELS)[0, 0].numpy() > 0
        result[f"alpha_yaw{yaw:+d}"] = {
            "min": float(alpha[region].min()),
            "covered": float(1 - holes.sum() / region.sum()),
            "holes": int(holes.sum()),
            "holes_on_outline": int((holes & near_outline).sum()),
        }
    return result


def evaluate_transfer(sources, size: int, tracker, workdir: Path) -> dict:
    """Drive the astronaut by a video of Grace Hopper's avatar playing presets; compare landmark
    expression features (each relative to its video's first frame) of driver and output."""
    driver_avatar = Avatar(Encoder().encode(observe(sources["grace_hopper"])))
    target = Avatar.sample()
    script = ["neutral", "open_mouth", "smile", "blink", "brows_up", "surprise", "frown", "neutral"]
    codes = []
    for a, b in zip(script, script[1:]):
        codes += [MotionCode.preset(a).lerp(MotionCode.preset(b), t) for t in np.linspace(0, 1, 5, endpoint=False)]
    driver_path, out_path = workdir / "driver.mp4", workdir / "driven.mp4"
    with VideoWriter(driver_path, fps=10) as writer, torch.no_grad():
        for code in codes:
            writer.write(driver_avatar.render(motion=code, size=size))
    report = target.render_video(driver_path, out_path, size=size, progress=False)
    driver = [tracker.mesh(f) for f in read_video(driver_path)]
    driven = [tracker.mesh(f) for f in read_video(out_path)]
    pairs = [(features(a), features(b)) for a, b in zip(driver, driven) if a is not None and b is not None]
    d0, o0 = pairs[0]
    keys = list(d0)
    delta_d = np.array([[d[k] - d0[k] for k in keys] for d, _ in pairs])
    delta_o = np.array([[o[k] - o0[k] for k in keys] for _, o in pairs])
    correlation = {
        k: float(np.corrcoef(delta_d[:, i], delta_o[:, i])[0, 1]) if delta_d[:, i].std() > 1e-6 and delta_o[:, i].std() > 1e-6 else float("nan")
        for i, k in enumerate(keys)
    }
    return {
        "frames": len(codes),
        "frames_compared": len(pairs),
        "frames_without_face": report.frames_without_face,
        "expression_distance": float(np.abs(delta_d - delta_o).mean()),
        "frozen_avatar_distance": float(np.abs(delta_d).mean()),
        "correlation": correlation,
    }


def evaluate_drives(paths, size: int, tracker) -> list[dict]:
    """Drive the sample avatar by photos of another face (MotionCode.from_image): per photo, the
    landmark features of the driven render minus the neutral render's, and the photo's own features."""
    import PIL.Image

    if not paths:
        return []
    avatar = Avatar.sample()
    base = features(tracker.mesh(render(avatar, size)[0]))
    results = []
    for path in paths:
        driven = tracker.mesh(render(avatar, size, motion=MotionCode.from_image(path))[0])
        photo = tracker.mesh(np.asarray(PIL.Image.open(path).convert("RGB")))
        results.append({
            "driver": str(path),
            "moved": None if driven is None else {k: round(v - base[k], 4) for k, v in features(driven).items()},
            "driver_features": None if photo is None else {k: round(v, 4) for k, v in features(photo).items()},
            "neutral_features": {k: round(v, 4) for k, v in base.items()},
        })
    return results


def time_demo(workdir: Path) -> float:
    start = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-m", "instant4d.cli", "demo", "-o", str(workdir / "demo")], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - start


def ply_round_trip(workdir: Path) -> float:
    avatar = Avatar.sample()
    avatar.export_ply(workdir / "a.ply")
    back = read_ply(workdir / "a.ply")
    g = avatar.gaussians
    return float(max((back[k] - getattr(g, k)).abs().max() for k in ("means", "quats", "colors")))


def holes(alpha: dict) -> str:
    return "no face" if "holes" not in alpha else f"{alpha['holes']} ({alpha['holes_on_outline']})"


def holes_inside(alpha: dict) -> str:
    """Pixels under 0.99 over the face farther than OUTLINE_PIXELS from the render's silhouette: the
    see-through gaps, apart from the silhouette's anti-aliased edge that the re-detected outline
    can run over."""
    return "no face" if "holes" not in alpha else str(alpha["holes"] - alpha["holes_on_outline"])


def markdown(results: dict) -> str:
    lines = ["| photo | Gaussians | face PSNR (dB) | presets moving as named | alpha>=0.99 over face at -30 / +30 deg (min alpha) | pixels under 0.99 (of them on the silhouette's edge) | holes: under 0.99 off the edge |",
             "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in results["photos"]:
        ok = [p for p, v in r["presets"].items() if v["ok"]]
        bad = [p for p, v in r["presets"].items() if not v["ok"]]
        a, b = r["alpha_yaw-30"], r["alpha_yaw+30"]
        lines.append(
            f"| {r['photo']} | {r['gaussians']} | {r['psnr_face_db']:.2f} | {len(ok)}/{len(r['presets'])}"
            + (f" (not: {', '.join(bad)})" if bad else "")
            + f" | {100 * a['covered']:.2f}% / {100 * b['covered']:.2f}% ({a['min']:.3f} / {b['min']:.3f})"
            + f" | {holes(a)} / {holes(b)} | {holes_inside(a)} / {holes_inside(b)} |"
        )
    t = results.get("transfer")
    lines += [] if t is None else [
        "",
        f"Transfer (astronaut driven by a {t['frames']}-frame video of the Grace Hopper avatar, {t['frames_compared']} frames "
        f"re-detected): landmark expression distance {t['expression_distance']:.4f} face heights "
        f"(a frozen avatar: {t['frozen_avatar_distance']:.4f}); per-feature correlation "
        + ", ".join(f"{k} {v:.2f}" for k, v in t["correlation"].items()),
    ]
    lines += [
        "",
        f"Demo wall time: {results['demo_seconds']:.1f} s; PLY round trip max error: {results['ply_max_error']:.2e}",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--skip-transfer", action="store_true")
    parser.add_argument("--photo", action="append", default=[], metavar="NAME=PATH", help="another photo to evaluate")
    parser.add_argument("--only-extra", action="store_true", help="evaluate only the --photo photos")
    parser.add_argument("--resolution", type=int, default=EncoderConfig.resolution,
                        help="the encoder's Gaussian grid side for the photos (default: the default config's)")
    parser.add_argument("--drive", action="append", default=[], type=Path, metavar="PATH",
                        help="also drive the sample avatar by this photo of another face")
    args = parser.parse_args()
    from tqdm import tqdm

    extra = {}
    for item in args.photo:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            parser.error(f"--photo takes NAME=PATH of an existing file, got {item!r}")
        extra[name] = Path(path)
    sources = extra if args.only_extra else photos() | extra
    results = {"size": args.size, "photos": []}
    with FaceTracker() as tracker, tempfile.TemporaryDirectory() as tmp:
        for name, source in tqdm(sources.items(), desc="photos"):
            config = EncoderConfig(resolution=args.resolution)
            results["photos"].append(evaluate_photo(name, source, args.size, tracker, config))
            print(json.dumps(results["photos"][-1]), flush=True)
        results["drives"] = evaluate_drives(args.drive, args.size, tracker)
        for drive in results["drives"]:
            print(json.dumps(drive), flush=True)
        if not args.skip_transfer:
            results["transfer"] = evaluate_transfer(photos(), 256, tracker, Path(tmp))
            print(json.dumps(results["transfer"]), flush=True)
        results["ply_max_error"] = ply_round_trip(Path(tmp))
        results["demo_seconds"] = float("nan") if args.skip_demo else time_demo(Path(tmp))
    text = markdown(results)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
