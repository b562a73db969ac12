"""The frame loop: filters, programs, video in and out with audio, virtual camera, reliability."""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
from dataclasses import replace

import av
import numpy as np
import pytest

from live.control import ExpressionController
from live.filters import OneEuroFilter
from live.program import ExpressionProgram, parse_program


def decode(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def stream_seconds(path, kind: str) -> float:
    with av.open(str(path)) as container:
        stream = getattr(container.streams, kind)[0]
        return float(stream.duration * stream.time_base)


def reggan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reggan.cli", *args], capture_output=True, text=True, timeout=600)


# --- One Euro filter -------------------------------------------------------------------------------------------

def test_one_euro_reduces_jitter_on_a_noisy_static_signal():
    rng = np.random.default_rng(0)
    filt = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    times = np.arange(300) / 30.0
    noisy = 100 + rng.normal(0, 2.0, size=300)
    smoothed = np.array([filt(np.array([v]), t)[0] for v, t in zip(noisy, times)])
    assert np.std(np.diff(smoothed[30:])) < 0.25 * np.std(np.diff(noisy[30:]))


def test_one_euro_follows_a_step_within_the_expected_lag():
    filt = OneEuroFilter(min_cutoff=1.0, beta=0.5)
    times = np.arange(60) / 30.0
    signal = np.where(np.arange(60) < 10, 0.0, 100.0)
    out = np.array([filt(np.array([v]), t)[0] for v, t in zip(signal, times)])
    reached = np.argmax(out >= 90.0)
    assert out[-1] > 99.0
    assert 10 <= reached <= 16  # speed raises the cut-off: 90 % within ~0.2 s


def test_one_euro_uses_real_timestamps_not_a_fixed_rate():
    # The same signal sampled at 15 Hz and 60 Hz settles after the same *time*, not the same number of frames.
    def settle_time(rate):
        filt = OneEuroFilter(min_cutoff=1.0, beta=0.0)
        for i in range(rate * 3):
            t = i / rate
            if filt(np.array([100.0 if t >= 0.5 else 0.0]), t)[0] >= 90:
                return t
    assert abs(settle_time(15) - settle_time(60)) < 0.1


# --- programs and ramps ----------------------------------------------------------------------------------------

def test_program_parses_and_cross_fades_without_pops():
    program = ExpressionProgram(parse_program("neutral:1,happy:2,surprised:1.5"), ramp=0.4)
    assert program.duration == 4.5
    assert program.at(0.5) == [("neutral", 1.0)]
    assert program.at(2.0) == [("happy", 1.0)]
    steps = [dict(program.at(t / 30)) for t in range(int(4.5 * 30))]
    for before, after in zip(steps, steps[1:]):
        for name in set(before) | set(after):
            assert abs(before.get(name, 0) - after.get(name, 0)) < 0.2


@pytest.mark.parametrize("bad", ["happy", "happy:0", "happy:x", ""])
def test_bad_program_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="EXPRESSION:SECONDS|empty"):
        parse_program(bad)


def test_controller_ramps_when_the_expression_changes():
    control = ExpressionController("happy", 1.0, ramp=0.5)
    assert control.at(0.0) == [("happy", 1.0)]
    control.set("sad", 1.0, now=10.0)
    middle = dict(control.at(10.25))
    assert 0.2 < middle["happy"] < 0.8 and 0.2 < middle["sad"] < 0.8
    assert control.at(10.6) == [("sad", 1.0)]


# --- one frame through the stages, no threads ------------------------------------------------------------------

@pytest.fixture(scope="module")
def processor_factory():
    from live.processor import FrameProcessor
    from live.tracker import FaceTracker
    from reggan.backends import TorchBackend
    from reggan.checkpoint import load_synthesizer
    from reggan.config import load_config, resolve_path
    from reggan.trackers import make_tracker

    config = load_config()
    backend = TorchBackend(load_synthesizer(resolve_path(config["model"]["checkpoint"])))
    landmarks = make_tracker("dlib")

    def build(expression="happy", max_faces=1):
        return FrameProcessor(FaceTracker(landmarks, detect_every=5, max_faces=max_faces), backend,
                              ExpressionController(expression, 1.0, ramp=0.0))

    return build


def test_processor_changes_only_the_face_of_one_frame(processor_factory, astronaut, astronaut_landmarks):
    out = processor_factory("surprised").process(astronaut, 0.0)
    change = np.abs(out.astype(int) - astronaut.astype(int)).sum(axis=2)
    low, high = astronaut_landmarks.min(0).astype(int), astronaut_landmarks.max(0).astype(int)
    assert change[low[1] : high[1], low[0] : high[0]].mean() > 5
    change[max(low[1] - 60, 0) : high[1] + 60, max(low[0] - 60, 0) : high[0] + 60] = 0
    assert change.max() == 0


