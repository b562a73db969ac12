"""Checkpoints: safetensors + JSON metadata, clear errors on bad files."""

from __future__ import annotations

import pytest
import torch

from reggan.checkpoint import CheckpointError, load_synthesizer, read_metadata, save_synthesizer
from reggan.networks import Synthesizer


def small_model() -> Synthesizer:
    torch.manual_seed(0)
    model = Synthesizer(["happy", "sad"], 32, kernel=3, width=8)
    with torch.no_grad():
        model.regression.weight.add_(torch.randn_like(model.regression.weight) * 0.01)
    return model.eval()


def test_round_trip_keeps_weights_and_metadata(tmp_path):
    model = small_model()
    path = save_synthesizer(tmp_path / "m.safetensors", model, dtype=torch.float32, ridge_lambda=0.4)
    loaded = load_synthesizer(path)
    meta = read_metadata(path)
    assert meta["expressions"] == ["happy", "sad"] and meta["resolution"] == 32 and meta["kernel"] == 3
    assert meta["ridge_lambda"] == 0.4 and len(meta["template"]) == 68
    x = torch.rand(2, 3, 32, 32)
    args = (x, torch.tensor([1, 2]), torch.ones(2))
    with torch.no_grad():
        assert torch.equal(model(*args), loaded(*args))


def test_fp16_storage_changes_outputs_by_less_than_a_grey_level(tmp_path):
    model = small_model()
    loaded = load_synthesizer(save_synthesizer(tmp_path / "h.safetensors", model, dtype=torch.float16))
    x = torch.rand(2, 3, 32, 32)
    args = (x, torch.tensor([1, 2]), torch.ones(2))
    with torch.no_grad():
        assert (model(*args) - loaded(*args)).abs().max() * 255 < 1.0


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_synthesizer(tmp_path / "absent.safetensors")


def test_corrupt_file_is_a_clear_error(tmp_path):
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(b"\x00garbage, not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="not a reggan checkpoint"):
        load_synthesizer(path)


def test_truncated_file_is_a_clear_error(tmp_path):
    path = save_synthesizer(tmp_path / "t.safetensors", small_model())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_synthesizer(path)


def test_wrong_shape_is_a_clear_error(tmp_path):
    path = save_synthesizer(tmp_path / "w.safetensors", small_model())
    # Same header, but claim a different resolution: the stored tensors no longer fit.
    from safetensors.torch import load_file, save_file
    import json

    meta = read_metadata(path)
    meta["resolution"] = 64
    save_file(load_file(str(path)), str(path), metadata={"reggan": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="does not match"):
        load_synthesizer(path)


def test_loading_never_unpickles(tmp_path):
    # A pickle file is rejected as "not a reggan checkpoint", never executed.
    path = tmp_path / "pickle.safetensors"
    torch.save({"x": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError):
        load_synthesizer(path)
