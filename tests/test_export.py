"""ONNX export with parity checks, the backends behind one interface, and the TensorRT path around the build."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from reggan.onnx_export import check_forward, example_inputs, export_onnx
from reggan.tensorrt_runtime import TensorRTUnavailable, engine_cache_key, require_tensorrt
from reggan.backends import (BackendUnavailable, OnnxRuntimeBackend, TorchBackend, cpu_has_fast_bf16, make_backend,
                             resolve_precision)
from reggan.checkpoint import save_synthesizer
from reggan.networks import Synthesizer

HAS_CUDA = torch.cuda.is_available()
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    model = Synthesizer(["happy", "sad", "surprised"], 64, width=8, detail_scale=4)  # as the bundled model
    with torch.no_grad():
        model.regression.weight.add_(torch.randn_like(model.regression.weight) * 0.05)
        model.regression.bias.add_(torch.randn_like(model.regression.bias) * 0.05)
        # A smooth warp per expression, so the exported GridSample is checked too.
        model.warp.field[1:] = torch.nn.functional.interpolate(torch.randn(3, 2, 4, 4) * 3, size=64, mode="bilinear")
    return model.eval()


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("REGGAN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_onnx_export_matches_pytorch_at_batch_1_and_4(small_model, tmp_path):
    path = export_onnx(small_model, tmp_path / "model.onnx")
    worst = check_forward(small_model, path, batches=(1, 4))
    assert worst < 1e-5
    import onnx

    operators = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "Einsum" not in operators


def test_onnx_export_of_the_resize_decoder_matches_pytorch(tmp_path):
    torch.manual_seed(0)
    model = Synthesizer(["happy"], 64, width=8, decoder="resize").eval()
    assert check_forward(model, export_onnx(model, tmp_path / "resize.onnx"), batches=(1, 3)) < 1e-5


def test_onnx_parity_over_expressions_and_intensities(small_model, tmp_path):
    path = export_onnx(small_model, tmp_path / "model.onnx")
    backend = OnnxRuntimeBackend(small_model, path)
    reference = TorchBackend(small_model)
    faces = np.random.default_rng(1).random((4, 3, 64, 64), dtype=np.float32)
    for expression in range(4):
        for intensity in (0.0, 0.5, 1.0, 1.4):
            labels = np.full(4, expression, np.int64)
            strength = np.full(4, intensity, np.float32)
            assert np.abs(backend(faces, labels, strength) - reference(faces, labels, strength)).max() < 1e-5
    keep = np.zeros((4, 1, 64, 64), np.float32)
    keep[:, :, 30:50, 20:44] = 1.0  # an open mouth
    labels, strength = np.array([1, 2, 3, 1]), np.ones(4, np.float32)
    kept = backend(faces, labels, strength, keep)
    assert np.abs(kept - reference(faces, labels, strength, keep)).max() < 1e-5
    assert np.abs(kept - backend(faces, labels, strength)).max() > 1e-3  # and keeping changed something


def test_check_forward_fails_on_a_wrong_graph(small_model, tmp_path):
    path = export_onnx(small_model, tmp_path / "model.onnx")
    other = Synthesizer(["happy", "sad", "surprised"], 64, width=8).eval()  # different random refiner
    with pytest.raises(Exception, match="differs from PyTorch"):
        check_forward(other, path)


def test_the_onnxruntime_backend_exports_on_first_use(small_model, tmp_path, cache_dir):
    checkpoint = save_synthesizer(tmp_path / "m.safetensors", small_model, dtype=torch.float32)
    assert not list(cache_dir.glob("*/synthesizer.onnx"))
    backend = make_backend("onnxruntime", small_model, checkpoint, "cpu")
    assert backend.name == "onnxruntime"
    assert list(cache_dir.glob("*/synthesizer.onnx"))


def test_auto_on_a_cpu_is_torch_in_bfloat16_where_the_cpu_has_it_in_hardware_else_fp32_and_says_which(
        small_model, tmp_path, cache_dir, capsys):
    checkpoint = save_synthesizer(tmp_path / "m.safetensors", small_model, dtype=torch.float32)
    backend = make_backend("auto", small_model, checkpoint, "cpu")
    expected = "bf16" if cpu_has_fast_bf16() else "fp32"
    assert (backend.name, backend.precision) == ("torch", expected)
    assert f"backend: torch on cpu in {expected}" in capsys.readouterr().err
    assert not list(cache_dir.glob("*/synthesizer.onnx"))  # nothing exported that nothing runs


def test_cpu_bfloat16_stays_within_a_grey_level_of_fp32(small_model):
    inputs = tuple(t.numpy() for t in example_inputs(small_model, 4))
    fp32 = TorchBackend(small_model, "cpu", "fp32")(*inputs)
    bf16 = TorchBackend(small_model, "cpu", "bf16")(*inputs)
    assert 0 < np.abs(bf16 - fp32).max() < 2 / 255


def test_precision_names_are_checked():
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("auto", "cuda") == "fp16"
    with pytest.raises(BackendUnavailable, match="fp16 needs --device cuda"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(BackendUnavailable, match="on CUDA use fp16"):
        resolve_precision("bf16", "cuda")
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("int4", "cpu")


def test_cli_export_onnx_prints_the_parity(tmp_path, cache_dir):
    small = Synthesizer(["happy"], 32, width=8).eval()
    checkpoint = save_synthesizer(tmp_path / "s.safetensors", small)
    result = subprocess.run([sys.executable, "-m", "reggan.cli", "export", "onnx", "--checkpoint", str(checkpoint),
                             "-o", str(tmp_path / "s.onnx")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "parity OK" in result.stdout and (tmp_path / "s.onnx").is_file()


def test_engine_cache_key_changes_with_each_input():
    base = dict(gpu_name="NVIDIA H200", compute_capability=(9, 0), tensorrt_version="10.9.0",
                model_sha256="abc", fp16=True, batches=(1, 8, 32))
    key = engine_cache_key(**base)
    assert key == engine_cache_key(**base)
    for field, other in [("gpu_name", "NVIDIA H100"), ("compute_capability", (8, 9)),
                         ("tensorrt_version", "10.10.0"), ("model_sha256", "abd"), ("fp16", False),
                         ("batches", (1, 4, 32))]:
        assert engine_cache_key(**{**base, field: other}) != key, field


@pytest.mark.skipif(HAS_TENSORRT and HAS_CUDA, reason="TensorRT and a GPU are present: the error path cannot occur")
def test_missing_tensorrt_or_gpu_is_a_clear_error(tmp_path):
    with pytest.raises(TensorRTUnavailable, match="TensorRT|NVIDIA GPU"):
        require_tensorrt()
    result = subprocess.run([sys.executable, "-m", "reggan.cli", "export", "tensorrt", "--fp16"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert ("pip install tensorrt" in result.stderr or "NVIDIA GPU" in result.stderr)
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (none here); run benchmarks/gpu_check.py on one")
def test_cuda_fp16_matches_fp32(small_model):
    inputs = tuple(t.numpy() for t in example_inputs(small_model, 4))
    fp32 = TorchBackend(small_model, "cpu")(*inputs)
    fp16 = TorchBackend(small_model, "cuda", "fp16", cuda_graphs=False)(*inputs)
    small_model.float().cpu()
    assert np.abs(fp16 - fp32).max() < 2e-2


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (none here); run benchmarks/gpu_check.py on one")
def test_cuda_graph_replay_matches_eager_for_each_batch_size(small_model):
    eager = TorchBackend(small_model, "cuda", "fp32", cuda_graphs=False)
    graphed = TorchBackend(small_model, "cuda", "fp32", cuda_graphs=True)
    for batch in (1, 3, 1):  # a size seen again replays its captured graph
        inputs = tuple(t.numpy() for t in example_inputs(small_model, batch))
        assert np.abs(graphed(*inputs) - eager(*inputs)).max() < 1e-5
    assert sorted(graphed.run.graphs) == [1, 3]
    small_model.float().cpu()


@pytest.mark.skipif(not (HAS_TENSORRT and HAS_CUDA), reason="needs TensorRT 10 and an NVIDIA GPU (absent here)")
def test_tensorrt_engine_build_and_parity(small_model, tmp_path):
    from export.tensorrt_build import build_engine
    from reggan.tensorrt_runtime import TensorRTEngineRunner

    onnx_path = export_onnx(small_model, tmp_path / "m.onnx")
    engine = build_engine(onnx_path, tmp_path / "engines", 64, fp16=True)
    assert build_engine(onnx_path, tmp_path / "engines", 64, fp16=True) == engine  # cached
    inputs = tuple(t.numpy() for t in example_inputs(small_model, 4))
    expected = TorchBackend(small_model)(*inputs)
    assert np.abs(TensorRTEngineRunner(engine)(*inputs) - expected).max() < 2e-2


def test_a_bfloat16_backend_leaves_the_callers_model_in_fp32(small_model, tmp_path, cache_dir):
    TorchBackend(small_model, "cpu", "bf16")
    assert {p.dtype for p in small_model.parameters()} == {torch.float32}
    path = export_onnx(small_model, tmp_path / "after.onnx")  # still exportable
    assert check_forward(small_model, path, batches=(1,)) < 1e-5


def test_engine_build_pins_reductions_and_the_warp_sampling_to_fp32():
    """The precision constraints, on a stand-in for TensorRT's network (the real build needs TensorRT and a GPU)."""
    from enum import Enum
    from types import SimpleNamespace

    from export.tensorrt_build import pin_reductions_to_fp32

    kinds = Enum("LayerType", "CONVOLUTION REDUCE NORMALIZATION SOFTMAX GRID_SAMPLE ACTIVATION")
    fake = SimpleNamespace(LayerType=kinds, float32="float32")

    class Layer:
        def __init__(self, kind):
            self.type, self.num_outputs, self.precision, self.outputs = kind, 1, None, {}

        def set_output_type(self, index, dtype):
            self.outputs[index] = dtype

    layers = [Layer(kind) for kind in kinds]
    network = SimpleNamespace(num_layers=len(layers), get_layer=layers.__getitem__)
    assert pin_reductions_to_fp32(network, fake) == 4
    pinned = {layer.type.name for layer in layers if layer.precision == "float32" and layer.outputs == {0: "float32"}}
    assert pinned == {"REDUCE", "NORMALIZATION", "SOFTMAX", "GRID_SAMPLE"}


