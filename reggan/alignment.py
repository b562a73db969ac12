"""Warp faces to one canonical 68-point template and back.

Training crops and live crops go through exactly this code: a per-pixel regression only works if every face it
sees sits on the same template, and the live loop must show the model the crops it was trained on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from reggan.anchoring import FaceBend
from reggan.keep import joined, keep_parts

# The similarity transform is fit on the eyes and nose (iBUG 27-47): they barely move with expression, so a smile
# or an open mouth does not shift the crop, and the regression sees the mouth move inside a fixed frame.
STABLE_POINTS = np.arange(27, 48)

TEMPLATE_PATH = Path(__file__).with_name("template_68.json")


def load_template() -> np.ndarray:
    """The canonical landmarks in unit-square coordinates  # [68, 2]."""
    with open(TEMPLATE_PATH) as handle:
        return np.asarray(json.load(handle)["landmarks"], dtype=np.float64)


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + translation taking ``source`` onto ``target`` (Umeyama 1991).

    source, target  # [N, 2]; returns a 2x3 matrix for cv2.warpAffine.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    mean_source, mean_target = source.mean(0), target.mean(0)
    centred_source, centred_target = source - mean_source, target - mean_target
    covariance = centred_target.T @ centred_source / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # no reflections
        sign[1, 1] = -1
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(singular) @ sign) / centred_source.var(0).sum()
    translation = mean_target - scale * rotation @ mean_source
    return np.hstack([scale * rotation, translation[:, None]])


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix."""
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to points  # [N, 2]."""
    return points @ matrix[:, :2].T + matrix[:, 2]


@dataclass
class PlacedFace:
    """Where a face sits (image -> crop matrix  # [2, 3]), what of its crop the networks must leave as warped
    (``keep``  # [R, R] in [0, 1]: its open mouth and closed eyes, reggan/keep.py), its landmarks in the crop
    (``points``  # [68, 2] crop pixels: how its features lie off the template, reggan/anchoring.py), and the two
    parts of ``keep`` alone, the same shape: the closed eyes (the video smoothing treats them apart) and the open
    mouth (the warp moves its inside as one piece, reggan/warp.py ``held_together``). ``keep`` is made from the two
    parts, once."""

    matrix: np.ndarray
    points: np.ndarray
    closed_eyes: np.ndarray
    open_mouth: np.ndarray
    keep: np.ndarray = field(init=False)

    def __post_init__(self):
        self.keep = joined(self.open_mouth, self.closed_eyes)


