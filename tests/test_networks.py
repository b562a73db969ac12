"""Shapes of the networks, and that a few training steps on tiny data lower the loss."""

from __future__ import annotations

import pytest
import torch

from reggan.networks import Discriminator, Refiner, StarGANGenerator, Synthesizer
from training.train_refiner import RefinerTraining


def test_refiner_and_discriminator_shapes():
    faces = torch.rand(2, 3, 64, 64)
    labels = torch.tensor([1, 3])
    assert Refiner(4, width=8)(faces, faces, labels).shape == (2, 3, 64, 64)
    assert StarGANGenerator(4, width=8)(faces, faces, labels).shape == (2, 3, 64, 64)
    patches, classes = Discriminator(4, 64, width=8)(faces)
    assert patches.shape == (2, 1, 2, 2) and classes.shape == (2, 4)


def test_stargan_at_half_resolution_keeps_the_input_detail_and_its_checkpoint_only_the_generator(tmp_path):
    from reggan.checkpoint import load_synthesizer, read_tensors, save_synthesizer

    torch.manual_seed(0)
    model = Synthesizer(["happy", "sad"], 32, width=8, generator="stargan", generator_scale=2).eval()
    faces = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        change = model.refiner(faces, faces, torch.tensor([1, 2])) - faces
    # Its change is made at 16 px and upsampled: smooth, while the input's own pixel noise passes through whole.
    assert change.shape == faces.shape and change.abs().max() > 0
    assert (change[..., 1:] - change[..., :-1]).abs().mean() < (faces[..., 1:] - faces[..., :-1]).abs().mean() / 4
    path = save_synthesizer(tmp_path / "stargan.safetensors", model, dtype=torch.float32)
    # No warp, regression layer or gate of ours is stored (they are the modules' defaults: none).
    assert all(name.startswith("refiner.") for name in read_tensors(path))
    loaded = load_synthesizer(path)
    assert loaded.generator == "stargan" and loaded.refiner.scale == 2
    args = (faces, torch.tensor([1, 0]), torch.ones(2))
    with torch.no_grad():
        assert torch.equal(loaded(*args), model(*args))
        assert torch.equal(loaded(*args)[1], faces[1])  # neutral is the input


def test_the_competitor_is_not_anchored_to_its_input():
    """The coarse anchor keeps the regression layer's expression; a StarGAN-style generator has none, and the
    anchor would pull it back to its input, so its training leaves that term out."""
    model = Synthesizer(["happy"], 32, width=8, generator="stargan", generator_scale=2)
    settings = {"lr_generator": 1e-4, "lr_discriminator": 1e-4, "loss_adversarial": 1.0, "loss_classification": 0.25,
                "loss_l1": 2.0, "loss_coarse": 10.0, "loss_identity": 1.0, "discriminator_width": 8}
    training = RefinerTraining(model.train(), settings, torch.device("cpu"))
    losses = training.step(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32), torch.tensor([1, 1]))
    assert losses["coarse"] == 0.0 and losses["l1"] > 0


def test_resize_decoder_has_the_same_shapes_and_survives_a_checkpoint(tmp_path):
    from reggan.checkpoint import load_synthesizer, save_synthesizer

    faces = torch.rand(2, 3, 64, 64)
    assert Refiner(4, width=8, decoder="resize")(faces, faces, torch.tensor([1, 3])).shape == (2, 3, 64, 64)
    model = Synthesizer(["happy"], 32, width=8, decoder="resize").eval()
    loaded = load_synthesizer(save_synthesizer(tmp_path / "m.safetensors", model, dtype=torch.float32))
    assert loaded.decoder == "resize"
    args = (torch.rand(2, 3, 32, 32), torch.tensor([1, 1]), torch.ones(2))
    with torch.no_grad():
        assert torch.equal(loaded(*args), model(*args))


