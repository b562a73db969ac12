"""The geometric half of an expression: a fixed displacement field per expression, applied before the regression.

An expression is mostly a motion (mouth corners out and up, brows raised, jaw dropped) plus some new appearance
(teeth, wrinkles). A per-pixel linear layer with a 3 x 3 receptive field cannot move anything by more than a pixel,
so on its own it paints the expressive mouth as a blend over the neutral one (double lips). Moving the face first
with the mean landmark motion of the training pairs (fitted by training/fit_warp.py) leaves the regression layer
and the refiner only the appearance to add, and keeps the person's own skin texture sharp.

The field is scaled by the intensity, so half intensity is half the motion (not a cross-fade of two mouths).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


# Bicubic, not bilinear: a bilinear read half-way between pixels averages two of them, which softened the skin of
# every warped face (measured on validation faces warped to each expression: Laplacian variance in the face 109
# bilinear, 178 bicubic, 219 unwarped; NIQE 12.3 / 10.4 / 7.6). ONNX GridSample and TensorRT both have it.
SAMPLING = "bicubic"
# Bicubic still attenuates the finest detail wherever it reads between pixels, and the fields move nearly every face
# pixel by a fraction of one. ``keep_detail`` samples the face blurred by this sigma (px) bicubic and carries the
# detail above it (pores, freckles, fine hair) from the nearest pixel, which keeps it whole and misplaces it by at
# most half a pixel. The networks keep reading the bicubic warp they were fitted on (fed the kept hair detail, the
# regression layer painted streaks on a fringe); the kept detail goes into the base their change is added to.
DETAIL_SIGMA = 1.0


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
        radius = int(3 * DETAIL_SIGMA + 0.5)
        taps = torch.exp(-torch.arange(-radius, radius + 1, dtype=torch.float32) ** 2 / (2 * DETAIL_SIGMA**2))
        self.register_buffer("blur_taps", taps / taps.sum(), persistent=False)  # separable Gaussian  # [2r+1]

    def _apply(self, fn, recurse=True):
        """Device moves apply, precision changes do not: the field and the pixel grid are geometry, and in FP16 they
        are off by up to 0.06 px at the crop edge, which flips which pixel ``keep_detail`` reads the detail from."""
        geometry = {name: getattr(self, name) for name in ("field", "identity_grid", "blur_taps")}
        super()._apply(fn, recurse)
        for name, tensor in geometry.items():
            setattr(self, name, tensor.to(getattr(self, name).device))
        return self

    def grid(self, expression: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
        """Where each output pixel reads from, in grid_sample's coordinates  # [B, R, R, 2] float32."""
        scale = strength.float() * (2.0 / self.resolution)  # pixels -> normalised grid units
        displacement = self.field[expression].float() * scale[:, None, None, None]
        return self.identity_grid.float() + displacement.permute(0, 2, 3, 1)

    def low_pass(self, images: torch.Tensor) -> torch.Tensor:
        """images  # [B, C, R, R] float32 blurred by DETAIL_SIGMA (separable, edges replicated)."""
        radius, size = self.blur_taps.shape[0] // 2, self.resolution
        taps = self.blur_taps.float()
        # Every channel as its own one-channel image: the kernels then have a fixed shape (ONNX needs that).
        planes = F.pad(images.reshape(-1, 1, size, size), (radius, radius, radius, radius), mode="replicate")
        blurred = F.conv2d(F.conv2d(planes, taps.view(1, 1, 1, -1)), taps.view(1, 1, -1, 1))
        return blurred.reshape(images.shape)

    def keep_detail(self, faces: torch.Tensor, expression: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
        """The warp without its softening: faces  # [B, C, R, R] -> warped, float32 (see DETAIL_SIGMA)."""
        grid, faces = self.grid(expression, strength), faces.float()
        low = self.low_pass(faces)
        return (F.grid_sample(low, grid, mode=SAMPLING, padding_mode="border", align_corners=False)
                + F.grid_sample(faces - low, grid, mode="nearest", padding_mode="border", align_corners=False))

    def forward(self, faces: torch.Tensor, expression: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
        """faces  # [B, C, R, R]; expression  # [B] int64; strength  # [B] -> warped faces  # [B, C, R, R]."""
        # Sampled in FP32 whatever the model's precision: FP16 grid coordinates are off by up to 0.06 px at the crop
        # edge, and PyTorch's FP16 CPU kernel returns NaN with border padding. (TensorRT builds pin it likewise.)
        warped = F.grid_sample(faces.float(), self.grid(expression, strength), mode=SAMPLING, padding_mode="border",
                               align_corners=False)
        return warped.to(faces.dtype)
