"""``reggan animate``: bring a still face (photo, painting, avatar) to life with an expression program."""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from live.program import ExpressionProgram
from reggan.editor import PhotoEditor, mix_expressions


def animate_still(image: np.ndarray, editor: PhotoEditor, program: ExpressionProgram, fps: float, sink) -> int:
    """Write ``program.duration * fps`` frames to ``sink``; returns the frame count."""
    matrices = editor.locate(image)  # the face does not move: find it once
    crops = [editor.aligner.crop(image, matrix) for matrix in matrices]
    wanted = set(program.expressions) - {"neutral"}
    for name in wanted:
        editor.label_of(name)  # a clear error before any frame is written
    full = {name: editor.synthesize_crops(crops, name, 1.0) for name in sorted(wanted)}
    frames = int(round(program.duration * fps))
    for index in tqdm(range(frames), desc="animate", unit="frame"):
        weights = program.at(index / fps)
        mixed = [mix_expressions(crop, {n: full[n][i] for n in full}, weights) for i, crop in enumerate(crops)]
        sink.write(editor.paste_all(image, crops, mixed, matrices))
    return frames
