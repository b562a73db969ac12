"""The closed-form ridge fit of the local regression layer."""

from __future__ import annotations

import numpy as np
import torch

from reggan.regression import LocalRegression, pixel_major_patches
from training.fit_regression import RidgeAccumulator


def random_local_map(channels: int, size: int, kernel: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(channels, kernel * kernel, size, size, generator=generator) * 0.3
    bias = torch.randn(channels, size, size, generator=generator) * 0.1
    return weight, bias


def apply_map(images: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, kernel: int) -> torch.Tensor:
    layer = LocalRegression(1, images.shape[-1], kernel, images.shape[1])
    with torch.no_grad():
        layer.weight[1], layer.bias[1] = weight, bias
        return layer(images, torch.ones(len(images), dtype=torch.long))


def test_patches_are_pixel_major_neighbourhoods():
    images = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    patches = pixel_major_patches(images, 3)  # [C, H, W, N, 9]
    assert patches.shape == (1, 4, 4, 2, 9)
    assert patches.is_contiguous()
    # Centre tap is the pixel itself; the tap to its right is the next column.
    assert torch.equal(patches[0, 1, 1, :, 4], images[:, 0, 1, 1])
    assert torch.equal(patches[0, 1, 1, :, 5], images[:, 0, 1, 2])
    # Borders replicate.
    assert torch.equal(patches[0, 0, 0, :, 0], images[:, 0, 0, 0])


def test_fit_recovers_a_known_local_linear_map_exactly():
    kernel, size = 3, 8
    weight, bias = random_local_map(3, size, kernel)
    inputs = torch.rand(40, 3, size, size, generator=torch.Generator().manual_seed(1))
    targets = apply_map(inputs, weight, bias, kernel)
    accumulator = RidgeAccumulator(3, size, kernel)
    accumulator.add(inputs, targets)
    # A vanishing penalty: border pixels repeat taps (replicate padding), so their weights are not unique there.
    fitted_weight, fitted_bias = accumulator.solve(ridge_lambda=1e-9)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    assert torch.allclose(fitted_weight[inner], weight[inner], atol=1e-4)
    assert torch.allclose(fitted_bias[:, 1:-1, 1:-1], bias[:, 1:-1, 1:-1], atol=1e-4)
    # And the layer with the fitted weights reproduces the targets.
    assert torch.allclose(apply_map(inputs, fitted_weight, fitted_bias, kernel), targets, atol=1e-4)


def test_streaming_fit_equals_one_shot_fit():
    kernel, size = 3, 6
    inputs = torch.rand(30, 3, size, size, generator=torch.Generator().manual_seed(2))
    targets = torch.rand(30, 3, size, size, generator=torch.Generator().manual_seed(3))
    one_shot = RidgeAccumulator(3, size, kernel)
    one_shot.add(inputs, targets)
    streamed = RidgeAccumulator(3, size, kernel)
    for start in range(0, 30, 7):
        streamed.add(inputs[start : start + 7], targets[start : start + 7])
    for expected, got in zip(one_shot.solve(0.4), streamed.solve(0.4)):
        assert torch.allclose(expected, got, atol=1e-6)
    assert streamed.count == 30


def test_ridge_penalty_shrinks_weights_towards_the_identity_map():
    """A strong penalty leaves "keep the input pixel" plus the mean change, never the training faces' mean image."""
    kernel, size = 3, 4
    inputs = torch.rand(12, 3, size, size, generator=torch.Generator().manual_seed(4))
    targets = inputs.flip(-1) + 0.1
    accumulator = RidgeAccumulator(3, size, kernel)
    accumulator.add(inputs, targets)
    identity = torch.zeros(3, kernel * kernel, size, size)
    identity[:, kernel * kernel // 2] = 1.0
    loose, _ = accumulator.solve(0.0001)
    tight, tight_bias = accumulator.solve(1e6)
    assert (tight - identity).abs().mean() < (loose - identity).abs().mean()
    assert torch.allclose(tight, identity, atol=1e-3)
    # With the weights held at the identity, the unshrunk bias is the mean change target - input.
    assert torch.allclose(tight_bias, (targets - inputs).mean(0), atol=1e-3)


def test_train_regression_command_fits_the_warps_then_the_layer(astronaut, astronaut_landmarks, tmp_path):
    """`reggan train regression` on a tiny prepared set whose only motion is known: the mouth moves up 3 px."""
    import csv
    import json
    import subprocess
    import sys

    from reggan.alignment import Aligner, transform_points
    from reggan.checkpoint import load_synthesizer
    from reggan.config import load_config
    from reggan.images import write_rgb

    aligner = Aligner(256)
    matrix = aligner.matrix_for(astronaut_landmarks)
    prepared = tmp_path / "prepared"
    (prepared / "crops").mkdir(parents=True)
    write_rgb(prepared / "crops" / "neutral.png", aligner.crop(astronaut, matrix))
    write_rgb(prepared / "crops" / "target.png", aligner.crop(astronaut, matrix))
    neutral = transform_points(astronaut_landmarks, matrix)
    target = neutral.copy()
    target[48:68, 1] -= 3.0
    (prepared / "landmarks.json").write_text(json.dumps({"crops/neutral.png": neutral.tolist(),
                                                         "crops/target.png": target.tolist()}))
    expressions = load_config()["model"]["expressions"]
    with open(prepared / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["dataset", "subject", "expression", "neutral", "target", "split"])
        for expression in expressions:
            writer.writerow(["pairs", "1", expression, "crops/neutral.png", "crops/target.png", "train"])
    out = tmp_path / "regression.safetensors"
    result = subprocess.run([sys.executable, "-m", "reggan.cli", "train", "regression", "--prepared", str(prepared),
                             "--regression", str(out)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    model = load_synthesizer(out)
    assert model.metadata["stages"] == ["warp", "regression"]
    mouth = np.round(target[48:68]).astype(int)
    read_from = model.warp.field[1][:, mouth[:, 1], mouth[:, 0]].numpy()  # backward: each moved point reads 3 px below
    assert np.abs(read_from[0]).mean() < 0.5 and np.abs(read_from[1] - 3.0).mean() < 0.6


def test_robust_refits_drop_what_one_persons_photos_alone_show():
    """A "hair strand" over a few pixels of one person's expressive photos enters the plain fit's mean change; the
    robust refits leave it out and recover the map the other photos follow."""
    from training.fit_regression import fit_regression

    kernel, size = 3, 8
    generator = torch.Generator().manual_seed(5)
    neutral = torch.rand(40, 3, size, size, generator=generator)
    target = (neutral + 0.05).clamp(0, 1)  # every pair: the same small brightening
    target[:4, :, 2:4, 2:6] = 0.0  # one person's 4 photos: a dark strand
    as_uint8 = lambda images: (images.permute(0, 2, 3, 1) * 255).round().byte().numpy()
    pairs = {"happy": list(zip(as_uint8(neutral), as_uint8(target)))}
    plain = fit_regression(pairs, ["happy"], size, kernel, ridge_lambda=1.0)
    robust = fit_regression(pairs, ["happy"], size, kernel, ridge_lambda=1.0, robust_rounds=2)
    face = torch.full((1, 3, size, size), 0.5)
    with torch.no_grad():
        plain_change = plain(face, torch.ones(1, dtype=torch.long)) - face
        robust_change = robust(face, torch.ones(1, dtype=torch.long)) - face
    strand = (slice(None), slice(None), slice(2, 4), slice(2, 6))
    plain_error = (plain_change[strand] - 0.05).abs().mean()
    robust_error = (robust_change[strand] - 0.05).abs().mean()
    assert plain_error > 0.03  # the strand's 1/10 share darkens everyone there
    assert robust_error < plain_error / 4  # (nearly) gone: the common brightening only
    assert (robust_change - 0.05).abs().max() < 0.015


def test_robust_weights_are_one_for_typical_residuals_and_fall_for_outliers():
    from training.fit_regression import robust_weights

    residual = torch.randn(200, 1, 2, 2, generator=torch.Generator().manual_seed(6)) * 0.02
    residual[0] = 0.5
    weights = robust_weights(residual)
    assert weights[0].max() < 0.1
    assert (weights[1:] == 1.0).float().mean() > 0.75  # Huber: most samples keep their full say
