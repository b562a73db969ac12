"""Still photos: find faces -> align -> synthesize -> paste back. Used by ``reggan edit`` and the demo."""

from __future__ import annotations

import numpy as np
import torch

from reggan.alignment import Aligner
from reggan.compositing import FeatheredCompositor
from reggan.networks import Synthesizer
from reggan.trackers import find_faces


class NoFaceError(ValueError):
    """The image holds no face the tracker can find."""


class PhotoEditor:
    def __init__(self, synthesizer: Synthesizer, tracker, feather: float = 0.08, max_intensity: float = 1.5,
                 max_faces: int = 8):
        self.synthesizer = synthesizer
        self.tracker = tracker
        self.aligner = Aligner(synthesizer.resolution)
        self.compositor = FeatheredCompositor(self.aligner, feather)
        self.max_intensity = max_intensity
        self.max_faces = max_faces

    def label_of(self, expression: str) -> int:
        if expression not in self.synthesizer.expressions:
            raise ValueError(
                f"unknown expression {expression!r}; this model knows {', '.join(self.synthesizer.expressions)}"
            )
        return self.synthesizer.expressions.index(expression)

    def locate(self, image: np.ndarray) -> list[np.ndarray]:
        """Image -> face matrices (image -> crop), largest face first; NoFaceError when there is none."""
        faces = find_faces(self.tracker, image, self.max_faces)
        if not faces:
            raise NoFaceError("no face found in the image (try a larger, frontal, well-lit face)")
        return [self.aligner.matrix_for(landmarks) for landmarks in faces]

    def synthesize_crops(self, crops: list[np.ndarray], expression: str, intensity: float) -> list[np.ndarray]:
        """Aligned uint8 crops -> synthesized uint8 crops, all in one batch."""
        device = next(self.synthesizer.parameters()).device
        faces = torch.from_numpy(np.stack(crops)).to(device).permute(0, 3, 1, 2).float() / 255
        labels = torch.full((len(crops),), self.label_of(expression), dtype=torch.long, device=device)
        strength = float(np.clip(intensity, 0.0, self.max_intensity))
        with torch.inference_mode():
            out = self.synthesizer(faces, labels, torch.full((len(crops),), strength, device=device))
        return list((out.permute(0, 2, 3, 1).cpu().numpy() * 255).round().clip(0, 255).astype(np.uint8))

    def edit(self, image: np.ndarray, expression: str, intensity: float = 1.0,
             matrices: list[np.ndarray] | None = None) -> np.ndarray:
        """Every found face of ``image`` given ``expression``; the rest of the image is untouched."""
        matrices = matrices if matrices is not None else self.locate(image)
        crops = [self.aligner.crop(image, matrix) for matrix in matrices]
        result = image
        for crop, matrix in zip(self.synthesize_crops(crops, expression, intensity), matrices):
            result = self.compositor.paste(result, crop, matrix)
        return result

    def strip(self, image: np.ndarray, intensity: float = 1.0, height: int = 320) -> np.ndarray:
        """One tile per expression (the input first, as neutral), side by side, each cut around the largest face."""
        import cv2

        matrices = self.locate(image)
        tiles = [image] + [self.edit(image, name, intensity, matrices) for name in self.synthesizer.expressions[1:]]
        box = self.aligner.uncrop(np.ones((self.aligner.resolution,) * 2, np.float32), matrices[0], image.shape)
        rows, cols = np.nonzero(box > 0.5)
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        labelled = []
        for name, tile in zip(self.synthesizer.expressions, tiles):
            tile = cv2.resize(tile[top:bottom, left:right], (height * (right - left) // (bottom - top), height))
            cv2.putText(tile, name, (8, height - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 4, cv2.LINE_AA)
            cv2.putText(tile, name, (8, height - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
            labelled.append(tile)
        return np.hstack(labelled)
