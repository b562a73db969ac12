"""One frame through the chain: tracker -> aligner -> synthesizer -> smoother (live/smoothing.py) -> compositor.

Each stage is a small object; ``FrameProcessor`` wires them in steps. ``observe`` tracks a frame's faces, aligns
and crops them (each frame's tracks follow the last frame's, so frames are observed in order); ``synthesize_faces``
measures each face's optical flow back to its last crop and runs the model on them, which waits for no other
frame's output, so the file loop runs it for several frames at once (live/loop.py); ``finish`` smooths the change,
pastes it back and remembers it, in frame order. ``prepare`` is the first two and ``process`` all three, for a
single frame, with no threads, so every stage can be tested on one frame. The loop owns the concurrency.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from live.smoothing import ChangeSmoother, CropMotion, FadeIn, LastChange, RepeatedFrames, grey_of
from reggan.alignment import Aligner, PlacedFace
from reggan.anchoring import FaceBend, VideoBends, synthesize_bent
from reggan.backends import synthesize_crops, warp_displacements
from reggan.compositing import FeatheredCompositor
from reggan.lips import lips_kept, warped_lips
from reggan.warp import displace


class SynthesisStage:
    """All faces of a frame, and every expression in a cross-fade, in one backend call."""

    def __init__(self, backend, max_intensity: float = 1.5):
        self.backend = backend
        self.max_intensity = max_intensity
        # The file loop synthesizes frames in worker threads while the main thread finishes them, and finishing a
        # skipped frame that has nothing to carry synthesizes too. A backend that may be called twice at once says
        # so (the torch backend on a CPU); the others' calls take turns (a CUDA graph replays into one set of buffers).
        self.lock = contextlib.nullcontext() if getattr(backend, "concurrent_calls", False) else threading.Lock()

    def __call__(self, crops: list[np.ndarray], weights: list[tuple[str, float]], keeps: list[np.ndarray],
                 bends: list[FaceBend | None] | None = None,
                 open_mouths: list[np.ndarray] | None = None) -> list[np.ndarray]:
        """Aligned uint8 crops, [(expression, weight)], each crop's keep mask  # [R, R] (reggan/keep.py), bend
        (reggan/anchoring.py; None: unbent) and open mouth (its part of the keep mask, moved as one piece; None:
        closed) -> synthesized float32 crops (0-255)."""
        active = self._active(weights)
        if not crops or not active:
            return [crop.astype(np.float32) for crop in crops]
        moves, motion = self._warp(active)
        with self.lock:
            return synthesize_bent(lambda inputs, masks: self._synthesize(inputs, active, masks, moves, motion),
                                   crops, keeps, bends, None if motion is None else [motion] * len(crops),
                                   open_mouths)

    def _active(self, weights: list[tuple[str, float]]) -> list[tuple[int, float]]:
        """[(expression, weight)] -> [(label, strength)] of those that change the face."""
        return [(self.backend.expressions.index(name), min(w, self.max_intensity)) for name, w in weights
                if name != "neutral" and w > 0]

    def _warp(self, active: list[tuple[int, float]]) -> tuple[list[np.ndarray] | None, np.ndarray | None]:
        """Each active expression's warp field  # [R, R, 2] and the motion they make together; (None, None) when the
        model has no warp."""
        moves = warp_displacements(self.backend, [label for label, _ in active], [weight for _, weight in active])
        # Every field is linear in its strength, so a cross-fade moves the face by the weighted sum of the two (one
        # expression: its own array, which the bend keeps what it derived from).
        return moves, None if moves is None else functools.reduce(np.add, moves)

    def motion(self, weights: list[tuple[str, float]]) -> np.ndarray | None:
        """The warp's motion for these weights  # [R, R, 2] (None: no warp, or nothing to change). The fields are
        cached per expression and strength, so asking again after a synthesis costs next to nothing."""
        active = self._active(weights)
        return self._warp(active)[1] if active else None

    def _synthesize(self, crops: list[np.ndarray], active: list[tuple[int, float]], keeps: list[np.ndarray],
                    moves: list[np.ndarray] | None, motion: np.ndarray | None) -> list[np.ndarray]:
        """Crops as the networks see them, [(label, intensity)], each one's warp and all of them added up (None: the
        model has none) -> float32 crops with every change added: the crop moved by that one motion, and the
        appearance each expression painted over its own warp on top (adding up whole outputs moved each edge
        twice, half-way each, while expressions cross-faded)."""
        out = synthesize_crops(self.backend, crops * len(active), [label for label, _ in active for _ in crops],
                               [weight for _, weight in active for _ in crops], keeps * len(active))
        if len(active) == 1:
            return out
        result = []
        for index, crop in enumerate(crops):
            outputs = [out[k * len(crops) + index] for k in range(len(active))]
            if moves is None:
                base = crop.astype(np.float32)
                result.append(base + sum(output - base for output in outputs))
            else:
                painted = sum(output - displace(crop, moved) for output, moved in zip(outputs, moves))
                result.append(displace(crop, motion) + painted)
        return result


@dataclass
class FaceFrame:
    """A frame between ``prepare`` and ``finish``: its faces as observed and, unless skipped, synthesized."""

    image: np.ndarray  # [H, W, 3] uint8 RGB
    timestamp: float
    repeat: bool = False  # the same picture as the last processed frame: its change is pasted again
    # Each face's track identity and whether the track is new, copied: the tracker goes on changing its tracks
    # while this frame waits to be finished.
    identities: list[int] = field(default_factory=list)
    fresh: list[bool] = field(default_factory=list)
    faces: list[PlacedFace] = field(default_factory=list)
    crops: list[np.ndarray] = field(default_factory=list)  # aligned, [R, R, 3] uint8
    motions: list[CropMotion] = field(default_factory=list)  # each crop's optical flow back to its track's last one
    regions: list[tuple[int, int, int, int]] = field(default_factory=list)  # each crop's footprint in the image
    bends: list[FaceBend | None] = field(default_factory=list)
    weights: list[tuple[str, float]] | None = None
    steady: bool = True  # the target expression is the same as on the previous frame with faces
    shares: list[float] = field(default_factory=list)  # how much of its change each face gets (``FadeIn``)
    skip_synthesis: bool = False  # carry the last change along the flow instead (``synthesize_every``)
    synthesized: list[np.ndarray] | None = None  # [R, R, 3] float32 0-255 per face


class FrameProcessor:
    def __init__(self, tracker, backend, controller, feather: float = 0.08, max_intensity: float = 1.5,
                 smoothing: float = 0.5, colour_match: bool = False, synthesize_every: int = 1,
                 bend_time: float | None = 2.0, fade_in: float = 0.25, fine_flow: bool = True,
                 lips_own_brightness: bool = True):
        self.tracker = tracker
        self.aligner = Aligner(backend.resolution)
        self.synthesize = SynthesisStage(backend, max_intensity)
        self.smoother = ChangeSmoother(smoothing, fine_flow=fine_flow)
        # Each track's last observed crop (grey): what its next crop's optical flow is measured against, ahead of the
        # smoother, which takes the change last taken on that very crop.
        self.last_greys: dict[int, np.ndarray] = {}
        self.fade_in = FadeIn(fade_in)
        # Over closed lips the paint may darken but not lighten (reggan/lips.py): a pale band of teeth there flipped
        # with every syllable.
        self.lips_own_brightness = lips_own_brightness
        # Each face is bent onto the template's features for the networks (reggan/anchoring.py), following its slow
        # geometry only; None: no bending.
        self.bends = (VideoBends(self.aligner.bend, self.aligner.template, bend_time)
                      if bend_time is not None else None)
        self.previous_weights = None  # the controller's output on the last frame: is the target holding still?
        self.compositor = FeatheredCompositor(self.aligner, feather, colour_match)
        # A repeated picture is recognised from the input when it is observed, and gets the output's change again
        # when it is finished: two halves, one per step, so the two steps share no state.
        self.repeats = RepeatedFrames(self.aligner)
        self.last_change = LastChange()
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
        return self.finish(self.prepare(frame, timestamp))

    def prepare(self, frame: np.ndarray, timestamp: float) -> FaceFrame:
        """Observe a frame and synthesize its faces: the steps that need no earlier frame's output."""
        return self.synthesize_faces(self.observe(frame, timestamp))

    def observe(self, frame: np.ndarray, timestamp: float) -> FaceFrame:
        """Track, place and crop the faces of a frame, and decide what the synthesizer must do with them."""
        clock = time.perf_counter()
        weights = self.controller.at(timestamp)
        if self.repeats.matches(frame, weights):
            return FaceFrame(frame, timestamp, repeat=True)
        tracks = self.tracker.update(frame, timestamp)
        # Detection runs every Nth frame and costs several times a landmark fit: timed apart, so a mean means something.
        stage = "track: detect + landmarks" if self.tracker.detected_last_frame else "track: landmarks only"
        clock = self._timed(stage, clock)
        if self.bends is not None:
            self.bends.forget_except({track.identity for track in tracks})
        self.fade_in.update([track.identity for track in tracks], timestamp)
        if not tracks:
            self.repeats.forget()
            self.last_greys = {}
            return FaceFrame(frame, timestamp)
        faces = [self.aligner.place(track.landmarks) for track in tracks]
        matrices = [face.matrix for face in faces]
        crops = [self.aligner.crop(frame, matrix, antialias=True) for matrix in matrices]
        greys = [grey_of(crop) for crop in crops]
        motions = [CropMotion(grey, None if track.fresh else self.last_greys.get(track.identity), None)
                   for track, grey in zip(tracks, greys)]
        self.last_greys = {track.identity: grey for track, grey in zip(tracks, greys)}
        regions = self.repeats.remember(frame, matrices, weights)
        shares = [self.fade_in.share(track.identity, timestamp) for track in tracks]
        if min(shares) < 1:
            self.repeats.forget()  # a still face fading in must go on fading in, not repeat its first frame
        steady, self.previous_weights = weights == self.previous_weights, weights
        bends = self._face_bends(tracks, faces, timestamp)
        self._timed("align", clock)
        return FaceFrame(frame, timestamp, identities=[track.identity for track in tracks],
                         fresh=[track.fresh for track in tracks], faces=faces, crops=crops, motions=motions,
                         regions=regions, bends=bends, weights=weights, steady=steady, shares=shares,
                         skip_synthesis=steady and self._may_skip(tracks))

    def synthesize_faces(self, face_frame: FaceFrame) -> FaceFrame:
        """The frame with its faces' motion measured and, unless this frame's synthesis is skipped, synthesized: the
        steps that wait for no other frame's output, which the file loop runs for several frames at once."""
        if face_frame.repeat or not face_frame.identities:
            return face_frame
        clock = time.perf_counter()
        face_frame = replace(face_frame, motions=[self.smoother.motion(motion.grey, motion.previous)
                                                  for motion in face_frame.motions])
        self._timed("flow", clock)
        return face_frame if face_frame.skip_synthesis else self._synthesized(face_frame)

    def _synthesized(self, face_frame: FaceFrame) -> FaceFrame:
        clock = time.perf_counter()
        faces = face_frame.faces
        synthesized = self.synthesize(face_frame.crops, face_frame.weights, [face.keep for face in faces],
                                      face_frame.bends, [face.open_mouth for face in faces])
        if self.lips_own_brightness:
            synthesized = self._lips_kept(face_frame, synthesized)
        self._timed("synthesize", clock)
        return replace(face_frame, synthesized=synthesized)

    def _lips_kept(self, face_frame: FaceFrame, synthesized: list[np.ndarray]) -> list[np.ndarray]:
        """Each synthesized face without the lightening painted over its closed lips, where the warp put them (an
        open mouth's inside is kept by the synthesizer already)."""
        motion = self.synthesize.motion(face_frame.weights)
        kept = []
        for face, crop, new in zip(face_frame.faces, face_frame.crops, synthesized):
            kept.append(lips_kept(crop, new, warped_lips(face.points, self.aligner.template, motion), face.open_mouth))
        return kept

    def finish(self, face_frame: FaceFrame) -> np.ndarray:
        """Smooth the synthesized change, paste it back and remember it; frames must come in order."""
        clock = time.perf_counter()
        if face_frame.repeat:
            pasted = self.last_change.paste(face_frame.image)
            self._timed("repeat", clock)
            return pasted
        self.smoother.forget_except(set(face_frame.identities))
        if not face_frame.identities:
            return face_frame.image
        smoothed = self._carry(face_frame) if face_frame.skip_synthesis else None
        if smoothed is None:
            if face_frame.synthesized is None:  # nothing could be carried (a cut): synthesize after all
                face_frame = self._synthesized(face_frame)
                clock = time.perf_counter()
            smoothed = [self.smoother(identity, crop, new, face_frame.timestamp, fresh, face.keep, face_frame.steady,
                                      face.closed_eyes, motion)
                        for identity, fresh, face, crop, new, motion in zip(
                            face_frame.identities, face_frame.fresh, face_frame.faces, face_frame.crops,
                            face_frame.synthesized, face_frame.motions)]
        clock = self._timed("smooth", clock)
        result = face_frame.image
        for share, crop, new, face in zip(face_frame.shares, face_frame.crops, smoothed, face_frame.faces):
            if share <= 0:
                continue  # the face as it came, not a resampled copy of it
            if share < 1:
                new = cv2.addWeighted(new, share, crop.astype(np.float32), 1 - share, 0)
            result = self.compositor.paste(result, crop, new, face.matrix)
        self._timed("composite", clock)
        self.last_change.remember(face_frame.image, result, face_frame.regions)
        return result

    def _face_bends(self, tracks, faces, timestamp: float) -> list[FaceBend | None]:
        if self.bends is None:
            return [None] * len(faces)
        return [self.bends(track.identity, face.points, timestamp, track.fresh)
                for track, face in zip(tracks, faces)]

    def _may_skip(self, tracks) -> bool:
        """Whether this frame may do without the synthesizer: not its turn (every ``synthesize_every``-th frame
        is) and no new face."""
        if self.carried_frames + 1 >= self.synthesize_every or any(track.fresh for track in tracks):
            self.carried_frames = 0
            return False
        self.carried_frames += 1
        return True

    def _carry(self, face_frame: FaceFrame) -> list[np.ndarray] | None:
        """Every face's last change carried onto its crop; None when some face has nothing to carry."""
        carried = [self.smoother.carry(identity, crop, face_frame.timestamp, motion)
                   for identity, crop, motion in zip(face_frame.identities, face_frame.crops, face_frame.motions)]
        return None if any(crop is None for crop in carried) else carried
