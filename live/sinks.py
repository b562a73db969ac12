"""Where frames go. Every sink is a context manager with ``write(frame)``; frames are RGB uint8 [H, W, 3].
The live loop's preview window (with its expression hotkeys) is here too: it is shown each output frame.

VideoFileSink encodes with PyAV into ``NAME.partial.EXT`` and renames to the final name only once the container
is finalised, so an interrupted run (Ctrl-C, SIGTERM, an exception) still leaves a valid, playable file with every
frame written so far, and never a half-written file under the final name.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from reggan.errors import UserError

CODECS = {"h264": "libx264", "vp9": "libvpx-vp9", "av1": "libsvtav1"}
# libvpx's defaults took 78 ms a frame at 640x360 on the 2-core CPU (the whole loop then ran at 7 fps), and CRF
# without b=0 is capped by a default bitrate. Measured on 120 frames of WolfgangLanger_Pexels.mp4: these settings
# 4.0 ms a frame, 402 KiB, PSNR 39.4 dB (the defaults: 581 KiB, 41.4 dB; x264 veryfast CRF 20: 5.5 ms, 39.8 dB).
VP9_OPTIONS = {"crf": "30", "b": "0", "deadline": "realtime", "cpu-used": "8", "row-mt": "1"}
REENCODED_AUDIO = {".webm": "libopus"}  # for a container that refuses the input's audio codec; AAC elsewhere


class SinkError(UserError):
    """The output cannot be written: a folder that cannot be made, a full disk, a path that is a file."""


def cannot_write(path: Path, error: Exception, frames: int = 0) -> SinkError:
    reason = getattr(error, "strerror", None) or str(error)
    where = f" after {frames} frames (those are kept)" if frames else ""
    return SinkError(f"cannot write {path}{where}: {reason}")


class VideoFileSink:
    def __init__(self, path: str | Path, fps: float, codec: str = "h264", crf: int = 20, audio_from=None,
                 time_base=None, size: tuple[int, int] | None = None, preset: str = "veryfast"):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.stem + ".partial" + self.path.suffix)
        self.fps = Fraction(fps).limit_denominator(1001)
        if codec not in CODECS:
            raise ValueError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}")
        self.codec = CODECS[codec]
        if self.codec == "libsvtav1":
            # SVT-AV1 logs to stderr from C, past Python: a "Failed to set thread priority" warning on every run where
            # the process may not raise its threads' priority (most). Errors only; a user's own SVT_LOG wins.
            os.environ.setdefault("SVT_LOG", "1")
        self.crf = crf
        # x264 preset: encoding competes with synthesis for the same cores. Measured on 200 frames of a 640x360
        # clip at CRF 20 (2-core Xeon): medium 12.0 ms/frame, 651 KiB, 41.0 dB PSNR; veryfast 5.5 ms, 606 KiB,
        # 39.8 dB.
        self.preset = preset
        self.audio_from = audio_from  # an input audio stream to copy packets from, or None
        self.time_base = time_base  # the input's video time base: frames keep their own timestamps (VFR-safe)
        self.size = size  # (width, height) when known up front
        self.pending_audio = []  # audio that arrives before the first video frame: every stream must exist first
        self.container = None
        self.video = None
        self.audio = None
        self.reencode_audio = False  # True when the container needs the audio in another codec (_add_audio)
        self.frames_written = 0

    @contextmanager
    def _writing(self):
        """File-system and FFmpeg failures (an unwritable path, a full disk) as one clear SinkError."""
        try:
            yield
        except (OSError, av.error.FFmpegError) as error:
            raise cannot_write(self.path, error, self.frames_written) from error

    def __enter__(self) -> "VideoFileSink":
        with self._writing():
            # Folders made here are taken away again if FFmpeg refuses the name: a refused run leaves nothing behind.
            made = [folder for folder in self.path.parents if not folder.exists()]  # deepest first
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.container = av.open(str(self.partial), mode="w")
            except ValueError as error:  # FFmpeg knows no container by this name ending: "Could not determine ..."
                for folder in made:
                    folder.rmdir()
                ending = f"the extension {self.path.suffix!r}" if self.path.suffix else "a name without an extension"
                raise SinkError(f"cannot write {self.path}: FFmpeg has no video format for {ending}; name the output "
                                ".mp4, .mkv, .mov or .webm") from error
        if self.audio_from is not None:
            self._add_audio()
        if self.size is not None:
            self._open_video(*self.size)
        return self

    def _add_audio(self) -> None:
        """The input's audio packets copied as they are; where this container cannot hold their codec (MP3 or AAC
        in WebM), decoded and encoded again in one it can, so the sound is never dropped."""
        try:
            self.audio = self.container.add_stream_from_template(self.audio_from)
            return
        except (ValueError, av.error.FFmpegError):
            pass
        source_name = self.audio_from.codec_context.codec.long_name  # "MP3 (MPEG audio layer 3)", not "mp3float"
        codec = REENCODED_AUDIO.get(self.path.suffix.lower(), "aac")
        try:
            # Opus runs at 48 kHz only; the encoder resamples what it is given (PyAV does it inside encode()).
            rate = 48000 if codec == "libopus" else self.audio_from.codec_context.sample_rate
            self.audio = self.container.add_stream(codec, rate=rate)
            self.audio.layout = self.audio_from.codec_context.layout.name
            self.reencode_audio = True
            print(f"note: {self.path.suffix} cannot carry {source_name} audio as it is; re-encoding it as {codec}")
        except (ValueError, av.error.FFmpegError):
            self.audio = None
            print(f"note: {self.path.suffix} cannot carry {source_name} audio; writing video only "
                  "(use .mp4 or .mkv to keep the sound)")

    def _open_video(self, width: int, height: int) -> None:
        self.video = self.container.add_stream(self.codec, rate=self.fps)
        # Even sizes: yuv420p needs them.
        self.video.width, self.video.height = width - width % 2, height - height % 2
        self.video.pix_fmt = "yuv420p"
        # Frames keep the input's timestamps: the encoder must count in the same time base as the stream.
        self.video.time_base = self.video.codec_context.time_base = self.time_base or 1 / self.fps
        if self.codec == "libx264":
            self.video.options = {"crf": str(self.crf), "preset": self.preset}
        elif self.codec == "libvpx-vp9":
            self.video.options = VP9_OPTIONS

    def write(self, frame: np.ndarray, pts: int | None = None) -> None:
        if self.video is None:
            self._open_video(frame.shape[1], frame.shape[0])
        while self.pending_audio:
            self._mux_audio(self.pending_audio.pop(0))
        frame = frame[: self.video.height, : self.video.width]
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video_frame.pts = self.frames_written if pts is None else pts
        with self._writing():  # PyAV opens the file lazily, so an unwritable path shows up here too
            for packet in self.video.encode(video_frame):
                self.container.mux(packet)
        self.frames_written += 1

    def write_audio_packet(self, packet) -> None:
        """Copy an already-encoded audio packet from the input (no re-encode, so it stays in sync and lossless)."""
        if self.audio is None or packet.dts is None:
            return
        if self.video is None:
            self.pending_audio.append(packet)
        else:
            self._mux_audio(packet)

    def _mux_audio(self, packet) -> None:
        with self._writing():
            if self.reencode_audio:
                self._reencode_audio(packet)
                return
            packet.stream = self.audio
            self.container.mux(packet)

    def _reencode_audio(self, packet) -> None:
        try:
            frames = packet.decode()
        except av.error.InvalidDataError:
            return  # a damaged audio packet: a few milliseconds of silence rather than a failed run
        for frame in frames:
            frame.pts = None  # the encoder counts samples itself, from the start: the audio stays continuous
            for encoded in self.audio.encode(frame):
                self.container.mux(encoded)

    def __exit__(self, *exc) -> None:
        if self.container is None:
            return
        try:
            if self.video is not None:
                for packet in self.video.encode():
                    self.container.mux(packet)
            if self.reencode_audio:
                for packet in self.audio.encode():
                    self.container.mux(packet)
        finally:
            self.container.close()
        if self.frames_written:
            self.partial.replace(self.path)
        else:
            self.partial.unlink(missing_ok=True)


def virtual_camera_help() -> str:
    return (
        "no virtual camera device found. Linux: `sudo apt install v4l2loopback-dkms` then "
        "`sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=reggan` (exclusive_caps=1 is what lets "
        "Chrome and Zoom list it; start reggan before opening the camera in the call). Windows / macOS: install "
        "OBS Studio 28+ and start its Virtual Camera once, then close OBS."
    )


def fit_on_black(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """The frame scaled to fit ``width`` x ``height`` with its proportions kept, centred on black bars."""
    import cv2

    rows, cols = frame.shape[:2]
    scale = min(width / cols, height / rows)
    size = (min(width, round(cols * scale)), min(height, round(rows * scale)))
    resized = cv2.resize(frame, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    canvas = np.zeros((height, width, 3), np.uint8)
    top, left = (height - size[1]) // 2, (width - size[0]) // 2
    canvas[top : top + size[1], left : left + size[0]] = resized
    return canvas


class VirtualCameraSink:
    """Frames to a virtual webcam through pyvirtualcam (v4l2loopback on Linux, OBS on Windows and macOS)."""

    def __init__(self, width: int = 1280, height: int = 720, fps: float = 30.0, backend: str | None = None,
                 device: str | None = None):
        self.width, self.height, self.fps = width, height, fps
        self.backend, self.device = backend, device
        self.camera = None

    def __enter__(self) -> "VirtualCameraSink":
        import pyvirtualcam

        try:
            self.camera = pyvirtualcam.Camera(self.width, self.height, self.fps, fmt=pyvirtualcam.PixelFormat.RGB,
                                              backend=self.backend, device=self.device)
        except RuntimeError as error:
            from live.sources import SourceError

            raise SourceError(f"{virtual_camera_help()} (pyvirtualcam said: {error})") from error
        return self

    def write(self, frame: np.ndarray, pts=None) -> None:
        if frame.shape[:2] != (self.height, self.width):
            # A camera that fell back to another size (or shape: 4:3 into the 16:9 device) would be stretched.
            frame = fit_on_black(frame, self.width, self.height)
        self.camera.send(np.ascontiguousarray(frame))
        self.camera.sleep_until_next_frame()

    def __exit__(self, *exc) -> None:
        if self.camera is not None:
            self.camera.close()


class ImageSequenceSink:
    """Numbered PNG files in a folder."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.count = 0

    def __enter__(self) -> "ImageSequenceSink":
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise cannot_write(self.folder, error) from error
        return self

    def write(self, frame: np.ndarray, pts=None) -> None:
        from reggan.images import write_rgb

        try:
            write_rgb(self.folder / f"frame_{self.count:06d}.png", frame)
        except OSError as error:
            raise cannot_write(self.folder, error, self.count) from error
        self.count += 1

    def write_audio_packet(self, packet) -> None:
        """Image sequences carry no sound."""

    def __exit__(self, *exc) -> None:
        pass


