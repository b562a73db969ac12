"""Alignment to the template, shared by training and the live loop."""

from __future__ import annotations

import numpy as np

from reggan.alignment import STABLE_POINTS, Aligner, invert_affine, load_template, similarity_transform, transform_points


def test_landmarks_found_on_the_astronaut(astronaut_landmarks):
    assert astronaut_landmarks.shape == (68, 2)
    # The face is in the upper middle of the 512 x 512 photo.
    centre = astronaut_landmarks.mean(0)
    assert 150 < centre[0] < 300 and 80 < centre[1] < 260


def test_similarity_transform_recovers_a_known_transform():
    points = load_template() * 100
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = points @ (scale * rotation).T + shift
    matrix = similarity_transform(points, moved)
    assert np.allclose(transform_points(points, matrix), moved, atol=1e-6)


def test_aligned_landmarks_land_on_the_template(astronaut, astronaut_landmarks):
    aligner = Aligner(256)
    matrix = aligner.matrix_for(astronaut_landmarks)
    aligned = transform_points(astronaut_landmarks, matrix)
    error = np.linalg.norm(aligned[STABLE_POINTS] - aligner.template[STABLE_POINTS], axis=1)
    assert error.mean() < 6.0  # pixels at 256: eyes and nose sit on the template


def test_warp_round_trip_returns_the_face_within_a_pixel(astronaut, astronaut_landmarks):
    aligner = Aligner(256)
    matrix = aligner.matrix_for(astronaut_landmarks)
    crop = aligner.crop(astronaut, matrix)
    back = aligner.uncrop(crop, matrix, astronaut.shape)
    # Compare inside the face only, away from the crop border where the inverse warp has no data.
    mask = aligner.uncrop(aligner.face_mask(0.08), matrix, astronaut.shape) > 0.99
    assert mask.sum() > 2000
    difference = np.abs(back.astype(float) - astronaut.astype(float))[mask]
    # The face is upscaled into the crop, so resampling twice loses little: mean well under one grey level step of
    # a 1-pixel shift, which on this photo is ~9 levels.
    assert difference.mean() < 4.0
    # A landmark round trip is exact.
    assert np.allclose(transform_points(transform_points(astronaut_landmarks, matrix), invert_affine(matrix)),
                       astronaut_landmarks, atol=1e-3)


def test_face_mask_is_soft_and_inside_the_crop():
    mask = Aligner(128).face_mask(0.08)
    assert mask.shape == (128, 128)
    assert mask.max() == 1.0 and mask.min() == 0.0
    assert 0.2 < mask.mean() < 0.6
    assert ((mask > 0.05) & (mask < 0.95)).any()  # feathered
    assert mask[0].max() == 0 and mask[-1].max() == 0  # never touches the border


def test_grown_mask_covers_the_face_mask_and_more():
    aligner = Aligner(128)
    face, grown = aligner.face_mask(0.08), aligner.face_mask(0.08, grow=0.3)
    assert (grown >= face - 1e-6).all()
    assert (grown > 0.5).sum() > 1.5 * (face > 0.5).sum()


# --- Compositor ---------------------------------------------------------------------------------------------------

def test_paste_over_the_footprint_equals_a_full_frame_paste(astronaut, astronaut_landmarks):
    from reggan.compositing import FeatheredCompositor

    aligner = Aligner(128)
    compositor = FeatheredCompositor(aligner, 0.08)
    matrix = aligner.matrix_for(astronaut_landmarks)
    before = aligner.crop(astronaut, matrix)
    after = np.clip(before.astype(np.float32) + np.random.default_rng(0).normal(0, 20, before.shape), 0, 255)
    full = astronaut + aligner.uncrop((after - before) * compositor.mask[..., None], matrix, astronaut.shape)
    expected = full.round().clip(0, 255).astype(np.uint8)
    difference = np.abs(compositor.paste(astronaut, before, after, matrix).astype(int) - expected)
    # OpenCV places warp coordinates on a 1/32-pixel grid relative to the output's corner, so moving the corner
    # can move a sample by that much: on this per-pixel noise, a grey level or two at a few pixels.
    assert difference.max() <= 2 and difference.mean() < 0.05


def test_colour_matching_removes_a_tint_but_keeps_what_the_expression_adds(astronaut, astronaut_landmarks):
    from reggan.compositing import match_colour

    aligner = Aligner(256)
    before = aligner.crop(astronaut, aligner.matrix_for(astronaut_landmarks))
    mask = aligner.face_mask(0.08)
    inside = mask > 0.5
    assert np.array_equal(match_colour(before.astype(np.float32), before, mask), before)  # nothing to correct
    tinted = before.astype(np.float32) + np.array([25.0, 0.0, -15.0])  # a warm cast from the synthesizer...
    tinted[150:170, 100:156] = 250.0  # ...on top of what the expression adds (teeth)
    matched = match_colour(tinted, before, mask)
    assert np.abs((matched - before)[inside].mean(axis=0)).max() < 1.0
    assert np.abs((tinted - before)[inside].mean(axis=0)).max() > 20
    assert matched[150:170, 100:156].mean() > before[150:170, 100:156].mean() + 50


def grating(size: int, period: float, shift: float = 0.0) -> np.ndarray:
    """Vertical stripes finer than a shrunk crop can hold  # [size, size, 3] uint8."""
    x = np.arange(size, dtype=np.float64) + shift
    row = 128 + 100 * np.sin(2 * np.pi * x / period)
    return np.repeat(np.tile(row, (size, 1))[..., None], 3, axis=2).round().astype(np.uint8)


def test_an_antialiased_crop_is_the_crop_of_the_low_passed_frame_and_loses_the_aliased_stripes():
    import cv2

    aligner = Aligner(64)
    frame = grating(256, period=2.5)
    matrix = np.array([[0.6, 0.0, -40.0], [0.0, 0.6, -30.0]])  # shrinks to 0.6 around the frame's middle
    plain, antialiased = aligner.crop(frame, matrix), aligner.crop(frame, matrix, antialias=True)
    # Only the face's footprint is blurred, and the matrix moved to it: the same as blurring the whole frame.
    sigma = 0.5 * np.sqrt(1 / 0.6**2 - 1)
    whole = aligner.crop(cv2.GaussianBlur(frame, (0, 0), sigma), matrix)
    assert np.abs(antialiased.astype(int) - whole.astype(int)).max() <= 1
    # The stripes (2.5 px, 1.5 px once shrunk: past what 64 px can hold) come out as a false, coarser pattern that
    # moves differently from the face; low-passed first, far less of it is left.
    assert antialiased.std() < 0.5 * plain.std()


def test_a_crop_that_enlarges_the_face_is_not_blurred():
    aligner = Aligner(64)
    frame = grating(128, period=6.0)
    matrix = np.array([[1.5, 0.0, -20.0], [0.0, 1.5, -20.0]])
    assert np.array_equal(aligner.crop(frame, matrix, antialias=True), aligner.crop(frame, matrix))
