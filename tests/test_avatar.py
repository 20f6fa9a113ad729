"""The avatar with the core dependencies only: the bundled sample, motion codes, rendering through
instant4d.rasterization (PyTorch twins on CPU, small sizes), files, bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from instant4d.model import Avatar, EncoderConfig, HeadPose, InputError, MotionCode, View
from instant4d.model import basis as rig
from instant4d.model import landmarks as lm
from instant4d.model.encoder import pull_push, rasterize_polygon, rasterize_triangles
from instant4d.model.geometry import rotation_from_angles
from instant4d.model.media import VideoWriter, load_image, read_video
from instant4d.model.motion import default_reference
from instant4d.model.ply import PROPERTIES, read_ply
from tolerance import assert_close


@pytest.fixture(scope="module")
def avatar():
    return Avatar.sample(EncoderConfig(resolution=64))


def project(avatar, points, size, view=View()):
    """Pixel coordinates [P, 2] of world points [P, 3] seen from ``view`` (default: frontal)."""
    viewmat, K = view.cameras(avatar.config, size)
    cam = points @ viewmat[:3, :3].T + viewmat[:3, 3]
    uv = cam @ K.T
    return uv[:, :2] / uv[:, 2:]


def test_sample_avatar_is_a_valid_gaussian_scene(avatar):
    g = avatar.gaussians
    n = avatar.num_gaussians
    assert n > 1000
    assert g.basis.shape == (n, len(MotionCode.names()), 3) and g.opacity_basis.shape == (n, len(MotionCode.names()))
    for name in ("means", "quats", "scales", "opacities", "colors", "basis", "rigid"):
        assert torch.isfinite(getattr(g, name)).all(), name
    assert (g.scales > 0).all() and ((g.opacities >= 0) & (g.opacities <= 1)).all()
    assert ((g.colors >= 0) & (g.colors <= 1)).all() and ((g.rigid >= 0) & (g.rigid <= 1)).all()


def test_neutral_frontal_render_covers_the_face(avatar):
    size = 64
    image, alpha = avatar.render(size=size, return_alpha=True)
    assert image.shape == (size, size, 3) and alpha.shape == (size, size)
    face = project(avatar, avatar.gaussians.landmarks[list(lm.FACE_OVAL)], size).round().long()
    centre = face.float().mean(0).long()
    assert alpha[centre[1] - 4 : centre[1] + 4, centre[0] - 4 : centre[0] + 4].min() > 0.99
    assert alpha[0, 0] < 0.01  # the photo's background is not part of the avatar


def test_avatar_frames_do_not_depend_on_the_tile_size(avatar):
    """The renderer's 8x8 tiles (RENDER_TILE_SIZE, chosen for speed) draw the frame that gsplat's
    16x16 tiles draw: the same Gaussians reach each pixel in the same order, so only float rounding
    of the per-tile sums may differ (1e-5)."""
    codes, poses = avatar.code_tensors(MotionCode.preset("smile"), HeadPose(yaw=12, pitch=-4))
    with torch.no_grad():
        renderers = [avatar.renderer(48, View(yaw=20), tile_size=tile) for tile in (8, 16, 5)]
        frames = [render(codes, poses) for render in renderers]
        counts = [int(render(codes, poses, max_intersections=1 << 20)[1]) for render in renderers]
    assert counts[1] < counts[0] < counts[2]  # the tiles really are 8, 16 and 5 px: more tiles, more intersections
    for image, alpha in frames[1:]:
        assert_close(image, frames[0][0], "image", atol=1e-5, rtol=0)
        assert_close(alpha, frames[0][1], "alpha", atol=1e-5, rtol=0)
    assert 0.2 < float(frames[0][1].mean()) < 0.9  # the head fills part of the frame


def test_turned_views_leave_no_holes_over_the_face():
    """Camera +-30 degrees around: the face (its landmarks' outline, projected) stays opaque; without
    the closed back of the head, the background that the person mask left out beside the near cheek
    shows through."""
    size = 128

    def holes(config):
        avatar = Avatar.sample(config)
        counts = []
        for yaw in (-30, 30):
            with torch.no_grad():
                _, alpha = avatar.render(size=size, view=View(yaw=yaw), return_alpha=True)
            outline = project(avatar, avatar.gaussians.landmarks[list(lm.FACE_OVAL)], size, View(yaw=yaw))
            counts.append(int((alpha.numpy()[rasterize_polygon(outline.numpy(), size)] < 0.99).sum()))
        return counts

    assert holes(EncoderConfig(resolution=128)) == [0, 0]
    assert sum(holes(EncoderConfig(resolution=128, back_of_head=False))) > 10


def test_open_mouth_reveals_a_dark_interior():
    avatar, size = Avatar.sample(EncoderConfig(resolution=128)), 128
    code = MotionCode.preset("open_mouth")
    seam = avatar.gaussians.landmarks[[lm.UPPER_LIP_CENTRE, lm.LOWER_LIP_CENTRE]].mean(0, keepdim=True)
    lowered = seam + torch.einsum("k,pkd->pd", code.to_tensor(), torch.as_tensor(rig.expression_basis(
        avatar.gaussians.landmarks.numpy(), seam.numpy(), jaw=np.ones(1))))  # fmt: skip
    (u, top), (_, bottom) = project(avatar, torch.cat([seam, lowered]), size).tolist()
    assert bottom - top > 3  # the jaw drops by more than three pixels here
    neutral = avatar.render(size=size)
    opened = avatar.render(motion=code, size=size)
    _, _, opacities = avatar.deform(code)
    interior = avatar.gaussians.opacities == 0
    assert interior.sum() > 50 and (opacities[0][interior] > 0.5).all()

    def darkest_row(image):
        band = image[int(top) : int(bottom) + 1, int(u) - 2 : int(u) + 3].mean(dim=(1, 2))
        return band.min()

    assert darkest_row(opened) < 0.4 and darkest_row(neutral) > 0.6


def test_blink_lowers_the_upper_lids_and_leaves_the_mouth(avatar):
    g = avatar.gaussians
    means, _, _ = avatar.deform(MotionCode.preset("blink"))
    moved = means[0] - g.means
    lid = g.landmarks[[159, 386]]  # centres of both upper lids
    near_lid = torch.cdist(lid[:, :2], g.means[:, :2]).argmin(1)  # the Gaussian nearest each lid centre
    near_mouth = torch.cdist(g.means[:, :2], g.landmarks[[lm.UPPER_LIP_CENTRE], :2])[:, 0] < 0.02
    eye_height = (g.landmarks[[145, 374], 1] - g.landmarks[[159, 386], 1]).mean()
    assert moved[near_lid, 1].mean() > 0.5 * eye_height
    assert moved[near_mouth].abs().max() < 1e-6


def test_head_pose_turns_the_head_but_not_the_shoulders(avatar):
    g = avatar.gaussians
    means, _, _ = avatar.deform(MotionCode(), HeadPose(yaw=30))
    moved = (means[0] - g.means).norm(dim=-1)
    assert moved[g.rigid == 1].min() > 0 and moved[g.rigid == 0].max() < 1e-6
    nose = g.landmarks[lm.NOSE_TIP]
    rotated = torch.as_tensor(rotation_from_angles(30, 0, 0), dtype=torch.float32) @ (nose - g.pivot) + g.pivot
    nearest = (g.means - nose).norm(dim=-1).argmin()
    assert (means[0][nearest] - rotated).norm() < 0.02


def test_motion_code_presets_blends_and_values():
    assert "smile" in MotionCode.presets() and "open_mouth" in MotionCode.presets()
    smile = MotionCode.preset("smile")
    assert smile.expression[MotionCode.names().index("smile")] == 1.0
    half = MotionCode.blend({"smile": 0.5, "blink": 1.0})
    assert half.expression[MotionCode.names().index("smile")] == 0.5
    assert half.expression[MotionCode.names().index("blink_left")] == 1.0
    with pytest.raises(ValueError, match="presets: neutral"):
        MotionCode.preset("laugh")
    with pytest.raises(ValueError, match="known: jaw_open"):
        MotionCode.from_values(jaw=1.0)
    with pytest.raises(ValueError, match="must have"):
        MotionCode((1.0, 2.0))


def test_head_pose_angles_round_trip():
    for yaw, pitch, roll in [(20, 0, 0), (-35, 10, 5), (0, -15, 30)]:
        pose = HeadPose.from_rotation(HeadPose(yaw, pitch, roll).rotation())
        assert np.allclose([pose.yaw, pose.pitch, pose.roll], [yaw, pitch, roll], atol=1e-9)
    q = HeadPose(yaw=90).to_tensor(torch.float64)
    assert_close(q[:4].norm(), torch.tensor(1.0, dtype=torch.float64), "norm", rtol=0, atol=1e-12)


def test_code_fitting_recovers_a_known_expression_and_pose():
    """Landmarks made by the rig itself (a known code, then rotated, scaled and shifted into pixels)
    must be fitted back to that code and pose."""
    reference = default_reference()
    names = MotionCode.names()
    truth = np.zeros(len(names))
    truth[names.index("jaw_open")] = 0.7
    truth[names.index("smile")] = 0.5
    truth[names.index("blink_left")] = 1.0
    truth[names.index("brows_up")] = 0.4
    face = reference + np.einsum("k,pkd->pd", truth, rig.expression_basis(reference))
    rotation = rotation_from_angles(12, -6, 4)
    pixels = 900 * face @ rotation.T + np.array([256, 300, 0])
    code = MotionCode.from_landmarks(pixels)
    assert np.abs(np.asarray(code.expression) - truth).max() < 0.1
    assert abs(code.pose.yaw - 12) < 1.5 and abs(code.pose.pitch + 6) < 1.5 and abs(code.pose.roll - 4) < 1.5


def test_save_load_round_trip_and_future_versions(avatar, tmp_path):
    path = tmp_path / "me.avatar.safetensors"
    avatar.save(path)
    loaded = Avatar.load(path)
    for name in ("means", "quats", "scales", "opacities", "colors", "basis", "opacity_basis", "rigid", "pivot"):
        assert torch.equal(getattr(loaded.gaussians, name), getattr(avatar.gaussians, name)), name
    assert loaded.config == avatar.config

    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    save_file(tensors, str(tmp_path / "future.safetensors"), metadata={"format": "instant4d.avatar", "version": "99", "components": json.dumps(list(MotionCode.names()))})
    with pytest.raises(InputError, match="newer instant4d"):
        Avatar.load(tmp_path / "future.safetensors")
    (tmp_path / "broken.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(InputError, match="not a readable avatar"):
        Avatar.load(tmp_path / "broken.safetensors")
    with pytest.raises(InputError, match="no such avatar"):
        Avatar.load(tmp_path / "missing.safetensors")


def test_ply_export_round_trips_in_the_standard_layout(avatar, tmp_path):
    path = tmp_path / "me.ply"
    avatar.export_ply(path)
    header = path.read_bytes().split(b"end_header\n")[0].decode()
    assert "format binary_little_endian 1.0" in header
    assert [line.split()[-1] for line in header.splitlines() if line.startswith("property")] == list(PROPERTIES)
    back = read_ply(path)
    g = avatar.gaussians
    assert_close(back["means"], g.means, "means", rtol=1e-6, atol=1e-7)
    assert_close(back["quats"], g.quats, "quats", rtol=1e-6, atol=1e-7)
    assert_close(back["scales"], g.scales, "scales", rtol=1e-5, atol=1e-9)
    assert_close(back["colors"], g.colors, "colors", rtol=1e-5, atol=1e-6)
    assert_close(back["opacities"], g.opacities.clamp(1e-6, 1 - 1e-6), "opacities", rtol=1e-4, atol=1e-6)


def test_images_of_every_kind_become_rgb8(tmp_path):
    from PIL import Image

    rgb = (np.random.default_rng(0).random((80, 90, 3)) * 255).astype(np.uint8)
    grey = rgb[..., 0]
    assert load_image(grey).shape == (80, 90, 3)
    rgba = np.concatenate([rgb, np.zeros((80, 90, 1), np.uint8)], -1)
    assert (load_image(rgba) == 255).all()  # fully transparent -> white
    sixteen = rgb.astype(np.uint16) * 257
    assert np.array_equal(load_image(sixteen), rgb)
    Image.fromarray(sixteen[..., 0]).save(tmp_path / "grey16.png")
    assert np.array_equal(load_image(tmp_path / "grey16.png")[..., 0], rgb[..., 0])
    assert np.array_equal(load_image(rgb.astype(np.float32) / 255), rgb)
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(InputError, match="cannot be read as an image"):
        load_image(tmp_path / "corrupt.jpg")
    with pytest.raises(InputError, match="at least 64 pixels"):
        load_image(rgb[:20, :20])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert max(load_image(np.zeros((100, 5000, 3), np.uint8)).shape) == 4096
    assert any("downscaled" in str(w.message) for w in caught)


def test_an_interrupted_video_keeps_the_frames_written(tmp_path):
    path = tmp_path / "partial.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(path, fps=10) as writer:
            for i in range(5):
                writer.write(np.full((32, 32, 3), 40 * i, np.uint8))
            raise RuntimeError("the renderer died")
    assert sum(1 for _ in read_video(path)) == 5


def test_render_video_holds_the_last_code_where_the_face_is_lost(avatar, tmp_path):
    codes = [MotionCode.preset("smile"), None, None, MotionCode.preset("blink")]
    with pytest.warns(UserWarning, match="no face in 2 of 4"):
        report = avatar.render_video(codes, tmp_path / "out.mp4", size=32, progress=False)
    assert report.frames == 4 and report.frames_without_face == 2
    frames = list(read_video(tmp_path / "out.mp4"))
    assert len(frames) == 4
    assert np.abs(frames[1].astype(int) - frames[0].astype(int)).mean() < 2  # held, up to compression


def test_unreadable_video_and_missing_driver(avatar, tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all")
    with pytest.raises(InputError, match="cannot be opened as a video"):
        list(read_video(tmp_path / "bad.mp4"))
    with pytest.raises(InputError, match="neither a file nor a preset"):
        avatar.render_video("smirk", tmp_path / "x.mp4", size=32, progress=False)


def test_pull_push_keeps_known_values_and_fills_smoothly():
    values = np.zeros((32, 32, 1))
    weights = np.zeros((32, 32))
    values[8, 8], weights[8, 8] = 1.0, 1.0
    values[24, 24], weights[24, 24] = 3.0, 1.0
    filled = pull_push(values, weights)[..., 0]
    assert filled[8, 8] == pytest.approx(1.0) and filled[24, 24] == pytest.approx(3.0)
    assert 1.0 <= filled[16, 16] <= 3.0 and filled.min() >= 1.0 - 1e-9 and filled.max() <= 3.0 + 1e-9


def test_triangle_rasterizer_interpolates_barycentrically():
    vertices = np.array([[0.0, 0.0], [16.0, 0.0], [0.0, 16.0]])
    attributes = np.array([[0.0], [16.0], [0.0]])  # = x
    values, covered = rasterize_triangles(vertices, np.array([[0, 1, 2]]), attributes, 16)
    ys, xs = np.nonzero(covered)
    assert len(xs) > 100 and np.allclose(values[ys, xs, 0], xs + 0.5)
    assert not covered[15, 15]
