"""reggan train distill: a narrower refiner learns to reproduce a wider one's delivered output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reggan.images import write_rgb
from reggan.networks import Synthesizer
from training.distill_refiner import Distillation, FaceBank, distill_refiner, narrower


def teacher_model() -> Synthesizer:
    torch.manual_seed(0)
    model = Synthesizer(["happy", "sad"], 32, kernel=3, width=8)
    with torch.no_grad():
        model.regression.weight.add_(torch.randn_like(model.regression.weight) * 0.05)
        for parameter in model.refiner.parameters():  # a teacher whose refiner changes the face visibly
            parameter.mul_(3.0)
    return model.eval()


def crops(folder, astronaut, count=6):
    """Crops of the astronaut photo at several places and sizes, as 32-px faces."""
    import cv2

    paths = []
    for index in range(count):
        top, side = 100 + 10 * index, 200 + 15 * index
        crop = cv2.resize(astronaut[top:top + side, 150:150 + side], (32, 32), interpolation=cv2.INTER_AREA)
        paths.append(folder / f"crop{index}.png")
        write_rgb(paths[-1], crop)
    return paths


def test_the_face_bank_jitters_faces_within_range(tmp_path, astronaut):
    bank = FaceBank(crops(tmp_path, astronaut))
    faces = bank.sample(5, torch.Generator().manual_seed(0))
    assert faces.shape == (5, 3, 32, 32) and 0.0 <= faces.min() and faces.max() <= 1.0
    again = bank.sample(5, torch.Generator().manual_seed(0))
    assert torch.equal(faces, again)  # seeded: a resumed run draws what an uninterrupted one would


def test_the_student_moves_towards_the_teacher_and_shares_its_other_stages(tmp_path, astronaut):
    teacher = teacher_model()
    student = narrower(teacher, 4)
    assert student.width == 4 and torch.equal(student.regression.weight, teacher.regression.weight)
    settings = {"steps": 60, "batch": 4, "lr": 0.003, "loss_detail": 1.0, "checkpoint_every": 30, "seed": 0}
    paths = crops(tmp_path, astronaut)
    faces = FaceBank(paths).sample(8, torch.Generator().manual_seed(5))
    labels, intensity = torch.tensor([1, 2] * 4), torch.ones(8)

    def gap():
        with torch.no_grad():
            return float((student(faces, labels, intensity) - teacher(faces, labels, intensity)).abs().mean())

    before = gap()
    saved = []
    distill_refiner(teacher, student, paths, settings, tmp_path / "work",
                    on_checkpoint=lambda model, step: saved.append(step))
    assert gap() < 0.7 * before
    assert saved == [30, 60] and (tmp_path / "work" / "samples_000060.png").is_file()
    assert torch.equal(student.regression.weight, teacher.regression.weight)  # frozen


def test_distillation_resumes_where_it_stopped(tmp_path, astronaut):
    teacher = teacher_model()
    paths = crops(tmp_path, astronaut)
    settings = {"steps": 10, "batch": 2, "lr": 0.003, "loss_detail": 1.0, "checkpoint_every": 5, "seed": 0}
    first = narrower(teacher, 4)

    def interrupt(model, step):  # Ctrl-C right after the checkpoint at step 5
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distill_refiner(teacher, first, paths, settings, tmp_path / "work", on_checkpoint=interrupt)
    resumed = Distillation(teacher, narrower(teacher, 4), settings)
    resumed.load_state(tmp_path / "work" / "distill_state.safetensors")
    assert resumed.step_count == 5
    for name, value in first.refiner.state_dict().items():
        assert torch.equal(resumed.student.refiner.state_dict()[name], value)
    # The learning rate goes on down its cosine from step 5 of 10 (half way: the mean of lr and its 5 % floor).
    assert np.isclose(resumed.schedule.get_last_lr()[0], (0.003 + 0.003 * 0.05) / 2)


def test_the_command_writes_a_lite_refiner_beside_its_teacher(tmp_path, astronaut):
    from reggan.checkpoint import load_synthesizer, read_metadata, save_synthesizer
    from reggan.cli import main

    teacher = save_synthesizer(tmp_path / "model.safetensors", teacher_model(), dtype=torch.float32)
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    paths = crops(prepared, astronaut, count=4)
    rows = [f"own,{i},happy,{paths[i].name},{paths[i + 1].name},train" for i in range(3)]
    (prepared / "manifest.csv").write_text("dataset,subject,expression,neutral,target,split\n" + "\n".join(rows))
    common = ["train", "distill", "--teacher", str(teacher), "--prepared", str(prepared), "--steps", "3",
              "--batch", "2", "--width", "4", "--work-dir", str(tmp_path / "work")]
    assert main(common + ["--out", str(tmp_path / "work" / "x.safetensors")]) == 2  # not beside its teacher
    assert main(common) == 0
    lite = tmp_path / "model-lite.safetensors"
    assert read_metadata(lite)["base"] == "model.safetensors" and read_metadata(lite)["steps"] == 3
    assert load_synthesizer(lite).width == 4