def test_processor_repeats_its_output_when_the_input_frame_repeats(processor_factory, astronaut):
    # A repeated frame (frame-rate conversion) must not come out changed: tracking and smoothing it anew did.
    processor = processor_factory("happy")
    processor.process(astronaut, 0.0)
    processor.process(np.roll(astronaut, 3, axis=1), 0.04)  # the face moves: processed anew
    moved = processor.process(np.roll(astronaut, 6, axis=1), 0.08)
    assert np.array_equal(processor.process(np.roll(astronaut, 6, axis=1), 0.12), moved)


def test_synthesizing_every_other_frame_halves_the_synthesizer_calls(processor_factory, astronaut):
    from live.processor import FrameProcessor

    reference = processor_factory("happy")
    calls = []

    class CountingBackend:
        def __init__(self, backend):
            self.backend = backend
            self.expressions, self.resolution = backend.expressions, backend.resolution

        def __call__(self, *inputs):
            calls.append(len(inputs[0]))
            return self.backend(*inputs)

    processor = FrameProcessor(reference.tracker, CountingBackend(reference.synthesize.backend),
                               ExpressionController("happy", 1.0, ramp=0.0), synthesize_every=2)
    outputs = [processor.process(np.ascontiguousarray(np.roll(astronaut, 3 * index, axis=1)), index / 25)
               for index in range(8)]
    assert len(calls) == 4
    # The carried frames still show the expression where the face now is.
    face_change = [np.abs(out.astype(int) - np.roll(astronaut, 3 * index, axis=1)).sum(axis=2)[150:250, 150:300].mean()
                   for index, out in enumerate(outputs)]
    assert min(face_change) > 0.5 * max(face_change)


def test_the_optical_flow_is_measured_beside_the_synthesis_not_in_frame_order(processor_factory, astronaut):
    # The file loop runs ``synthesize_faces`` for several frames at once and ``finish`` one after another: the
    # smoother's flow belongs to the first, where it costs no waiting.
    processor = processor_factory("happy")
    measured = processor.smoother.flow
    calls = []
    processor.smoother.flow = lambda grey, previous: calls.append(1) or measured(grey, previous)
    frames = [np.ascontiguousarray(np.roll(astronaut, 3 * index, axis=1)) for index in range(4)]
    prepared = [processor.prepare(frame, index / 25) for index, frame in enumerate(frames)]
    assert len(calls) == 3  # every frame but the first, whose track is new
    assert [face_frame.motions[0].flow is None for face_frame in prepared] == [True, False, False, False]
    for face_frame in prepared:
        processor.finish(face_frame)
    assert len(calls) == 3  # the smoother used them and measured none itself


@pytest.mark.parametrize("setting, live, fine", [("auto", False, True), ("auto", True, False), ("half", False, False),
                                                 ("full", True, True)])
def test_smoothing_flow_setting(setting, live, fine):
    from reggan.errors import UserError
    from reggan.from_config import fine_flow

    assert fine_flow({"edit": {"smoothing_flow": setting}}, live) is fine
    with pytest.raises(UserError, match="choose auto, full or half"):
        fine_flow({"edit": {"smoothing_flow": "quarter"}}, live)


