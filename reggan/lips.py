"""Lips keep their own brightness on video: over closed lips the networks' paint may darken, not lighten.

The networks learned happy from toothy smiles, so over closed or nearly closed lips they paint a pale band of
teeth and pale the lips. On a talking face the lips part with every syllable: the open mouth's inside is then kept
as it is (reggan/open_mouth.py), and the pale band gives way to the mouth's dark opening and comes back as the
lips meet, at the rate of speech. That flip was most of what flickered on video (d20.mp4, the clip with the most
talking: 1.18 against its input, where every other clip was under 1.1), and on a frowning mouth pressed shut
(d3.mp4) the band read as a white smear. Here, inside the lips, wherever the warp has moved them (the warp moves
them as before: the smile widens), the paint's lightening is taken out and its darkening kept: the smile shows
with the lips closed, in their own colour. Video only (``FrameProcessor``): on a still a painted band does not
flip, and the judge reads its teeth as happy.
"""

from __future__ import annotations

import cv2
import numpy as np

OUTER_LIPS = list(range(48, 60))  # dlib's 68-point layout: the lips' outer edge
FEATHER_PX = 2.0  # the mask's soft edge (Gaussian sigma, crop pixels at 256)


def warped_lips(points: np.ndarray, template: np.ndarray, motion: np.ndarray | None) -> np.ndarray:
    """The lips' outer edge where the expression's warp puts it  # [12, 2] crop pixels. points: the face's
    landmarks in the crop  # [68, 2]; template: the template's, crop pixels  # [68, 2]; motion: the warp's field
    (each pixel takes the colour from pixel + motion; None: no warp)  # [R, R, 2]. A point moves by minus the field
    where it lies; the field is read at the template's lips, where the networks warp (a bent face's features are
    put there)."""
    lips = np.asarray(points[OUTER_LIPS], dtype=np.float32)
    if motion is None:
        return lips
    where = np.clip(np.round(template[OUTER_LIPS]).astype(int), 0, motion.shape[0] - 1)
    return lips - motion[where[:, 1], where[:, 0]]


def lips_mask(outline: np.ndarray, shape: tuple[int, int], corner: tuple[int, int] = (0, 0)) -> np.ndarray:
    """The inside of a lips outline  # [12, 2] crop pixels, feathered, over a box of ``shape`` (rows, columns) whose
    top-left corner sits at ``corner`` (x, y) in the crop  # [H, W] float32 in [0, 1]."""
    mask = np.zeros(shape, np.float32)
    cv2.fillPoly(mask, [np.round(np.asarray(outline) - corner).astype(np.int32)], 1.0)
    return cv2.GaussianBlur(mask, (0, 0), FEATHER_PX)


def without_lightening(crop: np.ndarray, synthesized: np.ndarray, where: np.ndarray) -> np.ndarray:
    """The synthesized crop with its brightening taken out where ``where`` says (0-1): the change's positive mean
    over the channels, so its colour balance stays. crop  # [H, W, 3] uint8; synthesized  # [H, W, 3] float32."""
    lightening = np.maximum((synthesized - crop.astype(np.float32)).mean(axis=2), 0)
    return synthesized - (where * lightening)[..., None]


def lips_kept(crop: np.ndarray, synthesized: np.ndarray, outline: np.ndarray, open_mouth: np.ndarray) -> np.ndarray:
    """The synthesized crop  # [R, R, 3] float32 without the lightening painted inside the lips' ``outline``
    (``warped_lips``), except inside the open mouth  # [R, R] (the synthesizer's to keep). Worked on the lips' box
    only (2.6 ms over the whole 256 px crop, a face every frame)."""
    size = crop.shape[0]
    margin = int(np.ceil(4 * FEATHER_PX)) + 2  # past the feather's reach (OpenCV's kernel spans 4 sigma each way)
    left, top = np.clip(np.floor(outline.min(axis=0)).astype(int) - margin, 0, size)
    right, bottom = np.clip(np.ceil(outline.max(axis=0)).astype(int) + margin + 1, 0, size)
    if right <= left or bottom <= top:
        return synthesized
    box = (slice(top, bottom), slice(left, right))
    where = lips_mask(outline, (bottom - top, right - left), (left, top)) * (1 - open_mouth[box])
    kept = synthesized.copy()
    kept[box] = without_lightening(crop[box], synthesized[box], where)
    return kept
