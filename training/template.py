"""Build the canonical 68-point template as the Procrustes mean of training faces.

Run once by ``reggan prepare --rebuild-template``; the result is committed as ``reggan/template_68.json`` so every
user and the live loop share it.
"""

from __future__ import annotations

import json

import numpy as np

from reggan.alignment import STABLE_POINTS, TEMPLATE_PATH, similarity_transform, transform_points

# Where the face sits in the unit square: eye midpoint and inter-ocular distance chosen so that forehead, cheeks and
# chin all fit inside the crop with a margin for the paste-back feather.
EYE_MIDPOINT = np.array([0.5, 0.40])
INTER_OCULAR = 0.30


def eye_centres(shape: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return shape[36:42].mean(0), shape[42:48].mean(0)


def normalise(shape: np.ndarray) -> np.ndarray:
    """Place a shape with its eyes level, at EYE_MIDPOINT, INTER_OCULAR apart."""
    left, right = eye_centres(shape)
    angle = np.arctan2(right[1] - left[1], right[0] - left[0])
    scale = INTER_OCULAR / np.linalg.norm(right - left)
    cos, sin = np.cos(-angle) * scale, np.sin(-angle) * scale
    rotation = np.array([[cos, -sin], [sin, cos]])
    centred = (shape - (left + right) / 2) @ rotation.T
    return centred + EYE_MIDPOINT


def procrustes_mean(shapes: list[np.ndarray], iterations: int = 5) -> np.ndarray:
    """Generalised Procrustes mean of landmark sets  # list of [68, 2], aligned on the stable points."""
    reference = normalise(shapes[0])
    for _ in range(iterations):
        aligned = [
            transform_points(shape, similarity_transform(shape[STABLE_POINTS], reference[STABLE_POINTS]))
            for shape in shapes
        ]
        reference = normalise(np.mean(aligned, axis=0))
    return reference


def write_template(shapes: list[np.ndarray]) -> np.ndarray:
    template = procrustes_mean(shapes)
    with open(TEMPLATE_PATH, "w") as handle:
        json.dump(
            {
                "about": "Procrustes mean of the 68 dlib landmarks of the training faces, unit-square coordinates",
                "faces": len(shapes),
                "landmarks": np.round(template, 5).tolist(),
            },
            handle,
            indent=1,
        )
    return template