class NullSink:
    """Discards frames: the live loop with only a preview window and no virtual camera."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def write(self, frame, pts=None):
        pass


def preview_unavailable() -> str | None:
    """Why an OpenCV window cannot open here, or None. On Linux, OpenCV's Qt build aborts the whole process (no
    exception to catch) when it finds no X display, taking the virtual camera down with it: so this is asked
    before anything starts."""
    if not sys.platform.startswith("linux") or os.environ.get("DISPLAY") or os.environ.get("QT_QPA_PLATFORM"):
        return None
    return ("--preview needs a desktop session, and this one has no display (DISPLAY is not set: over SSH, for "
            "example). Leave out --preview and watch the --virtual-cam output in the call, or run in a desktop "
            "session (`ssh -X` forwards one)")


class PreviewWindow:
    """OpenCV window: keys 1..9 pick an expression, + and - change intensity, q or Esc quits."""

    def __init__(self, controller, expressions, max_intensity: float = 1.5):
        self.controller, self.expressions, self.max_intensity = controller, expressions, max_intensity

    def __call__(self, frame, stats) -> bool:
        import time as clock

        import cv2

        shown = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        cv2.putText(shown, f"{stats['fps']:.0f} fps {stats['latency_ms']:.0f} ms", (10, 30),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 255, 0), 2)
        cv2.imshow("reggan", shown)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            return False
        name, intensity = self.controller.target
        if ord("1") <= key < ord("1") + len(self.expressions):
            self.controller.set(self.expressions[key - ord("1")], intensity, clock.monotonic())
        elif key in (ord("+"), ord("=")):
            self.controller.set(name, min(intensity + 0.1, self.max_intensity), clock.monotonic())
        elif key == ord("-"):
            self.controller.set(name, max(intensity - 0.1, 0.0), clock.monotonic())
        return True
