"""Bending a face onto the template's features: the networks' change lands where this face has them."""

from __future__ import annotations

import numpy as np

from reggan.alignment import load_template
from reggan.anchoring import AnchorSmoother, FaceBend, VideoBends, synthesize_bent
from reggan.editor import PhotoEditor

SIZE = 256
MOUTH_CORNER = 54


def template() -> np.ndarray:
    return load_template() * SIZE


def face_off_the_template(shift=(6.0, 4.0)) -> np.ndarray:
    """The template's landmarks with the upper lip and mouth corners moved by ``shift`` px: a face whose mouth sits
    lower and to the side of the template's, as a face looking down does."""
    points = template()
    points[48:55] += shift
    return points


def spot_at(point: np.ndarray, value: float = 255.0) -> np.ndarray:
    """A small bright spot  # [R, R, 3] float32 centred on ``point``."""
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    spot = np.exp(-((xs - point[0]) ** 2 + (ys - point[1]) ** 2) / (2 * 2.0**2)) * value
    return np.repeat(spot[..., None], 3, axis=2).astype(np.float32)


def centre_of(image: np.ndarray) -> np.ndarray:
    weight = image[..., 0].clip(0)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    return np.array([(xs * weight).sum(), (ys * weight).sum()]) / weight.sum()


def test_a_face_on_the_template_is_not_bent():
    bend = FaceBend(template(), template(), SIZE)
    image = np.random.default_rng(0).uniform(0, 255, (SIZE, SIZE, 3)).astype(np.float32)
    assert np.abs(bend.bend(image) - image).max() < 1e-3
    assert np.abs(bend.unbend(image) - image).max() < 1e-3


def test_the_bend_puts_the_faces_features_on_the_templates_and_back():
    face = face_off_the_template()
    bend = FaceBend(face, template(), SIZE)
    bent = bend.bend(spot_at(face[MOUTH_CORNER]))
    assert np.linalg.norm(centre_of(bent) - template()[MOUTH_CORNER]) < 1.0
    back = bend.unbend(spot_at(template()[MOUTH_CORNER]))
    assert np.linalg.norm(centre_of(back) - face[MOUTH_CORNER]) < 1.0
    # Far from the anchored features (a corner of the crop) nothing moves.
    corner = spot_at(np.array([12.0, 12.0]))
    assert np.linalg.norm(centre_of(bend.bend(corner)) - [12.0, 12.0]) < 0.2


def test_the_networks_change_lands_on_this_faces_mouth_not_the_templates():
    """A stand-in synthesizer paints a spot where the template has the mouth corner (as the regression layer paints
    a smile where the template has its mouth). Unbent, the spot misses this face's corner by the offset; bent, it
    lands on it."""
    face = face_off_the_template()
    crop = np.full((SIZE, SIZE, 3), 100, np.uint8)

    def paint_at_template_corner(crops, keeps):
        return [c.astype(np.float32) + spot_at(template()[MOUTH_CORNER], 100.0) for c in crops]

    keep = np.zeros((SIZE, SIZE), np.float32)
    unbent = synthesize_bent(paint_at_template_corner, [crop], [keep], [None])[0] - 100
    bent = synthesize_bent(paint_at_template_corner, [crop], [keep], [FaceBend(face, template(), SIZE)])[0] - 100
    offset = np.linalg.norm(face[MOUTH_CORNER] - template()[MOUTH_CORNER])
    assert np.linalg.norm(centre_of(unbent) - face[MOUTH_CORNER]) > offset - 0.5
    assert np.linalg.norm(centre_of(bent) - face[MOUTH_CORNER]) < 1.0
    # Only the change is bent: the face's own pixels come back untouched where nothing was painted.
    assert np.abs(bent[:40, :40]).max() < 1e-3


