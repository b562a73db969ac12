"""The reggan command end to end, as a user runs it, with the bundled default model."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from reggan.images import read_rgb, write_rgb


def reggan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reggan.cli", *args], capture_output=True, text=True, timeout=300)


def test_help_has_examples():
    result = reggan("edit", "--help")
    assert result.returncode == 0
    assert "reggan edit photo.jpg --expression happy" in result.stdout


def test_the_command_offers_the_precisions_the_backends_know():
    # The parser takes them from reggan.config, so that `reggan --help` does not load PyTorch.
    import reggan.cli
    from reggan.backends import PRECISIONS

    assert sorted(reggan.cli.PRECISIONS) == sorted(PRECISIONS)


def test_the_bend_is_on_unless_the_flag_or_the_config_turns_it_off():
    from argparse import Namespace

    from reggan.config import load_config
    from reggan.from_config import bending

    config = load_config()
    assert config["edit"]["bend"] is True
    assert bending(config, Namespace(no_bend=False))
    assert not bending(config, Namespace(no_bend=True))
    assert not bending({**config, "edit": {**config["edit"], "bend": False}}, Namespace(no_bend=False))
    assert bending(config, Namespace())  # commands without the flag


def test_live_synthesizes_every_2nd_frame_where_a_synthesis_is_too_slow_unless_told_otherwise(capsys):
    import time
    from argparse import Namespace

    from reggan.config import load_config
    from reggan.from_config import LIVE_SYNTHESIS_BUDGET_MS, synthesis_interval

    config = load_config()
    assert config["runtime"]["synthesize_every"] == "auto"

    class Backend:
        expressions, resolution = ["neutral", "happy"], 8

        def __init__(self, milliseconds):
            self.milliseconds = milliseconds

        def __call__(self, faces, expression, intensity):
            time.sleep(self.milliseconds / 1000)
            return faces

    slow, fast = Backend(LIVE_SYNTHESIS_BUDGET_MS + 15), Backend(0)

    def interval(live, backend=slow, **flags):
        args = Namespace(**{"synthesize_every": None, "device": None, "regression_only": False, **flags})
        return synthesis_interval(config, args, backend, live)

    assert interval(live=True) == 2
    assert "every 2nd frame" in capsys.readouterr().err  # said, with how to have every frame
    assert interval(live=False) == 1  # a file never drops frames, so it keeps every one
    assert interval(live=True, backend=fast) == 1
    assert interval(live=True, device="cuda") == 1
    assert interval(live=True, regression_only=True) == 1
    assert interval(live=True, synthesize_every=1) == 1 and interval(live=False, synthesize_every=3) == 3
    assert not capsys.readouterr().err


def test_the_lite_refiner_is_chosen_on_a_cpu_without_bfloat16_hardware_when_it_exists(tmp_path, monkeypatch, capsys):
    from argparse import Namespace

    import torch

    import reggan.backends
    from reggan.checkpoint import save_refiner_variant, save_synthesizer
    from reggan.config import load_config
    from reggan.errors import UserError
    from reggan.from_config import model_path
    from reggan.networks import Synthesizer

    config = load_config()
    assert config["runtime"]["refiner"] == "auto"
    full = save_synthesizer(tmp_path / "model.safetensors", Synthesizer(["happy"], 32, kernel=3, width=8))
    lite = tmp_path / "model-lite.safetensors"

    def chosen(fast_bf16=False, frame_loop=True, **flags):
        monkeypatch.setattr(reggan.backends, "cpu_has_fast_bf16", lambda: fast_bf16)
        args = Namespace(**{"checkpoint": str(full), "device": None, "refiner": None, **flags})
        return model_path(config, args, frame_loop)

    assert chosen() == full  # no lite refiner made for this checkpoint: the full one, silently
    with pytest.raises(UserError, match="reggan train distill"):
        chosen(refiner="lite")
    save_refiner_variant(lite, Synthesizer(["happy"], 32, kernel=3, width=4), full)
    assert not capsys.readouterr().err
    assert chosen() == lite
    assert "--refiner full" in capsys.readouterr().err  # said, with how to have the full one
    assert chosen(fast_bf16=True) == full and chosen(device="cuda") == full
    assert chosen(frame_loop=False) == full  # a photo is edited once: the full refiner
    assert chosen(refiner="full") == full and chosen(regression_only=True) == full
    assert chosen(fast_bf16=True, refiner="lite") == lite
    # The checkpoint retrained after its lite refiner was made: auto runs the full one and says why.
    save_synthesizer(full, Synthesizer(["happy"], 32, kernel=3, width=8), dtype=torch.float32)
    capsys.readouterr()
    assert chosen() == full
    assert "reggan train distill" in capsys.readouterr().err


def test_synthesize_every_takes_a_whole_number_of_frames_or_auto():
    from reggan.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["video", "in.mp4", "-o", "o.mp4", "--synthesize-every", "auto"]).synthesize_every == "auto"
    assert parser.parse_args(["video", "in.mp4", "-o", "o.mp4", "--synthesize-every", "3"]).synthesize_every == 3
    result = reggan("video", "in.mp4", "-o", "o.mp4", "--synthesize-every", "0")
    assert result.returncode == 2 and "1 or more, or auto" in result.stderr


@pytest.mark.parametrize("options", [[], ["--colour-match"], ["--no-bend"]])
def test_edit_changes_the_face_and_leaves_the_background(astronaut, astronaut_png, astronaut_landmarks, tmp_path,
                                                         options):
    out = tmp_path / "surprised.png"
    result = reggan("edit", str(astronaut_png), "--expression", "surprised", "-o", str(out), *options)
    assert result.returncode == 0, result.stderr
    edited = read_rgb(out)
    assert edited.shape == astronaut.shape
    change = np.abs(edited.astype(int) - astronaut.astype(int)).sum(axis=2)
    low, high = astronaut_landmarks.min(0).astype(int), astronaut_landmarks.max(0).astype(int)
    face = change[low[1] : high[1], low[0] : high[0]]
    assert face.mean() > 5  # the expression changed the face
    background = change.copy()
    background[max(low[1] - 60, 0) : high[1] + 60, max(low[0] - 60, 0) : high[0] + 60] = 0
    assert background.max() == 0  # nothing outside the face moved


def test_edit_all_writes_a_strip_of_every_expression(astronaut_png, tmp_path):
    out = tmp_path / "strip.png"
    result = reggan("edit", str(astronaut_png), "--expression", "all", "-o", str(out))
    assert result.returncode == 0, result.stderr
    strip = read_rgb(out)
    assert strip.shape[1] > 6 * strip.shape[0]  # 7 tiles side by side


def test_no_face_is_a_clear_error_and_writes_nothing(tmp_path):
    from skimage import data

    photo = tmp_path / "coffee.png"
    write_rgb(photo, data.coffee())
    out = tmp_path / "out.png"
    result = reggan("edit", str(photo), "--expression", "happy", "-o", str(out))
    assert result.returncode == 2
    assert "no face found" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_corrupt_image_is_a_clear_error(tmp_path):
    photo = tmp_path / "broken.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    result = reggan("edit", str(photo), "--expression", "happy", "-o", str(tmp_path / "out.png"))
    assert result.returncode == 2
    assert "cannot decode" in result.stderr and "Traceback" not in result.stderr


def test_unknown_expression_is_a_clear_error(astronaut_png, tmp_path):
    result = reggan("edit", str(astronaut_png), "--expression", "bored", "-o", str(tmp_path / "o.png"))
    assert result.returncode == 2
    assert "unknown expression 'bored'" in result.stderr


@pytest.mark.parametrize("intensity", ["0"])
def test_zero_intensity_leaves_the_photo_unchanged(astronaut, astronaut_png, tmp_path, intensity):
    out = tmp_path / "same.png"
    assert reggan("edit", str(astronaut_png), "--expression", "happy", "--intensity", intensity,
                  "-o", str(out)).returncode == 0
    assert np.abs(read_rgb(out).astype(int) - astronaut.astype(int)).max() <= 1


def test_animate_writes_a_playable_video_of_the_programmed_length(astronaut_png, tmp_path):
    import av

    out = tmp_path / "anim.mp4"
    result = reggan("animate", str(astronaut_png), "-o", str(out), "--program", "neutral:0.3,happy:0.5", "--fps", "10")
    assert result.returncode == 0, result.stderr
    with av.open(str(out)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 8
    assert np.abs(frames[-1].astype(int) - frames[0].astype(int)).mean() > 0.1  # the face changed over time
    assert not list(tmp_path.glob("*.partial*"))


@pytest.fixture(scope="module")
def cutout_avatar(astronaut, tmp_path_factory):
    """The astronaut cut out of her background: an ellipse around head and shoulders is opaque, the rest
    transparent and stored black, as avatar tools often leave it."""
    import cv2

    alpha = np.zeros(astronaut.shape[:2], np.uint8)
    cv2.ellipse(alpha, (230, 200), (150, 190), 0, 0, 360, 255, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), 2)  # a soft edge, as a cut-out has
    rgb = astronaut * (alpha[..., None] > 0)
    path = tmp_path_factory.mktemp("avatar") / "avatar.png"
    cv2.imwrite(str(path), np.dstack([cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), alpha]))
    return path, rgb, alpha


def test_edit_keeps_an_avatars_transparency(cutout_avatar, astronaut_landmarks, tmp_path):
    import cv2

    path, rgb, alpha = cutout_avatar
    out = tmp_path / "happy.png"
    result = reggan("edit", str(path), "--expression", "happy", "-o", str(out))
    assert result.returncode == 0, result.stderr
    written = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert written.shape == (*rgb.shape[:2], 4) and np.array_equal(written[..., 3], alpha)
    low, high = astronaut_landmarks.min(0).astype(int), astronaut_landmarks.max(0).astype(int)
    face = np.abs(cv2.cvtColor(written[..., :3], cv2.COLOR_BGR2RGB).astype(int) - rgb.astype(int))
    assert face[low[1] : high[1], low[0] : high[0]].mean() > 2  # the face was found and changed
    # A JPEG cannot keep transparency: the cut-out is put on white instead of showing what was stored under it.
    jpeg = tmp_path / "happy.jpg"
    assert reggan("edit", str(path), "--expression", "happy", "-o", str(jpeg)).returncode == 0
    assert read_rgb(jpeg)[:40, :40].min() > 240


def test_animate_puts_a_transparent_avatar_on_white(cutout_avatar, tmp_path):
    import av

    path, _, _ = cutout_avatar
    out = tmp_path / "anim.mp4"
    result = reggan("animate", str(path), "-o", str(out), "--program", "happy:0.2", "--fps", "10")
    assert result.returncode == 0, result.stderr
    assert "transparent" in result.stdout
    with av.open(str(out)) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert first[:40, :40].mean() > 240 and first[200, 230].mean() < 240  # white around her, not over her


def test_a_black_and_white_photo_stays_black_and_white(astronaut, tmp_path):
    import cv2

    grey = cv2.cvtColor(cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    photo, out = tmp_path / "grey.jpg", tmp_path / "grey_happy.png"
    write_rgb(photo, grey)  # a JPEG, so its grey carries a little chroma noise, as scanned photos do
    result = reggan("edit", str(photo), "--expression", "disgusted", "-o", str(out))
    assert result.returncode == 0, result.stderr
    edited = read_rgb(out).astype(int)
    assert np.abs(edited - read_rgb(photo)).max() > 20  # the face changed ...
    assert (edited.max(axis=2) - edited.min(axis=2)).max() <= 3  # ... without a tint (disgusted painted one)
