"""Stage 2, ``reggan train refine``: train the refiner against a PatchGAN discriminator, regression layer frozen.

Losses (weights in config.toml [refine]):
  The refiner sees the face already warped by the expression's field (reggan/warp.py) and the regression layer's
  coarse face on top of it; its output is composed as the Synthesizer delivers it (inside the face mask).
  generator:     hinge adversarial + expression classification by the discriminator's head
                 + L1 to the real expressive photo of the same person
                 + coarse anchor: L1 between coarse_pool-downsampled output and coarse face, so the refiner adds detail and
                   realism without undoing the expression the regression layer drew (measured: without it the
                   refiner pulled the faces back toward the subtle real takes and the judge's accuracy fell 3x)
                 + identity: L1 between 16x-downsampled output and input (keeps skin tone, face shape and lighting,
                   which an expression does not change)
  discriminator: hinge real/fake + classification of real photos (the expressive targets and the neutral inputs).
                 It sees real and refined faces alike only inside the face mask (grey elsewhere): outside it the
                 refined image is the warped photo, which the refiner cannot change, so a discriminator shown the
                 whole crop won on the warp's resampling there and its gradient drove the refiner to colour mosaics
                 inside the face (seen in three H200 runs, with either decoder and without the class term).
Runs the same on CPU and CUDA (bf16 autocast on CUDA and on CPUs with bfloat16 in hardware); under torchrun each
process trains on its own shard of the batch with DistributedDataParallel.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from reggan.backends import cpu_has_fast_bf16
from reggan.images import read_rgb, write_rgb
from reggan.networks import Discriminator, Synthesizer
from training.training_state import load_training_state, run_steps, save_training_state


class PairBank:
    """All training crops in one uint8 tensor  # [P, R, R, 3] on the device, plus (neutral, target, label) rows."""

    def __init__(self, rows: list[dict], expressions: list[str], device: torch.device):
        labels = {name: index for index, name in enumerate(["neutral", *expressions])}
        rows = [row for row in rows if row["expression"] in labels]
        if not rows:
            raise ValueError("no training pairs for the configured expressions: run `reggan prepare` first")
        photos = sorted({str(row["neutral"]) for row in rows} | {str(row["target"]) for row in rows})
        index_of = {photo: i for i, photo in enumerate(photos)}
        self.images = torch.from_numpy(np.stack([read_rgb(p) for p in photos])).to(device)
        self.neutral = torch.tensor([index_of[str(r["neutral"])] for r in rows], device=device)
        self.target = torch.tensor([index_of[str(r["target"])] for r in rows], device=device)
        self.label = torch.tensor([labels[r["expression"]] for r in rows], device=device)
        # Sample expressions uniformly (happy has 9x the pairs of fearful), then a pair within the expression.
        counts = torch.bincount(self.label, minlength=len(labels)).float()
        self.weights = (1.0 / counts.clamp(min=1))[self.label]

    def sample(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """neutral, target  # [B, 3, R, R] in [0, 1]; label  # [B], with random horizontal flips."""
        picks = torch.multinomial(self.weights.cpu(), batch, replacement=True, generator=generator).to(self.label.device)
        neutral = self.images[self.neutral[picks]].permute(0, 3, 1, 2).float() / 255
        target = self.images[self.target[picks]].permute(0, 3, 1, 2).float() / 255
        flip = (torch.rand(batch, generator=generator) < 0.5).to(neutral.device)[:, None, None, None]
        neutral = torch.where(flip, neutral.flip(-1), neutral)
        target = torch.where(flip, target.flip(-1), target)
        return neutral, target, self.label[picks]


def on_stage1(stage1: Synthesizer, generator: str = "refiner", decoder: str = "resize",
              detail_scale: int = 0, width: int = 32) -> Synthesizer:
    """A Synthesizer with an untrained ``generator`` (``width`` channels wide) on top of a stage-1 checkpoint's warp,
    regression layer and familiarity gate (the gate decides where the refiner's change may go, so training without
    it would train for a different composition than the saved model delivers, and the saved model would have it
    open everywhere)."""
    synthesizer = Synthesizer(stage1.expressions[1:], stage1.resolution, stage1.regression.kernel, width,
                              generator=generator, decoder=decoder, change_chroma=stage1.change_chroma,
                              detail_scale=detail_scale)
    for stage in ("warp", "regression", "familiarity"):
        getattr(synthesizer, stage).load_state_dict(getattr(stage1, stage).state_dict())
    return synthesizer


def low_pass(image: torch.Tensor, factor: int) -> torch.Tensor:
    return F.avg_pool2d(image, factor)


class RefinerTraining:
    """Holds the networks and optimisers; ``step`` runs one discriminator and one generator update."""

    def __init__(self, synthesizer: Synthesizer, settings: dict, device: torch.device):
        self.settings = settings
        self.device = device
        self.synthesizer = synthesizer.to(device)
        self.synthesizer.regression.requires_grad_(False)
        self.refiner = self.synthesizer.refiner
        self.discriminator = Discriminator(
            len(synthesizer.expressions), synthesizer.resolution, settings.get("discriminator_width", 64)
        ).to(device)
        self.generator_refiner = self.refiner
        self.discriminator_model = self.discriminator
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            from torch.nn.parallel import DistributedDataParallel

            self.generator_refiner = DistributedDataParallel(self.refiner)
            self.discriminator_model = DistributedDataParallel(self.discriminator)
        betas = (0.5, 0.999)
        self.optimizer_g = torch.optim.Adam(self.refiner.parameters(), settings["lr_generator"], betas=betas)
        self.optimizer_d = torch.optim.Adam(self.discriminator.parameters(), settings["lr_discriminator"], betas=betas)
        self.step_count = 0
        # bfloat16 on CUDA, and on CPUs that compute it in hardware: a step at batch 8 on 2 cores took 2.6 s in FP32
        # and 1.1 s so with AMX tiles, 3.5 s and 2.0 s with AVX-512 BF16 (AMD EPYC). Elsewhere a CPU emulates
        # bfloat16 (slower than FP32), so FP32 there.
        fast_bf16 = device.type == "cuda" or cpu_has_fast_bf16()
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast_bf16)

    def judged(self, images: torch.Tensor):
        """The discriminator's view: the face region only, the rest a flat grey."""
        mask = self.synthesizer.edit_mask.to(images.dtype)
        return self.discriminator_model(images * mask + 0.5 * (1 - mask))

    def step(self, neutral: torch.Tensor, target: torch.Tensor, label: torch.Tensor) -> dict[str, float]:
        s = self.settings
        with torch.no_grad():
            strength = torch.ones(label.shape[0], device=label.device)
            warped, coarse, gate = self.synthesizer.intermediate(neutral, label, strength)
            anchor = self.synthesizer.compose(warped, coarse, strength, gate)  # the regression-only output
        with self.autocast:
            # Scored as the Synthesizer delivers it: refined appearance inside the face mask, on the warped face.
            refined = self.synthesizer.detail(self.generator_refiner(warped, coarse, label).float(), coarse)
            fake = self.synthesizer.compose(warped, refined, strength, gate)
            # Discriminator: real expressive photos and real neutral photos are real; refined faces are fake.
            real_logits, real_classes = self.judged(torch.cat([target, neutral]))
            fake_logits, _ = self.judged(fake.detach())
            real_labels = torch.cat([label, torch.zeros_like(label)])
            loss_d_adv = F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
            loss_d_cls = F.cross_entropy(real_classes.float(), real_labels)
            loss_d = loss_d_adv + loss_d_cls
        self.optimizer_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.optimizer_d.step()

        with self.autocast:
            fake_logits, fake_classes = self.judged(fake)
            loss_g_adv = -fake_logits.float().mean()
            loss_g_cls = F.cross_entropy(fake_classes.float(), label)
            loss_l1 = (fake.float() - target).abs().mean()
            pool = s.get("coarse_pool", 4)
            # The anchor keeps the regression layer's expression; a generator without one (the StarGAN-style
            # competitor) would only be pulled back to its input by it.
            uses_anchor = float(self.refiner.uses_coarse)
            loss_coarse = uses_anchor * (low_pass(fake.float(), pool) - low_pass(anchor, pool)).abs().mean()
            loss_identity = (low_pass(fake.float(), 16) - low_pass(neutral, 16)).abs().mean()
            loss_g = (
                s["loss_adversarial"] * loss_g_adv
                + s["loss_classification"] * loss_g_cls
                + s["loss_l1"] * loss_l1
                + s["loss_coarse"] * loss_coarse
                + s["loss_identity"] * loss_identity
            )
        self.optimizer_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.optimizer_g.step()
        self.step_count += 1
        return {
            "d_adv": loss_d_adv.item(), "d_cls": loss_d_cls.item(), "g_adv": loss_g_adv.item(),
            "g_cls": loss_g_cls.item(), "l1": loss_l1.item(), "coarse": loss_coarse.item(), "id": loss_identity.item(),
        }

    def save_state(self, path: Path) -> None:
        save_training_state(path, self.modules(), self.optimizers(), {"step": self.step_count})

    def load_state(self, path: Path) -> None:
        self.step_count = load_training_state(path, self.modules(), self.optimizers())["step"]

    def modules(self) -> dict:
        return {"refiner": self.refiner, "discriminator": self.discriminator}

    def optimizers(self) -> dict:
        return {"optimizer_g": self.optimizer_g, "optimizer_d": self.optimizer_d}


