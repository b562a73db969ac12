"""Stage 1a (run by ``reggan train regression`` before the ridge fit): one displacement field per expression.

The mean motion of each of the 68 landmarks from the neutral crop to the expressive crop of the same person, over
all training pairs of that expression, in aligned (template) space; interpolated to every pixel with a thin-plate
spline that is pinned to zero motion along an enlarged face outline and the crop border, so hair and background
stay where they are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from training.prepare import read_landmarks, read_manifest

RING_SCALE = 1.4  # where the motion is pinned to zero, in multiples of the face outline's size


def mean_landmark_motion(prepared_dir: str | Path, expressions: list[str], split: str = "train"):
    """Mean neutral landmarks  # [68, 2] and, per expression, the mean landmark motion  # [68, 2] (pixels)."""
    landmarks = read_landmarks(prepared_dir)
    rows = [row for row in read_manifest(prepared_dir, split)
            if row["neutral"] in landmarks and row["target"] in landmarks]
    motion = {}
    for expression in expressions:
        pairs = [row for row in rows if row["expression"] == expression]
        if not pairs:
            raise ValueError(f"no training pairs with landmarks for expression {expression!r}")
        motion[expression] = np.mean([landmarks[row["target"]] - landmarks[row["neutral"]] for row in pairs], axis=0)
    neutral_mean = np.mean([landmarks[row["neutral"]] for row in rows], axis=0)
    return neutral_mean, motion


def backward_field(neutral_points: np.ndarray, motion: np.ndarray, resolution: int) -> np.ndarray:
    """Field  # [2, R, R]: where each output pixel reads from, relative to itself, for points moving by ``motion``.

    Backward (output -> input) because that is what grid sampling needs: at the moved position of each landmark
    the field points back to where it came from.
    """
    from scipy.interpolate import RBFInterpolator

    side = np.linspace(0, resolution - 1, 17)
    border = np.array([(x, y) for x in side for y in (0, resolution - 1)] +
                      [(x, y) for y in side[1:-1] for x in (0, resolution - 1)], dtype=np.float64)
    still = np.vstack([border, surrounding_ring(neutral_points, resolution)])
    points = np.vstack([neutral_points + motion, still])
    values = np.vstack([-motion, np.zeros_like(still)])
    # A little smoothing: the mean motions of neighbouring points are not exactly consistent with each other.
    spline = RBFInterpolator(points, values, kernel="thin_plate_spline", smoothing=1.0)
    rows, cols = np.mgrid[0:resolution, 0:resolution]
    field = spline(np.stack([cols.ravel(), rows.ravel()], axis=1).astype(np.float64))
    return field.reshape(resolution, resolution, 2).transpose(2, 0, 1).astype(np.float32)


def surrounding_ring(points: np.ndarray, resolution: int, scale: float = RING_SCALE, count: int = 32) -> np.ndarray:
    """Points on the face outline (jaw and brows) enlarged ``scale`` times about its centre, inside the crop.

    Pinning the motion to zero there keeps it on the face: with the border alone, the spline spreads a smile's
    motion over the hair and background too (2 px at the crop's edge, measured).
    """
    outline = np.vstack([points[0:17], points[17:27][::-1]])
    centre = outline.mean(axis=0)
    angles = np.linspace(0, 2 * np.pi, count, endpoint=False)
    directions = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    # Radius of the outline in each direction, from the outline point whose bearing is closest.
    offsets = outline - centre
    bearings = np.arctan2(offsets[:, 1], offsets[:, 0])
    nearest = np.abs(np.angle(np.exp(1j * (angles[:, None] - bearings[None, :])))).argmin(axis=1)
    radius = np.linalg.norm(offsets[nearest], axis=1) * scale
    return np.clip(centre + directions * radius[:, None], 0, resolution - 1)


def fit_warp(prepared_dir: str | Path, expressions: list[str], resolution: int) -> torch.Tensor:
    """Fields for neutral (zero) and every expression  # [E+1, 2, R, R], as ExpressionWarp.field wants them."""
    neutral_mean, motion = mean_landmark_motion(prepared_dir, expressions)
    fields = [np.zeros((2, resolution, resolution), np.float32)]
    for expression in expressions:
        fields.append(backward_field(neutral_mean, motion[expression], resolution))
        print(f"  warp {expression}: landmarks move up to {np.abs(motion[expression]).max():.1f} px")
    return torch.from_numpy(np.stack(fields))
