"""Where frames go. Every sink is a context manager with ``write(frame)``; frames are RGB uint8 [H, W, 3].

VideoFileSink encodes with PyAV into ``NAME.partial.EXT`` and renames to the final name only once the container
is finalised, so an interrupted run (Ctrl-C, an exception) still leaves a valid, playable file with every frame
written so far, and never a half-written file under the final name.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

CODECS = {"h264": "libx264", "vp9": "libvpx-vp9", "av1": "libsvtav1"}


class VideoFileSink:
    def __init__(self, path: str | Path, fps: float, codec: str = "h264", crf: int = 20, audio_from=None):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.stem + ".partial" + self.path.suffix)
        self.fps = Fraction(fps).limit_denominator(1001)
        if codec not in CODECS:
            raise ValueError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}")
        self.codec = CODECS[codec]
        self.crf = crf
        self.audio_from = audio_from  # an input audio stream to copy packets from, or None
        self.container = None
        self.video = None
        self.audio = None
        self.frames_written = 0

    def __enter__(self) -> "VideoFileSink":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(self.partial), mode="w")
        if self.audio_from is not None:
            self.audio = self.container.add_stream_from_template(self.audio_from)
        return self

    def _open_video(self, width: int, height: int) -> None:
        self.video = self.container.add_stream(self.codec, rate=self.fps)
        # Even sizes: yuv420p needs them.
        self.video.width, self.video.height = width - width % 2, height - height % 2
        self.video.pix_fmt = "yuv420p"
        self.video.time_base = 1 / self.fps
        self.video.options = {"crf": str(self.crf)} if self.codec != "libsvtav1" else {}

    def write(self, frame: np.ndarray, index: int | None = None) -> None:
        if self.video is None:
            self._open_video(frame.shape[1], frame.shape[0])
        frame = frame[: self.video.height, : self.video.width]
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video_frame.pts = self.frames_written if index is None else index
        for packet in self.video.encode(video_frame):
            self.container.mux(packet)
        self.frames_written += 1

    def write_audio_packet(self, packet) -> None:
        """Copy an already-encoded audio packet from the input (no re-encode, so it stays in sync and lossless)."""
        if self.audio is not None and packet.dts is not None:
            packet.stream = self.audio
            self.container.mux(packet)

    def __exit__(self, *exc) -> None:
        if self.container is None:
            return
        try:
            if self.video is not None:
                for packet in self.video.encode():
                    self.container.mux(packet)
        finally:
            self.container.close()
        if self.frames_written:
            self.partial.replace(self.path)
        else:
            self.partial.unlink(missing_ok=True)
