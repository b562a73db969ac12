"""``reggan export tensorrt``: an FP16 TensorRT engine from the ONNX graph (TensorRT 10 Python API).

Reductions and normalisations are pinned to FP32 (precision constraints): FP16 engines of StarGAN-family
generators are known to produce black or NaN faces otherwise. Engines are cached under a key of everything that
makes an engine valid (GPU name, compute capability, TensorRT version, model hash, precision, batch profile), and
the builder's timing cache is kept beside them so rebuilding for another profile is fast.
"""

from __future__ import annotations

from pathlib import Path

from reggan.tensorrt_runtime import PROFILE_BATCHES, current_key, require_tensorrt


def pin_reductions_to_fp32(network, tensorrt) -> int:
    """Keep every reduction / normalisation / softmax layer (and its output) in FP32, and the expression warp's
    sampling too (its coordinates are pixel positions); returns how many layers were pinned."""
    kinds = tensorrt.LayerType
    sensitive = {kinds.REDUCE, kinds.NORMALIZATION, kinds.SOFTMAX, kinds.GRID_SAMPLE}
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
    for name, channels in (("face", 3), ("keep", 1)):
        profile.set_shape(name, *((batch, channels, resolution, resolution) for batch in (low, mid, high)))
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


