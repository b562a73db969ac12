"""``reggan animate``: bring a still face (photo, painting, avatar) to life with an expression program."""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from live.processor import SynthesisStage
from live.program import ExpressionProgram
from reggan.editor import PhotoEditor

# Cross-fade weights are rounded to this step so a still face is synthesized once per distinct mix, not per frame
# (the synthesizer warps by the intensity, so a mix cannot be made from full-intensity crops).
WEIGHT_STEP = 1 / 64


def animate_still(image: np.ndarray, editor: PhotoEditor, program: ExpressionProgram, fps: float, sink) -> int:
    """Write ``program.duration * fps`` frames to ``sink``; returns the frame count."""
    faces = editor.locate(image)  # the face does not move: find it once
    matrices = [face.matrix for face in faces]
    crops = [editor.aligner.crop(image, matrix) for matrix in matrices]
    keeps, open_mouths = [face.keep for face in faces], [face.open_mouth for face in faces]
    bends = editor.bends_for(faces)
    for name in set(program.expressions) - {"neutral"}:
        editor.label_of(name)  # a clear error before any frame is written
    synthesize = SynthesisStage(editor.backend, editor.max_intensity)
    frames = int(round(program.duration * fps))
    last_mix, last_frame = None, None
    for index in tqdm(range(frames), desc="animate", unit="frame"):
        mix = tuple((name, round(weight / WEIGHT_STEP) * WEIGHT_STEP) for name, weight in program.at(index / fps))
        if mix != last_mix:
            synthesized = synthesize(crops, list(mix), keeps, bends, open_mouths)
            mixed = [crop.round().clip(0, 255).astype(np.uint8) for crop in synthesized]
            last_mix, last_frame = mix, editor.paste_all(image, crops, mixed, matrices)
        sink.write(last_frame)
    return frames
