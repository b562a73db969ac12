"""Paste a synthesized crop back into the full image through a feathered face mask.

What is pasted is the *change* (synthesized crop minus the crop it came from), warped back and added to the
original pixels: where the expression changes nothing, the photo keeps its full resolution instead of a crop
resampled twice, and intensity 0 gives back the input exactly. The mask is warped with the same matrix as the
crop, so mask and face can never drift apart.
"""

from __future__ import annotations

import numpy as np

from reggan.alignment import Aligner


class FeatheredCompositor:
    def __init__(self, aligner: Aligner, feather: float):
        self.aligner = aligner
        self.mask = aligner.face_mask(feather)  # [R, R] float32, built once

    def paste(self, image: np.ndarray, before: np.ndarray, after: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        """image  # [H, W, 3] uint8; before, after: the crop and its synthesized version  # [R, R, 3] (0-255);
        matrix: image -> crop  # [2, 3]. Returns the new image."""
        change = after.astype(np.float32) - before.astype(np.float32)
        weighted = change * self.mask[..., None]
        back, corner = self.aligner.uncrop_region(weighted, matrix, image.shape)
        if back is None:
            return image
        top, left = corner
        bottom, right = top + back.shape[0], left + back.shape[1]
        result = image.copy()
        region = image[top:bottom, left:right].astype(np.float32) + back
        result[top:bottom, left:right] = region.round().clip(0, 255).astype(np.uint8)
        return result