def test_export_cache_key_follows_the_checkpoint_and_the_graph_code(small_model, tmp_path, cache_dir, monkeypatch):
    import copy

    import reggan.backends as backends

    model = copy.deepcopy(small_model)  # the fixture is shared with other tests
    first = save_synthesizer(tmp_path / "a.safetensors", model)
    key = backends.exported_paths(first)["onnx"]
    assert backends.exported_paths(first)["onnx"] == key  # stable
    with torch.no_grad():
        model.regression.bias.add_(0.01)
    second = save_synthesizer(tmp_path / "b.safetensors", model)
    assert backends.exported_paths(second)["onnx"].parent.name.split("-")[-1] != key.parent.name.split("-")[-1]
    # An upgraded reggan whose graph code differs never reuses the old export.
    monkeypatch.setattr(backends, "GRAPH_SOURCES", backends.GRAPH_SOURCES[:-1])
    assert backends.exported_paths(first)["onnx"] != key


def test_export_cache_key_covers_every_module_of_the_synthesizer(small_model):
    """A part of the model whose code is not in the key would let a stale graph outlive a change to it."""
    from reggan.backends import GRAPH_SOURCES

    defining = {os.path.basename(sys.modules[type(module).__module__].__file__) for module in small_model.modules()
                if type(module).__module__.startswith("reggan.")}
    assert defining <= set(GRAPH_SOURCES), defining - set(GRAPH_SOURCES)
