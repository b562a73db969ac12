"""The evaluation judges are the real networks from registry packages."""

from __future__ import annotations

import numpy as np

from reggan.alignment import Aligner
from training.judges import JUDGE_CLASSES, ExpressionJudge, IdentityJudge


def test_judge_ranks_the_smiling_astronaut_as_happy(astronaut, astronaut_landmarks):
    aligner = Aligner(256)
    crop = aligner.crop(astronaut, aligner.matrix_for(astronaut_landmarks))
    probabilities = ExpressionJudge().probabilities([crop])[0]
    assert abs(probabilities.sum() - 1) < 1e-4
    assert JUDGE_CLASSES[int(probabilities.argmax())] == "happy"


def test_identity_distance_of_a_face_to_itself_is_zero_and_to_a_mirror_small(astronaut, astronaut_landmarks):
    aligner = Aligner(256)
    crop = aligner.crop(astronaut, aligner.matrix_for(astronaut_landmarks))
    judge = IdentityJudge()
    assert judge.distance(crop, crop) == 0.0
    assert judge.distance(crop, np.ascontiguousarray(crop[:, ::-1])) < 0.6
    noise = np.random.default_rng(0).integers(0, 255, crop.shape, dtype=np.uint8)
    assert judge.distance(crop, noise) > judge.distance(crop, np.ascontiguousarray(crop[:, ::-1]))
