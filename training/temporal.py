"""Temporal stability on video: how much more the output flickers than the input.

For consecutive frames, the previous frame is warped onto the current one with dense optical flow measured on the
*input* (Farneback), and the mean absolute difference that remains inside the face region is the frame's flicker.
The score is output flicker / input flicker over the clip: 1.0 means "no more flicker than the source".

The flow is never exact, and what its errors leave behind grows with the picture's contrast: an edit that adds
contrast (a smile's teeth) scores above 1 without changing anything over time. So a second score divides each
clip's residual by its *structure* (the gradient of the slightly blurred frame, which is what a flow error of a
pixel turns into residual, and which sensor noise barely moves): the flicker at equal contrast. A stable contrast
edit scores about 1 there, fresh noise as much as before.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def warp_with_flow(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    height, width = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return cv2.remap(image, grid_x + flow[..., 0], grid_y + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def structure(frame: np.ndarray) -> np.ndarray:
    """Gradient magnitude of the grey frame blurred with sigma 1.5 px  # [H, W] float32 (grey levels per pixel):
    the residual a one-pixel flow error leaves, without the sensor noise's own gradient."""
    grey = cv2.GaussianBlur(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32), (0, 0), 1.5)
    return np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)) / 8


def frame_changes(frames: list[np.ndarray], flows: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per consecutive pair: the flow-compensated residual and the current frame's structure  # [H, W] each."""
    changes = []
    for previous, current, flow in zip(frames, frames[1:], flows):
        warped = warp_with_flow(previous.astype(np.float32), flow)
        changes.append((np.abs(current.astype(np.float32) - warped).mean(axis=2), structure(current)))
    return changes


def residual_and_structure(changes: list[tuple[np.ndarray, np.ndarray]],
                           masks: list[np.ndarray]) -> tuple[float, float]:
    """Mean residual inside the masks, and the mean structure there (frame means, averaged)."""
    inside = [(residual[mask].mean(), structure_[mask].mean()) for (residual, structure_), mask
              in zip(changes, masks[1:]) if mask.sum() > 0]
    return (float(np.mean([r for r, _ in inside])), float(np.mean([s for _, s in inside]))) if inside else (0.0, 0.0)


class FlickerMeter:
    """The flicker ratio against one input clip. The input's optical flow and its own residual and structure (the
    expensive part) are measured once here, so every method and reference edit scored on the same clip reuses
    them; only the face masks differ between methods."""

    def __init__(self, inputs: list[np.ndarray]):
        """inputs: RGB uint8 frames."""
        self.inputs = inputs
        greys = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in inputs]
        # Flow from frame t to t-1, so that previous frames can be pulled onto the current one.
        self.flows = [cv2.calcOpticalFlowFarneback(current, previous, None, 0.5, 3, 15, 3, 5, 1.2, 0)
                      for previous, current in zip(greys, greys[1:])]
        self.source_changes = frame_changes(inputs, self.flows)

    def scores(self, outputs: list[np.ndarray], masks: list[np.ndarray]) -> dict[str, float]:
        """outputs: RGB uint8 frames; masks: bool [H, W] face regions per frame. Returns output/input flicker, as
        measured ("flicker") and at equal contrast ("flicker_equal_contrast")."""
        source, source_structure = residual_and_structure(self.source_changes, masks)
        result, result_structure = residual_and_structure(frame_changes(outputs, self.flows), masks)
        if source <= 0:
            return {"flicker": 1.0, "flicker_equal_contrast": 1.0}
        raw = result / source
        if source_structure <= 0 or result_structure <= 0:
            return {"flicker": raw, "flicker_equal_contrast": raw}
        return {"flicker": raw, "flicker_equal_contrast": raw * source_structure / result_structure}

    def ratio(self, outputs: list[np.ndarray], masks: list[np.ndarray]) -> float:
        """outputs: RGB uint8 frames; masks: bool [H, W] face regions per frame. Returns output/input flicker."""
        return self.scores(outputs, masks)["flicker"]


def flicker_ratio(inputs: list[np.ndarray], outputs: list[np.ndarray], masks: list[np.ndarray]) -> float:
    """inputs, outputs: RGB uint8 frames; masks: bool [H, W] face regions per frame. Returns output/input flicker."""
    return FlickerMeter(inputs).ratio(outputs, masks)


# --- Calibration: edits whose answer is known -----------------------------------------------------------------------

def head_motion(t: float, image_shape: tuple[int, ...], frame_size: tuple[int, int], zoom: float = 0.9) -> np.ndarray:
    """A smooth head-like path for a still at time ``t`` seconds: sway, nod, a little roll and zoom.
    Returns the still -> frame matrix  # [2, 3]; frame_size is (width, height)."""
    height, width = image_shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), 4 * math.sin(2 * math.pi * 0.3 * t),
                                     zoom * (1 + 0.05 * math.sin(2 * math.pi * 0.2 * t + 1)))
    matrix[:, 2] += ((frame_size[0] - width) / 2 + 25 * math.sin(2 * math.pi * 0.4 * t),
                     (frame_size[1] - height) / 2 + 15 * math.sin(2 * math.pi * 0.25 * t + 0.5))
    return matrix


def moving_clip(still: np.ndarray, frames: int = 90, fps: float = 30.0, frame_size: tuple[int, int] = (640, 480),
                noise: float = 2.0, zoom: float = 0.9, seed: int = 0) -> list[np.ndarray]:
    """The still moved along ``head_motion``, with sensor noise (the same noise for the same seed, so an edited
    still moved with the same seed is the exact answer for the edit)  # RGB uint8 frames."""
    rng = np.random.default_rng(seed)
    clip = []
    for index in range(frames):
        moved = cv2.warpAffine(still, head_motion(index / fps, still.shape, frame_size, zoom), frame_size,
                               borderMode=cv2.BORDER_REPLICATE)
        clip.append((moved + rng.normal(0, noise, moved.shape)).round().clip(0, 255).astype(np.uint8))
    return clip


def stable_contrast_edit(frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Contrast x1.5 inside the face: a function of the current frame only, so by construction it adds no
    flicker — but it adds contrast, as a smile's teeth do, and the metric's flow errors grow with contrast."""
    boosted = 128 + 1.5 * (frame.astype(np.float32) - 128)
    weight = mask.astype(np.float32)[..., None]
    return (frame * (1 - weight) + boosted * weight).round().clip(0, 255).astype(np.uint8)


def noisy_edit(frame: np.ndarray, mask: np.ndarray, rng: np.random.Generator, sigma: float = 3.0) -> np.ndarray:
    """Fresh Gaussian noise inside the face on every frame: flicker by construction."""
    noise = rng.normal(0, sigma, frame.shape) * mask[..., None]
    return (frame + noise).round().clip(0, 255).astype(np.uint8)
