"""``reggan export onnx``: the whole synthesizer (regression layer + refiner + intensity blend) as one ONNX graph.

Inputs: face [B, 3, R, R] float32 in [0, 1], expression [B] int64, intensity [B] float32; output: [B, 3, R, R].
The batch is dynamic. The export verifies itself (as timm's --check-forward): onnxruntime and PyTorch run the same
inputs and the export fails when they differ by more than the tolerance.
It lives in reggan/, beside the backends, because they export on first use; export/ holds the commands.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from reggan.networks import Synthesizer

INPUT_NAMES = ["face", "expression", "intensity", "keep"]
OUTPUT_NAMES = ["synthesized"]


class ExportError(RuntimeError):
    """The exported graph is missing, malformed, or disagrees with PyTorch."""


def example_inputs(synthesizer: Synthesizer, batch: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    size = synthesizer.resolution
    face = torch.rand(batch, 3, size, size, generator=generator)
    expression = torch.arange(batch) % len(synthesizer.expressions)
    intensity = torch.linspace(0.0, 1.2, batch) if batch > 1 else torch.ones(1)
    keep = (torch.rand(batch, 1, size, size, generator=generator) - 0.5).clamp(0, 1) * 2  # half the pixels kept some
    return face, expression.long(), intensity.float(), keep


def export_onnx(synthesizer: Synthesizer, path: str | Path, opset: int = 17) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = synthesizer.float().eval().cpu()
    partial = path.with_name(path.name + ".partial")
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        # The exporter warns that strided slices cannot be constant-folded; they are inputs-dependent anyway.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, example_inputs(model, 2), str(partial), input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
            dynamic_axes={name: {0: "batch"} for name in INPUT_NAMES + OUTPUT_NAMES}, opset_version=opset,
            dynamo=False,
        )
    import onnx

    graph = onnx.load(str(partial))
    onnx.checker.check_model(graph)
    operators = {node.op_type for node in graph.graph.node}
    if "Einsum" in operators:  # onnxruntime's Einsum was measured 5-7x slower than the shifted-slice form
        raise ExportError("the exported graph contains Einsum; the regression layer must use shifted slices")
    partial.replace(path)
    return path


def check_forward(synthesizer: Synthesizer, path: str | Path, batches=(1, 4), tolerance: float = 1e-4,
                  quiet: bool = False) -> float:
    """Max |onnxruntime - PyTorch| over several batch sizes, expressions and intensities; raises above tolerance."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for seed, batch in enumerate(batches):
        inputs = example_inputs(synthesizer, batch, seed)
        with torch.no_grad():
            expected = synthesizer(*inputs).numpy()
        got = session.run(None, {name: value.numpy() for name, value in zip(INPUT_NAMES, inputs)})[0]
        error = float(np.abs(got - expected).max())
        if not quiet:
            print(f"  batch {batch}: max |onnxruntime - torch| = {error:.2e}")
        worst = max(worst, error)
    if worst > tolerance:
        raise ExportError(f"ONNX output differs from PyTorch by {worst:.2e} (tolerance {tolerance:.0e})")
    return worst
