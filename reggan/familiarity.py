"""Where an input face looks like the training faces, and where it does not.

The regression layer is a per-pixel linear map fitted on studio photos of bare faces. On a pixel unlike anything it
was fitted on (a fringe of hair over the forehead, glasses, the teeth of someone already smiling) it
extrapolates, and paints colour streaks there. The gate measures, per pixel, how far the input is from the
training faces — in colour relative to the face's own mean colour, so a darker or warmer face is not "unlike" for
its skin tone or its light — and lets the networks' change through only where the input is familiar.

Calibrated on the validation people: the gate stays open (above 0.9) on 98.6 % of their face pixels (mean 0.995),
and it closes on what the layer never saw — the fringe on scikit-image's astronaut photo, where the regression
layer painted green streaks, was the visual check.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reggan.opencv_kernels import box_blur, eager_cpu_inference


class FamiliarityGate(nn.Module):
    # Standardised distance (per pixel, RMS over the colour channels) where the gate starts to close and where it
    # is shut. On the validation people 99 % of face pixels lie under 2.1; 2.5 / 4.0 left streaks on the fringe.
    open_below = 2.0
    shut_above = 3.0
    # Floor of the per-pixel spread (in [0, 1] colour units): a pixel where every training face agreed closely
    # must not call the slightest difference unfamiliar.
    spread_floor = 0.02
    # Box blur of the gate (pixels): a gate that switched from one pixel to the next would draw the edge.
    smoothing = 5

    def __init__(self, resolution: int, face_mask: torch.Tensor):
        """face_mask  # [1, 1, R, R]: where the face's own mean colour is measured."""
        super().__init__()
        # Mean and spread of the training faces' relative colour per pixel. The defaults (spread "infinite") keep
        # the gate open everywhere: checkpoints from before the gate behave as they did.
        self.register_buffer("mean", torch.zeros(3, resolution, resolution))
        self.register_buffer("spread", torch.full((3, resolution, resolution), 1e4))
        self.register_buffer("face_mask", face_mask.clone(), persistent=False)

    def relative_colour(self, faces: torch.Tensor) -> torch.Tensor:
        """faces  # [B, 3, R, R] in [0, 1] -> the same minus each face's mean colour inside the face mask."""
        mask = self.face_mask.to(faces.dtype)
        mean = (faces * mask).sum((2, 3), keepdim=True) / mask.sum()
        return faces - mean

    def distance(self, faces: torch.Tensor) -> torch.Tensor:
        """Standardised distance from the training faces per pixel  # [B, 1, R, R]."""
        faces = faces.float()
        z = (self.relative_colour(faces) - self.mean) / (self.spread + self.spread_floor)
        return torch.sqrt((z * z).mean(1, keepdim=True))

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        """faces  # [B, 3, R, R] in [0, 1] -> gate  # [B, 1, R, R] in [0, 1], float32 (1: familiar)."""
        gate = ((self.shut_above - self.distance(faces)) / (self.shut_above - self.open_below)).clamp(0.0, 1.0)
        if eager_cpu_inference(gate):
            return box_blur(gate, self.smoothing)
        pad = self.smoothing // 2
        return F.avg_pool2d(F.pad(gate, (pad, pad, pad, pad), mode="replicate"), self.smoothing, stride=1)

    @torch.no_grad()
    def fit(self, faces: torch.Tensor) -> None:
        """Set the statistics from training faces  # [N, 3, R, R] in [0, 1] (neutral photos, aligned)."""
        relative = self.relative_colour(faces.double())
        self.mean.copy_(relative.mean(0).float())
        self.spread.copy_(relative.std(0).float())
