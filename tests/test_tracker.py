"""The face tracker on synthetic motion of a real face, where the true position of every landmark is known."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from live.tracker import FaceTracker
from reggan.alignment import STABLE_POINTS, transform_points
from training.temporal import head_motion, moving_clip

WIDTH, HEIGHT = 640, 480


def motion(t: float) -> np.ndarray:
    return head_motion(t, (512, 512), (WIDTH, HEIGHT))


@pytest.fixture(scope="module")
def moving_face(astronaut):
    """90 frames (3 s at 30 fps) of the astronaut moving, with sensor noise  # [H, W, 3] uint8 each."""
    return moving_clip(astronaut, 90, 30.0, (WIDTH, HEIGHT))


def test_redetection_neither_jumps_nor_loses_the_face(moving_face, astronaut_landmarks, dlib_tracker):
    # The astronaut photo holds a second, larger false detection (on the flag) in some frames, and HOG boxes
    # change size in coarse steps: neither may move the tracked landmarks or take the face's only slot.
    tracker = FaceTracker(dlib_tracker, detect_every=3, max_faces=1, min_cutoff=1e6, beta=0.0)  # raw landmarks
    identities, errors = set(), []
    for index, frame in enumerate(moving_face):
        tracks = tracker.update(frame, index / 30)
        assert len(tracks) == 1
        identities.add(tracks[0].identity)
        truth = transform_points(astronaut_landmarks[STABLE_POINTS], motion(index / 30))
        errors.append(np.abs(tracks[0].landmarks[STABLE_POINTS] - truth).mean())
    assert identities == {1}
    assert max(errors) < 1.5  # pixels, on a face ~90 px wide


def test_a_new_larger_face_does_not_take_the_tracked_faces_slot(astronaut, dlib_tracker):
    frame = np.full((720, 1300, 3), 40, np.uint8)
    frame[100:612, 20:532] = astronaut
    tracker = FaceTracker(dlib_tracker, detect_every=1, max_faces=1, detect_max_side=1300)
    first = tracker.update(frame, 0.0)[0].identity
    crowded = frame.copy()
    crowded[0:720, 560:1280] = cv2.resize(astronaut, (720, 720))  # the same face, 1.4x larger, beside it
    tracks = tracker.update(crowded, 1 / 30)
    assert [track.identity for track in tracks] == [first]
    assert tracks[0].landmarks[:, 0].max() < 532


def test_detector_runs_every_nth_frame_and_right_after_a_loss(moving_face, dlib_tracker):
    tracker = FaceTracker(dlib_tracker, detect_every=4)
    detected = []
    for index, frame in enumerate(moving_face[:9]):
        tracker.update(frame, index / 30)
        detected.append(tracker.detected_last_frame)
    assert [i for i, d in enumerate(detected) if d] == [0, 4, 8]
    blank = np.zeros_like(moving_face[0])
    assert tracker.update(blank, 9 / 30) == []  # the face is lost...
    tracker.update(moving_face[10], 10 / 30)
    assert tracker.detected_last_frame  # ...so the very next frame looks for it again
