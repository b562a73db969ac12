"""Stage 1b, ``reggan train regression``: fit every per-pixel ridge system of the regression layer in closed form.

For each expression, colour channel and pixel: w = (X^T X + lambda I)^-1 (X^T t + lambda e) over all training pairs,
where a row of X is the k x k neighbourhood of that pixel in a neutral face (warped by the expression's field,
fit_warp.py) plus a constant 1 (the bias), t is the same pixel of the expressive face, and e is the identity map
(1 on the centre tap). The penalty pulls the weights towards "keep the input pixel", not towards zero: weights
shrunk towards zero let the bias carry the training faces' mean, which the layer then paints over anyone unlike
them (a second pair of eyes on a face looking aside, the mean mouth over a talking one). The bias is not shrunk:
it carries the expression's mean change. X^T X and X^T t are accumulated in batches of pairs: per expression
C*R*R*(k*k+1)^2 float64 numbers (157 MB at 256 px, k = 3), plus one expression's pairs held as float32 (about 1.6 MB
a pair) for the robust refits.

Robust refits ([regression].robust_rounds): after a fit, every (pair, pixel, channel) is weighted by how far its
residual lies from that pixel's typical residual (Huber weights), and the layer is fitted again. Most expressions
have 21 people; a hair strand across one person's forehead in their expressive takes, a shadow or make-up only they
wear, otherwise enters the mean change as a faint line painted on everyone.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from tqdm import tqdm

from reggan.regression import LocalRegression, pixel_major_patches


class RidgeAccumulator:
    """Streaming sums X^T X  # [C, R, R, K+1, K+1] and X^T t  # [C, R, R, K+1] for one expression."""

    def __init__(self, channels: int, resolution: int, kernel: int):
        self.kernel = kernel
        features = kernel * kernel + 1
        self.gram = torch.zeros(channels, resolution, resolution, features, features, dtype=torch.float64)
        self.cross = torch.zeros(channels, resolution, resolution, features, dtype=torch.float64)
        self.count = 0

    def add(self, neutral: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        """neutral, target  # [N, C, R, R] float in [0, 1]; weights  # [N, C, R, R]: each sample's say per pixel."""
        patches = pixel_major_patches(neutral, self.kernel)  # [C, R, R, N, K]
        ones = torch.ones(*patches.shape[:-1], 1, dtype=patches.dtype)
        design = torch.cat([patches, ones], dim=-1).double()  # [C, R, R, N, K+1]
        targets = target.permute(1, 2, 3, 0).double()  # [C, R, R, N]
        weighted = design if weights is None else design * weights.permute(1, 2, 3, 0).double().unsqueeze(-1)
        self.gram += weighted.transpose(-1, -2) @ design
        self.cross += (weighted.transpose(-1, -2) @ targets.unsqueeze(-1)).squeeze(-1)
        self.count += neutral.shape[0]

    def solve(self, ridge_lambda: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights  # [C, K, R, R] and bias  # [C, R, R], shrunk towards the identity map; the bias is not shrunk."""
        features = self.gram.shape[-1]
        penalty = torch.eye(features, dtype=torch.float64) * ridge_lambda
        penalty[-1, -1] = 0.0
        identity = torch.zeros(features, dtype=torch.float64)
        identity[(features - 1) // 2] = 1.0  # the centre tap of the k x k neighbourhood
        right_side = self.cross + ridge_lambda * identity
        solution = torch.linalg.solve(self.gram + penalty, right_side.unsqueeze(-1)).squeeze(-1)  # [C, R, R, K+1]
        weight = solution[..., :-1].permute(0, 3, 1, 2)
        bias = solution[..., -1]
        return weight.float(), bias.float()


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 RGB images  # list of [R, R, 3] -> float  # [N, 3, R, R] in [0, 1]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0


def fit_regression(
    pairs_by_expression: dict[str, list[tuple[np.ndarray, np.ndarray]]],
    expressions: list[str],
    resolution: int,
    kernel: int,
    ridge_lambda: float,
    batch: int = 64,
    warp=None,
    robust_rounds: int = 0,
) -> LocalRegression:
    """Fit a LocalRegression from aligned (neutral, target) uint8 crops grouped by expression name.

    ``warp`` (an ExpressionWarp): the regression then maps the warped neutral face to the target, as it runs in
    the Synthesizer. ``robust_rounds``: refits that give each (pair, pixel) less say the further it lies from the
    previous fit (robust_weights), so what one person's photos alone show does not enter the layer.
    """
    layer = LocalRegression(len(expressions), resolution, kernel)
    started = time.perf_counter()
    for index, expression in enumerate(expressions, start=1):
        pairs = pairs_by_expression.get(expression, [])
        if not pairs:
            raise ValueError(f"no training pairs for expression {expression!r}")
        neutral, target = to_tensor([n for n, _ in pairs]), to_tensor([t for _, t in pairs])
        if warp is not None:
            with torch.no_grad():
                count = neutral.shape[0]
                neutral = warp(neutral, torch.full((count,), index), torch.ones(count))
        weights = None
        for fit_round in range(robust_rounds + 1):
            accumulator = RidgeAccumulator(3, resolution, kernel)
            for start in tqdm(range(0, len(pairs), batch), desc=f"fit {expression} ({fit_round})", unit="batch",
                              leave=False):
                chunk = slice(start, start + batch)
                accumulator.add(neutral[chunk], target[chunk], None if weights is None else weights[chunk])
            weight, bias = accumulator.solve(ridge_lambda)
            with torch.no_grad():
                layer.weight[index] = weight
                layer.bias[index] = bias
                if fit_round < robust_rounds:
                    weights = robust_weights(target - predicted(layer, neutral, index, batch))
        print(f"  {expression}: {accumulator.count} pairs")
    print(f"regression fitted in {time.perf_counter() - started:.1f} s")
    return layer


def predicted(layer: LocalRegression, faces: torch.Tensor, expression: int, batch: int) -> torch.Tensor:
    """The layer's output for every face  # [N, C, R, R] as ``expression``, computed ``batch`` faces at a time."""
    return torch.cat([layer(chunk, torch.full((len(chunk),), expression)) for chunk in faces.split(batch)])


def robust_weights(residual: torch.Tensor, tuning: float = 1.345, floor: float = 2 / 255) -> torch.Tensor:
    """Huber weights  # [N, C, R, R] from a fit's residuals  # [N, C, R, R]: 1 within ``tuning`` robust standard
    deviations of the pixel's residuals over all pairs (1.4826 x their median absolute value, at least ``floor``),
    falling as 1/|residual| beyond. A hair strand, a shadow or a different make-up in one person's expressive
    photos sits many deviations out at the pixels it covers, so it stops being painted on everyone."""
    scale = (1.4826 * residual.abs().median(dim=0).values).clamp(min=floor)
    return (tuning * scale / residual.abs().clamp(min=1e-12)).clamp(max=1.0)


def distinct_neutrals(pairs_by_expression: dict[str, list[tuple]]) -> list[np.ndarray]:
    """Each training person's neutral crop once (load_training_pairs shares one array per photo)."""
    seen: dict[int, np.ndarray] = {}
    for pairs in pairs_by_expression.values():
        for neutral, _ in pairs:
            seen.setdefault(id(neutral), neutral)
    return list(seen.values())


def load_training_pairs(prepared_dir, expressions: list[str], split: str = "train") -> dict[str, list[tuple]]:
    """Aligned uint8 crops of the prepared manifest grouped by expression; each photo is decoded once."""
    from reggan.images import read_rgb
    from training.prepare import read_manifest

    cache: dict = {}

    def crop(path):
        if path not in cache:
            cache[path] = read_rgb(path)
        return cache[path]

    grouped: dict[str, list[tuple]] = {name: [] for name in expressions}
    for row in read_manifest(prepared_dir, split):
        if row["expression"] in grouped:
            grouped[row["expression"]].append((crop(row["neutral"]), crop(row["target"])))
    return grouped