def test_change_chroma_turns_the_added_colour_down_and_keeps_its_luma(tmp_path):
    from reggan.checkpoint import load_synthesizer, save_synthesizer
    from reggan.networks import LUMA

    torch.manual_seed(0)
    faces = torch.rand(2, 3, 32, 32) * 0.5 + 0.25
    expressive = (faces + torch.tensor([0.1, -0.1, 0.05])[None, :, None, None]).clamp(0, 1)  # a coloured change
    strength, gate = torch.ones(2), torch.ones(2, 1, 32, 32)
    results = {}
    for chroma in (1.0, 0.3, 0.0):
        model = Synthesizer(["happy"], 32, width=8, change_chroma=chroma)
        model.edit_mask.fill_(1.0)
        results[chroma] = model.compose(faces, expressive, strength, gate) - faces
    luma = {chroma: (change * LUMA).sum(1) for chroma, change in results.items()}
    assert torch.allclose(luma[0.0], luma[1.0], atol=1e-6) and torch.allclose(luma[0.3], luma[1.0], atol=1e-6)
    spread = {chroma: (change.amax(1) - change.amin(1)).mean() for chroma, change in results.items()}
    assert spread[0.0] < 1e-6  # a grey change
    assert abs(spread[0.3] / spread[1.0] - 0.3) < 1e-4
    # Stored with the model; checkpoints written before the setting keep their colour (1.0).
    import json

    from safetensors.torch import load_file, save_file

    from reggan.checkpoint import read_metadata

    path = save_synthesizer(tmp_path / "m.safetensors", Synthesizer(["happy"], 32, width=8, change_chroma=0.3))
    assert load_synthesizer(path).change_chroma == 0.3
    older = {key: value for key, value in read_metadata(path).items() if key != "change_chroma"}
    save_file(load_file(str(path)), str(tmp_path / "old.safetensors"), metadata={"reggan": json.dumps(older)})
    assert load_synthesizer(tmp_path / "old.safetensors").change_chroma == 1.0


def test_detail_scale_keeps_the_refiners_fine_change_and_takes_the_broad_one_from_the_regression(tmp_path):
    from reggan.checkpoint import load_synthesizer, read_metadata, save_synthesizer

    torch.manual_seed(0)
    coarse = torch.rand(2, 3, 32, 32)
    fine = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(16, 16) * 0.05  # a 1-pixel checkerboard: detail
    broad = torch.linspace(-0.2, 0.2, 32)[None, :].repeat(32, 1)  # a ramp across the face: shading
    model = Synthesizer(["happy"], 32, width=8, detail_scale=4)
    assert torch.allclose(model.detail(coarse + fine, coarse), coarse + fine, atol=1e-6)
    without_broad = model.detail(coarse + broad, coarse)
    assert (without_broad - coarse).abs()[..., 4:-4, 4:-4].max() < 0.01  # away from the border's half-blocks
    assert (without_broad - coarse).abs().max() < 0.05 < broad.abs().max()
    assert torch.equal(Synthesizer(["happy"], 32, width=8).detail(coarse + broad, coarse), coarse + broad)
    # Stored with the model; checkpoints written before the setting keep the refiner's change whole (0).
    path = save_synthesizer(tmp_path / "m.safetensors", model)
    assert read_metadata(path)["detail_scale"] == 4 and load_synthesizer(path).detail_scale == 4


def test_a_black_and_white_face_gets_a_grey_change_whatever_the_colour_setting():
    model = Synthesizer(["happy"], 32, width=8, change_chroma=1.0)
    model.edit_mask.fill_(1.0)
    grey = torch.rand(1, 1, 32, 32).repeat(1, 3, 1, 1) * 0.5 + 0.25
    colour = grey + torch.tensor([0.05, 0.0, -0.05])[None, :, None, None]  # 0.1 = 25 grey levels of spread
    tint = torch.tensor([0.1, -0.1, 0.05])[None, :, None, None]
    faces = torch.cat([grey, colour])
    out = model.compose(faces, faces + tint, torch.ones(2), torch.ones(2, 1, 32, 32))
    grey_out = out[0]
    assert (grey_out.amax(0) - grey_out.amin(0)).max() < 1e-6  # still black and white
    assert (grey_out - grey[0]).abs().max() > 0.01  # but changed
    assert torch.allclose(out[1], faces[1] + tint[0], atol=1e-6)  # a colour face keeps the whole change


def test_neutral_returns_the_input_and_intensity_blends_without_a_warp():
    model = Synthesizer(["happy"], 32, width=8).eval()
    faces = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        neutral = model(faces, torch.zeros(3, dtype=torch.long), torch.ones(3))
        zero = model(faces, torch.ones(3, dtype=torch.long), torch.zeros(3))
        full = model(faces, torch.ones(3, dtype=torch.long), torch.ones(3))
        half = model(faces, torch.ones(3, dtype=torch.long), torch.full((3,), 0.5))
    assert torch.allclose(neutral, faces) and torch.allclose(zero, faces)
    unclamped = (full > 0) & (full < 1)
    assert torch.allclose(half[unclamped], ((faces + full) / 2)[unclamped], atol=1e-5)


