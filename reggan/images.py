"""Reading and writing still images with errors a user can act on."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


class ImageReadError(ValueError):
    """An image file is missing, unreadable or not an image."""


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as RGB uint8  # [H, W, 3]."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image not found: {path}")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageReadError(f"cannot decode {path}: not an image, or the file is corrupt or truncated")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_rgb(path: str | Path, image: np.ndarray, quality: int = 95) -> None:
    """Write RGB uint8  # [H, W, 3] atomically, so an interrupted run never leaves half a file under ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower() or ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if suffix in (".jpg", ".jpeg") else []
    ok, encoded = cv2.imencode(suffix, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"cannot encode an image as {suffix} for {path}")
    partial = path.with_name(path.name + ".partial")
    encoded.tofile(str(partial))
    partial.replace(path)
