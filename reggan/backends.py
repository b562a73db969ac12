"""Runtime backends for the synthesizer behind one interface, chosen by name.

Every backend takes float32 faces [B, 3, R, R] in [0, 1], int64 expression labels [B] and float32 intensities [B]
as numpy arrays and returns float32 [B, 3, R, R]. ``auto`` picks the fastest one present and says which.

  torch        PyTorch on CPU, or CUDA with FP16 weights and channels-last memory
  onnxruntime  an exported ONNX graph; uses the CUDA / TensorRT providers when the installed build has them
  tensorrt     a TensorRT engine built by ``reggan export tensorrt`` (NVIDIA GPUs)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from reggan.networks import Synthesizer


class BackendUnavailable(RuntimeError):
    """The asked-for backend cannot run here (package, GPU or exported file missing)."""


class TorchBackend:
    name = "torch"

    def __init__(self, synthesizer: Synthesizer, device: str = "cpu", fp16: bool | None = None):
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("the torch backend was asked for CUDA, but PyTorch sees no CUDA GPU")
        self.device = torch.device(device)
        # FP16 on CUDA by default: measured max error 1.2/255 against FP32 on an H200 (docs/benchmarks.md).
        self.dtype = torch.float16 if (fp16 if fp16 is not None else device == "cuda") else torch.float32
        self.model = synthesizer.to(self.device, self.dtype).eval()
        if device == "cuda":
            self.model.refiner.to(memory_format=torch.channels_last)
        self.expressions, self.resolution = synthesizer.expressions, synthesizer.resolution

    def __call__(self, faces: np.ndarray, expression: np.ndarray, intensity: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = self.model(
                torch.from_numpy(faces).to(self.device, self.dtype),
                torch.from_numpy(expression).to(self.device),
                torch.from_numpy(intensity).to(self.device, self.dtype),
            )
        return out.float().cpu().numpy()


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, synthesizer: Synthesizer, onnx_path: str | Path, device: str = "cpu", threads: int = 0):
        try:
            import onnxruntime
        except ImportError as error:
            raise BackendUnavailable("the onnxruntime backend needs `pip install onnxruntime`") from error
        if not Path(onnx_path).is_file():
            raise BackendUnavailable(f"no ONNX model at {onnx_path}: run `reggan export onnx` first")
        available = onnxruntime.get_available_providers()
        wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider"] if device == "cuda" else []
        providers = [p for p in wanted if p in available] + ["CPUExecutionProvider"]
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(onnx_path), options, providers=providers)
        self.providers = self.session.get_providers()
        self.expressions, self.resolution = synthesizer.expressions, synthesizer.resolution

    def __call__(self, faces: np.ndarray, expression: np.ndarray, intensity: np.ndarray) -> np.ndarray:
        feeds = {"face": faces.astype(np.float32, copy=False), "expression": expression.astype(np.int64, copy=False),
                 "intensity": intensity.astype(np.float32, copy=False)}
        return self.session.run(None, feeds)[0]


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, synthesizer: Synthesizer, engine_path: str | Path, device: str = "cuda"):
        from reggan.tensorrt_runtime import TensorRTEngineRunner

        self.runner = TensorRTEngineRunner(engine_path)
        self.expressions, self.resolution = synthesizer.expressions, synthesizer.resolution

    def __call__(self, faces: np.ndarray, expression: np.ndarray, intensity: np.ndarray) -> np.ndarray:
        return self.runner(faces, expression, intensity)


BACKENDS = {"torch": TorchBackend, "onnxruntime": OnnxRuntimeBackend, "tensorrt": TensorRTBackend}


def exported_paths(checkpoint: str | Path, use_refiner: bool = True) -> dict[str, Path]:
    """Where exports of a checkpoint live: $REGGAN_CACHE (default ~/.cache/reggan), keyed by the file's content,
    so a retrained checkpoint never reuses a stale graph or engine."""
    import hashlib
    import os

    checkpoint = Path(checkpoint)
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:12]
    variant = "" if use_refiner else "-regression-only"
    root = Path(os.environ.get("REGGAN_CACHE", Path.home() / ".cache" / "reggan")) / f"{checkpoint.stem}-{digest}{variant}"
    return {"onnx": root / "synthesizer.onnx", "engine_dir": root / "engines"}


def ensure_onnx(synthesizer: Synthesizer, checkpoint: str | Path) -> Path:
    """The checkpoint's ONNX graph, exported and parity-checked on first use (about two seconds)."""
    onnx_path = exported_paths(checkpoint, synthesizer.use_refiner)["onnx"]
    if not onnx_path.is_file():
        from export.onnx_export import check_forward, export_onnx

        export_onnx(synthesizer, onnx_path.with_name("unchecked.onnx"))
        check_forward(synthesizer, onnx_path.with_name("unchecked.onnx"), batches=(2,), quiet=True)
        onnx_path.with_name("unchecked.onnx").replace(onnx_path)
    return onnx_path


def make_backend(name: str, synthesizer: Synthesizer, checkpoint: str | Path, device: str = "cpu"):
    """Build a backend by name; ``auto`` tries the fastest first and reports its choice on stderr."""
    import sys

    paths = exported_paths(checkpoint, synthesizer.use_refiner)
    if name == "auto":
        order = ["tensorrt", "torch"] if device == "cuda" else ["onnxruntime", "torch"]
        reasons = []
        for candidate in order:
            try:
                backend = make_backend(candidate, synthesizer, checkpoint, device)
            except BackendUnavailable as why:
                reasons.append(f"{candidate}: {why}")
                continue
            print(f"backend: {candidate} on {device}" + (f" (skipped {'; '.join(reasons)})" if reasons else ""),
                  file=sys.stderr)
            return backend
        raise BackendUnavailable("no backend could start: " + "; ".join(reasons))
    if name == "torch":
        return TorchBackend(synthesizer, device)
    if name == "onnxruntime":
        try:
            onnx_path = ensure_onnx(synthesizer, checkpoint)
        except ImportError as error:
            raise BackendUnavailable(f"ONNX export needs the onnx package: {error}") from error
        return OnnxRuntimeBackend(synthesizer, onnx_path, device)
    if name == "tensorrt":
        from reggan.tensorrt_runtime import TensorRTUnavailable, find_engine

        try:
            return TensorRTBackend(synthesizer, find_engine(paths["engine_dir"], paths["onnx"]), device)
        except (TensorRTUnavailable, FileNotFoundError) as why:
            raise BackendUnavailable(str(why)) from why
    raise ValueError(f"unknown backend {name!r}; choose auto, {', '.join(BACKENDS)}")
