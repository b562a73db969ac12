"""Still photos: find faces -> align -> synthesize -> paste back. Used by ``reggan edit`` and the demo."""

from __future__ import annotations

import numpy as np

from reggan.alignment import Aligner, PlacedFace
from reggan.anchoring import FaceBend, synthesize_bent
from reggan.backends import synthesize_crops, warp_displacements
from reggan.compositing import FeatheredCompositor
from reggan.trackers import find_faces


class NoFaceError(ValueError):
    """The image holds no face the tracker can find."""


class PhotoEditor:
    def __init__(self, backend, tracker, feather: float = 0.08, max_intensity: float = 1.5, max_faces: int = 8,
                 colour_match: bool = False, bend: bool = True):
        """backend: any of reggan.backends (or a callable with .expressions and .resolution). bend: bend each face
        onto the template's features for the networks and their change back (reggan/anchoring.py)."""
        self.backend = backend
        self.expressions = backend.expressions
        self.tracker = tracker
        self.aligner = Aligner(backend.resolution)
        self.compositor = FeatheredCompositor(self.aligner, feather, colour_match)
        self.max_intensity = max_intensity
        self.max_faces = max_faces
        self.bend = bend

    def label_of(self, expression: str) -> int:
        if expression not in self.expressions:
            raise ValueError(f"unknown expression {expression!r}; this model knows {', '.join(self.expressions)}")
        return self.expressions.index(expression)

    def locate(self, image: np.ndarray) -> list[PlacedFace]:
        """Image -> its faces, largest first; NoFaceError when there is none."""
        faces = find_faces(self.tracker, image, self.max_faces)
        if not faces:
            raise NoFaceError("no face found in the image (try a larger, frontal, well-lit face)")
        return [self.aligner.place(landmarks) for landmarks in faces]

    def bends_for(self, faces: list[PlacedFace]) -> list[FaceBend | None]:
        """Each face's bend onto the template (None for all when bending is off)."""
        if not self.bend:
            return [None] * len(faces)
        return [self.aligner.bend(face.points) for face in faces]

    def synthesize_crops(self, crops: list[np.ndarray], keeps: list[np.ndarray], expression: str,
                         intensity: float, bends: list[FaceBend | None] | None = None,
                         open_mouths: list[np.ndarray] | None = None) -> list[np.ndarray]:
        """Aligned uint8 crops, their keep masks, bends (``bends_for``; None: unbent) and open mouths (moved as one
        piece; None: closed) -> synthesized uint8 crops, all in one batch."""
        labels = [self.label_of(expression)] * len(crops)
        strengths = [float(np.clip(intensity, 0.0, self.max_intensity))] * len(crops)
        out = synthesize_bent(lambda inputs, masks: synthesize_crops(self.backend, inputs, labels, strengths, masks),
                              crops, keeps, bends, warp_displacements(self.backend, labels, strengths), open_mouths)
        return [face.round().clip(0, 255).astype(np.uint8) for face in out]

    def edit(self, image: np.ndarray, expression: str, intensity: float = 1.0,
             faces: list[PlacedFace] | None = None) -> np.ndarray:
        """Every found face of ``image`` given ``expression``; the rest of the image is untouched."""
        faces = faces if faces is not None else self.locate(image)
        crops = [self.aligner.crop(image, face.matrix) for face in faces]
        after = self.synthesize_crops(crops, [face.keep for face in faces], expression, intensity,
                                      self.bends_for(faces), [face.open_mouth for face in faces])
        return self.paste_all(image, crops, after, [face.matrix for face in faces])

    def paste_all(self, image: np.ndarray, before: list[np.ndarray], after: list[np.ndarray],
                  matrices: list[np.ndarray]) -> np.ndarray:
        result = image
        for old, new, matrix in zip(before, after, matrices):
            result = self.compositor.paste(result, old, new, matrix)
        return result

    def strip(self, image: np.ndarray, intensity: float = 1.0, height: int = 320) -> np.ndarray:
        """One tile per expression (the input first, as neutral), side by side, each cut around the largest face."""
        import cv2

        faces = self.locate(image)
        tiles = [image] + [self.edit(image, name, intensity, faces) for name in self.expressions[1:]]
        box = self.aligner.uncrop(np.ones((self.aligner.resolution,) * 2, np.float32), faces[0].matrix, image.shape)
        rows, cols = np.nonzero(box > 0.5)
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        labelled = []
        for name, tile in zip(self.expressions, tiles):
            tile = cv2.resize(tile[top:bottom, left:right], (height * (right - left) // (bottom - top), height))
            cv2.putText(tile, name, (8, height - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 4, cv2.LINE_AA)
            cv2.putText(tile, name, (8, height - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
            labelled.append(tile)
        return np.hstack(labelled)

