"""Face tracking across frames: detect now and then, landmarks every frame, One Euro smoothing per track.

Detection (the slow part) runs on the first frame, every ``detect_every`` frames and whenever a track is lost;
in between, each track's landmarks are re-fitted inside its detector box, moved and scaled with the landmarks.
(The shape predictor was trained on detector boxes: feeding it the tight box of its own previous landmarks instead
was measured to drift by tens of pixels within a few frames and tripled the output flicker.) Tracks are matched to
detections by box overlap, so several faces keep their own filters. Faces smaller than ``min_face`` or turned
away (landmarks that collapse) are not tracked and pass through untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from live.filters import OneEuroFilter
from reggan.trackers import FaceBox, box_around, find_faces


@dataclass
class Track:
    identity: int
    landmarks: np.ndarray  # [68, 2] smoothed
    raw: np.ndarray  # [68, 2] as measured this frame
    box: FaceBox  # the detector-style box the landmarks are fitted in
    filter: OneEuroFilter = field(repr=False)
    fresh: bool = True  # first frame of this track: downstream smoothing must restart


def plausible(landmarks: np.ndarray, min_face: float) -> bool:
    """A frontal-enough face of a usable size: eye distance vs. face width rules out profiles."""
    box = box_around(landmarks)
    if box.size < min_face:
        return False
    eyes = np.linalg.norm(landmarks[36:42].mean(0) - landmarks[42:48].mean(0))
    return eyes > 0.25 * (box.right - box.left)


class FaceTracker:
    def __init__(self, landmark_backend, detect_every: int = 10, max_faces: int = 1, min_face: float = 64,
                 min_cutoff: float = 1.5, beta: float = 0.02, detect_max_side: int = 640):
        self.backend = landmark_backend
        self.detect_every = detect_every
        self.max_faces = max_faces
        self.min_face = min_face
        self.min_cutoff, self.beta = min_cutoff, beta
        self.detect_max_side = detect_max_side
        self.tracks: list[Track] = []
        self.frames_since_detect = 0
        self.next_identity = 0

    def reset(self) -> None:
        self.tracks = []
        self.frames_since_detect = 0

    def _new_track(self, raw: np.ndarray, box: FaceBox) -> Track:
        self.next_identity += 1
        filt = OneEuroFilter(self.min_cutoff, self.beta)
        return Track(self.next_identity, raw, raw, box, filt)

    def update(self, frame: np.ndarray, timestamp: float) -> list[Track]:
        """RGB frame  # [H, W, 3] and its time in seconds -> the tracks present in it."""
        need_detection = not self.tracks or self.frames_since_detect >= self.detect_every
        self.detected_last_frame = need_detection
        if need_detection:
            found = find_faces(self.backend, frame, self.max_faces, self.detect_max_side, with_boxes=True)
            self.tracks = self._match([(lm, box) for lm, box in found if plausible(lm, self.min_face)])
            self.frames_since_detect = 0
        else:
            kept = []
            for track in self.tracks:
                raw = self.backend.landmarks(frame, track.box)
                if plausible(raw, self.min_face) and box_around(raw).iou(box_around(track.raw)) > 0.3:
                    track.box = follow_box(track.box, track.raw, raw)
                    track.raw, track.fresh = raw, False
                    kept.append(track)
            self.tracks = kept
            self.frames_since_detect += 1
            if not self.tracks:  # lost: look again on the next frame
                self.frames_since_detect = self.detect_every
        for track in self.tracks:
            track.landmarks = track.filter(track.raw, timestamp).astype(np.float32)
        return self.tracks

    def _match(self, measured: list[tuple[np.ndarray, FaceBox]]) -> list[Track]:
        matched, unused = [], list(self.tracks)
        for raw, detected in measured:
            box = box_around(raw)
            best = max(unused, key=lambda t: box_around(t.raw).iou(box), default=None)
            if best is not None and box_around(best.raw).iou(box) > 0.3:
                unused.remove(best)
                best.raw, best.box, best.fresh = raw, detected, False
                matched.append(best)
            else:
                matched.append(self._new_track(raw, detected))
        return matched


def follow_box(box: FaceBox, before: np.ndarray, after: np.ndarray) -> FaceBox:
    """Move and scale a detector box with the landmarks it holds (centroid shift, spread ratio)."""
    shift = after.mean(0) - before.mean(0)
    scale = float(after.std(0).mean() / max(before.std(0).mean(), 1e-6))
    cx, cy = (box.left + box.right) / 2 + shift[0], (box.top + box.bottom) / 2 + shift[1]
    half_w, half_h = (box.right - box.left) / 2 * scale, (box.bottom - box.top) / 2 * scale
    return FaceBox(cx - half_w, cy - half_h, cx + half_w, cy + half_h, box.score)
