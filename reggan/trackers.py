"""Face detection and 68-point landmarks (iBUG layout) behind one small interface.

Backends are looked up by name in ``TRACKERS``. ``dlib`` is the default because its detector and predictor ship
in registry packages (dlib-bin + face-recognition-models) and so work offline; ``face-alignment`` (FAN) is more
accurate on turned faces but fetches its weights from its author's server, so it is optional.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


class TrackerUnavailable(RuntimeError):
    """A landmark backend cannot run on this machine (package or weights missing)."""


@dataclass(frozen=True)
class FaceBox:
    left: float
    top: float
    right: float
    bottom: float
    score: float = 1.0

    @property
    def size(self) -> float:
        return min(self.right - self.left, self.bottom - self.top)

    def iou(self, other: "FaceBox") -> float:
        width = max(0.0, min(self.right, other.right) - max(self.left, other.left))
        height = max(0.0, min(self.bottom, other.bottom) - max(self.top, other.top))
        overlap = width * height
        union = self.area + other.area - overlap
        return overlap / union if union > 0 else 0.0

    @property
    def area(self) -> float:
        return (self.right - self.left) * (self.bottom - self.top)

    def grown(self, margin: float) -> "FaceBox":
        """This box grown by ``margin`` times its width and height on every side."""
        dx, dy = margin * (self.right - self.left), margin * (self.bottom - self.top)
        return FaceBox(self.left - dx, self.top - dy, self.right + dx, self.bottom + dy, self.score)


def box_around(landmarks: np.ndarray) -> FaceBox:
    """The tight box around a set of landmarks  # [68, 2]."""
    low, high = landmarks.min(axis=0), landmarks.max(axis=0)
    return FaceBox(float(low[0]), float(low[1]), float(high[0]), float(high[1]))


def face_recognition_models_dir() -> Path:
    """Where face-recognition-models keeps its .dat files.

    Its ``__init__`` imports ``pkg_resources``, which current setuptools no longer ships, so we locate the package
    without importing it.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise TrackerUnavailable(
            "the dlib model files are missing: pip install face-recognition-models dlib-bin"
        )
    return Path(spec.origin).parent / "models"


class DlibTracker:
    """dlib's HOG face detector + its 68-point shape predictor (both CPU, both offline)."""

    name = "dlib"

    def __init__(self, upsample: int = 0, pad_retry: bool = True):
        try:
            import dlib
        except ImportError as error:
            raise TrackerUnavailable("dlib is not installed: pip install dlib-bin") from error
        predictor_path = face_recognition_models_dir() / "shape_predictor_68_face_landmarks.dat"
        if not predictor_path.is_file():
            raise TrackerUnavailable(f"dlib landmark model not found at {predictor_path}")
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(predictor_path))
        self.upsample = upsample
        # Tightly cropped portraits (the face touching the borders) defeat HOG; a replicated border fixes most.
        self.pad_retry = pad_retry

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """Faces in an RGB uint8 image  # [H, W, 3], largest first."""
        image = np.ascontiguousarray(image)
        boxes = self._run_detector(image, offset=0)
        if not boxes and self.pad_retry:
            pad = max(image.shape[:2]) // 4
            padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            boxes = self._run_detector(padded, offset=pad)
        return sorted(boxes, key=lambda box: (-box.area, -box.score))

    def _run_detector(self, image: np.ndarray, offset: int) -> list[FaceBox]:
        rects, scores, _ = self._detector.run(image, self.upsample, 0.0)
        return [
            FaceBox(r.left() - offset, r.top() - offset, r.right() - offset, r.bottom() - offset, float(s))
            for r, s in zip(rects, scores)
        ]

    def landmarks(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        """68 (x, y) points  # [68, 2] float32, for the face in ``box``."""
        rect = self._dlib.rectangle(int(round(box.left)), int(round(box.top)), int(round(box.right)), int(round(box.bottom)))
        shape = self._predictor(np.ascontiguousarray(image), rect)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


class FaceAlignmentTracker:
    """FAN landmarks from the optional ``face-alignment`` package (needs its weights already downloaded)."""

    name = "face-alignment"

    def __init__(self, device: str = "cpu", **_ignored):
        try:
            import face_alignment
        except ImportError as error:
            raise TrackerUnavailable(
                "the face-alignment backend needs `pip install face-alignment` and its weights; "
                "use --tracker dlib (the default, works offline)"
            ) from error
        hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
        if not any(hub.glob("2DFAN4*")) or not any(hub.glob("s3fd*")):
            # Without this check the package would try to download from its author's server and hang offline.
            raise TrackerUnavailable(
                f"face-alignment weights (2DFAN4*, s3fd*) not found in {hub}; copy them there from a machine "
                "that can download them, or use --tracker dlib (the default, works offline)"
            )
        self._fan = face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, device=device, face_detector="sfd")

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        boxes = self._fan.face_detector.detect_from_image(image[..., ::-1].copy()) or []
        found = [FaceBox(float(b[0]), float(b[1]), float(b[2]), float(b[3]), float(b[4])) for b in boxes]
        return sorted(found, key=lambda box: -box.area)

    def landmarks(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        points = self._fan.get_landmarks_from_image(image, detected_faces=[(box.left, box.top, box.right, box.bottom)])
        if not points:
            raise TrackerUnavailable("face-alignment returned no landmarks for a detected face")
        return np.asarray(points[0][:, :2], dtype=np.float32)


TRACKERS = {"dlib": DlibTracker, "face-alignment": FaceAlignmentTracker}


def make_tracker(name: str, **options) -> DlibTracker | FaceAlignmentTracker:
    if name not in TRACKERS:
        raise ValueError(f"unknown tracker {name!r}; choose one of {', '.join(TRACKERS)}")
    return TRACKERS[name](**options)


def find_faces(tracker, image: np.ndarray, max_faces: int = 1, detect_max_side: int = 640, with_boxes: bool = False,
               region: FaceBox | None = None):
    """Landmarks  # [68, 2] of up to ``max_faces`` faces in an RGB image, largest first (with their detector
    boxes when ``with_boxes``); only inside ``region`` when given (image coordinates).

    Detection runs on a copy no larger than ``detect_max_side`` (HOG cost grows with pixels, and faces in large
    photos are large); landmarks are then placed on the full-resolution image.
    """
    left = top = 0
    searched = image
    if region is not None:
        height, width = image.shape[:2]
        left, top = max(int(region.left), 0), max(int(region.top), 0)
        searched = image[top:min(int(np.ceil(region.bottom)), height), left:min(int(np.ceil(region.right)), width)]
        if searched.size == 0:
            return []
    scale = min(1.0, detect_max_side / max(searched.shape[:2]))
    small = searched if scale == 1.0 else cv2.resize(searched, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    boxes = [FaceBox(b.left / scale + left, b.top / scale + top, b.right / scale + left, b.bottom / scale + top,
                     b.score)
             for b in tracker.detect(small)[:max_faces]]
    found = [(tracker.landmarks(image, box), box) for box in boxes]
    return found if with_boxes else [landmarks for landmarks, _ in found]
