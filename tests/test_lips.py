"""Lips keep their own brightness on video (reggan/lips.py): the paint over closed lips may darken, not lighten."""

from __future__ import annotations

import numpy as np

from reggan.lips import OUTER_LIPS, lips_kept, lips_mask, warped_lips, without_lightening


def test_lightening_is_taken_out_where_the_mask_says_and_darkening_is_kept():
    crop = np.full((8, 8, 3), 100, np.uint8)
    synthesized = crop.astype(np.float32)
    synthesized[:, :4] += np.float32([60, 40, 20])  # a pale band: lighter, warmer
    synthesized[:, 4:] -= 30  # a shadow
    where = np.zeros((8, 8), np.float32)
    where[:4] = 1  # the lips: the top half
    where[4:6] = 0.5
    out = without_lightening(crop, synthesized, where)
    assert np.allclose(out[:4, :4], [120, 100, 80])  # the mean lightening (40) out, the colour's balance kept
    assert np.allclose(out[4:6, :4], [140, 120, 100])  # half of it out
    assert np.allclose(out[6:, :4], synthesized[6:, :4])  # outside the lips: as painted
    assert np.allclose(out[:, 4:], 70)  # darkening stays everywhere


def test_the_lips_move_where_the_warp_puts_them():
    template = np.zeros((68, 2))
    template[OUTER_LIPS] = [[100 + 4 * k, 150] for k in range(12)]
    points = template + [2.0, 1.0]
    motion = np.zeros((256, 256, 2), np.float32)
    motion[150, 100:150] = [3.0, -2.0]  # each pixel there takes the colour from 3 px right, 2 px up
    moved = warped_lips(points, template, motion)
    assert np.allclose(moved, points[OUTER_LIPS] - [3.0, -2.0])  # so what was there shows 3 px left, 2 px down
    assert np.allclose(warped_lips(points, template, None), points[OUTER_LIPS])


def test_the_mask_fills_the_lips_and_is_soft_at_their_edge():
    angles = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    outline = np.stack([128 + 40 * np.cos(angles), 180 + 12 * np.sin(angles)], axis=1)
    mask = lips_mask(outline, (256, 256))
    assert mask[180, 128] > 0.99 and mask[100, 128] == 0 and mask[180, 60] == 0
    assert 0.2 < mask[180, 168] < 0.8  # the edge


def test_worked_on_the_lips_box_it_equals_the_whole_crop_done_at_once():
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 256, (256, 256, 3)).astype(np.uint8)
    synthesized = crop + rng.normal(10, 30, crop.shape).astype(np.float32)
    angles = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    outline = np.stack([128 + 40 * np.cos(angles), 180 + 12 * np.sin(angles)], axis=1)
    open_mouth = np.zeros((256, 256), np.float32)
    open_mouth[178:183, 110:150] = 1
    whole = without_lightening(crop, synthesized, lips_mask(outline, (256, 256)) * (1 - open_mouth))
    assert np.allclose(lips_kept(crop, synthesized, outline, open_mouth), whole, atol=1e-3)
    # Lips at the crop's edge (a face half out of the frame): clipped, not an error.
    assert lips_kept(crop, synthesized, outline + [150, 80], open_mouth).shape == crop.shape
