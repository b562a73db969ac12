"""``reggan train distill``: teach a narrower refiner to reproduce a trained one (knowledge distillation).

Why: on a CPU without bfloat16 hardware (most laptops) the width-32 refiner is half of a frame's time, and a
width-16 one costs about a third of it. Training a narrow refiner adversarially from scratch would make a different
model with its own artefacts (our CPU fine-tunes did, MODEL_CARD.md); asked instead to reproduce the trained
refiner's output, it learns a fixed function of its input, with one right answer per face, so plain L1 neither
blurs nor drifts.

What is matched is what the Synthesizer delivers: the refiner's output after ``Synthesizer.detail`` (only its change
finer than ``detail_scale`` is kept, so matching coarser shading would be wasted capacity), inside the face mask
where the familiarity gate is open, plus the same on a Laplacian so the fine texture (teeth, furrows) counts as
much as its small share of the pixels deserves. Warp, regression layer and gate are the teacher's, frozen.

Inputs: every training crop, neutral and expressive alike (the student should agree with the teacher on whatever
face it is shown), each with a random expression, intensity, flip and a small shift, zoom and brightness change,
so faces placed a little differently than ``reggan prepare`` placed them (the tool's bent video faces) are covered.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from reggan.backends import cpu_has_fast_bf16
from reggan.images import read_rgb, write_rgb
from reggan.networks import Synthesizer
from training.train_refiner import expression_grid, on_stage1
from training.training_state import load_training_state, run_steps, save_training_state

LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def narrower(teacher: Synthesizer, width: int) -> Synthesizer:
    """The teacher's warp, regression layer and gate under an untrained refiner ``width`` channels wide."""
    return on_stage1(teacher, teacher.generator, teacher.decoder, teacher.detail_scale, width)


class FaceBank:
    """Aligned training crops in one uint8 tensor  # [N, R, R, 3]; ``sample`` draws a jittered batch."""

    def __init__(self, paths: list[Path]):
        if not paths:
            raise ValueError("no training crops: run `reggan prepare` first")
        self.images = torch.from_numpy(np.stack([read_rgb(path) for path in paths]))

    def sample(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """faces  # [B, 3, R, R] in [0, 1], flipped, shifted by up to 3 % of the side, zoomed by up to 4 % and
        brightened or darkened by up to 12 %."""
        picks = torch.randint(len(self.images), (batch,), generator=generator)
        faces = self.images[picks].permute(0, 3, 1, 2).float() / 255
        uniform = lambda low, high: low + (high - low) * torch.rand(batch, generator=generator)  # noqa: E731
        flip = torch.where(torch.rand(batch, generator=generator) < 0.5, -1.0, 1.0)
        zoom = uniform(0.96, 1.04)
        affine = torch.zeros(batch, 2, 3)
        affine[:, 0, 0], affine[:, 1, 1] = flip * zoom, zoom
        affine[:, 0, 2], affine[:, 1, 2] = uniform(-0.06, 0.06), uniform(-0.06, 0.06)
        grid = F.affine_grid(affine, list(faces.shape), align_corners=False)
        faces = F.grid_sample(faces, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return (faces * uniform(0.88, 1.12)[:, None, None, None]).clamp(0.0, 1.0)


class Distillation:
    """Holds teacher, student and optimiser; ``step`` runs one update of the student's refiner."""

    def __init__(self, teacher: Synthesizer, student: Synthesizer, settings: dict):
        self.teacher = teacher.eval().requires_grad_(False)
        self.student = student.train().requires_grad_(False)
        self.student.refiner.requires_grad_(True)  # only the refiner learns
        self.settings = settings
        self.optimizer = torch.optim.Adam(self.student.refiner.parameters(), settings["lr"])
        # Cosine from lr down to 5 % of it over [distill].steps, in closed form, so a run resumed with more steps
        # follows the longer curve from where it is.
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: 0.05 + 0.95 * (1 + math.cos(math.pi * min(step / settings["steps"], 1))) / 2)
        self.step_count = 0
        # Measured in train_refiner.py: bfloat16 autocast pays on CPUs with it in hardware and loses elsewhere.
        self.autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_has_fast_bf16())
        self.laplacian = LAPLACIAN[None, None].repeat(3, 1, 1, 1)

    def delivered(self, synthesizer: Synthesizer, warped, coarse, label) -> torch.Tensor:
        return synthesizer.detail(synthesizer.refiner(warped, coarse, label).float(), coarse)

    def step(self, faces: torch.Tensor, generator: torch.Generator) -> dict[str, float]:
        batch = faces.shape[0]
        label = torch.randint(1, len(self.teacher.expressions), (batch,), generator=generator)
        strength = 0.3 + 0.9 * torch.rand(batch, generator=generator)
        with torch.no_grad():
            warped, coarse, gate = self.teacher.intermediate(faces, label, strength)
            wanted = self.delivered(self.teacher, warped, coarse, label)
            weight = self.teacher.edit_mask * gate
        with self.autocast:
            got = self.delivered(self.student, warped, coarse, label)
        difference = got - wanted
        area = weight.sum() * 3
        loss_l1 = (difference.abs() * weight).sum() / area
        loss_detail = (F.conv2d(difference, self.laplacian, padding=1, groups=3).abs() * weight).sum() / area
        loss = loss_l1 + self.settings["loss_detail"] * loss_detail
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.schedule.step()
        self.step_count += 1
        return {"l1": loss_l1.item(), "detail": loss_detail.item()}

    def save_state(self, path: Path) -> None:
        save_training_state(path, {"refiner": self.student.refiner}, {"optimizer": self.optimizer},
                            {"step": self.step_count, "schedule": self.schedule.state_dict()})

    def load_state(self, path: Path) -> None:
        plain = load_training_state(path, {"refiner": self.student.refiner}, {"optimizer": self.optimizer})
        self.schedule.load_state_dict(plain["schedule"])
        self.step_count = plain["step"]


STATE_NAME = "distill_state.safetensors"  # in the work folder: what a rerun resumes from


def distill_refiner(teacher: Synthesizer, student: Synthesizer, crops: list[Path], settings: dict, out_dir: Path,
                    resume: bool = True, max_minutes: float | None = None, on_checkpoint=None) -> Synthesizer:
    """Train ``student.refiner`` in place to reproduce ``teacher``; state, losses and sample grids go to ``out_dir``."""
    torch.manual_seed(settings["seed"])
    generator = torch.Generator().manual_seed(settings["seed"])
    out_dir.mkdir(parents=True, exist_ok=True)
    bank = FaceBank(crops)
    training = Distillation(teacher, student, settings)
    fixed = bank.sample(3, torch.Generator().manual_seed(1))

    def write_samples(step: int) -> None:
        student.eval()
        # Rows: each face from the teacher, then from the student.
        write_rgb(out_dir / f"samples_{step:06d}.png", expression_grid(fixed, [teacher, student], len(teacher.expressions)))
        student.train()

    run_steps(training, lambda: training.step(bank.sample(settings["batch"], generator), generator), settings, out_dir,
              STATE_NAME, "distill", write_samples, resume, max_minutes,
              on_checkpoint and (lambda step: on_checkpoint(student, step)))
    return student.eval()