@pytest.mark.parametrize("bf16_cpu", [False, True], ids=["fp32", "bf16"])
def test_a_few_training_steps_lower_the_loss(bf16_cpu, monkeypatch):
    # On a CPU with bfloat16 in hardware (AMX, AVX-512 BF16) training runs under bfloat16 autocast, elsewhere in
    # FP32: both must learn. (Where the CPU lacks it the bf16 case is emulated: slower, but the same arithmetic.)
    monkeypatch.setattr("training.train_refiner.cpu_has_fast_bf16", lambda: bf16_cpu)
    torch.manual_seed(0)
    resolution = 32
    model = Synthesizer(["happy"], resolution, width=8)
    settings = {"lr_generator": 2e-3, "lr_discriminator": 2e-4, "loss_adversarial": 0.1, "loss_classification": 0.1,
                "loss_l1": 10.0, "loss_coarse": 1.0, "coarse_pool": 4, "loss_identity": 1.0,
                "discriminator_width": 8}
    training = RefinerTraining(model, settings, torch.device("cpu"))
    with training.autocast:  # what the training steps compute in
        computed_in = torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype
    assert computed_in == (torch.bfloat16 if bf16_cpu else torch.float32)
    generator = torch.Generator().manual_seed(0)
    neutral = torch.rand(8, 3, resolution, resolution, generator=generator)
    # A fixed, learnable change inside the face (the Synthesizer leaves everything outside its face mask alone).
    mask = model.edit_mask
    target = neutral * (1 - mask) + mask * (neutral.flip(-2) * 0.5 + 0.25)
    label = torch.ones(8, dtype=torch.long)
    first = [training.step(neutral, target, label)["l1"] for _ in range(3)]
    for _ in range(40):
        last = training.step(neutral, target, label)["l1"]
    assert last < 0.85 * sum(first) / 3


def test_the_discriminator_sees_only_the_face_region():
    # Outside the face mask a refined image is the warped photo, which the refiner cannot change: a discriminator that
    # saw it there learned the warp's resampling and pushed the refiner to noise inside the face.
    torch.manual_seed(0)
    model = Synthesizer(["happy"], 32, width=8)
    settings = {"lr_generator": 1e-3, "lr_discriminator": 1e-3, "discriminator_width": 8}
    training = RefinerTraining(model, settings, torch.device("cpu"))
    training.discriminator.eval()  # spectral norm's power iteration would change the weights between the calls
    faces = torch.rand(2, 3, 32, 32)
    outside = (model.edit_mask == 0).float()  # the mask is soft: only where it is exactly 0 is nothing seen
    changed_outside = faces + outside * (torch.rand_like(faces) - 0.5)
    changed_inside = faces + model.edit_mask * 0.2
    with torch.no_grad():
        logits, classes = training.judged(faces)
        logits_outside, classes_outside = training.judged(changed_outside)
        logits_inside, _ = training.judged(changed_inside)
    assert torch.allclose(logits, logits_outside, atol=1e-5) and torch.allclose(classes, classes_outside, atol=1e-5)
    assert not torch.allclose(logits, logits_inside, atol=1e-3)


def test_the_competitor_command_trains_from_the_crops_alone_and_records_its_budget(tmp_path, astronaut):
    """`reggan train refine --generator stargan` needs no stage-1 checkpoint of ours, and its header says how long
    it trained (the evaluation report prints that beside its row)."""
    import cv2

    from reggan.checkpoint import load_synthesizer, read_tensors
    from reggan.cli import main
    from reggan.images import write_rgb

    prepared = tmp_path / "prepared"
    prepared.mkdir()
    for index in range(3):
        side = 200 + 20 * index
        write_rgb(prepared / f"crop{index}.png",
                  cv2.resize(astronaut[100:100 + side, 150:150 + side], (256, 256), interpolation=cv2.INTER_AREA))
    rows = [f"own,{i},happy,crop{i}.png,crop{i + 1}.png,train" for i in range(2)]
    (prepared / "manifest.csv").write_text("dataset,subject,expression,neutral,target,split\n" + "\n".join(rows))
    out = tmp_path / "stargan.safetensors"
    assert main(["train", "refine", "--generator", "stargan", "--prepared", str(prepared), "--steps", "2",
                 "--batch", "2", "--regression", str(tmp_path / "absent.safetensors"), "--out", str(out),
                 "--work-dir", str(tmp_path / "work")]) == 0
    competitor = load_synthesizer(out)
    assert competitor.generator == "stargan" and competitor.refiner.scale == 2  # [competitor].scale
    assert competitor.metadata["steps"] == 2 and competitor.metadata["batch"] == 2
    assert competitor.metadata["device"] == "cpu"
    assert not competitor.warp.field.any() and all(name.startswith("refiner.") for name in read_tensors(out))
