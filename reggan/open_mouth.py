"""Where a face's mouth is open, from its 68 landmarks: a part of the aligned crop the networks must leave alone.

The networks map a neutral, closed mouth to an expressive one. Over a mouth that is already open (someone talking,
laughing, yawning) they painted the training faces' teeth on top of the real mouth: a mosaic of teeth over its dark
inside that came and went as the person talked. The familiarity gate does not catch it, because lips and teeth
differ so much between the training faces that an open mouth's colours lie within their spread (on d20.mp4 the gate
stayed above 0.77 on average inside a wide-open mouth). The landmarks know where the mouth is open, so the caller
hands the Synthesizer this mask as ``keep``: there the face is only warped, and nothing is painted. The warp moves
the inside as one piece (reggan/warp.py ``held_together``): the lips widen for a smile around teeth that keep their
size.
"""

from __future__ import annotations

import cv2
import numpy as np

# Openness = mean gap between the inner lips / mouth width (corner to corner). Of the training neutral photos 95 % are
# under 0.069 (median 0.014); on the talking clips in our evaluation the median is 0.01-0.11 and the 90th percentile
# 0.12-0.20. The mask fades in between these two.
OPEN_FROM = 0.06
OPEN_AT = 0.12
# The mask covers the inside of the lips grown by this fraction of the mouth width (the painted teeth reached over
# the lips' inner edge), feathered by the next.
GROW = 0.08
FEATHER = 0.04

INNER_LIPS = list(range(60, 68))  # dlib's 68-point layout: 60 and 64 are the inner corners


def openness(points: np.ndarray) -> float:
    """Inner-lip gap over mouth width for 68 landmarks  # [68, 2]."""
    gap = np.linalg.norm(points[[61, 62, 63]] - points[[67, 66, 65]], axis=1).mean()
    return float(gap / max(np.linalg.norm(points[48] - points[54]), 1e-6))


def open_mouth_mask(points: np.ndarray, resolution: int) -> np.ndarray:
    """Landmarks in crop coordinates  # [68, 2] -> where to leave the face as warped  # [R, R] float32 in [0, 1]
    (all zero for a closed mouth)."""
    weight = np.clip((openness(points) - OPEN_FROM) / (OPEN_AT - OPEN_FROM), 0.0, 1.0)
    mask = np.zeros((resolution, resolution), np.float32)
    if weight == 0.0:
        return mask
    width = float(np.linalg.norm(points[48] - points[54]))
    return feathered_region(points[INNER_LIPS], resolution, GROW * width, FEATHER * width) * np.float32(weight)


def feathered_region(outline: np.ndarray, resolution: int, grow: float, feather: float,
                     with_edge: bool = False) -> np.ndarray:
    """The polygon ``outline``  # [N, 2] (crop pixels) filled, grown by ``grow`` px and feathered by a Gaussian of
    ``feather`` px  # [R, R] float32 in [0, 1]. with_edge: also draw its edge, so an outline that has collapsed to a
    line (a closed eye) still covers something."""
    mask = np.zeros((resolution, resolution), np.float32)
    grow, feather = max(int(round(grow)), 1), max(feather, 0.5)
    # Drawn in a window around the outline only (for the mouth a sixth of the crop's pixels): 0.6 -> 0.2 ms a face
    # (measured).
    margin = grow + int(np.ceil(4 * feather)) + 2
    (left, top), (right, bottom) = outline.min(0), outline.max(0)
    left, top = max(int(left) - margin, 0), max(int(top) - margin, 0)
    right, bottom = min(int(right) + margin + 1, resolution), min(int(bottom) + margin + 1, resolution)
    if right <= left or bottom <= top:  # the outline lies outside the crop
        return mask
    window = np.zeros((bottom - top, right - left), np.float32)
    corners = np.round((outline - [left, top]) * 16).astype(np.int32)
    cv2.fillPoly(window, [corners], 1.0, cv2.LINE_AA, shift=4)
    if with_edge:
        cv2.polylines(window, [corners], True, 1.0, 1, cv2.LINE_AA, shift=4)
    window = cv2.dilate(window, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    mask[top:bottom, left:right] = cv2.GaussianBlur(window, (0, 0), feather, borderType=cv2.BORDER_CONSTANT)
    return mask
