"""The intermediate representation: a regression layer with local receptive fields (Masked Regression, IJCV 2020).

Every output pixel of every colour channel is a linear function of the k x k neighbourhood of the same pixel of
the same input channel, plus a bias, with its own weights per pixel and per target expression (a locally connected
layer, no weight sharing). Being linear and local is what lets it generalise to faces unlike its training set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def neighbourhood_offsets(kernel: int) -> list[tuple[int, int]]:
    """(dy, dx) of each tap in the padded image, row-major; the centre tap is index kernel*kernel // 2."""
    return [(dy, dx) for dy in range(kernel) for dx in range(kernel)]


def pixel_major_patches(images: torch.Tensor, kernel: int) -> torch.Tensor:
    """k x k neighbourhoods laid out pixel-major  # [C, H, W, N, k*k] from images  # [N, C, H, W].

    Built by stacking shifted slices of the channel/pixel-major padded images, so the big tensor is produced in
    its final layout; unfold-then-transpose was measured 5x slower than the whole ridge solve.
    """
    pad = kernel // 2
    height, width = images.shape[-2:]
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate").permute(1, 2, 3, 0)  # [C, H+2p, W+2p, N]
    taps = [padded[:, dy : dy + height, dx : dx + width, :] for dy, dx in neighbourhood_offsets(kernel)]
    return torch.stack(taps, dim=-1)


class LocalRegression(nn.Module):
    """Per-expression locally connected linear layer on an aligned face  # [B, C, R, R] in [0, 1].

    Expression 0 is "neutral" and is the identity map; expressions 1..E use their fitted weights.
    """

    def __init__(self, num_expressions: int, resolution: int, kernel: int = 3, channels: int = 3):
        super().__init__()
        self.kernel = kernel
        taps = kernel * kernel
        identity = torch.zeros(1, channels, taps, resolution, resolution)
        identity[:, :, taps // 2] = 1.0
        # Row 0 is the fixed neutral identity; rows 1.. are fitted by ridge regression (training/fit_regression.py).
        self.weight = nn.Parameter(identity.repeat(num_expressions + 1, 1, 1, 1, 1))  # [E+1, C, k*k, R, R]
        self.bias = nn.Parameter(torch.zeros(num_expressions + 1, channels, resolution, resolution))  # [E+1, C, R, R]

    def forward(self, faces: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        """faces  # [B, C, R, R], expression  # [B] int64 -> coarse expressive faces  # [B, C, R, R]."""
        pad = self.kernel // 2
        height, width = faces.shape[-2:]
        padded = F.pad(faces, (pad, pad, pad, pad), mode="replicate")
        # index_select rather than indexing: the same gather, 20 % faster on a CPU (the weights are 7 MB a face).
        weight = self.weight.index_select(0, expression)  # [B, C, k*k, R, R]
        out = self.bias.index_select(0, expression)
        # Shifted slices with multiply-add: exact, and far faster in onnxruntime than an Einsum node.
        for tap, (dy, dx) in enumerate(neighbourhood_offsets(self.kernel)):
            out = out + weight[:, :, tap] * padded[:, :, dy : dy + height, dx : dx + width]
        return out
