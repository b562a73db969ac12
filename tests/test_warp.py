"""The expression warp: exact on known fields, scaled by the intensity, and fitted fields that move the landmarks."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from reggan.checkpoint import load_synthesizer, save_synthesizer
from reggan.networks import Synthesizer
from reggan.warp import ExpressionWarp
from reggan.alignment import Aligner
from training.fit_warp import backward_field, surrounding_ring


def uniform_warp(resolution: int, dx: float) -> ExpressionWarp:
    warp = ExpressionWarp(1, resolution)
    warp.field[1, 0] = dx
    return warp


def test_zero_field_is_exactly_no_warp():
    faces = torch.rand(2, 3, 16, 16)
    out = ExpressionWarp(2, 16)(faces, torch.tensor([1, 2]), torch.ones(2))
    assert torch.allclose(out, faces, atol=1e-6)


def test_a_uniform_field_shifts_the_face_and_intensity_scales_the_motion():
    faces = torch.rand(2, 3, 16, 16)
    warp = uniform_warp(16, -4.0)  # every output pixel reads 4 px to its left: content moves right by 4
    with torch.no_grad():
        full = warp(faces, torch.tensor([1, 1]), torch.tensor([1.0, 0.5]))
    assert torch.allclose(full[0, :, :, 4:], faces[0, :, :, :-4], atol=1e-5)
    assert torch.allclose(full[1, :, :, 2:], faces[1, :, :, :-2], atol=1e-5)  # half intensity: half the motion


def test_a_half_precision_model_warps_like_full_precision():
    # FP16 is the GPU serving precision; PyTorch's FP16 grid_sample returned NaN here before the warp sampled in FP32.
    torch.manual_seed(0)
    warp = ExpressionWarp(1, 64)
    warp.field[1] = torch.randn(2, 64, 64) * 4
    # Image-like content (smooth at the pixel scale): on white noise the FP16 field's 0.01 px steps alone move values.
    faces = F.interpolate(torch.rand(2, 3, 16, 16), size=64, mode="bilinear", align_corners=False)
    expression, strength = torch.tensor([1, 1]), torch.tensor([1.0, 0.7])
    with torch.no_grad():
        full = warp(faces, expression, strength)
        half = warp.half()(faces.half(), expression, strength.half())
    assert half.dtype == torch.float16 and torch.isfinite(half).all()
    assert (half.float() - full).abs().max() * 255 < 1.0


def test_neutral_and_zero_intensity_stay_exact_with_a_warp():
    model = Synthesizer(["happy"], 32, width=8).eval()
    model.warp.field[1] = 3.0
    faces = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        neutral = model(faces, torch.zeros(3, dtype=torch.long), torch.ones(3))
        zero = model(faces, torch.ones(3, dtype=torch.long), torch.zeros(3))
        full = model(faces, torch.ones(3, dtype=torch.long), torch.ones(3))
    assert torch.allclose(neutral, faces, atol=1e-6) and torch.allclose(zero, faces, atol=1e-6)
    assert (full - faces).abs().mean() > 0.01


def test_fitted_field_points_back_from_each_moved_landmark_and_stays_on_the_face():
    aligner = Aligner(256)
    points = aligner.template.astype(np.float64)
    motion = np.zeros_like(points)
    motion[48:68] = np.random.default_rng(0).uniform(-5, 5, size=(20, 2))  # the mouth moves, nothing else
    field = backward_field(points, motion, 256)  # [2, R, R]
    moved = np.round(points[48:68] + motion[48:68]).astype(int)
    read_back = field[:, moved[:, 1], moved[:, 0]].T
    assert np.abs(read_back + motion[48:68]).mean() < 0.6  # smoothed spline: close to, not exactly, the motions
    ring = np.round(surrounding_ring(points, 256)).astype(int)
    assert np.abs(field[:, ring[:, 1], ring[:, 0]]).max() < 0.1  # pinned around the face...
    assert np.abs(field[:, [0, -1], :]).max() < 0.1 and np.abs(field[:, :, [0, -1]]).max() < 0.1  # ...and at the edge
    outside = aligner.face_mask(0.0, grow=0.5) == 0
    assert np.linalg.norm(field, axis=0)[outside].max() < 0.5  # hair and background stay put


def test_checkpoint_from_before_the_warp_loads_as_no_warp(tmp_path):
    model = Synthesizer(["happy"], 32, width=8).eval()
    path = save_synthesizer(tmp_path / "m.safetensors", model, dtype=torch.float32)
    tensors = load_file(str(path))
    header_metadata = __import__("safetensors").safe_open(str(path), "pt").metadata()
    del tensors["warp.field"]
    save_file(tensors, str(path), metadata=header_metadata)
    loaded = load_synthesizer(path)
    assert torch.count_nonzero(loaded.warp.field) == 0
    faces, labels = torch.rand(2, 3, 32, 32), torch.tensor([1, 1])
    with torch.no_grad():
        assert torch.equal(loaded(faces, labels, torch.ones(2)), model(faces, labels, torch.ones(2)))


def test_the_warp_outside_the_network_is_the_networks_own():
    """reggan/anchoring.py tells the appearance the networks painted from their warp by warping the face again with
    ``displace``: the two must agree, on the CPU path and on the traced one (grid_sample, what ONNX exports)."""
    from reggan.warp import Displacements, displace

    warp = ExpressionWarp(2, 32)
    warp.field[1] = torch.from_numpy(np.random.default_rng(0).normal(0, 2, (2, 32, 32)).astype(np.float32))
    faces = torch.rand(1, 3, 32, 32)
    ours = displace(faces[0].permute(1, 2, 0).numpy(), Displacements(warp)(1, 0.7))
    eager = warp(faces, torch.tensor([1]), torch.tensor([0.7]))[0].permute(1, 2, 0).numpy()
    with torch.enable_grad():  # the OpenCV shortcut is for inference only: this takes the grid_sample path
        traced = warp(faces.requires_grad_(), torch.tensor([1]), torch.tensor([0.7]))
    traced = traced[0].permute(1, 2, 0).detach().numpy()
    assert np.abs(ours - eager).max() < 1e-5
    assert np.abs(ours - traced).max() < 1e-4


def test_each_displacement_table_keeps_its_own_scaled_fields():
    from reggan.warp import Displacements

    first, second = Displacements(uniform_warp(8, 1.0)), Displacements(uniform_warp(8, 2.0))
    assert first(1, 0.5) is first(1, 0.5) and not first(1, 0.5).flags.writeable
    assert first(1, 0.5)[0, 0, 0] == 0.5 and second(1, 0.5)[0, 0, 0] == 1.0
    assert not Displacements(ExpressionWarp(1, 8)).moves


def test_an_open_mouth_is_moved_as_one_piece_and_the_rest_of_the_field_as_it_was():
    from reggan.warp import held_together

    size = 64
    xs = np.arange(size, dtype=np.float32)
    field = np.zeros((size, size, 2), np.float32)
    field[..., 0] = (xs - size / 2) * -0.2  # reads from nearer the middle: the picture stretches out from it
    field[..., 1] = 1.5
    field.flags.writeable = False  # the shared tables hand out read-only fields
    mouth = np.zeros((size, size), np.float32)
    mouth[28:36, 16:48] = 1.0
    held = held_together(field, mouth)
    inside = held[28:36, 16:48]
    assert np.ptp(inside[..., 0]) < 1e-5 and np.allclose(inside[..., 1], 1.5)  # one translation: no stretch
    assert np.allclose(inside[..., 0], field[28:36, 16:48, 0].mean(), atol=1e-5)  # the region's mean motion
    outside = np.ones((size, size), bool)
    outside[28:36, 16:48] = False
    assert np.array_equal(held[outside], field[outside])
    # Partial weight blends; no open mouth leaves the very field.
    half = held_together(field, mouth * 0.5)
    assert np.allclose(half[30, 16], (field[30, 16] + held[30, 16]) / 2, atol=1e-5)
    assert held_together(field, np.zeros_like(mouth)) is field and held_together(field, None) is field