def test_over_closed_lips_the_frame_loop_takes_out_the_paint_that_lightens_them(processor_factory):
    # A face on the template, mouth closed, painted 40 levels lighter all over: the lips, where the smile's warp puts
    # them, get none of it (reggan/lips.py); the rest of the face keeps it.
    from live.processor import FaceFrame
    from reggan.alignment import PlacedFace
    from reggan.lips import OUTER_LIPS

    processor = processor_factory("happy")
    size = processor.aligner.resolution
    points = processor.aligner.template.copy()
    nothing = np.zeros((size, size), np.float32)
    face = PlacedFace(np.eye(2, 3), points, nothing, nothing)
    crop = np.full((size, size, 3), 120, np.uint8)
    face_frame = FaceFrame(crop, 0.0, identities=[0], fresh=[True], faces=[face], crops=[crop],
                           weights=[("happy", 1.0)])
    kept = processor._lips_kept(face_frame, [crop + np.float32(40)])[0]
    lips = points[OUTER_LIPS]
    middle = np.round(lips.mean(axis=0)).astype(int)
    assert np.allclose(kept[middle[1], middle[0]], 120, atol=1)  # inside the lips: the lightening is out
    assert np.allclose(kept[size // 3, size // 2], 160)  # the brow: as painted
    # An open mouth's inside is the synthesizer's to keep; the rule takes nothing out there.
    open_face = PlacedFace(np.eye(2, 3), points, nothing, np.ones((size, size), np.float32))
    opened = processor._lips_kept(replace(face_frame, faces=[open_face]), [crop + np.float32(40)])[0]
    assert np.allclose(opened, 160)


def test_frame_loop_benchmark_counts_repeated_frames_apart(processor_factory, astronaut, tmp_path):
    # A clip whose frames repeat (frame-rate conversion): the stage table must not assume every frame is tracked.
    from export.benchmark import run_pipeline_benchmark
    from live.sinks import VideoFileSink

    clip = tmp_path / "repeats.mp4"
    with VideoFileSink(clip, 25.0) as sink:
        for shift in (0, 0, 0, 4, 4, 4):
            sink.write(np.ascontiguousarray(np.roll(astronaut, shift, axis=1)))
    result = run_pipeline_benchmark(processor_factory("happy"), clip, frames=6)
    assert result["frames"] == 6
    tracked = result["stage_frames"]["track: detect + landmarks"] + result["stage_frames"]["track: landmarks only"]
    repeated = result["stage_frames"].get("repeated frame: last change pasted again", 0)
    assert repeated >= 2 and tracked + repeated == 6


def test_bench_times_the_file_loop_as_reggan_video_runs_it(feat_media, tmp_path):
    import json

    report = tmp_path / "bench.json"
    result = reggan("bench", "--video", str(feat_media / "single_face.mp4"), "--backends", "torch:fp32", "--batches",
                    "1", "--repeats", "2", "--frames", "6", "--json", str(report))
    assert result.returncode == 0, result.stderr
    file_loop = json.loads(report.read_text())["file_loop"]
    assert file_loop["frames"] == len(decode(feat_media / "single_face.mp4"))  # the whole clip, none dropped
    assert file_loop["clip_fps"] == pytest.approx(30.0, rel=0.01)
    assert file_loop["times_real_time"] == pytest.approx(file_loop["fps"] / file_loop["clip_fps"])
    assert "x real time" in result.stdout


def test_the_frame_loop_and_the_photo_editor_hand_the_open_mouth_to_the_warp(processor_factory, astronaut,
                                                                            monkeypatch):
    """The astronaut smiles with her mouth open: both paths must move its inside as one piece."""
    import live.processor
    import reggan.editor
    from reggan.from_config import make_editor
    from reggan.config import load_config

    seen = []

    def recording(original):
        def wrapper(*args, **kwargs):
            seen.append(args[5] if len(args) > 5 else kwargs.get("open_mouths"))
            return original(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(live.processor, "synthesize_bent", recording(live.processor.synthesize_bent))
    monkeypatch.setattr(reggan.editor, "synthesize_bent", recording(reggan.editor.synthesize_bent))
    processor_factory("happy").process(astronaut, 0.0)
    args = argparse.Namespace(checkpoint=None, refiner=None, device="cpu", backend="torch", precision=None,
                              regression_only=False, tracker=None, no_bend=False, colour_match=None)
    make_editor(load_config(), args, frame_loop=False).edit(astronaut, "happy")
    assert len(seen) == 2 and all(mouths is not None and mouths[0].max() > 0.9 for mouths in seen)


def test_a_face_that_appears_mid_stream_fades_in_instead_of_popping(processor_factory, astronaut):
    processor = processor_factory("surprised")
    blank = np.full_like(astronaut, 90)
    processor.process(blank, 0.0)  # the stream starts without a face
    changes = [np.abs(processor.process(astronaut, t).astype(int) - astronaut.astype(int)).mean()
               for t in (0.04, 0.12, 0.2, 0.32)]
    assert changes[0] == 0 and changes[0] < changes[1] < changes[2] < changes[3]
    # On a stream's first frame the face gets all of its change at once.
    assert np.abs(processor_factory("surprised").process(astronaut, 0.0).astype(int)
                  - astronaut.astype(int)).mean() == pytest.approx(changes[3], rel=0.05)


def test_processor_passes_a_frame_without_a_face_unchanged(processor_factory):
    from skimage import data

    frame = data.coffee()
    assert np.array_equal(processor_factory().process(frame, 0.0), frame)


# --- video files -----------------------------------------------------------------------------------------------

def test_video_with_audio_keeps_frames_duration_and_audio(feat_media, tmp_path):
    source = feat_media / "single_face.mp4"
    out = tmp_path / "surprised.mp4"
    result = reggan("video", str(source), "-o", str(out), "--expression", "surprised")
    assert result.returncode == 0, result.stderr
    before, after = decode(source), decode(out)
    assert len(after) == len(before)
    assert abs(stream_seconds(out, "video") - stream_seconds(source, "video")) < 0.05
    assert abs(stream_seconds(out, "audio") - stream_seconds(source, "audio")) < 0.05
    diff = np.abs(after[40].astype(int) - before[40].astype(int)).mean(axis=2)
    height, width = diff.shape
    face = diff[height // 6 : height // 2 + height // 6, width // 3 : 2 * width // 3]
    border = np.concatenate([diff[:, : width // 8].ravel(), diff[:, -width // 8 :].ravel()])
    assert face.mean() > 3 * border.mean() and border.mean() < 3  # the face changed; the edges only re-encoded


def test_webm_output_re_encodes_audio_it_cannot_carry(feat_media, tmp_path):
    """WebM takes only Opus or Vorbis sound: the clip's MP3 is re-encoded as Opus instead of dropped."""
    source = feat_media / "single_face.mp4"
    out = tmp_path / "happy.webm"
    result = reggan("video", str(source), "-o", str(out), "--expression", "happy", "--codec", "vp9")
    assert result.returncode == 0, result.stderr
    assert "re-encoding it as libopus" in result.stdout
    with av.open(str(out)) as container:
        assert container.streams.audio[0].codec_context.name == "opus"
        samples = sum(frame.samples for frame in container.decode(audio=0))
    assert abs(samples / 48000 - stream_seconds(source, "audio")) < 0.05
    assert len(decode(out)) == len(decode(source))


def test_av1_output_plays_and_its_encoder_keeps_quiet(feat_media, tmp_path):
    """SVT-AV1 printed a thread-priority warning from C on every run; only its errors reach the user now."""
    source = feat_media / "single_face.mp4"
    out = tmp_path / "happy.mp4"
    result = reggan("video", str(source), "-o", str(out), "--expression", "happy", "--codec", "av1")
    assert result.returncode == 0, result.stderr
    assert "Svt[" not in result.stderr, result.stderr
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name in ("libdav1d", "libaom-av1", "av1")
    assert len(decode(out)) == len(decode(source))


def test_clip_without_a_face_passes_through(feat_media, tmp_path):
    out = tmp_path / "noface.mp4"
    result = reggan("video", str(feat_media / "no_face.mp4"), "-o", str(out), "--expression", "happy")
    assert result.returncode == 0, result.stderr
    before, after = decode(feat_media / "no_face.mp4"), decode(out)
    assert len(after) == len(before)
    assert np.mean([np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(before[::10], after[::10])]) < 3


def test_face_that_appears_and_leaves(feat_media, tmp_path):
    out = tmp_path / "appears.mp4"
    result = reggan("video", str(feat_media / "face_noface.mov"), "-o", str(out), "--expression", "happy")
    assert result.returncode == 0, result.stderr
    assert len(decode(out)) == len(decode(feat_media / "face_noface.mov"))


def test_interrupted_encode_leaves_a_playable_file(feat_media, tmp_path, processor_factory):
    from live.loop import run_file
    from live.sinks import VideoFileSink
    from live.sources import VideoFileSource

    class InterruptAfter:
        def __init__(self, inner, frames):
            self.inner, self.frames, self.seen = inner, frames, 0

        def observe(self, frame, timestamp):
            self.seen += 1
            if self.seen > self.frames:
                raise KeyboardInterrupt
            return self.inner.observe(frame, timestamp)

        def synthesize_faces(self, observed):
            return self.inner.synthesize_faces(observed)

        def finish(self, prepared):
            return self.inner.finish(prepared)

    out = tmp_path / "cut.mp4"
    with pytest.raises(KeyboardInterrupt):
        with VideoFileSource(feat_media / "single_face.mp4") as source:
            with VideoFileSink(out, source.fps, audio_from=source.audio, time_base=source.video.time_base) as sink:
                run_file(source, InterruptAfter(processor_factory(), 20), sink, show_progress=False)
    frames = decode(out)
    assert 15 <= len(frames) <= 20
    assert not list(tmp_path.glob("*.partial*"))


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM cannot be caught on Windows")
def test_a_terminated_encode_leaves_a_playable_file_too(feat_media, tmp_path):
    # `kill`, a closed terminal or a stopping container sends SIGTERM / SIGHUP, not Ctrl-C: the command must finalise
    # the file the same way, not die with the MP4's index unwritten.
    import signal
    import time

    out = tmp_path / "cut.mp4"
    command = [sys.executable, "-m", "reggan.cli", "video", str(feat_media / "face_noface.mov"), "-o", str(out),
               "--expression", "happy", "--backend", "torch", "--precision", "fp32"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial = tmp_path / "cut.partial.mp4"
    deadline = time.monotonic() + 300
    while not (partial.exists() and partial.stat().st_size > 20_000) and process.poll() is None:
        assert time.monotonic() < deadline, "the encode never got going"
        time.sleep(0.05)
    assert process.poll() is None, "the clip finished before it could be interrupted"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM and "interrupted" in stderr and "Traceback" not in stderr
    frames = decode(out)
    assert 0 < len(frames) < len(decode(feat_media / "face_noface.mov"))
    assert not partial.exists()


def test_corrupt_or_missing_input_is_a_clear_error(tmp_path, feat_media):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    result = reggan("video", str(broken), "-o", str(tmp_path / "o.mp4"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "cannot open" in result.stderr or "no video stream" in result.stderr
    assert not (tmp_path / "o.mp4").exists()
    result = reggan("video", str(tmp_path / "absent.mp4"), "-o", str(tmp_path / "o.mp4"))
    assert result.returncode == 2 and "video not found" in result.stderr
    # An output name FFmpeg has no format for: said in words, nothing written.
    result = reggan("video", str(feat_media / "single_face.mp4"), "-o", str(tmp_path / "new" / "folder" / "o.xyz"))
    assert result.returncode == 2 and "no video format for the extension '.xyz'" in result.stderr
    assert ".mp4" in result.stderr and not (tmp_path / "new").exists()  # not even the folders it would have made


def remuxed(source, target, container_format: str):
    """The video and audio packets of ``source`` copied, not re-encoded, into another container."""
    with av.open(str(source)) as src, av.open(str(target), "w", format=container_format) as dst:
        streams = {stream.index: dst.add_stream_from_template(stream) for stream in src.streams}
        for packet in src.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                dst.mux(packet)
    return target


@contextlib.contextmanager
def served(folder):
    """A local HTTP server for ``folder`` on a free port, as a URL (Python's own server: no range requests)."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_stream_url_is_processed_like_a_file_audio_included(feat_media, tmp_path):
    source = feat_media / "single_face.mp4"
    folder = tmp_path / "www"
    folder.mkdir()
    remuxed(source, folder / "clip.ts", "mpegts")  # MPEG-TS streams over plain HTTP, no seeking needed
    out = tmp_path / "from_url.mp4"
    with served(folder) as url:
        result = reggan("video", f"{url}/clip.ts", "-o", str(out), "--expression", "happy")
    assert result.returncode == 0, result.stderr
    assert len(decode(out)) == len(decode(source))
    assert abs(stream_seconds(out, "audio") - stream_seconds(source, "audio")) < 0.1


def test_a_stream_url_that_cannot_be_read_is_a_clear_error(feat_media, tmp_path):
    folder = tmp_path / "www"
    folder.mkdir()
    (folder / "clip.mp4").write_bytes((feat_media / "single_face.mp4").read_bytes())
    with served(folder) as url:
        absent = reggan("video", f"{url}/absent.ts", "-o", str(tmp_path / "a.mp4"))
        # This MP4 must seek to be read, and Python's server cannot answer range requests.
        unseekable = reggan("video", f"{url}/clip.mp4", "-o", str(tmp_path / "b.mp4"))
    assert absent.returncode == 2 and "Traceback" not in absent.stderr
    assert "no video at that address" in absent.stderr
    assert unseekable.returncode == 2 and "Traceback" not in unseekable.stderr
    assert "range requests" in unseekable.stderr and "damaged" not in unseekable.stderr
    assert not (tmp_path / "a.mp4").exists() and not (tmp_path / "b.mp4").exists()  # no frame read, nothing written


def test_a_truncated_input_is_said_and_what_was_read_is_kept(feat_media, tmp_path):
    # A file cut short (a copy interrupted, a download that stopped) keeps the index at its start, so it opens and
    # decodes until the data runs out: the frames there are processed and kept, and the command says what happened.
    whole = tmp_path / "whole.mp4"
    with av.open(str(whole), "w", options={"movflags": "faststart"}) as container:  # the index first, as on the web
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for frame in decode(feat_media / "single_face.mp4"):
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:240, :320]), format="rgb24")
            container.mux(stream.encode(picture))
        container.mux(stream.encode())
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    result = reggan("video", str(cut), "-o", str(tmp_path / "o.mp4"), "--expression", "happy")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "truncated or damaged" in result.stderr and "of the 72 frames" in result.stderr
    assert 10 < len(decode(tmp_path / "o.mp4")) < 72
    # The whole file is not taken for a cut one.
    result = reggan("video", str(whole), "-o", str(tmp_path / "w.mp4"), "--expression", "happy")
    assert result.returncode == 0 and len(decode(tmp_path / "w.mp4")) == 72


def test_batch_continues_past_a_bad_file(feat_media, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a_good.mp4").write_bytes((feat_media / "single_face.mp4").read_bytes())
    (folder / "b_bad.mp4").write_bytes(b"not a video")
    result = reggan("batch", str(folder), "-o", str(tmp_path / "out"), "--expression", "happy")
    assert result.returncode == 1
    assert "FAILED  b_bad.mp4" in result.stderr and "1 of 2 videos done" in result.stdout
    assert (tmp_path / "out" / "a_good.mp4").is_file()


# --- virtual camera ----------------------------------------------------------------------------------------------

class RecordingCamera:
    """A pyvirtualcam backend that keeps what it is sent (registered through pyvirtualcam's backend registry)."""

    frames: list = []

    def __init__(self, width, height, fps, fourcc, device, **kw):
        self.width, self.height, self._device = width, height, device or "recording"
        RecordingCamera.frames = []

    def send(self, frame):
        RecordingCamera.frames.append(frame.copy())

    def close(self):
        pass

    def device(self):
        return self._device

    def native_fourcc(self):
        return None


def test_virtual_camera_sink_sends_frames_through_the_backend_registry(astronaut):
    import pyvirtualcam

    from live.sinks import VirtualCameraSink

    pyvirtualcam.register_backend("recording", RecordingCamera)
    with VirtualCameraSink(640, 480, 60, backend="recording") as sink:
        for _ in range(3):
            sink.write(astronaut)
    assert len(RecordingCamera.frames) == 3
    assert RecordingCamera.frames[0].size == 640 * 480 * 3


def test_virtual_camera_keeps_the_proportions_of_a_camera_of_another_shape(astronaut):
    """A 4:3 camera into the default 16:9 device: black bars at the sides, the face not stretched."""
    import cv2
    import pyvirtualcam

    from live.sinks import VirtualCameraSink

    pyvirtualcam.register_backend("recording", RecordingCamera)
    four_by_three = cv2.resize(astronaut, (640, 480))
    with VirtualCameraSink(1280, 720, 30, backend="recording") as sink:
        sink.write(four_by_three)
    sent = RecordingCamera.frames[0]
    assert sent.size == 720 * 1280 * 3
    sent = sent.reshape(720, 1280, 3)  # the backend gets the RGB bytes of one frame
    assert sent[:, :160].max() == 0 and sent[:, -160:].max() == 0  # the bars
    expected = cv2.resize(four_by_three, (960, 720), interpolation=cv2.INTER_LINEAR)
    assert np.abs(sent[:, 160:-160].astype(int) - expected).max() <= 1


def test_missing_virtual_camera_device_says_what_to_install(monkeypatch):
    import pyvirtualcam.camera

    from live.sinks import VirtualCameraSink
    from live.sources import SourceError

    # Only the platform's real backends: the recording one registered above would otherwise be picked.
    monkeypatch.delitem(pyvirtualcam.camera.BACKENDS, "recording", raising=False)
    try:
        with VirtualCameraSink(640, 480, 30):
            pytest.skip("a virtual camera device exists on this machine")
    except SourceError as error:
        message = str(error)
        assert "modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=reggan" in message
        assert "Chrome" in message and "OBS" in message


@pytest.mark.parametrize("camera", ["/dev/video99", "7"])
def test_missing_camera_is_a_clear_error(camera):
    result = reggan("live", "--camera", camera, "--expression", "happy", "--virtual-cam")
    assert result.returncode == 2
    assert "could not be opened" in result.stderr and "Traceback" not in result.stderr
    # Only our message: OpenCV's own probing log ("global ... Camera index out of range") is silenced.
    assert "[ERROR" not in result.stderr and "[WARN" not in result.stderr and "global " not in result.stderr


def test_preview_without_a_display_is_a_clear_error_not_an_abort(monkeypatch):
    """OpenCV's Qt window aborts the process (exit 134, no message of ours) when there is no X display."""
    if not sys.platform.startswith("linux"):
        pytest.skip("only Linux runs without a display server")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    result = reggan("live", "--camera", "0", "--expression", "happy", "--preview")
    assert result.returncode == 2, result.stderr
    assert "needs a desktop session" in result.stderr and "Traceback" not in result.stderr


def test_video_onnxruntime_backend_matches_torch(feat_media, tmp_path):
    import cv2

    outputs = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / backend
        # FP32 on both sides: torch's auto precision is bfloat16 on CPUs with it in hardware, tested on its own in
        # test_export. PNG frames, not H.264: a grey level rounded the other way on a few pixels changes the
        # encoder's choices for a whole block, and the comparison would measure the encoder.
        result = reggan("video", str(feat_media / "single_face.mp4"), "-o", str(out), "--expression", "happy",
                        "--backend", backend, "--precision", "fp32", "--image-sequence")
        assert result.returncode == 0, result.stderr
        outputs[backend] = [cv2.imread(str(path)).astype(int) for path in sorted(out.glob("*.png"))]
    assert len(outputs["torch"]) == len(outputs["onnxruntime"]) > 60
    differences = [np.abs(a - b) for a, b in zip(outputs["torch"], outputs["onnxruntime"])]
    assert max(d.max() for d in differences) <= 2  # grey levels: rounding, nothing more
    assert max(d.mean() for d in differences) < 0.01


def test_live_loop_keeps_the_newest_frame_and_stops_when_the_source_ends(astronaut):
    import time

    from export.benchmark import PacedClip
    from live.loop import run_live

    class SlowProcessor:
        def process(self, frame, timestamp):
            time.sleep(0.03)  # slower than the 100 fps source: stale frames must be dropped
            return frame

    written = []

    class Recorder:
        def write(self, frame, pts=None):
            written.append(frame)

    result = run_live(PacedClip([astronaut], fps=100, count=40), SlowProcessor(), Recorder())
    assert 0 < result["frames"] < 40 and result["dropped"] > 0
    assert len(written) == result["frames"]
    assert result["latency_ms"] < 200


def test_video_to_an_image_sequence(feat_media, tmp_path):
    out = tmp_path / "frames"
    result = reggan("video", str(feat_media / "single_face.mp4"), "-o", str(out), "--expression", "sad",
                    "--image-sequence", "--regression-only")
    assert result.returncode == 0, result.stderr
    assert len(list(out.glob("frame_*.png"))) == len(decode(feat_media / "single_face.mp4"))


@pytest.mark.parametrize("workers", [1, 3])
def test_the_threaded_file_loop_gives_the_frames_one_frame_at_a_time_gives(processor_factory, astronaut, workers):
    """run_file synthesizes frames ahead of finishing them, several at once: the output must not depend on it, nor
    on which synthesis ends first. A moving face, a repeated frame and a frame without a face, as a clip."""
    from export.benchmark import InMemoryClip
    from live.loop import run_file

    blank = np.full_like(astronaut, 90)
    clip = [np.ascontiguousarray(np.roll(astronaut, 3 * min(index, 4), axis=1)) for index in range(6)] + [blank]
    clip += [np.ascontiguousarray(np.roll(astronaut, 12, axis=1))] * 2

    class Recorder:
        frames = []

        def write(self, frame, pts=None):
            self.frames.append(frame)

    one_at_a_time = processor_factory("happy")
    expected = [one_at_a_time.process(frame, index / 25) for index, frame in enumerate(clip)]
    sink = Recorder()
    counts = run_file(InMemoryClip(clip, 25), processor_factory("happy"), sink, show_progress=False,
                      synthesis_workers=workers)
    assert counts["frames"] == len(clip)
    assert all(np.array_equal(got, want) for got, want in zip(sink.frames, expected, strict=True))
    assert not np.array_equal(expected[0], clip[0]) and np.array_equal(expected[6], blank)


def test_a_sink_that_fails_mid_file_stops_the_run_with_its_error(astronaut):
    """A full disk while the queue to the encoder is full must end the run with that error, not hang it."""
    import threading
    import time

    from export.benchmark import InMemoryClip
    from live.loop import run_file

    class Passthrough:
        def observe(self, frame, timestamp):
            return frame

        def synthesize_faces(self, frame):
            return frame

        def finish(self, frame):
            return frame

    class DiskFull:
        def write(self, frame, pts=None):
            time.sleep(0.2)  # slower than processing, so the queue to it is full when it fails
            raise OSError(28, "No space left on device")

    outcome = []

    def run():
        try:
            run_file(InMemoryClip([astronaut] * 200, 30), Passthrough(), DiskFull(), show_progress=False)
        except OSError as error:
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=20)
    assert not thread.is_alive(), "run_file hung after the sink failed"
    assert outcome and "No space left" in str(outcome[0])


def test_an_output_that_cannot_be_written_is_a_clear_error(feat_media, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for out in (blocker / "out.mp4", blocker / "frames"):
        result = reggan("video", str(feat_media / "single_face.mp4"), "-o", str(out), "--expression", "happy")
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert f"cannot write {out}" in result.stderr


def test_a_phone_video_stored_sideways_is_processed_and_written_upright(astronaut, tmp_path):
    """Phones store portrait video sideways with a display rotation; the face must be found upright and the output
    (which has no rotation of its own) must play upright."""
    import av

    portrait = np.ascontiguousarray(astronaut[:, 64:448])  # 512 x 384, the face upright
    sideways = np.ascontiguousarray(np.rot90(portrait, k=-1))  # what the phone stores
    clip = tmp_path / "phone.mp4"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = sideways.shape[1], sideways.shape[0], "yuv420p"
        stream.set_display_rotation(90)  # players turn it a quarter counter-clockwise: upright
        for index in range(6):
            frame = av.VideoFrame.from_ndarray(sideways, format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    out = tmp_path / "out.mp4"
    result = reggan("video", str(clip), "-o", str(out), "--expression", "surprised")
    assert result.returncode == 0, result.stderr
    frames = decode(out)
    assert len(frames) == 6 and frames[-1].shape == portrait.shape
    change = np.abs(frames[-1].astype(int) - portrait.astype(int)).mean(axis=2)
    # The face (eyes to chin at x 115-210, y 85-180 once cropped) changed: it was found the right way up.
    assert change[85:180, 115:210].mean() > 3 * change[300:].mean()


def test_batch_never_overwrites_an_input_or_another_result(feat_media, tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("talk.mp4", "talk.mov"):
        (folder / name).write_bytes((feat_media / "single_face.mp4").read_bytes())
    original = (folder / "talk.mp4").read_bytes()
    result = reggan("batch", str(folder), "-o", str(tmp_path / "out"), "--expression", "happy")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["talk_mov.mp4", "talk_mp4.mp4"]
    # An output that is the input itself is refused, and the original stays as it was.
    result = reggan("video", str(folder / "talk.mp4"), "-o", str(folder / "talk.mp4"), "--expression", "happy")
    assert result.returncode == 2 and "is the input itself" in result.stderr
    assert (folder / "talk.mp4").read_bytes() == original
    # A batch into its own folder is refused once, up front, with the folder left as it was.
    before = sorted(p.name for p in folder.iterdir())
    result = reggan("batch", str(folder), "-o", f"{folder}/../{folder.name}", "--expression", "happy")
    assert result.returncode == 2 and "the output folder is the input folder" in result.stderr
    assert "FAILED" not in result.stderr and sorted(p.name for p in folder.iterdir()) == before
    assert (folder / "talk.mp4").read_bytes() == original


# --- The model's share of the CPU in file mode -----------------------------------------------------------------

def test_file_mode_gives_the_model_half_the_cores_and_puts_the_count_back(monkeypatch):
    import os

    import torch

    from reggan.backends import TorchBackend
    from reggan.from_config import cores_shared_with_the_file_loop, file_model_threads
    from reggan.networks import Synthesizer

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert file_model_threads({"runtime": {"file_threads": "auto"}}) == 4
    assert file_model_threads({"runtime": {}}) == 4  # a config from before the setting: auto
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert file_model_threads({"runtime": {"file_threads": "auto"}}) == 1  # never none
    assert file_model_threads({"runtime": {"file_threads": 3}}) == 3

    before = torch.get_num_threads()
    torch_on_cpu = TorchBackend(Synthesizer(["happy"], 32))
    config = {"runtime": {"file_threads": 1}}
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(2)), raising=False)
    with cores_shared_with_the_file_loop(config, torch_on_cpu) as workers:
        assert workers == 2 and torch.get_num_threads() == 1  # two workers, one thread each at the least
    assert torch.get_num_threads() == before
    with cores_shared_with_the_file_loop({"runtime": {"file_threads": 4, "file_workers": 2}}, torch_on_cpu):
        assert torch.get_num_threads() == 2  # the model's threads shared between its workers
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    with cores_shared_with_the_file_loop(config, torch_on_cpu) as workers:
        assert workers == 1  # one core: nothing to run side by side

    class OtherBackend:  # onnxruntime, TensorRT: their threads are not torch's to set, nor their calls to overlap
        name = "onnxruntime"

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    with cores_shared_with_the_file_loop(config, OtherBackend()) as workers:
        assert workers == 1 and torch.get_num_threads() == before
