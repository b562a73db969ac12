"""One frame through the chain: tracker -> aligner -> synthesizer -> smoother (live/smoothing.py) -> compositor.

Each stage is a small object; ``FrameProcessor.process`` wires them for a single frame, with no threads, so every
stage can be tested on one frame. The loop (live/loop.py) owns the concurrency.
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np

from live.smoothing import ChangeSmoother, RepeatedFrames
from reggan.alignment import Aligner
from reggan.anchoring import FaceBend, VideoBends, synthesize_bent
from reggan.compositing import FeatheredCompositor


class SynthesisStage:
    """All faces of a frame, and every expression in a cross-fade, in one backend call."""

    def __init__(self, backend, max_intensity: float = 1.5):
        self.backend = backend
        self.max_intensity = max_intensity

    def __call__(self, crops: list[np.ndarray], weights: list[tuple[str, float]], keeps: list[np.ndarray],
                 bends: list[FaceBend | None] | None = None) -> list[np.ndarray]:
        """Aligned uint8 crops, [(expression, weight)], each crop's keep mask  # [R, R] (reggan/keep.py) and bend
        (reggan/anchoring.py; None: unbent) -> synthesized float32 crops (0-255)."""
        active = [(self.backend.expressions.index(name), min(w, self.max_intensity)) for name, w in weights
                  if name != "neutral" and w > 0]
        if not crops or not active:
            return [crop.astype(np.float32) for crop in crops]
        return synthesize_bent(lambda inputs, masks: self._synthesize(inputs, active, masks), crops, keeps, bends)

    def _synthesize(self, crops: list[np.ndarray], active: list[tuple[int, float]],
                    keeps: list[np.ndarray]) -> list[np.ndarray]:
        """Crops as the networks see them, [(label, intensity)] -> float32 crops with every change added."""
        base = [crop.astype(np.float32) for crop in crops]
        faces = np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32) / 255
        batch = np.concatenate([faces] * len(active))
        labels = np.repeat([label for label, _ in active], len(crops)).astype(np.int64)
        strength = np.repeat([weight for _, weight in active], len(crops)).astype(np.float32)
        keep = np.concatenate([np.stack(keeps)[:, None]] * len(active))
        out = self.backend(batch, labels, strength, keep).transpose(0, 2, 3, 1) * 255
        result = []
        for index, crop in enumerate(base):
            change = sum(out[k * len(crops) + index] - crop for k in range(len(active)))
            result.append(crop + change)
        return result


class FrameProcessor:
    def __init__(self, tracker, backend, controller, feather: float = 0.08, max_intensity: float = 1.5,
                 smoothing: float = 0.5, colour_match: bool = False, synthesize_every: int = 1,
                 bend_time: float | None = 2.0):
        self.tracker = tracker
        self.aligner = Aligner(backend.resolution)
        self.synthesize = SynthesisStage(backend, max_intensity)
        self.smoother = ChangeSmoother(smoothing)
        # Each face is bent onto the template's features for the networks (reggan/anchoring.py), following its slow
        # geometry only; None: no bending.
        self.bends = (VideoBends(self.aligner.bend, self.aligner.template, bend_time)
                      if bend_time is not None else None)
        self.previous_weights = None  # the controller's output on the last frame: is the target holding still?
        self.compositor = FeatheredCompositor(self.aligner, feather, colour_match)
        self.repeats = RepeatedFrames(self.aligner)
        # Synthesize every Nth frame only; between, the last change is carried along the faces' optical flow. The
        # smoothing carries it anyway, so this trades little for up to N times less synthesis: at N = 2 on the
        # evaluation clips, 1-1.6 grey levels and a softer expression (each carry blurs the change a little).
        self.synthesize_every = max(int(synthesize_every), 1)
        self.carried_frames = 0  # frames since the last synthesis
        self.controller = controller
        self.timings: dict[str, list[float]] = defaultdict(list)  # stage -> milliseconds per frame (bench)
        self.record_timings = False  # only benchmarks keep per-frame timings; a live run must not grow memory

    def _timed(self, stage: str, started: float) -> float:
        now = time.perf_counter()
        if self.record_timings:
            self.timings[stage].append((now - started) * 1000)
        return now

    def process(self, frame: np.ndarray, timestamp: float) -> np.ndarray:
        """RGB uint8 frame  # [H, W, 3] at ``timestamp`` seconds -> the frame with its faces changed."""
        clock = time.perf_counter()
        weights = self.controller.at(timestamp)
        repeated = self.repeats.repeat(frame, weights)
        if repeated is not None:
            self._timed("repeat", clock)
            return repeated
        tracks = self.tracker.update(frame, timestamp)
        # Detection runs every Nth frame and costs several times a landmark fit: timed apart, so a mean means something.
        stage = "track: detect + landmarks" if self.tracker.detected_last_frame else "track: landmarks only"
        clock = self._timed(stage, clock)
        self.smoother.forget_except({track.identity for track in tracks})
        if self.bends is not None:
            self.bends.forget_except({track.identity for track in tracks})
        if not tracks:
            self.repeats.forget()
            return frame
        faces = [self.aligner.place(track.landmarks) for track in tracks]
        matrices = [face.matrix for face in faces]
        crops = [self.aligner.crop(frame, matrix) for matrix in matrices]
        clock = self._timed("align", clock)
        steady, self.previous_weights = weights == self.previous_weights, weights
        smoothed = self._carry(tracks, crops, timestamp) if steady else None
        if smoothed is None:
            synthesized = self.synthesize(crops, weights, [face.keep for face in faces],
                                          self._face_bends(tracks, faces, timestamp))
            clock = self._timed("synthesize", clock)
            smoothed = [self.smoother(track.identity, crop, new, timestamp, track.fresh, face.keep, steady)
                        for track, face, crop, new in zip(tracks, faces, crops, synthesized)]
        clock = self._timed("smooth", clock)
        result = frame
        for crop, new, matrix in zip(crops, smoothed, matrices):
            result = self.compositor.paste(result, crop, new, matrix)
        self._timed("composite", clock)
        self.repeats.remember(frame, result, matrices, weights)
        return result

    def _face_bends(self, tracks, faces, timestamp: float) -> list[FaceBend | None]:
        if self.bends is None:
            return [None] * len(faces)
        return [self.bends(track.identity, face.points, timestamp, track.fresh)
                for track, face in zip(tracks, faces)]

    def _carry(self, tracks, crops: list[np.ndarray], timestamp: float) -> list[np.ndarray] | None:
        """Every face's last change carried onto its crop, on a frame the synthesizer may skip; None when it must run
        (its turn, a new face, or a face with nothing to carry)."""
        if self.carried_frames + 1 >= self.synthesize_every or any(track.fresh for track in tracks):
            self.carried_frames = 0
            return None
        carried = [self.smoother.carry(track.identity, crop, timestamp) for track, crop in zip(tracks, crops)]
        if any(crop is None for crop in carried):
            self.carried_frames = 0
            return None
        self.carried_frames += 1
        return carried
