"""Paste a synthesized crop back into the full image through a feathered face mask.

What is pasted is the *change* (synthesized crop minus the crop it came from), warped back and added to the
original pixels: where the expression changes nothing, the photo keeps its full resolution instead of a crop
resampled twice, and intensity 0 gives back the input exactly. The mask is warped with the same matrix as the
crop, so mask and face can never drift apart.

Optional colour matching (Reinhard et al. 2001, in Lab, inside the face mask) gives the synthesized face the input
face's mean colour and chroma spread before the change is taken: a refiner trained under studio light then does not
tint a face filmed under warm or cold light. Lightness keeps its spread, so the contrast a smile adds (teeth) stays.
"""

from __future__ import annotations

import cv2
import numpy as np

from reggan.alignment import Aligner

PASTE_GROW = 0.3  # the fitted warps move less than 0.6 px outside a face outline grown this much (measured)


def match_colour(after: np.ndarray, before: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``after`` with the Lab mean of ``before`` (all channels) and its chroma spread (a, b), measured where
    ``mask`` > 0.5. after, before  # [R, R, 3] RGB 0-255; returns float32 0-255."""
    inside = mask > 0.5
    after = np.clip(after, 0, 255).astype(np.float32)
    lab_after = cv2.cvtColor(after / 255, cv2.COLOR_RGB2Lab)
    lab_before = cv2.cvtColor(before.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)
    matched = lab_after.copy()
    for channel in range(3):
        source, target = lab_after[..., channel][inside], lab_before[..., channel][inside]
        spread = target.std() / max(source.std(), 1e-3) if channel > 0 else 1.0
        matched[..., channel] = (lab_after[..., channel] - source.mean()) * spread + target.mean()
    # Applied as a correction, so the Lab round trip's own error cancels: a face the synthesizer left unchanged
    # (intensity 0) comes back exactly.
    correction = cv2.cvtColor(matched, cv2.COLOR_Lab2RGB) - cv2.cvtColor(lab_after, cv2.COLOR_Lab2RGB)
    return after + correction * 255


class FeatheredCompositor:
    def __init__(self, aligner: Aligner, feather: float, colour_match: bool = False):
        self.aligner = aligner
        # [R, R] float32, built once. The pasted area reaches past the jaw and brows so the expression's warp
        # (a dropped jaw, raised brows) is pasted whole instead of faded out at the outline; the synthesizer adds
        # new appearance only inside the face, so past it the change is that motion alone.
        self.mask = aligner.face_mask(feather, grow=PASTE_GROW)
        self.face = aligner.face_mask(feather)  # where colour statistics are measured: skin, not hair or wall
        self.colour_match = colour_match

    def paste(self, image: np.ndarray, before: np.ndarray, after: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        """image  # [H, W, 3] uint8; before, after: the crop and its synthesized version  # [R, R, 3] (0-255);
        matrix: image -> crop  # [2, 3]. Returns the new image."""
        if self.colour_match:
            after = match_colour(after, before, self.face)
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
