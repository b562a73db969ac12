"""Temporal stability on video: how much more the output flickers than the input.

For consecutive frames, the previous frame is warped onto the current one with dense optical flow measured on the
*input* (Farneback), and the mean absolute difference that remains inside the face region is the frame's flicker.
The score is output flicker / input flicker over the clip: 1.0 means "no more flicker than the source".

Where the flow cannot be trusted — a mouth opening shows teeth that were not in the previous frame, a hand passes
in front of the face — the warp leaves a residual that is not flicker, and it is larger the more contrast the output
adds there (a smile's teeth against the lips). So, as in the warping error of Lai et al. (ECCV 2018, "Learning
Blind Video Temporal Consistency"), pixels that fail a forward-backward flow check are left out; ``occlusion=False``
gives the plain version over every face pixel, which the report also shows.
"""

from __future__ import annotations

import cv2
import numpy as np


def warp_with_flow(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    height, width = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return cv2.remap(image, grid_x + flow[..., 0], grid_y + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def dense_flow(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Farneback flow on grey frames: for each pixel of ``source``, where it is in ``target``  # [H, W, 2]."""
    return cv2.calcOpticalFlowFarneback(source, target, None, 0.5, 3, 15, 3, 5, 1.2, 0)


def consistent_flow(backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """Pixels whose backward flow (t -> t-1) is undone by the forward flow (t-1 -> t) at the place it points to;
    the thresholds are Lai et al.'s (after Sundaram et al., ECCV 2010)  # [H, W] bool."""
    round_trip = backward + warp_with_flow(forward, backward)
    error = (round_trip ** 2).sum(axis=2)
    magnitude = (backward ** 2).sum(axis=2) + (warp_with_flow(forward, backward) ** 2).sum(axis=2)
    return error < 0.01 * magnitude + 0.5


def residual_change(frames: list[np.ndarray], flows: list[np.ndarray], masks: list[np.ndarray]) -> float:
    values = []
    for previous, current, flow, mask in zip(frames, frames[1:], flows, masks[1:]):
        if mask.sum() == 0:
            continue
        warped = warp_with_flow(previous.astype(np.float32), flow)
        values.append(np.abs(current.astype(np.float32) - warped).mean(axis=2)[mask].mean())
    return float(np.mean(values)) if values else 0.0


def flicker_ratio(inputs: list[np.ndarray], outputs: list[np.ndarray], masks: list[np.ndarray],
                  occlusion: bool = True) -> float:
    """inputs, outputs: RGB uint8 frames; masks: bool [H, W] face regions per frame. Returns output/input flicker
    over the face pixels (those where the input's flow is consistent both ways, when ``occlusion``)."""
    greys = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in inputs]
    # Flow from frame t to t-1, so that previous frames can be pulled onto the current one.
    flows = [dense_flow(current, previous) for previous, current in zip(greys, greys[1:])]
    if occlusion:
        masks = [masks[0]] + [mask & consistent_flow(backward, dense_flow(previous, current))
                              for mask, backward, previous, current in zip(masks[1:], flows, greys, greys[1:])]
    source = residual_change(inputs, flows, masks)
    result = residual_change(outputs, flows, masks)
    return result / source if source > 0 else 1.0
