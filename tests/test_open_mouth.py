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
