"""Face tracking across frames: detect now and then, landmarks every frame, One Euro smoothing per track.

Detection (the slow part) runs on the first frame, every ``detect_every`` frames and whenever a track is lost;
in between, each track's landmarks are re-fitted inside the box of its previous landmarks. Tracks are matched to
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

    def _new_track(self, raw: np.ndarray) -> Track:
        self.next_identity += 1
        filt = OneEuroFilter(self.min_cutoff, self.beta)
        return Track(self.next_identity, raw, raw, filt)

    def update(self, frame: np.ndarray, timestamp: float) -> list[Track]:
        """RGB frame  # [H, W, 3] and its time in seconds -> the tracks present in it."""
        need_detection = not self.tracks or self.frames_since_detect >= self.detect_every
        self.detected_last_frame = need_detection
        if need_detection:
            measured = [lm for lm in find_faces(self.backend, frame, self.max_faces, self.detect_max_side)
                        if plausible(lm, self.min_face)]
            self.tracks = self._match(measured)
            self.frames_since_detect = 0
        else:
            kept = []
            for track in self.tracks:
                box = box_around(track.raw)
                margin = 0.15 * box.size
                search = FaceBox(box.left - margin, box.top - margin, box.right + margin, box.bottom + margin)
                raw = self.backend.landmarks(frame, search)
                if plausible(raw, self.min_face) and box_around(raw).iou(box) > 0.3:
                    track.raw, track.fresh = raw, False
                    kept.append(track)
            self.tracks = kept
            self.frames_since_detect += 1
            if not self.tracks:  # lost: look again on the next frame
                self.frames_since_detect = self.detect_every
        for track in self.tracks:
            track.landmarks = track.filter(track.raw, timestamp).astype(np.float32)
        return self.tracks

    def _match(self, measured: list[np.ndarray]) -> list[Track]:
        matched, unused = [], list(self.tracks)
        for raw in measured:
            box = box_around(raw)
            best = max(unused, key=lambda t: box_around(t.raw).iou(box), default=None)
            if best is not None and box_around(best.raw).iou(box) > 0.3:
                unused.remove(best)
                best.raw, best.fresh = raw, False
                matched.append(best)
            else:
                matched.append(self._new_track(raw))
        return matched
