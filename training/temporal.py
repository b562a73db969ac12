"""Temporal stability on video: how much more the output flickers than the input.

For consecutive frames, the previous frame is warped onto the current one with dense optical flow measured on the
*input* (Farneback), and the mean absolute difference that remains inside the face region is the frame's flicker.
The score is output flicker / input flicker over the clip: 1.0 means "no more flicker than the source".
"""

from __future__ import annotations

import cv2
import numpy as np


def warp_with_flow(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    height, width = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return cv2.remap(image, grid_x + flow[..., 0], grid_y + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def residual_change(frames: list[np.ndarray], flows: list[np.ndarray], masks: list[np.ndarray]) -> float:
    values = []
    for previous, current, flow, mask in zip(frames, frames[1:], flows, masks[1:]):
        if mask.sum() == 0:
            continue
        warped = warp_with_flow(previous.astype(np.float32), flow)
        values.append(np.abs(current.astype(np.float32) - warped).mean(axis=2)[mask].mean())
    return float(np.mean(values)) if values else 0.0


def flicker_ratio(inputs: list[np.ndarray], outputs: list[np.ndarray], masks: list[np.ndarray]) -> float:
    """inputs, outputs: RGB uint8 frames; masks: bool [H, W] face regions per frame. Returns output/input flicker."""
    greys = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in inputs]
    # Flow from frame t to t-1, so that previous frames can be pulled onto the current one.
    flows = [cv2.calcOpticalFlowFarneback(current, previous, None, 0.5, 3, 15, 3, 5, 1.2, 0)
             for previous, current in zip(greys, greys[1:])]
    source = residual_change(inputs, flows, masks)
    result = residual_change(outputs, flows, masks)
    return result / source if source > 0 else 1.0
