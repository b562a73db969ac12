"""Closed or downcast eyes are left as warped: the networks do not paint open eyes on the lids."""

from __future__ import annotations

import numpy as np

from reggan.alignment import Aligner, load_template
from reggan.closed_eyes import CLOSED_AT, EYES, OPEN_FROM, closed_eyes_mask, eye_openness
from reggan.keep import keep_mask
from reggan.open_mouth import open_mouth_mask

SIZE = 256


def eyes(openness: float) -> np.ndarray:
    """The template's landmarks in a 256 px crop with both eyes' lid gaps set to ``openness`` x eye width."""
    points = load_template() * SIZE
    for outer, top_1, top_2, inner, bottom_2, bottom_1 in EYES:
        width = np.linalg.norm(points[outer] - points[inner])
        middle = (points[[top_1, top_2]] + points[[bottom_1, bottom_2]]) / 2
        points[[top_1, top_2]] = middle - [0.0, openness * width / 2]
        points[[bottom_1, bottom_2]] = middle + [0.0, openness * width / 2]
    return points


def test_open_eyes_keep_nothing():
    points = eyes(0.30)  # a typical open eye (the training photos' median is 0.31)
    assert all(abs(eye_openness(points, eye) - 0.30) < 1e-6 for eye in EYES)
    assert closed_eyes_mask(points, SIZE).max() == 0.0
    assert closed_eyes_mask(eyes(OPEN_FROM + 0.01), SIZE).max() == 0.0


def test_closed_eyes_are_kept_around_the_lids_and_nowhere_else():
    points = eyes(0.02)
    mask = closed_eyes_mask(points, SIZE)
    for eye in EYES:
        centre = points[eye].mean(0).round().astype(int)
        assert mask[centre[1], centre[0]] > 0.99
        width = np.linalg.norm(points[eye[0]] - points[eye[3]])
        above = (points[eye].mean(0) - [0.0, 0.25 * width]).round().astype(int)  # where an open eye would be painted
        assert mask[above[1], above[0]] > 0.5
    mouth = points[48:68].mean(0).round().astype(int)
    assert mask[mouth[1] - 10 :, :].max() == 0.0 and mask[mouth[1], mouth[0]] == 0.0
    nose_tip = points[30].round().astype(int)
    assert mask[nose_tip[1], nose_tip[0]] == 0.0


def test_half_closed_fades_in_and_the_less_open_eye_decides():
    half = closed_eyes_mask(eyes((OPEN_FROM + CLOSED_AT) / 2), SIZE).max()
    assert 0.3 < half < 0.7
    one_closed = eyes(0.30)
    one_closed[[37, 38]] = one_closed[[41, 40]]  # the left eye shut, the right open
    mask = closed_eyes_mask(one_closed, SIZE)
    for eye in EYES:
        centre = one_closed[eye].mean(0).round().astype(int)
        assert mask[centre[1], centre[0]] > 0.99


def test_the_keep_mask_joins_an_open_mouth_and_closed_eyes_and_the_aligner_uses_it():
    points = eyes(0.02)
    width = np.linalg.norm(points[48] - points[54])
    points[[65, 66, 67]] = points[[63, 62, 61]] + [0.0, 0.2 * width]  # and the mouth open
    expected = np.maximum(open_mouth_mask(points, SIZE), closed_eyes_mask(points, SIZE))
    assert open_mouth_mask(points, SIZE).max() > 0.99 and closed_eyes_mask(points, SIZE).max() > 0.99
    assert np.array_equal(keep_mask(points, SIZE), expected)
    placed = Aligner(SIZE).place(points * 2.0 + [100.0, 50.0])  # in a photo: twice as large, shifted
    assert np.allclose(placed.keep, expected, atol=0.02)
