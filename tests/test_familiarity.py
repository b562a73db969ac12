"""The familiarity gate: the networks' change goes through where the input looks like the training faces only."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file, save_file

from reggan.checkpoint import load_synthesizer, read_metadata, save_synthesizer
from reggan.familiarity import FamiliarityGate
from reggan.networks import Synthesizer

SIZE = 32


def training_faces(count: int = 40) -> torch.Tensor:
    """A smooth "face" pattern with per-face brightness and pixel noise as large as real faces vary  # [N, 3, R, R]."""
    generator = torch.Generator().manual_seed(0)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, SIZE), torch.linspace(-1, 1, SIZE), indexing="ij")
    pattern = torch.stack([0.6 + 0.2 * xs, 0.5 + 0.1 * ys, 0.4 - 0.1 * xs * ys])
    brightness = 0.1 * torch.randn(count, 1, 1, 1, generator=generator)
    return (pattern + brightness + 0.05 * torch.randn(count, 3, SIZE, SIZE, generator=generator)).clamp(0, 1)


def fitted_gate() -> FamiliarityGate:
    gate = FamiliarityGate(SIZE, torch.ones(1, 1, SIZE, SIZE))
    gate.fit(training_faces())
    return gate


def test_an_unfitted_gate_is_open_everywhere():
    gate = FamiliarityGate(SIZE, torch.ones(1, 1, SIZE, SIZE))
    assert torch.equal(gate(torch.rand(2, 3, SIZE, SIZE)), torch.ones(2, 1, SIZE, SIZE))


def test_a_familiar_face_passes_and_an_unfamiliar_patch_is_shut():
    gate = fitted_gate()
    face = training_faces(41)[-1:]
    assert gate(face).min() > 0.95
    covered = face.clone()
    covered[:, :, 4:12, 8:20] = torch.tensor([0.0, 1.0, 0.0])[:, None, None]  # a green patch
    shut = gate(covered)[0, 0]
    assert shut[6:10, 10:18].max() < 0.05  # inside the patch
    assert shut[20:, :].min() > 0.9  # well away from it


def test_a_darker_or_warmer_face_is_not_unfamiliar():
    """Distance is measured relative to the face's own mean colour: skin tone and light do not close the gate."""
    gate = fitted_gate()
    face = training_faces(41)[-1:]
    darker_and_warmer = face * 0.6 + torch.tensor([0.08, 0.0, -0.05])[None, :, None, None]
    assert gate(darker_and_warmer).min() > 0.9


def test_the_synthesizer_leaves_unfamiliar_pixels_as_warped():
    torch.manual_seed(0)
    model = Synthesizer(["happy"], SIZE, kernel=3, width=8).eval()
    face = training_faces(41)[-1:]
    face[:, :, 4:12, 8:20] = torch.tensor([0.0, 1.0, 0.0])[:, None, None]
    label, intensity = torch.tensor([1]), torch.ones(1)
    with torch.no_grad():
        model.regression.bias.add_(0.2)  # a change everywhere
        ungated = model.coarse_only(face, label, intensity)
        model.familiarity.fit(training_faces())
        gated = model.coarse_only(face, label, intensity)
        warped = model.warp(face, label, intensity)
    assert (ungated - warped)[:, 0, 6:10, 10:18].abs().min() > 0.1  # the change was there (red; green is at 1)
    assert torch.allclose(gated[:, :, 6:10, 10:18], warped[:, :, 6:10, 10:18], atol=1e-6)  # and is gone
    assert (gated - ungated)[:, :, 20:].abs().mean() < 0.005  # away from the patch: (nearly) as before


def test_checkpoints_from_before_the_gate_load_with_it_open(tmp_path):
    model = Synthesizer(["happy"], SIZE, kernel=3, width=8)
    path = save_synthesizer(tmp_path / "m.safetensors", model, dtype=torch.float32)
    tensors = load_file(str(path))
    metadata = read_metadata(path)
    old = {name: value for name, value in tensors.items() if not name.startswith("familiarity.")}
    save_file(old, str(tmp_path / "old.safetensors"), metadata={"reggan": json.dumps(metadata)})
    loaded = load_synthesizer(tmp_path / "old.safetensors")
    assert torch.equal(loaded.familiarity(torch.rand(1, 3, SIZE, SIZE)), torch.ones(1, 1, SIZE, SIZE))


def test_a_refiner_trained_on_a_stage1_checkpoint_keeps_its_gate():
    """`reggan train refine` builds its model on the stage-1 checkpoint: the gate's statistics must come along, or the
    refiner trains for (and the saved model delivers) a gate open everywhere."""
    from training.train_refiner import on_stage1

    stage1 = Synthesizer(["happy"], SIZE, kernel=3, width=8)
    stage1.familiarity.fit(training_faces())
    refined = on_stage1(stage1, decoder="resize")
    assert torch.equal(refined.familiarity.mean, stage1.familiarity.mean)
    assert torch.equal(refined.familiarity.spread, stage1.familiarity.spread)
