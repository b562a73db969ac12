"""Resumable training state: weights and Adam moments come back exactly, for the refiner's GAN training too."""

from __future__ import annotations

import torch

from reggan.networks import Synthesizer
from training.train_refiner import RefinerTraining
from training.training_state import load_training_state, save_training_state

SETTINGS = {"lr_generator": 1e-3, "lr_discriminator": 1e-3, "loss_adversarial": 1.0, "loss_classification": 0.25,
            "loss_l1": 2.0, "loss_coarse": 10.0, "coarse_pool": 4, "loss_identity": 1.0, "discriminator_width": 8}


def test_weights_moments_and_plain_values_round_trip(tmp_path):
    torch.manual_seed(0)
    module = torch.nn.Linear(4, 3)
    optimizer = torch.optim.Adam(module.parameters(), 1e-2)
    module(torch.rand(5, 4)).square().sum().backward()
    optimizer.step()
    save_training_state(tmp_path / "s.safetensors", {"net": module}, {"opt": optimizer}, {"step": 7, "note": "x"})
    assert not (tmp_path / "s.safetensors.partial").exists()
    other = torch.nn.Linear(4, 3)
    other_optimizer = torch.optim.Adam(other.parameters(), 1e-2)
    plain = load_training_state(tmp_path / "s.safetensors", {"net": other}, {"opt": other_optimizer})
    assert plain["step"] == 7 and plain["note"] == "x"
    assert torch.equal(other.weight, module.weight)
    moments = other_optimizer.state_dict()["state"][0]["exp_avg_sq"]
    assert torch.equal(moments, optimizer.state_dict()["state"][0]["exp_avg_sq"])


def test_the_refiner_training_resumes_with_its_step_and_both_networks(tmp_path):
    torch.manual_seed(0)
    synthesizer = Synthesizer(["happy"], 32, kernel=3, width=4)
    training = RefinerTraining(synthesizer, SETTINGS, torch.device("cpu"))
    faces = torch.rand(2, 3, 32, 32)
    training.step(faces, faces.flip(-1), torch.tensor([1, 1]))
    training.save_state(tmp_path / "t.safetensors")
    resumed = RefinerTraining(Synthesizer(["happy"], 32, kernel=3, width=4), SETTINGS, torch.device("cpu"))
    resumed.load_state(tmp_path / "t.safetensors")
    assert resumed.step_count == 1
    for mine, theirs in ((resumed.refiner, training.refiner), (resumed.discriminator, training.discriminator)):
        for name, value in theirs.state_dict().items():
            assert torch.equal(mine.state_dict()[name], value)


def test_a_resumed_run_records_the_command_it_continues(tmp_path, monkeypatch):
    from reggan.checkpoint import read_metadata, save_synthesizer
    from training.commands import training_command

    out, state = tmp_path / "model.safetensors", tmp_path / "work" / "training_state.safetensors"
    monkeypatch.setattr("sys.argv", ["reggan", "train", "refine", "--max-minutes", "65"])
    assert training_command(out, state) == "reggan train refine --max-minutes 65"  # nothing to resume
    save_synthesizer(out, Synthesizer(["happy"], 32), training_command="reggan train refine --max-minutes 105")
    assert training_command(out, state) == "reggan train refine --max-minutes 65"  # a fresh run overwrites it
    state.parent.mkdir()
    state.write_bytes(b"saved")
    resumed = training_command(out, state)
    assert resumed == "reggan train refine --max-minutes 105, resumed with reggan train refine --max-minutes 65"
    assert read_metadata(out)["training_command"] == "reggan train refine --max-minutes 105"
