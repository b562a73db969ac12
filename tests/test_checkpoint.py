"""Checkpoints: safetensors + JSON metadata, clear errors on bad files."""

from __future__ import annotations

import pytest
import torch

from reggan.checkpoint import (
    CheckpointError, load_synthesizer, read_metadata, save_refiner_variant, save_synthesizer,
)
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


def test_a_refiner_variant_stores_only_its_refiner_and_loads_on_its_base(tmp_path):
    base_model = small_model()
    base = save_synthesizer(tmp_path / "m.safetensors", base_model, dtype=torch.float32)
    torch.manual_seed(1)
    narrow = Synthesizer(["happy", "sad"], 32, kernel=3, width=4)
    narrow.load_state_dict({**base_model.state_dict(), **{k: v for k, v in narrow.state_dict().items()
                                                          if k.startswith("refiner.")}})
    variant = save_refiner_variant(tmp_path / "m-lite.safetensors", narrow.eval(), base, dtype=torch.float32)
    assert variant.stat().st_size < base.stat().st_size / 5  # no second copy of the regression layer
    loaded = load_synthesizer(variant)
    assert loaded.width == 4 and read_metadata(variant)["base"] == "m.safetensors"
    x = torch.rand(2, 3, 32, 32)
    args = (x, torch.tensor([1, 2]), torch.ones(2))
    with torch.no_grad():
        assert torch.equal(narrow(*args), loaded(*args))


def test_a_refiner_variant_refuses_a_changed_or_missing_base(tmp_path):
    base = save_synthesizer(tmp_path / "m.safetensors", small_model(), dtype=torch.float32)
    variant = save_refiner_variant(tmp_path / "m-lite.safetensors", small_model(), base)
    save_synthesizer(base, Synthesizer(["happy", "sad"], 32, kernel=3, width=8), dtype=torch.float32)  # retrained
    with pytest.raises(CheckpointError, match="another version of m.safetensors"):
        load_synthesizer(variant)
    base.unlink()
    with pytest.raises(CheckpointError, match="not beside it"):
        load_synthesizer(variant)
    with pytest.raises(ValueError, match="beside its base"):
        (tmp_path / "elsewhere").mkdir()
        save_refiner_variant(tmp_path / "elsewhere" / "v.safetensors", small_model(), tmp_path / "x.safetensors")


def test_a_base_is_hashed_once_until_it_is_rewritten(tmp_path, monkeypatch):
    from pathlib import Path

    from reggan.checkpoint import file_sha256

    path = save_synthesizer(tmp_path / "m.safetensors", small_model(), dtype=torch.float32)
    reads = []
    read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self) or read_bytes(self))
    first = file_sha256(path)
    assert file_sha256(path) == first and len(reads) == 1
    save_synthesizer(path, Synthesizer(["happy", "sad"], 32, kernel=3, width=8), dtype=torch.float32)
    assert file_sha256(path) != first and len(reads) == 2
