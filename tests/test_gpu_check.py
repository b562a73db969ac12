"""benchmarks/gpu_check.py, the one script a lent GPU runs, dry-run on the CPU: every stage must reach its end, so
that a change elsewhere cannot break it unnoticed and waste the GPU's minutes."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch
from safetensors.torch import load_file

from reggan.alignment import Aligner
from reggan.images import write_rgb

ROOT = Path(__file__).resolve().parents[1]


def prepared_folder(folder: Path, astronaut, landmarks) -> Path:
    """A prepared set as `reggan prepare` writes it, from the astronaut: her aligned face and mirrored copies as the
    neutral and expressive crops of a training and an evaluation person."""
    aligner = Aligner(256)
    face = aligner.crop(astronaut, aligner.matrix_for(landmarks))
    (folder / "crops").mkdir(parents=True)
    rows = []
    for index, (subject, split) in enumerate((("01", "train"), ("02", "train"), ("03", "eval"))):
        neutral, target = f"crops/{subject}_n.png", f"crops/{subject}_t.png"
        shifted = cv2.warpAffine(face, cv2.getRotationMatrix2D((128, 128), 2 * index, 1.0), (256, 256),
                                 borderMode=cv2.BORDER_REPLICATE)
        write_rgb(folder / neutral, shifted)
        write_rgb(folder / target, shifted[:, ::-1].copy())
        rows.append({"dataset": "test", "subject": subject, "expression": "happy", "neutral": neutral,
                     "target": target, "split": split})
    with open(folder / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory, astronaut, astronaut_landmarks):
    folder = tmp_path_factory.mktemp("gpu_check")
    prepared = prepared_folder(folder / "prepared", astronaut, astronaut_landmarks)
    out = folder / "out"
    command = [sys.executable, "benchmarks/gpu_check.py", "--regression", "reggan/models/default.safetensors",
               "--prepared", str(prepared), "--out", str(out), "--device", "cpu", "--steps", "1", "--batch", "2",
               "--frames", "4", "--baseline-minutes", "0"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return out, result.stdout


def test_the_gpu_check_runs_to_its_end_on_the_cpu(dry_run):
    out, printed = dry_run
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["training"]["steps_logged"] == 1
    assert report["parity_fp16_vs_fp32"]["max_abs_levels"] < 2.0  # FP16 within two grey levels of FP32
    assert report["throughput"]["fp32_b1"]["eager_ms"] > 0
    assert report["backend"]["b1"]["graph_vs_eager_max_levels"] == 0.0
    end_to_end = report["end_to_end_720p"]
    assert "failed" not in end_to_end and end_to_end["frames"] == 4 and end_to_end["tracker"] == "dlib"
    assert "synthesize" in end_to_end["ms_per_stage"]  # the face was found and changed, not passed through
    assert "GPU check on" in printed


def test_its_refiner_becomes_a_checkpoint_without_training(dry_run, tmp_path):
    from reggan.checkpoint import load_synthesizer, read_metadata

    out, _ = dry_run
    composed = tmp_path / "gpu.safetensors"
    command = [sys.executable, "-m", "reggan.cli", "train", "refine", "--regression",
               "reggan/models/default.safetensors", "--init-refiner", str(out / "refiner.safetensors"), "--steps", "0",
               "--out", str(composed), "--prepared", str(tmp_path / "absent")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    model, base = load_synthesizer(composed), load_synthesizer(ROOT / "reggan/models/default.safetensors")
    trained = load_file(str(out / "refiner.safetensors"))
    for name, value in model.refiner.state_dict().items():  # the GPU's refiner (stored in FP16)
        assert torch.allclose(value.float(), trained[name].float(), atol=1e-2, rtol=1e-3), name
    assert torch.equal(model.warp.field, base.warp.field)  # on the stage-1 checkpoint given
    assert torch.equal(model.regression.weight, base.regression.weight)
    metadata = read_metadata(composed)
    assert metadata["steps"] == 0 and metadata["refiner_from"].endswith("refiner.safetensors")
    assert metadata["stages"].count("refine") == 1
