"""Paste a synthesized crop back into the full image through a feathered face mask.

The mask is warped with the same matrix as the crop, so mask and face can never drift apart.
"""

from __future__ import annotations

import numpy as np

from reggan.alignment import Aligner


class FeatheredCompositor:
    def __init__(self, aligner: Aligner, feather: float):
        self.aligner = aligner
        self.mask = aligner.face_mask(feather)  # [R, R] float32, built once

    def paste(self, image: np.ndarray, crop: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        """image  # [H, W, 3] uint8, crop  # [R, R, 3] uint8, matrix: image -> crop  # [2, 3] -> new image."""
        face = self.aligner.uncrop(crop, matrix, image.shape).astype(np.float32)
        alpha = self.aligner.uncrop(self.mask, matrix, image.shape)[..., None]
        blended = image.astype(np.float32) * (1.0 - alpha) + face * alpha
        return blended.round().clip(0, 255).astype(np.uint8)
