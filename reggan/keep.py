"""What of an aligned face the networks must leave as warped: the Synthesizer's ``keep`` input.

The networks map a neutral face (mouth closed, eyes open) to an expressive one. Where the face already differs from
that in a way its landmarks show, they painted the training faces over it: teeth over an open mouth
(reggan/open_mouth.py), open eyes over closed lids (reggan/closed_eyes.py). There the face is only warped.
"""

from __future__ import annotations

import numpy as np

from reggan.closed_eyes import closed_eyes_mask
from reggan.open_mouth import open_mouth_mask


def keep_parts(points: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks in crop coordinates  # [68, 2] -> (the open mouth, the closed eyes)  # [R, R] float32 in [0, 1] each.
    Apart because video treats them apart (live/smoothing.py): a closed lid's own change may be carried along with
    it, the inside of an open mouth's may not."""
    return open_mouth_mask(points, resolution), closed_eyes_mask(points, resolution)


def joined(open_mouth: np.ndarray, closed_eyes: np.ndarray) -> np.ndarray:
    """The two parts  # [R, R] each (``keep_parts``) -> the keep mask they make together  # [R, R]."""
    return np.maximum(open_mouth, closed_eyes)


def keep_mask(points: np.ndarray, resolution: int) -> np.ndarray:
    """Landmarks in crop coordinates  # [68, 2] -> where the networks must paint nothing  # [R, R] float32 in [0, 1]."""
    return joined(*keep_parts(points, resolution))
