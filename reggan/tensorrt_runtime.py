"""Running TensorRT engines (TensorRT 10 Python API) and the cache key that says which engine fits this machine.

Engines are built by ``reggan export tensorrt`` (export/tensorrt_build.py); this module only finds and runs them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

PROFILE_BATCHES = (1, 8, 32)  # min, opt, max batch of the optimisation profile


class TensorRTUnavailable(RuntimeError):
    """TensorRT or an NVIDIA GPU is missing."""


def require_tensorrt():
    try:
        import tensorrt
    except ImportError as error:
        raise TensorRTUnavailable(
            "TensorRT is not installed: on a machine with an NVIDIA GPU run `pip install tensorrt` (10.x), "
            "or use --backend onnxruntime / torch"
        ) from error
    import torch

    if not torch.cuda.is_available():
        raise TensorRTUnavailable("TensorRT needs an NVIDIA GPU with CUDA, and PyTorch sees none here")
    return tensorrt


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def engine_cache_key(gpu_name: str, compute_capability: tuple[int, int], tensorrt_version: str, model_sha256: str,
                     fp16: bool, batches: tuple[int, int, int] = PROFILE_BATCHES) -> str:
    """A short stable key; any change in its inputs gives another engine file."""
    fields = {"gpu": gpu_name, "sm": list(compute_capability), "trt": tensorrt_version, "model": model_sha256,
              "fp16": fp16, "batches": list(batches)}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def current_key(onnx_path: Path, fp16: bool) -> str:
    tensorrt = require_tensorrt()
    import torch

    return engine_cache_key(torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0),
                            tensorrt.__version__, file_sha256(onnx_path), fp16)


def find_engine(engine_dir: str | Path, onnx_path: str | Path, fp16: bool = True) -> Path:
    """The cached engine for this GPU, TensorRT and model; TensorRTUnavailable when there is none."""
    engine_path = Path(engine_dir) / f"{current_key(Path(onnx_path), fp16)}.engine"
    if not engine_path.is_file():
        raise TensorRTUnavailable("no TensorRT engine for this GPU and model: run `reggan export tensorrt --fp16`")
    return engine_path


class TensorRTEngineRunner:
    """Runs a built engine on torch CUDA buffers (execute_async_v3 with tensor addresses)."""

    def __init__(self, engine_path: str | Path):
        tensorrt = require_tensorrt()
        import torch

        self.torch = torch
        self.logger = tensorrt.Logger(tensorrt.Logger.WARNING)
        runtime = tensorrt.Runtime(self.logger)
        self.engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"{engine_path} is not a valid engine for this TensorRT / GPU")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()

    def __call__(self, faces: np.ndarray, expression: np.ndarray, intensity: np.ndarray,
                 keep: np.ndarray) -> np.ndarray:
        torch = self.torch
        inputs = {
            "face": torch.from_numpy(np.ascontiguousarray(faces, np.float32)).cuda(),
            "expression": torch.from_numpy(np.ascontiguousarray(expression, np.int64)).cuda(),
            "intensity": torch.from_numpy(np.ascontiguousarray(intensity, np.float32)).cuda(),
            "keep": torch.from_numpy(np.ascontiguousarray(keep, np.float32)).cuda(),
        }
        output = torch.empty_like(inputs["face"])
        for name, tensor in inputs.items():
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        self.context.set_tensor_address("synthesized", output.data_ptr())
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        self.stream.synchronize()
        return output.cpu().numpy()
