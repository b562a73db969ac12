"""Where a face's eyes are closed or nearly so, from its 68 landmarks: parts of the aligned crop the networks must
leave alone.

The networks map a neutral face with open eyes to an expressive one. Over a closed or downcast eye (a blink, someone
looking at their notes, crying) they painted the training faces' open eyes on the lid: grey-blue ghost irises and
eye whites, plainest for surprised (seen on d3.mp4). The familiarity gate does not catch it, because a lid is skin.
The landmarks do, as the open mouth's do (reggan/open_mouth.py): there the face is only warped (the brows still rise
for surprise) and nothing is painted.
"""

from __future__ import annotations

import numpy as np

from reggan.open_mouth import feathered_region

# Openness of an eye = mean lid gap / eye width (the "eye aspect ratio"). Of the 121 training neutral photos the
# less open eye is never under 0.153 (1st percentile 0.169, median 0.307), and open eyes on the evaluation clips stay
# above 0.19 (d20.mp4, a narrow-eyed face: 5th percentile 0.195); downcast and closing eyes on d3.mp4, which got the
# ghost irises, are at 0.11-0.17. The mask fades in between these two, so a few narrow-eyed faces lose some of the
# change around the eyes: a smaller harm than eyes painted on a lid.
OPEN_FROM = 0.19
CLOSED_AT = 0.13
# The mask covers the eye's outline grown by this fraction of its width (the painted open eye reaches above the
# lid line of a closed one), feathered by the next.
GROW = 0.35
FEATHER = 0.12

EYES = (list(range(36, 42)), list(range(42, 48)))  # dlib's 68-point layout: corners 36/39 and 42/45


def eye_openness(points: np.ndarray, eye: list[int]) -> float:
    """Mean lid gap over eye width for one eye's six landmarks (``eye``: their indices) of 68  # [68, 2]."""
    outer, top_1, top_2, inner, bottom_2, bottom_1 = (points[i] for i in eye)
    gap = (np.linalg.norm(top_1 - bottom_1) + np.linalg.norm(top_2 - bottom_2)) / 2
    return float(gap / max(np.linalg.norm(outer - inner), 1e-6))


def closed_eyes_mask(points: np.ndarray, resolution: int) -> np.ndarray:
    """Landmarks in crop coordinates  # [68, 2] -> where to leave the face as warped  # [R, R] float32 in [0, 1]
    (all zero while both eyes are open)."""
    # The less open eye decides for both: eyes close and look down together, and one eye's landmarks are often less
    # sure than the other's (on d3.mp4 one read 0.12 where the other read 0.15, both lids down).
    openness = min(eye_openness(points, eye) for eye in EYES)
    weight = np.clip((OPEN_FROM - openness) / (OPEN_FROM - CLOSED_AT), 0.0, 1.0)
    if weight == 0.0:
        return np.zeros((resolution, resolution), np.float32)
    masks = []
    for eye in EYES:
        width = float(np.linalg.norm(points[eye[0]] - points[eye[3]]))
        # with_edge: a closed eye's outline is a line
        masks.append(feathered_region(points[eye], resolution, GROW * width, FEATHER * width, with_edge=True))
    return np.maximum(*masks) * np.float32(weight)