def test_the_keep_mask_is_bent_with_the_face():
    face = face_off_the_template()
    seen = []

    def record(crops, keeps):
        seen.append(keeps[0])
        return [c.astype(np.float32) for c in crops]

    keep = spot_at(face[MOUTH_CORNER], 1.0)[..., 0]
    synthesize_bent(record, [np.zeros((SIZE, SIZE, 3), np.uint8)], [keep], [FaceBend(face, template(), SIZE)])
    assert np.linalg.norm(centre_of(seen[0][..., None]) - template()[MOUTH_CORNER]) < 1.0


def test_on_video_the_bend_follows_the_faces_slow_geometry_not_each_frame():
    smoother = AnchorSmoother(template(), time_constant=2.0)
    still, moved = template(), face_off_the_template((10.0, 0.0))
    assert np.allclose(smoother(1, still, 0.0, fresh=True), still)
    # One frame (40 ms) of a mouth moving by 10 px moves the bend by 10 * (1 - e^-0.02) = 0.2 px.
    after = smoother(1, moved, 0.04, fresh=False)
    assert np.allclose(after[MOUTH_CORNER] - still[MOUTH_CORNER], [10 * (1 - np.exp(-0.02)), 0.0])
    # Held for 2 s (one time constant, at 25 fps) it has come 63 % of the way.
    for frame in range(2, 52):
        after = smoother(1, moved, frame * 0.04, fresh=False)
    assert abs((after[MOUTH_CORNER] - still[MOUTH_CORNER])[0] - 10 * (1 - np.exp(-1.0))) < 0.1
    # A new track starts from its own landmarks.
    assert np.allclose(smoother(1, moved, 3.0, fresh=True), moved)
    smoother.forget_except(set())
    assert not smoother.state


def test_on_video_a_bend_is_rebuilt_only_once_its_averaged_landmarks_have_drifted_past_the_tolerance():
    built = []

    def build(points):
        built.append(points.copy())
        return FaceBend(points, template(), SIZE)

    bends = VideoBends(build, template(), time_constant=2.0, tolerance=0.25)
    still, moved = template(), face_off_the_template((10.0, 0.0))
    first = bends(1, still, 0.0, fresh=True)
    # One frame of the mouth moving by 10 px moves its 2 s average by 0.2 px: the same bend serves.
    assert bends(1, moved, 0.04, fresh=False) is first and len(built) == 1
    # The next frame takes the average to 0.4 px: past the tolerance, so a new bend, built for the average.
    second = bends(1, moved, 0.08, fresh=False)
    assert second is not first and len(built) == 2
    assert np.allclose(built[-1][MOUTH_CORNER] - still[MOUTH_CORNER], [10 * (1 - np.exp(-0.04)), 0.0], atol=1e-6)
    # A new track is bent for its own landmarks at once, and a track that is gone is forgotten.
    bends(1, moved, 0.12, fresh=True)
    assert np.allclose(built[-1], moved)
    bends.forget_except(set())
    assert not bends.kept and not bends.average.state


def test_the_editor_bends_unless_told_not_to(astronaut, dlib_tracker):
    class Recorder:
        expressions = ["neutral", "happy"]
        resolution = SIZE

        def __init__(self):
            self.inputs = []

        def __call__(self, faces, labels, strength, keep):
            self.inputs.append(faces.copy())
            return faces

    bent, plain = Recorder(), Recorder()
    PhotoEditor(bent, dlib_tracker).edit(astronaut, "happy")
    PhotoEditor(plain, dlib_tracker, bend=False).edit(astronaut, "happy")
    # The astronaut's features are a few pixels off the template's: bent, the networks see a different crop.
    difference = np.abs(bent.inputs[0] - plain.inputs[0]).mean() * 255
    assert difference > 1.0


