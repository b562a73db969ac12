"""Reading and writing still images with errors a user can act on."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


class ImageReadError(ValueError):
    """An image file is missing, unreadable or not an image."""


ALPHA_SUFFIXES = {".png", ".webp", ".tif", ".tiff"}  # formats that carry transparency both ways here
BACKGROUND = 255  # what shows through transparency where the output cannot keep it (a video, a JPEG): white


def _read_bytes(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ImageReadError(f"image not found: {path}")
    return np.fromfile(str(path), dtype=np.uint8)


def _decode_rgb(data: np.ndarray, path: Path) -> np.ndarray:
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageReadError(f"cannot decode {path}: not an image, or the file is corrupt or truncated")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as RGB uint8  # [H, W, 3] (turned by its EXIF orientation; transparency dropped)."""
    path = Path(path)
    return _decode_rgb(_read_bytes(path), path)


def read_rgb_alpha(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """An image as RGB uint8  # [H, W, 3] and, when it has transparency (an avatar cut out of its background),
    its alpha uint8  # [H, W]; None for an opaque image."""
    path = Path(path)
    data = _read_bytes(path)  # read once, decoded twice: the colour decode applies EXIF orientation, this one not
    rgb = _decode_rgb(data, path)
    if path.suffix.lower() not in ALPHA_SUFFIXES:
        return rgb, None
    full = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if full is None or full.ndim != 3 or full.shape[2] != 4 or full.shape[:2] != rgb.shape[:2]:
        return rgb, None
    alpha = full[..., 3]
    if alpha.dtype != np.uint8:  # 16-bit PNGs
        alpha = (alpha.astype(np.float32) * (255 / np.iinfo(alpha.dtype).max)).round().astype(np.uint8)
    return rgb, (alpha if alpha.min() < 255 else None)


def flatten(image: np.ndarray, alpha: np.ndarray | None, background: int = BACKGROUND) -> np.ndarray:
    """RGB uint8 over a plain background where ``alpha`` says it is transparent (for outputs without alpha)."""
    if alpha is None:
        return image
    weight = alpha.astype(np.float32)[..., None] / 255
    return (image * weight + background * (1 - weight)).round().astype(np.uint8)


def write_rgb(path: str | Path, image: np.ndarray, quality: int = 95, alpha: np.ndarray | None = None,
              png_compression: int | None = None) -> None:
    """Write RGB uint8  # [H, W, 3] atomically, so an interrupted run never leaves half a file under ``path``.
    With ``alpha``  # [H, W] uint8 the file keeps the transparency where its format can (PNG, WebP, TIFF), and is
    flattened onto white where it cannot (JPEG). ``png_compression``: zlib level 0-9 for a PNG meant to be kept small
    (a report's images: OpenCV's default wrote the contact sheet 1.6x as large as level 9); None: OpenCV's default,
    the fastest, for frame sequences."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower() or ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if suffix in (".jpg", ".jpeg") else []
    if suffix == ".png" and png_compression is not None:
        params = [cv2.IMWRITE_PNG_COMPRESSION, png_compression]
    if alpha is not None and suffix in ALPHA_SUFFIXES:
        pixels = np.dstack([cv2.cvtColor(image, cv2.COLOR_RGB2BGR), alpha])
    else:
        pixels = cv2.cvtColor(flatten(image, alpha), cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(suffix, pixels, params)
    if not ok:
        raise ValueError(f"cannot encode an image as {suffix} for {path}")
    partial = path.with_name(path.name + ".partial")
    encoded.tofile(str(partial))
    partial.replace(path)
