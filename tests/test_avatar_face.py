"""The face pipeline on real photos (needs the ``face`` extra: mediapipe==0.10.14)."""

from __future__ import annotations

import builtins
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mediapipe")

from instant4d.model import Avatar, EncoderConfig, Encoder, InputError, MotionCode  # noqa: E402
from instant4d.model import landmarks as lm  # noqa: E402
from instant4d.model.face import CROP_SCALE, OBSERVATION_SIZE, observe  # noqa: E402
from instant4d.model.media import load_image  # noqa: E402

PHOTO = Path(__file__).resolve().parent.parent / "instant4d" / "assets" / "astronaut.jpg"


@pytest.fixture(scope="module")
def photo():
    return load_image(PHOTO)


def test_observation_is_aligned_and_centred(photo):
    obs = observe(photo)
    assert obs.image.shape == (OBSERVATION_SIZE, OBSERVATION_SIZE, 3) and obs.landmarks.shape == (478, 3)
    height = np.linalg.norm(obs.landmarks[lm.FOREHEAD, :2] - obs.landmarks[lm.CHIN, :2])
    assert abs(height - OBSERVATION_SIZE / CROP_SCALE) < 0.05 * OBSERVATION_SIZE
    eyes = obs.landmarks[[lm.RIGHT_EYE_CORNERS[0], lm.LEFT_EYE_CORNERS[0]]]
    assert abs(eyes[0, 1] - eyes[1, 1]) < 0.02 * OBSERVATION_SIZE  # rolled upright
    assert obs.mask[OBSERVATION_SIZE // 2, OBSERVATION_SIZE // 2] > 0.5


def test_rotated_photo_gives_the_same_face(photo):
    from PIL import Image

    rotated = np.asarray(Image.fromarray(photo).rotate(20, resample=Image.BICUBIC, expand=True, fillcolor=(200, 200, 200)))
    a, b = observe(photo), observe(rotated)
    assert np.abs(a.landmarks[:, :2] - b.landmarks[:, :2]).mean() < 0.02 * OBSERVATION_SIZE


def test_from_image_encodes_greyscale_rgba_and_16_bit(photo, tmp_path):
    from PIL import Image

    encoder = Encoder(EncoderConfig(resolution=48))
    grey = photo.mean(-1).astype(np.uint8)
    Image.fromarray(np.concatenate([photo, np.full(photo.shape[:2] + (1,), 255, np.uint8)], -1)).save(tmp_path / "rgba.png")
    Image.fromarray((grey.astype(np.uint16) * 257)).save(tmp_path / "grey16.png")
    for source in (grey, tmp_path / "rgba.png", tmp_path / "grey16.png"):
        avatar = Avatar.from_image(source, encoder)
        assert avatar.num_gaussians > 500


def test_no_face_several_faces_and_tiny_faces(photo):
    noise = (np.random.default_rng(0).random((256, 256, 3)) * 255).astype(np.uint8)
    with pytest.raises(InputError, match="no face found"):
        observe(noise)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        observe(np.concatenate([photo, photo[::2, ::2].repeat(2, 0).repeat(2, 1)[:, :, :]], axis=1))
    assert any("found 2 faces; using the largest" in str(w.message) for w in caught)
    small = np.full((512, 512, 3), 128, np.uint8)
    small[200:264, 200:264] = photo[::8, ::8]
    with pytest.raises(InputError, match="no face found|pixels tall"):
        observe(small)


def test_missing_face_extra_says_what_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_mediapipe(name, *args, **kwargs):
        if name.startswith("mediapipe"):
            raise ImportError("No module named 'mediapipe'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mediapipe)
    with pytest.raises(ImportError, match=r"pip install 'instant4d\[face\]'"):
        Avatar.from_image(PHOTO)


def test_driving_code_from_a_render_of_an_expression():
    """Re-detecting our own renders: an open mouth reads as jaw_open, a neutral face does not."""
    avatar = Avatar.sample(EncoderConfig(resolution=128))
    neutral = MotionCode.from_image(avatar.render(size=256).numpy())
    opened = MotionCode.from_image(avatar.render(motion=MotionCode.preset("open_mouth"), size=256).numpy())
    jaw = MotionCode.names().index("jaw_open")
    assert opened.expression[jaw] > neutral.expression[jaw] + 0.3