class Aligner:
    """Landmarks -> the matrix that maps the image onto the template crop, and the warps both ways."""

    def __init__(self, resolution: int, template: np.ndarray | None = None):
        self.resolution = resolution
        unit_template = load_template() if template is None else template
        self.template = unit_template * resolution  # [68, 2] in crop pixels

    def matrix_for(self, landmarks: np.ndarray) -> np.ndarray:
        """Image -> crop matrix  # [2, 3] for a face's landmarks  # [68, 2]."""
        return similarity_transform(landmarks[STABLE_POINTS], self.template[STABLE_POINTS])

    def place(self, landmarks: np.ndarray) -> PlacedFace:
        """A face's matrix and keep mask from its landmarks  # [68, 2] in image coordinates."""
        matrix = self.matrix_for(landmarks)
        points = transform_points(landmarks, matrix)
        open_mouth, closed_eyes = keep_parts(points, self.resolution)
        return PlacedFace(matrix, points, closed_eyes, open_mouth)

    def bend(self, points: np.ndarray) -> FaceBend:
        """The bend that puts a face with these landmarks  # [68, 2] crop pixels onto the template, and back
        (reggan/anchoring.py)."""
        return FaceBend(points, self.template, self.resolution)

    def crop(self, image: np.ndarray, matrix: np.ndarray, antialias: bool = False) -> np.ndarray:
        """The aligned face  # [R, R, 3] uint8. ``antialias``: low-pass the face first where the crop shrinks it, as
        video does (``antialiased``)."""
        if antialias:
            image, matrix = self.antialiased(image, matrix)
        return cv2.warpAffine(
            image, matrix, (self.resolution, self.resolution), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )

    def antialiased(self, image: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The face's part of the image low-passed for the crop's shrinking, and the matrix that crops it there.

        A crop that shrinks the face (to 0.52-0.86 of its size on the evaluation clips) samples it bilinearly, which
        aliases: fine detail (hair, lashes, teeth) lands on different crop pixels as the face moves by a fraction of
        a pixel, and the synthesized change, taken against such a crop, shimmers with it. A Gaussian of half the
        width the shrinking needs, sqrt(1/scale^2 - 1) / 2 px, took the six evaluation clips' flicker down by up to
        0.007 (mean 1.113 -> 1.110), by up to 0.006 on top of the smoother's full-resolution flow (face_noface 1.105
        -> 1.099), and unsmoothed 1.390 -> 1.371; twice that width was no better.
        Only video takes it: on a still, aliasing is a fixed pattern, and the networks were trained on crops made
        without it."""
        scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
        if scale >= 1:
            return image, matrix
        sigma = 0.5 * np.sqrt(1 / scale**2 - 1)
        margin = int(np.ceil(3 * sigma)) + 1
        top, bottom, left, right = self.footprint(matrix, image.shape)
        top, left = max(top - margin, 0), max(left - margin, 0)
        bottom, right = min(bottom + margin, image.shape[0]), min(right + margin, image.shape[1])
        if bottom <= top or right <= left:
            return image, matrix
        # Only the footprint is blurred (a face is a small part of a frame); the matrix is moved to that region's
        # corner.
        region = cv2.GaussianBlur(image[top:bottom, left:right], (0, 0), sigma)
        shifted = matrix.copy()
        shifted[:, 2] += matrix[:, :2] @ np.array([left, top], dtype=matrix.dtype)
        return region, shifted

    def uncrop(self, crop: np.ndarray, matrix: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray:
        """Warp a crop (or a mask) back into image space with the inverse of ``matrix``."""
        height, width = image_shape[:2]
        return cv2.warpAffine(
            crop, invert_affine(matrix), (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
        )

    def footprint(self, matrix: np.ndarray, image_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        """The image rows and columns the crop covers: (top, bottom, left, right), clipped to the image."""
        size = self.resolution
        corners = transform_points(np.array([[0, 0], [size, 0], [0, size], [size, size]], float), invert_affine(matrix))
        height, width = image_shape[:2]
        left, top = np.floor(corners.min(axis=0)).astype(int)
        right, bottom = np.ceil(corners.max(axis=0)).astype(int) + 1
        return max(top, 0), min(bottom, height), max(left, 0), min(right, width)

    def uncrop_region(self, crop: np.ndarray, matrix: np.ndarray, image_shape: tuple[int, ...]):
        """Like ``uncrop``, but only over the crop's footprint: returns (region, (top, left)), or (None, None)
        when the crop lies outside the image. A face is a small part of a frame, so this is most of the work
        saved."""
        top, bottom, left, right = self.footprint(matrix, image_shape)
        if bottom <= top or right <= left:
            return None, None
        shifted = invert_affine(matrix)
        shifted[:, 2] -= (left, top)
        region = cv2.warpAffine(crop, shifted, (right - left, bottom - top), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT)
        return region, (top, left)

    def face_mask(self, feather: float, grow: float = 0.0) -> np.ndarray:
        """Soft mask of the face in crop space  # [R, R] float32 in [0, 1].

        The jaw line closes the bottom; the eyebrows are lifted by a third of the eye-to-brow-to-chin height so the
        forehead (which moves with raised brows) is included. ``grow`` enlarges that outline about its centre
        (0.3: 30 % larger), for masks that must also cover the jaw's and brows' motion.
        """
        size = self.resolution
        jaw = self.template[0:17]
        brows = self.template[17:27][::-1].copy()
        eye_level = self.template[36:48, 1].mean()
        lift = 0.35 * (jaw[8, 1] - eye_level)
        brows[:, 1] -= lift
        outline = np.vstack([jaw, brows])
        centre = outline.mean(axis=0)
        outline = (centre + (outline - centre) * (1 + grow)).astype(np.int32)
        mask = np.zeros((size, size), np.float32)
        cv2.fillConvexPoly(mask, cv2.convexHull(outline), 1.0)
        radius = max(1, int(round(feather * size)))
        # Erode then blur, so the feathered edge stays inside the face and never bleeds onto the background.
        mask = cv2.erode(mask, np.ones((radius, radius), np.uint8))
        mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=radius / 2)
        return np.clip(mask, 0.0, 1.0)