def expression_grid(faces: torch.Tensor, models: list, expression_count: int) -> np.ndarray:
    """Per face, one row per model: the input, then every expression (labels 1 to ``expression_count`` - 1) at full
    intensity  # [H, W, 3] uint8. models: callables (face, expression, intensity) -> face."""
    rows = []
    with torch.no_grad():
        for face in faces:
            face = face[None]
            for model in models:
                row = [face]
                for label in range(1, expression_count):
                    expression, intensity = torch.tensor([label], device=face.device), torch.ones(1, device=face.device)
                    row.append(model(face, expression, intensity))
                rows.append(torch.cat(row, 3))
    grid = torch.cat(rows, 2)[0].permute(1, 2, 0).float().cpu().numpy()
    return (grid * 255).round().clip(0, 255).astype(np.uint8)


def sample_grid(synthesizer: Synthesizer, neutral: torch.Tensor) -> np.ndarray:
    """Rows: faces; columns: input, then every expression (coarse above refined)  # [H, W, 3] uint8."""
    return expression_grid(neutral[:4], [synthesizer.coarse_only, synthesizer], len(synthesizer.expressions))


STATE_NAME = "training_state.safetensors"  # in the work folder: what a rerun resumes from


def train_refiner(
    synthesizer: Synthesizer, rows: list[dict], settings: dict, out_dir: Path, device: str = "cpu",
    resume: bool = True, max_minutes: float | None = None, on_checkpoint=None,
) -> Synthesizer:
    """Train ``synthesizer.refiner`` in place; state and sample grids go to ``out_dir``."""
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    rank = 0
    if distributed:
        torch.distributed.init_process_group("nccl" if device == "cuda" else "gloo")
        rank = torch.distributed.get_rank()
        if device == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    torch_device = torch.device(device, int(os.environ.get("LOCAL_RANK", 0))) if device == "cuda" else torch.device(device)
    torch.manual_seed(settings["seed"] + rank)
    generator = torch.Generator().manual_seed(settings["seed"] + rank)
    out_dir.mkdir(parents=True, exist_ok=True)
    bank = PairBank(rows, synthesizer.expressions[1:], torch_device)
    training = RefinerTraining(synthesizer, settings, torch_device)
    fixed_neutral, _, _ = bank.sample(4, torch.Generator().manual_seed(1))

    def write_samples(step: int) -> None:
        synthesizer.eval()
        write_rgb(out_dir / f"samples_{step:06d}.png", sample_grid(synthesizer, fixed_neutral))
        synthesizer.train()

    run_steps(training, lambda: training.step(*bank.sample(settings["batch"], generator)), settings, out_dir,
              STATE_NAME, "refine", write_samples, resume, max_minutes,
              on_checkpoint and (lambda step: on_checkpoint(synthesizer, step)), leader=rank == 0)
    if distributed:
        torch.distributed.destroy_process_group()
    return synthesizer.eval()
