"""The ``instant4d`` command line, at tiny sizes."""

from __future__ import annotations

import json

import pytest

from instant4d.cli import DEMO_PRESETS, main
from instant4d.model import Avatar, EncoderConfig
from instant4d.model.media import read_video
from instant4d.model.ply import read_ply


@pytest.fixture(scope="module")
def avatar_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("avatar") / "sample.avatar.safetensors"
    Avatar.sample(EncoderConfig(resolution=48)).save(path)
    return path


def test_demo_writes_the_three_outputs(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--size", "48", "--resolution", "48", "--frames-per-preset", "2"]) == 0
    frames = list(read_video(out / "demo.mp4"))
    assert len(frames) == 2 * len(DEMO_PRESETS) and frames[0].shape == (48, 48, 3)
    assert read_ply(out / "neutral.ply")["means"].shape[0] > 500
    from PIL import Image

    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.size[0] == 3 * 48
    assert "demo.mp4" in capsys.readouterr().out


def test_export_and_animate_an_avatar_file(avatar_file, tmp_path):
    assert main(["export", str(avatar_file), "-o", str(tmp_path / "a.ply")]) == 0
    assert read_ply(tmp_path / "a.ply")["means"].shape[0] == Avatar.load(avatar_file).num_gaussians
    out = tmp_path / "smile.mp4"
    assert main(["animate", str(avatar_file), "--driver", "smile", "-o", str(out), "--size", "32", "--orbit"]) == 0
    assert sum(1 for _ in read_video(out)) == 50


def test_bad_inputs_exit_with_a_message(avatar_file, tmp_path, capsys):
    assert main(["create", str(tmp_path / "missing.jpg"), "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["animate", str(avatar_file), "--driver", "smirk", "-o", str(tmp_path / "x.mp4")]) == 2
    assert "neither a file nor a preset" in capsys.readouterr().err

    from safetensors.torch import load_file, save_file

    future = tmp_path / "future.safetensors"
    save_file(load_file(str(avatar_file)), str(future), metadata={"format": "instant4d.avatar", "version": "7", "components": json.dumps([])})
    assert main(["export", str(future), "-o", str(tmp_path / "f.ply")]) == 2
    assert "newer instant4d" in capsys.readouterr().err
