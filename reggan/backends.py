"""Runtime backends for the synthesizer behind one interface, chosen by name.

Every backend takes float32 faces [B, 3, R, R] in [0, 1], int64 expression labels [B], float32 intensities [B] and
optionally float32 ``keep`` masks [B, 1, R, R] (where the face is only warped: an open mouth) as numpy arrays and
returns float32 [B, 3, R, R]. ``auto`` picks the fastest one present and says which.

  torch        PyTorch: CUDA with FP16 weights, channels-last memory and CUDA graphs; CPU in FP32, or in bfloat16
               where the CPU computes bfloat16 in hardware (AMX or AVX-512 BF16: about 2x faster at batch 1 than FP32,
               max error 0.91/255)
  onnxruntime  an exported ONNX graph; uses the CUDA / TensorRT providers when the installed build has them
  tensorrt     a TensorRT engine built by ``reggan export tensorrt`` (NVIDIA GPUs)

Each also carries the model's expression warp as numpy (``displacements``), for the callers that move a face's own
pixels by it (reggan/anchoring.py).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch

from reggan.config import PRECISIONS
from reggan.networks import Synthesizer
from reggan.onnx_export import INPUT_NAMES
from reggan.warp import Displacements


class BackendUnavailable(RuntimeError):
    """The asked-for backend cannot run here (package, GPU or exported file missing)."""


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bfloat16 dot products in hardware: AMX tiles (Intel Xeon 4th generation and later)
    or AVX-512 BF16 (AMD Zen 4 and later, Intel Cooper Lake). Elsewhere bfloat16 is emulated and slower than FP32.
    Measured on 2 cores, default model, batch 1: a Xeon with AMX 24 -> 15 ms a face, an AMD EPYC (Zen 4, AVX-512
    BF16, no AMX) 27 -> 15 ms (docs/benchmarks.md)."""
    probes = (getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    return any(bool(probe()) for probe in probes if probe is not None)


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` -> the fastest precision measured to stay within a grey level of FP32 on this device."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        if precision == "fp16" and device != "cuda":
            raise BackendUnavailable("fp16 needs --device cuda; on a CPU use bf16 or fp32")
        if precision == "bf16" and device == "cuda":
            raise BackendUnavailable("bf16 is the CPU path (AMX, AVX-512 BF16); on CUDA use fp16 or fp32")
        return precision
    if device == "cuda":
        return "fp16"  # measured max error 1.2/255 against FP32 on an H200 (docs/benchmarks.md)
    return "bf16" if cpu_has_fast_bf16() else "fp32"


class CudaGraphs:
    """Replay the synthesizer as one captured CUDA graph per batch size.

    At batch 1 the eager model spends most of its millisecond launching kernels; a graph replays them all at once
    (1.03 ms eager -> 0.24 ms on an H200). Graphs read and write fixed buffers, so inputs are copied in and the
    output copied out; the live loop sees a handful of batch sizes (faces x cross-faded expressions), hence the
    small per-size cache.
    """

    def __init__(self, model: torch.nn.Module, max_graphs: int = 8):
        self.model = model
        self.max_graphs = max_graphs
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, ...], torch.Tensor]] = {}

    def _capture(self, *inputs: torch.Tensor):
        inputs = tuple(value.clone() for value in inputs)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the graph: cuDNN picks its algorithms here
            for _ in range(3):
                self.model(*inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            output = self.model(*inputs)
        return graph, inputs, output

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The model's inputs (face, expression, intensity, keep) -> its output."""
        batch = inputs[0].shape[0]
        if batch not in self.graphs:
            if len(self.graphs) >= self.max_graphs:
                return self.model(*inputs)
            self.graphs[batch] = self._capture(*inputs)
        graph, buffers, output = self.graphs[batch]
        for buffer, value in zip(buffers, inputs):
            buffer.copy_(value)
        graph.replay()
        return output.clone()


def with_keep(faces: np.ndarray, expression: np.ndarray, intensity: np.ndarray, keep: np.ndarray | None):
    """The four graph inputs in their dtypes, laid out in C order; no ``keep`` is an all-zero one (nothing kept: the
    model as trained). C order because faces stacked from [H, W, 3] images and transposed arrive with channels-last
    strides, and PyTorch's CPU operations run slower on such a view (in the frame loop on a 2-core AVX2 CPU: the
    familiarity gate 3.4 -> 1.8 ms a face, the lite refiner 12.0 -> 10.7 ms)."""
    if keep is None:
        keep = np.zeros((faces.shape[0], 1, *faces.shape[2:]), np.float32)
    return (np.ascontiguousarray(faces, np.float32), np.ascontiguousarray(expression, np.int64),
            np.ascontiguousarray(intensity, np.float32), np.ascontiguousarray(keep, np.float32))


class TorchBackend:
    name = "torch"

    def __init__(self, synthesizer: Synthesizer, device: str = "cpu", precision: str = "fp32",
                 cuda_graphs: bool = True):
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("the torch backend was asked for CUDA, but PyTorch sees no CUDA GPU")
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, device)
        # FP16 weights on CUDA. bfloat16 on a CPU runs under autocast with only the refiner's weights in bfloat16,
        # so the regression layer's per-pixel multiply-sums stay in FP32. The refiner runs channels-last everywhere:
        # oneDNN then uses AMX without reordering every activation (2-core Xeon, batch 1: 45 ms FP32, 17 ms
        # autocast, 9 ms both), and FP32 on an AVX2 CPU gains too (measured, the whole model at batch 1: 21 -> 18.7
        # ms with the lite refiner, 48 -> 37 ms with the full one).
        self.dtype = torch.float16 if self.precision == "fp16" else torch.float32
        # A private copy: the caller's model stays as it was (FP32 on the CPU, plain layout), ready to be exported
        # or reused.
        self.model = copy.deepcopy(synthesizer).to(self.device, self.dtype).eval()
        if self.precision == "bf16":
            self.model.refiner.to(torch.bfloat16)
        self.model.refiner.to(memory_format=torch.channels_last)
        self.run = CudaGraphs(self.model) if device == "cuda" and cuda_graphs else self.model
        # On a CPU two threads may run the model at once (the file loop's synthesis workers, live/loop.py): eager
        # inference keeps no state between calls. A CUDA graph replays into one set of buffers, so calls take turns.
        self.concurrent_calls = self.device.type == "cpu"
        self.expressions, self.resolution = synthesizer.expressions, synthesizer.resolution
        self.displacements = Displacements(synthesizer.warp)

    def __call__(self, faces: np.ndarray, expression: np.ndarray, intensity: np.ndarray,
                 keep: np.ndarray | None = None) -> np.ndarray:
        """faces  # [B, 3, R, R] float32 in [0, 1]; expression  # [B] int64; intensity  # [B] float32;
        keep  # [B, 1, R, R] float32 in [0, 1] or None (Synthesizer.forward)."""
        faces, expression, intensity, keep = with_keep(faces, expression, intensity, keep)
        inputs = [torch.from_numpy(faces).to(self.device, self.dtype), torch.from_numpy(expression).to(self.device),
                  torch.from_numpy(intensity).to(self.device, self.dtype)]
        # A captured CUDA graph always takes all four inputs; eagerly, an all-zero keep is left out (the same
        # output with less work: most frames have no open mouth).
        if isinstance(self.run, CudaGraphs) or keep.any():
            inputs.append(torch.from_numpy(keep).to(self.device, self.dtype))
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=self.precision == "bf16"):
            out = self.run(*inputs)
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
        self.displacements = Displacements(synthesizer.warp)

    def __call__(self, faces: np.ndarray, expression: np.ndarray, intensity: np.ndarray,
                 keep: np.ndarray | None = None) -> np.ndarray:
        return self.session.run(None, dict(zip(INPUT_NAMES, with_keep(faces, expression, intensity, keep))))[0]


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, synthesizer: Synthesizer, engine_path: str | Path, device: str = "cuda"):
        from reggan.tensorrt_runtime import TensorRTEngineRunner

        self.runner = TensorRTEngineRunner(engine_path)
        self.expressions, self.resolution = synthesizer.expressions, synthesizer.resolution
        self.displacements = Displacements(synthesizer.warp)

    def __call__(self, faces: np.ndarray, expression: np.ndarray, intensity: np.ndarray,
                 keep: np.ndarray | None = None) -> np.ndarray:
        return self.runner(*with_keep(faces, expression, intensity, keep))


def synthesize_crops(backend, crops: list[np.ndarray], labels: list[int], strengths: list[float],
                     keeps: list[np.ndarray]) -> list[np.ndarray]:
    """Aligned uint8 crops  # [R, R, 3], each with its label, strength and keep mask  # [R, R] in [0, 1], through
    the backend in one call -> the synthesized crops  # [R, R, 3] float32 0-255."""
    # One copy straight into C order (what with_keep would otherwise copy it into), scaled in place.
    faces = np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32, order="C")
    faces /= 255
    out = backend(faces, np.asarray(labels, np.int64), np.asarray(strengths, np.float32),
                  np.stack(keeps)[:, None].astype(np.float32))
    return list(out.transpose(0, 2, 3, 1) * 255)


def warp_displacements(backend, labels: list[int], strengths: list[float]) -> list[np.ndarray] | None:
    """What the backend's model warps each face by (``reggan.warp.Displacements``), or None when it has no warp (the
    competitor) or does not say (a stand-in backend in a test)."""
    table = getattr(backend, "displacements", None)
    if table is None or not table.moves:
        return None
    return [table(label, strength) for label, strength in zip(labels, strengths)]


def time_backend(backend, batch: int = 1, repeats: int = 10) -> dict:
    """Median milliseconds of a call on ``batch`` random faces (expressions other than neutral, full intensity),
    after two warm-up calls  # {latency_ms, ms_per_face, faces_per_s}."""
    faces = np.random.default_rng(0).random((batch, 3, backend.resolution, backend.resolution), dtype=np.float32)
    expression = (np.arange(batch) % (len(backend.expressions) - 1) + 1).astype(np.int64)
    intensity = np.ones(batch, np.float32)
    for _ in range(2):
        backend(faces, expression, intensity)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        backend(faces, expression, intensity)
        samples.append((time.perf_counter() - start) * 1000)
    median = float(np.median(samples))
    return {"latency_ms": median, "ms_per_face": median / batch, "faces_per_s": 1000 * batch / median}


# The modules whose code defines the exported graph (the face mask comes from the alignment template). Every module
# that defines a part of the Synthesizer must be here (tests/test_export.py checks it against the model).
GRAPH_SOURCES = ("networks.py", "regression.py", "warp.py", "familiarity.py", "alignment.py", "template_68.json",
                 "onnx_export.py")

BACKENDS = {"torch": TorchBackend, "onnxruntime": OnnxRuntimeBackend, "tensorrt": TensorRTBackend}


def exported_paths(checkpoint: str | Path, use_refiner: bool = True) -> dict[str, Path]:
    """Where exports of a checkpoint live: $REGGAN_CACHE (default ~/.cache/reggan), keyed by the file's content
    and by the code that turns it into a graph, so neither a retrained checkpoint nor an upgraded reggan ever
    reuses a stale graph or engine."""
    import hashlib
    import os

    checkpoint = Path(checkpoint)
    digest = hashlib.sha256(checkpoint.read_bytes())
    for module in GRAPH_SOURCES:
        digest.update((Path(__file__).parent / module).read_bytes())
    digest = digest.hexdigest()[:12]
    variant = "" if use_refiner else "-regression-only"
    root = Path(os.environ.get("REGGAN_CACHE", Path.home() / ".cache" / "reggan")) / f"{checkpoint.stem}-{digest}{variant}"
    return {"onnx": root / "synthesizer.onnx", "engine_dir": root / "engines"}


def ensure_onnx(synthesizer: Synthesizer, checkpoint: str | Path) -> Path:
    """The checkpoint's ONNX graph, exported and parity-checked on first use (about two seconds)."""
    onnx_path = exported_paths(checkpoint, synthesizer.use_refiner)["onnx"]
    if not onnx_path.is_file():
        from reggan.onnx_export import check_forward, export_onnx

        export_onnx(synthesizer, onnx_path.with_name("unchecked.onnx"))
        check_forward(synthesizer, onnx_path.with_name("unchecked.onnx"), batches=(2,), quiet=True)
        onnx_path.with_name("unchecked.onnx").replace(onnx_path)
    return onnx_path


def make_backend(name: str, synthesizer: Synthesizer, checkpoint: str | Path, device: str = "cpu",
                 precision: str = "auto"):
    """Build a backend by name; ``auto`` tries the fastest first and reports its choice on stderr.

    On a CPU torch comes first: in bfloat16 where the CPU computes it in hardware, else in FP32, which beat
    onnxruntime at batch 1 and 2 (one or two faces, what the frame loop sends) on every CPU measured: a Xeon with
    AMX, a Zen 4 and an AVX2-only EPYC (24 / 32 / 41 ms a face against 35 / 36 / 47). onnxruntime wins only at
    batch 8 and more (docs/benchmarks.md).
    """
    import sys

    paths = exported_paths(checkpoint, synthesizer.use_refiner)
    if name == "auto":
        if device == "cuda":
            order = ["tensorrt", "torch"]
        else:
            order = ["torch", "onnxruntime"]
        reasons = []
        for candidate in order:
            try:
                backend = make_backend(candidate, synthesizer, checkpoint, device, precision)
            except BackendUnavailable as why:
                reasons.append(f"{candidate}: {why}")
                continue
            detail = f" in {backend.precision}" if isinstance(backend, TorchBackend) else ""
            print(f"backend: {candidate} on {device}{detail}" + (f" (skipped {'; '.join(reasons)})" if reasons else ""),
                  file=sys.stderr)
            return backend
        raise BackendUnavailable("no backend could start: " + "; ".join(reasons))
    if name == "torch":
        return TorchBackend(synthesizer, device, precision)
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
