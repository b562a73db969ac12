"""An open mouth is left as warped: the networks do not paint teeth over it."""

from __future__ import annotations

import numpy as np
import torch

from reggan.alignment import load_template
from reggan.networks import Synthesizer
from reggan.open_mouth import OPEN_AT, open_mouth_mask, openness

SIZE = 256


def mouth(opened_by: float) -> np.ndarray:
    """The template's landmarks in a 256 px crop, the inner lips closed, then the inner lower lip lowered by
    ``opened_by`` x mouth width."""
    points = load_template() * SIZE
    width = np.linalg.norm(points[48] - points[54])
    points[[65, 66, 67]] = points[[63, 62, 61]] + [0.0, opened_by * width]
    points[[56, 57, 58]] += [0.0, opened_by * width]  # the outer lower lip follows
    return points


def test_a_closed_mouth_keeps_nothing():
    points = mouth(0.0)
    assert openness(points) < 0.06
    assert open_mouth_mask(points, SIZE).max() == 0.0


def test_an_open_mouth_is_kept_inside_the_lips_and_nowhere_else():
    points = mouth(OPEN_AT + 0.05)
    mask = open_mouth_mask(points, SIZE)
    inside = points[[62, 66]].mean(0).round().astype(int)
    assert mask[inside[1], inside[0]] > 0.99
    eye = points[36:42].mean(0).round().astype(int)
    assert mask[eye[1], eye[0]] == 0.0
    assert mask[: int(points[51, 1]) - 10].max() == 0.0  # nothing above the upper lip


def test_half_open_fades_in():
    half = open_mouth_mask(mouth(0.09), SIZE).max()
    assert 0.2 < half < 0.8


def test_the_synthesizer_only_warps_where_it_is_told_to_keep():
    torch.manual_seed(0)
    model = Synthesizer(["happy"], 32, kernel=3, width=8).eval()
    face, label, intensity = torch.rand(1, 3, 32, 32) * 0.4 + 0.2, torch.tensor([1]), torch.ones(1)
    keep = torch.zeros(1, 1, 32, 32)
    keep[:, :, 18:26, 10:22] = 1.0
    with torch.no_grad():
        model.regression.bias.add_(0.2)  # a change everywhere
        warped = model.warp(face, label, intensity)
        kept = model.coarse_only(face, label, intensity, keep)
        painted = model.coarse_only(face, label, intensity)
    assert (painted - warped)[:, :, 20:24, 12:20].abs().min() > 0.01  # painted there without the mask
    assert torch.allclose(kept[:, :, 20:24, 12:20], warped[:, :, 20:24, 12:20], atol=1e-6)
    assert torch.allclose(kept[:, :, :10], painted[:, :, :10], atol=1e-6)  # and untouched far from it


def test_each_face_keeps_its_own_mask_in_every_expression_of_a_cross_fade():
    from live.processor import SynthesisStage

    class RecordingBackend:
        expressions, resolution = ["neutral", "happy", "sad"], 8

        def __call__(self, faces, labels, strength, keep):
            self.keep, self.labels = keep, labels
            return faces

    backend = RecordingBackend()
    crops = [np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 9, np.uint8)]
    keeps = [np.zeros((8, 8), np.float32), np.ones((8, 8), np.float32)]
    SynthesisStage(backend)(crops, [("happy", 0.5), ("sad", 0.5)], keeps)
    assert backend.keep.shape == (4, 1, 8, 8)
    # Batch order: every face for the first expression, then every face for the second.
    assert [int(m.max()) for m in backend.keep] == [0, 1, 0, 1] and list(backend.labels) == [1, 1, 2, 2]


def test_the_aligner_places_an_open_mouthed_face_with_its_keep_mask():
    from reggan.alignment import Aligner

    aligner = Aligner(SIZE)
    landmarks = mouth(OPEN_AT + 0.05) * 2.0 + [100.0, 50.0]  # in a photo: twice as large, shifted
    placed = aligner.place(landmarks)
    assert np.allclose(placed.keep, open_mouth_mask(mouth(OPEN_AT + 0.05), SIZE), atol=0.02)
    # The open mouth alone rides along too: the warp moves its inside as one piece (reggan/warp.py held_together).
    assert np.array_equal(placed.open_mouth, placed.keep) and not placed.closed_eyes.any()
