"""Shared fixtures: only data a fresh machine has (scikit-image's public-domain astronaut, generated images)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """NASA portrait of Eileen Collins, public domain, shipped with scikit-image  # [512, 512, 3] uint8 RGB."""
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def astronaut_png(astronaut, tmp_path_factory):
    from reggan.images import write_rgb

    path = tmp_path_factory.mktemp("media") / "astronaut.png"
    write_rgb(path, astronaut)
    return path


@pytest.fixture(scope="session")
def dlib_tracker():
    from reggan.trackers import make_tracker

    return make_tracker("dlib")


@pytest.fixture(scope="session")
def astronaut_landmarks(astronaut, dlib_tracker) -> np.ndarray:
    from reggan.trackers import find_faces

    faces = find_faces(dlib_tracker, astronaut)
    assert faces, "dlib found no face on the astronaut"
    return faces[0]