def test_a_face_far_off_the_template_is_bent_part_of_the_way_and_never_folded():
    """A face turned well away (its nose and mouth 30 px to the side of its eyes, as on a painted three-quarter
    view) would fold the crop if bent all the way; a change painted on the fold came back as a thin bright arc."""
    from reggan.anchoring import LEAST_AREA_RATIO, least_area_ratio

    turned = template()
    turned[27:36] += [30.0, 0.0]
    turned[48:55] += [30.0, 0.0]
    bend = FaceBend(turned, template(), SIZE)
    assert bend.share < 1.0
    assert least_area_ratio(*bend.to_template) >= LEAST_AREA_RATIO
    assert least_area_ratio(*bend.to_face) >= LEAST_AREA_RATIO
    assert FaceBend(face_off_the_template(), template(), SIZE).share == 1.0


def sharp_spot_at(point: np.ndarray) -> np.ndarray:
    """A spot of one pixel's spread  # [R, R, 3] float32: an edge as sharp as a tooth's."""
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    spot = np.exp(-((xs - point[0]) ** 2 + (ys - point[1]) ** 2) / 2.0) * 255.0
    return np.repeat(spot[..., None], 3, axis=2).astype(np.float32)


def test_the_networks_warp_moves_this_faces_own_pixels_and_leaves_no_ghost():
    """The networks warp the bent face (the smile pulls the mouth corner out); through the bend that motion must
    move the face's own pixels, sampled once. Bending back the warp as a difference of pixel values left the sharp
    detail where it was (teeth striped like braces on a talking mouth)."""
    from reggan.warp import displace

    face = face_off_the_template()
    crop = sharp_spot_at(face[MOUTH_CORNER])
    moved = np.zeros((SIZE, SIZE, 2), np.float32)
    moved[..., 0] = -8.0  # every output pixel reads the input 8 px to its left: the picture moves 8 px right
    result = synthesize_bent(lambda inputs, masks: [displace(face, moved) for face in inputs], [crop],
                             [np.zeros((SIZE, SIZE), np.float32)], [FaceBend(face, template(), SIZE)], [moved])[0]
    x, y = np.round(face[MOUTH_CORNER]).astype(int)
    assert np.abs(result[y - 2 : y + 3, x - 2 : x + 3]).max() < 2.0  # nothing left where the spot was
    assert result.max() > 0.85 * 255  # and not blurred on the way (bent and bent back: 0.70)
    shift = centre_of(result.clip(0)) - face[MOUTH_CORNER]
    assert 6.5 < shift[0] < 8.5 and abs(shift[1]) < 1.0  # moved with the bend's local stretch


def teeth_with_a_gap(centre: np.ndarray) -> np.ndarray:
    """Two bright 'front teeth' side by side with a 2-px dark gap between them, centred on ``centre``."""
    crop = np.zeros((SIZE, SIZE, 3), np.float32)
    x, y = np.round(centre).astype(int)
    crop[y - 4 : y + 4, x - 9 : x - 1] = 255.0
    crop[y - 4 : y + 4, x + 1 : x + 9] = 255.0
    return crop


def gap_width(image: np.ndarray, row: int) -> int:
    """How many pixels between the two teeth are dark on a row."""
    bright = np.nonzero(image[row, :, 0] > 127)[0]
    return int(np.sum(np.diff(bright) > 1) and (np.diff(bright).max() - 1))


