"""The geometric half of an expression: a fixed displacement field per expression, applied before the regression.

An expression is mostly a motion (mouth corners out and up, brows raised, jaw dropped) plus some new appearance
(teeth, wrinkles). A per-pixel linear layer with a 3 x 3 receptive field cannot move anything by more than a pixel,
so on its own it paints the expressive mouth as a blend over the neutral one (double lips). Moving the face first
with the mean landmark motion of the training pairs (fitted by training/fit_warp.py) leaves the regression layer
and the refiner only the appearance to add, and keeps the person's own skin texture sharp.

The field is scaled by the intensity, so half intensity is half the motion (not a cross-fade of two mouths).
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reggan.opencv_kernels import eager_cpu_inference, remap_bicubic


# Bicubic, not bilinear: a bilinear read half-way between pixels averages two of them, which softened the skin of
# every warped face (measured on validation faces warped to each expression: Laplacian variance in the face 109
# bilinear, 178 bicubic, 219 unwarped; NIQE 12.3 / 10.4 / 7.6). ONNX GridSample and TensorRT both have it.
SAMPLING = "bicubic"


class ExpressionWarp(nn.Module):
    """Backward warp of aligned faces by the expression's displacement field, scaled per sample.

    ``field[e, :, y, x]`` is (dx, dy) in pixels: output pixel (x, y) is read from input (x + dx, y + dy).
    Row 0 (neutral) is zero, and a checkpoint without fields loads all zeros, which is exactly no warp.
    """

    def __init__(self, num_expressions: int, resolution: int):
        super().__init__()
        self.resolution = resolution
        self.register_buffer("field", torch.zeros(num_expressions + 1, 2, resolution, resolution))
        # Pixel centres in grid_sample's normalised coordinates (align_corners=False).
        centres = (torch.arange(resolution, dtype=torch.float32) * 2 + 1) / resolution - 1
        grid_y, grid_x = torch.meshgrid(centres, centres, indexing="ij")
        self.register_buffer("identity_grid", torch.stack([grid_x, grid_y], dim=-1)[None], persistent=False)

    def forward(self, faces: torch.Tensor, expression: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
        """faces  # [B, C, R, R]; expression  # [B] int64; strength  # [B] -> warped faces  # [B, C, R, R]."""
        # Sampled in FP32 whatever the model's precision: FP16 grid coordinates are off by up to 0.06 px at the crop
        # edge, and PyTorch's FP16 CPU kernel returns NaN with border padding. (TensorRT builds pin it likewise.)
        if eager_cpu_inference(faces, strength):
            return self._remap(faces, expression, strength)
        scale = strength.float() * (2.0 / self.resolution)  # pixels -> normalised grid units
        displacement = self.field[expression].float() * scale[:, None, None, None]
        grid = self.identity_grid.float() + displacement.permute(0, 2, 3, 1)
        warped = F.grid_sample(faces.float(), grid, mode=SAMPLING, padding_mode="border", align_corners=False)
        return warped.to(faces.dtype)

    def _remap(self, faces: torch.Tensor, expression: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
        """The same warp by OpenCV, for a CPU running the model for inference (reggan/opencv_kernels.py)."""
        displacement = self.field[expression] * strength.float()[:, None, None, None]  # [B, 2, R, R] pixels
        pixels = torch.arange(self.resolution, dtype=torch.float32)
        return remap_bicubic(faces.float(), pixels[None, None, :] + displacement[:, 0],
                             pixels[None, :, None] + displacement[:, 1]).to(faces.dtype)


class Displacements:
    """An ``ExpressionWarp``'s fields as numpy on the CPU, for callers that apply the warp themselves (``displace``):
    what the network moves one face by, for an expression and strength."""

    def __init__(self, warp: ExpressionWarp):
        self.fields = np.ascontiguousarray(warp.field.detach().float().cpu().numpy().transpose(0, 2, 3, 1))
        self.moves = bool(np.any(self.fields))  # False: a model without a warp (the competitor)
        # A cache per table: one on the method would be shared by every table and keep each one alive.
        self._scaled = functools.lru_cache(maxsize=16)(self._scale)

    def __call__(self, expression: int, strength: float) -> np.ndarray:
        """Pixels  # [R, R, 2] float32 (dx, dy): output pixel (x, y) reads input (x + dx, y + dy). The same
        (read-only) array for the same arguments, so a caller may keep what it derived from it
        (``FaceBend.shift_on_face``)."""
        return self._scaled(int(expression), float(strength))

    def _scale(self, expression: int, strength: float) -> np.ndarray:
        field = self.fields[expression] * np.float32(strength)
        field.flags.writeable = False
        return field


@functools.lru_cache(maxsize=4)
def pixel_grid(height: int, width: int) -> np.ndarray:
    """Each pixel's own (x, y)  # [H, W, 2] float32: where a remap reads it from when nothing moves. Shared, so
    read-only."""
    grid = np.stack(np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)), axis=2)
    grid.flags.writeable = False
    return grid


def held_together(displacement: np.ndarray, region: np.ndarray | None) -> np.ndarray:
    """A displacement  # [R, R, 2] whose motion inside ``region``  # [R, R] in [0, 1] (an open mouth) is one
    translation, the region's mean motion, blended in by the region's weight -> a new field (the input is left as it
    is; it may be a shared, read-only one).

    Teeth do not stretch. A smile's warp widens the mouth, and over an open one it widened the teeth with it, most
    at the middle of the mouth: on d10.mp4 (a smiling, talking face showing her teeth) the gap between the front
    teeth grew into a dark split, and it came and went as she talked. Moved as one piece, the teeth keep their size
    while the lips around them widen. Measured on the first 90 frames of the clips (full model): flicker d10
    1.141 -> 1.085, d20 1.212 -> 1.199, d3 1.120 -> 1.118, WolfgangLanger 1.089 -> 1.087. A least-squares affine fit
    over the opening instead of the mean kept the teeth's stretch, and d10 only reached 1.130. The cost: a surprised
    mouth that is already open no longer opens further, since its lips' inner edge moves with the teeth."""
    if region is None:
        return displacement
    rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
    if not len(rows):
        return displacement
    # Only the region's box is touched (an open mouth covers a sixth of the crop): 3.3 -> 0.5 ms a face (the
    # astronaut's open mouth, 2-core AVX2 CPU).
    box = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    weight, inside = region[box][..., None], displacement[box]
    mean = (inside * weight).sum((0, 1)) / weight.sum()
    held = np.array(displacement, np.float32)
    held[box] = inside + weight * (mean - inside)
    return held


def displace(image: np.ndarray, displacement: np.ndarray) -> np.ndarray:
    """An image  # [R, R, C] moved by a displacement field  # [R, R, 2] as ``ExpressionWarp`` moves it (the same
    bicubic taps, the border repeated) -> float32. Done outside the network, where a caller needs the warp apart
    from the appearance the network added (reggan/anchoring.py)."""
    where_from = pixel_grid(*image.shape[:2]) + displacement
    return cv2.remap(image.astype(np.float32), where_from[..., 0], where_from[..., 1], cv2.INTER_CUBIC,
                     borderMode=cv2.BORDER_REPLICATE)
