"""``reggan export tensorrt``: an FP16 TensorRT engine from the ONNX graph (TensorRT 10 Python API).

Reductions and normalisations are pinned to FP32 (precision constraints): FP16 engines of StarGAN-family
generators are known to produce black or NaN faces otherwise. Engines are cached under a key of everything that
makes an engine valid (GPU name, compute capability, TensorRT version, model hash, precision, batch profile), and
the builder's timing cache is kept beside them so rebuilding for another profile is fast.
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


def pin_reductions_to_fp32(network, tensorrt) -> int:
    """Keep every reduction / normalisation / softmax layer (and its output) in FP32; returns how many."""
    sensitive = {tensorrt.LayerType.REDUCE, tensorrt.LayerType.NORMALIZATION, tensorrt.LayerType.SOFTMAX}
    pinned = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if layer.type in sensitive:
            layer.precision = tensorrt.float32
            for output in range(layer.num_outputs):
                layer.set_output_type(output, tensorrt.float32)
            pinned += 1
    return pinned


def build_engine(onnx_path: str | Path, engine_dir: str | Path, resolution: int, fp16: bool = True) -> Path:
    """Build (or reuse from the cache) the engine for this GPU; returns its path."""
    tensorrt = require_tensorrt()
    onnx_path, engine_dir = Path(onnx_path), Path(engine_dir)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"no ONNX model at {onnx_path}: run `reggan export onnx` first")
    engine_dir.mkdir(parents=True, exist_ok=True)
    engine_path = engine_dir / f"{current_key(onnx_path, fp16)}.engine"
    if engine_path.is_file():
        return engine_path
    logger = tensorrt.Logger(tensorrt.Logger.WARNING)
    builder = tensorrt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = tensorrt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(tensorrt.MemoryPoolType.WORKSPACE, 2 << 30)
    if fp16:
        config.set_flag(tensorrt.BuilderFlag.FP16)
        config.set_flag(tensorrt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pin_reductions_to_fp32(network, tensorrt)
    profile = builder.create_optimization_profile()
    low, mid, high = PROFILE_BATCHES
    profile.set_shape("face", (low, 3, resolution, resolution), (mid, 3, resolution, resolution),
                      (high, 3, resolution, resolution))
    for name in ("expression", "intensity"):
        profile.set_shape(name, (low,), (mid,), (high,))
    config.add_optimization_profile(profile)
    timing_path = engine_dir / "timing.cache"
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    config.set_timing_cache(timing, ignore_mismatch=True)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build the engine (see the log above)")
    timing_path.write_bytes(memoryview(config.get_timing_cache().serialize()))
    partial = engine_path.with_name(engine_path.name + ".partial")
    partial.write_bytes(memoryview(serialized))
    partial.replace(engine_path)
    return engine_path


def find_engine(engine_dir: str | Path, onnx_path: str | Path, fp16: bool = True) -> Path:
    from reggan.backends import BackendUnavailable

    try:
        engine_path = Path(engine_dir) / f"{current_key(Path(onnx_path), fp16)}.engine"
    except (TensorRTUnavailable, FileNotFoundError) as why:
        raise BackendUnavailable(str(why)) from why
    if not engine_path.is_file():
        raise BackendUnavailable(f"no TensorRT engine for this GPU and model: run `reggan export tensorrt`")
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

    def __call__(self, faces: np.ndarray, expression: np.ndarray, intensity: np.ndarray) -> np.ndarray:
        torch = self.torch
        inputs = {
            "face": torch.from_numpy(np.ascontiguousarray(faces, np.float32)).cuda(),
            "expression": torch.from_numpy(np.ascontiguousarray(expression, np.int64)).cuda(),
            "intensity": torch.from_numpy(np.ascontiguousarray(intensity, np.float32)).cuda(),
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