def test_the_warp_moves_an_open_mouths_teeth_as_one_piece_bent_or_not():
    """A smile's warp widens the mouth from its middle; over an open mouth it widened the gap between the front teeth
    into a dark split (d10.mp4). The open mouth's inside is moved as one piece instead."""
    from reggan.warp import displace

    face = template()
    middle = (face[62] + face[66]) / 2  # between the inner lips
    crop = teeth_with_a_gap(middle)
    stretch = np.zeros((SIZE, SIZE, 2), np.float32)
    stretch[..., 0] = (middle[0] - np.arange(SIZE, dtype=np.float32)) * 0.5  # twice as wide about the middle
    stretch[..., 1] = -3.0  # and 3 px down
    mouth = np.zeros((SIZE, SIZE), np.float32)
    x, y = np.round(middle).astype(int)
    mouth[y - 12 : y + 12, x - 20 : x + 20] = 1.0
    row = y + 3
    for bend in (None, FaceBend(face, template(), SIZE)):
        runs = [synthesize_bent(lambda inputs, masks: [displace(f, stretch) for f in inputs], [crop],
                                [mouth], [bend], [stretch], open_mouths)[0] for open_mouths in (None, [mouth])]
        stretched, held = runs
        assert gap_width(crop, y) == 2 and gap_width(stretched, row) >= 3  # the warp alone splits the teeth
        assert gap_width(held, row) == 2  # held together: the same gap, moved 3 px down
        teeth = np.sum(crop[y, :, 0] > 127)  # 16 px of teeth on a row
        assert np.sum(stretched[row, :, 0] > 127) >= 1.5 * teeth and abs(np.sum(held[row, :, 0] > 127) - teeth) <= 1


def test_no_warp_and_no_paint_through_the_bend_give_the_crop_itself():
    image = np.random.default_rng(1).uniform(0, 255, (SIZE, SIZE, 3)).astype(np.float32)
    still = np.zeros((SIZE, SIZE, 2), np.float32)
    bend = FaceBend(face_off_the_template(), template(), SIZE)
    result = synthesize_bent(lambda inputs, masks: [np.asarray(face, np.float32) for face in inputs], [image],
                             [np.zeros((SIZE, SIZE), np.float32)], [bend], [still])[0]
    assert np.abs(result - image).max() < 1e-3


def test_a_steady_expression_reuses_the_shift_the_bend_derived_from_it():
    """On video the bend and the expression stay the same for many frames: the shift on the face is derived once."""
    import torch

    from reggan.warp import Displacements, ExpressionWarp

    warp = ExpressionWarp(2, SIZE)
    warp.field[1, 0] = 3.0
    table = Displacements(warp)
    assert table(1, 0.5) is table(1, 0.5) and not table(1, 0.5).flags.writeable
    bend = FaceBend(face_off_the_template(), template(), SIZE)
    shift = bend.shift_on_face(table(1, 0.5))
    assert bend.shift_on_face(table(1, 0.5)) is shift
    assert bend.shift_on_face(table(1, 1.0)) is not shift
    assert torch.count_nonzero(warp.field) > 0


def test_a_cross_fade_moves_the_face_once_by_both_warps_together():
    """Halfway from one expression to another the face moves by half of each warp, as one motion: adding up the two
    moved faces' changes instead gave every edge two half-strength copies."""
    import torch

    from live.processor import SynthesisStage
    from reggan.warp import Displacements, ExpressionWarp, displace

    warp = ExpressionWarp(2, 32)
    warp.field[1, 0], warp.field[2, 0] = -6.0, -2.0  # happy reads 6 px to the left, sad 2 px

    class WarpOnlyBackend:
        expressions, resolution, displacements = ["neutral", "happy", "sad"], 32, Displacements(warp)

        def __call__(self, faces, labels, strengths, keep):
            with torch.no_grad():
                return warp(torch.from_numpy(faces), torch.from_numpy(labels), torch.from_numpy(strengths)).numpy()

    crop = np.zeros((32, 32, 3), np.uint8)
    crop[:, 12:] = 200  # a vertical edge
    result = SynthesisStage(WarpOnlyBackend())([crop], [("happy", 0.5), ("sad", 0.5)], [np.zeros((32, 32), np.float32)])
    expected = displace(crop, Displacements(warp)(1, 0.5) + Displacements(warp)(2, 0.5))  # 4 px to the right
    assert np.abs(result[0] - expected).max() < 1e-3
    assert np.abs(result[0][:, 14] - 0.0).max() < 1.0 and np.abs(result[0][:, 17] - 200.0).max() < 1.0
