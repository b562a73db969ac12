"""Face tracking across frames: detect now and then, landmarks every frame, One Euro smoothing per track.

Detection (the slow part) runs on the first frame, every ``detect_every`` frames and whenever a track is lost or
in doubt (below); in between, each track's landmarks are re-fitted inside its detector box, moved and scaled with
the landmarks.
(The shape predictor was trained on detector boxes: feeding it the tight box of its own previous landmarks instead
was measured to drift by tens of pixels within a few frames and tripled the output flicker.) Tracks are matched to
detections by box overlap, so several faces keep their own filters. A re-detection that agrees with a followed box
only confirms the track: HOG boxes come in coarse scale steps (87 px, then 72 px for the same face), and swapping
the box moves all 68 landmarks at once — on a synthetic moving face that swap was the whole of the crop jitter
(14 px per frame with detection on every frame against 0.13 px with the followed box). Faces smaller than
``min_face`` or turned away (landmarks that collapse) are not tracked and pass through untouched.

The shape predictor always returns 68 points, even on a wall, so a followed face is also checked by appearance: a
32-pixel aligned grey thumbnail compared with the previous frame's (normalised cross-correlation; 0.95-0.99 on real
talking-head clips, near 0 once the face has gone). A face that no longer looks like itself brings the detector
forward to this frame, and the detector decides whether it is still there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from live.filters import OneEuroFilter
from reggan.alignment import Aligner
from reggan.trackers import FaceBox, box_around, find_faces

THUMBNAIL = Aligner(32)


@dataclass
class Track:
    identity: int
    landmarks: np.ndarray  # [68, 2] smoothed
    raw: np.ndarray  # [68, 2] as measured this frame
    box: FaceBox  # the detector-style box the landmarks are fitted in
    filter: OneEuroFilter = field(repr=False)
    fresh: bool = True  # first frame of this track: downstream smoothing must restart
    thumbnail: np.ndarray | None = field(default=None, repr=False)  # [32, 32] grey, last frame's aligned face
    doubtful: bool = False  # this frame's face looks unlike the last one: the detector must confirm it


def plausible(landmarks: np.ndarray, min_face: float) -> bool:
    """A frontal-enough face of a usable size: eye distance vs. face width rules out profiles."""
    box = box_around(landmarks)
    if box.size < min_face:
        return False
    eyes = np.linalg.norm(landmarks[36:42].mean(0) - landmarks[42:48].mean(0))
    return eyes > 0.25 * (box.right - box.left)


class FaceTracker:
    def __init__(self, landmark_backend, detect_every: int = 10, max_faces: int = 1, min_face: float = 64,
                 min_cutoff: float = 1.5, beta: float = 0.02, detect_max_side: int = 640, reanchor_iou: float = 0.5,
                 min_similarity: float = 0.5):
        self.backend = landmark_backend
        self.detect_every = detect_every
        self.max_faces = max_faces
        self.min_face = min_face
        self.min_cutoff, self.beta = min_cutoff, beta
        self.detect_max_side = detect_max_side
        self.reanchor_iou = reanchor_iou  # below this overlap with a fresh detection, a followed box has drifted
        self.min_similarity = min_similarity  # thumbnail correlation below which the detector must confirm a face
        self.tracks: list[Track] = []
        self.frames_since_detect = 0
        self.next_identity = 0

    def reset(self) -> None:
        self.tracks = []
        self.frames_since_detect = 0

    def _new_track(self, frame: np.ndarray, raw: np.ndarray, box: FaceBox) -> Track:
        self.next_identity += 1
        filt = OneEuroFilter(self.min_cutoff, self.beta)
        return Track(self.next_identity, raw, raw, box, filt, thumbnail=thumbnail(frame, raw))

    def update(self, frame: np.ndarray, timestamp: float) -> list[Track]:
        """RGB frame  # [H, W, 3] and its time in seconds -> the tracks present in it."""
        self.frames_since_detect += 1
        followed = self._follow(frame)
        need_detection = (not followed or self.frames_since_detect >= self.detect_every
                          or any(track.doubtful for track in followed))
        self.detected_last_frame = need_detection
        if need_detection:
            found = self._detect(frame, followed)
            faces = [(landmarks, box) for landmarks, box in found if plausible(landmarks, self.min_face)]
            self.tracks = self._match(frame, followed, faces)
            self.frames_since_detect = 0
        else:
            self.tracks = followed
        for track in self.tracks:
            track.landmarks = track.filter(track.raw, timestamp).astype(np.float32)
        return self.tracks

    def _detect(self, frame: np.ndarray, followed: list[Track]) -> list[tuple[np.ndarray, FaceBox]]:
        """Run the detector: around each followed face when no new face could be added anyway (the common
        max_faces=1 case; at most 300 px across, whatever the face size), over the whole frame otherwise. A few
        spare candidates keep a false detection bigger than the real face from pushing a tracked face out of its
        slot (seen on a flag behind a face)."""
        if followed and len(followed) >= self.max_faces:
            # The region is 2.2 face widths across; searched at 300 px the face is ~135 px, well above HOG's 80.
            return [found for track in followed
                    for found in find_faces(self.backend, frame, 3, 300, True, track.box.grown(0.6))]
        return find_faces(self.backend, frame, self.max_faces + 2, self.detect_max_side, with_boxes=True)

    def _follow(self, frame: np.ndarray) -> list[Track]:
        """Re-fit each track's landmarks inside its box and move the box with them; drop tracks that fail."""
        kept = []
        for track in self.tracks:
            raw = self.backend.landmarks(frame, track.box)
            if plausible(raw, self.min_face) and box_around(raw).iou(box_around(track.raw)) > 0.3:
                track.box = follow_box(track.box, track.raw, raw)
                track.raw, track.fresh = raw, False
                look = thumbnail(frame, raw)
                track.doubtful = similarity(look, track.thumbnail) < self.min_similarity
                track.thumbnail = look
                kept.append(track)
        return kept

    def _match(self, frame: np.ndarray, followed: list[Track],
               measured: list[tuple[np.ndarray, FaceBox]]) -> list[Track]:
        """Detections are the authority on which faces exist. Tracked faces are matched first, so a followed box
        that agrees with a detection keeps its landmarks (no jump) and one that has drifted is re-anchored on
        it; the remaining detections, largest first, start new tracks up to ``max_faces``."""
        matched, fresh = [], []
        unused = list(followed)
        for raw, detected in measured:
            box = box_around(raw)
            best = max(unused, key=lambda t: box_around(t.raw).iou(box), default=None)
            if best is None or box_around(best.raw).iou(box) <= 0.3:
                fresh.append((raw, detected))
                continue
            unused.remove(best)
            if best.box.iou(detected) < self.reanchor_iou:
                best.raw, best.box = raw, detected
            matched.append(best)
        for raw, detected in fresh[: max(0, self.max_faces - len(matched))]:
            matched.append(self._new_track(frame, raw, detected))
        return matched[: self.max_faces]


def thumbnail(frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The face aligned to the template at 32 px, grey  # [32, 32] float32."""
    crop = THUMBNAIL.crop(frame, THUMBNAIL.matrix_for(landmarks))
    return cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation of two thumbnails; 0 when either is flat (a blank frame)."""
    a, b = a - a.mean(), b - b.mean()
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / norm) if norm > 1e-3 * a.size else 0.0


def follow_box(box: FaceBox, before: np.ndarray, after: np.ndarray) -> FaceBox:
    """Move and scale a detector box with the landmarks it holds (centroid shift, spread ratio)."""
    shift = after.mean(0) - before.mean(0)
    scale = float(after.std(0).mean() / max(before.std(0).mean(), 1e-6))
    cx, cy = (box.left + box.right) / 2 + shift[0], (box.top + box.bottom) / 2 + shift[1]
    half_w, half_h = (box.right - box.left) / 2 * scale, (box.bottom - box.top) / 2 * scale
    return FaceBox(cx - half_w, cy - half_h, cx + half_w, cy + half_h, box.score)
