"""Checkpoints as safetensors with the model's description in the header as JSON. Loading never unpickles.

The header's ``reggan`` entry holds everything needed to rebuild the Synthesizer: expressions, resolution,
template, k, lambda, refiner width, trained stages and the version that wrote it.

A refiner variant (``save_refiner_variant``: the narrow refiner ``reggan train distill`` makes) holds only its
refiner and names the checkpoint beside it whose warp, regression layer and gate it shares, with that file's
SHA-256: a few hundred kilobytes instead of a second copy of the 30 MB regression layer, and it refuses to load on
top of a base that has changed since.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from reggan import __version__
from reggan.alignment import load_template
from reggan.networks import Synthesizer


OPTIONAL_TENSORS = ("warp.field", "familiarity.mean", "familiarity.spread")


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or does not fit the model it describes."""


def describe(synthesizer: Synthesizer, **extra) -> dict:
    return {
        "format": "reggan-checkpoint/1",
        "version": __version__,
        "expressions": synthesizer.expressions[1:],
        "resolution": synthesizer.resolution,
        "kernel": synthesizer.regression.kernel,
        "width": synthesizer.width,
        "decoder": synthesizer.decoder,
        "generator": synthesizer.generator,
        "change_chroma": synthesizer.change_chroma,
        "detail_scale": synthesizer.detail_scale,
        "generator_scale": synthesizer.generator_scale,
        "template": np.round(load_template(), 5).tolist(),
        **extra,
    }


def save_synthesizer(path: str | Path, synthesizer: Synthesizer, dtype: torch.dtype = torch.float16, **extra) -> Path:
    """Write weights (stored as ``dtype``) and metadata; atomic, so an interrupted save keeps the old file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: value.detach().to("cpu", dtype).contiguous() for name, value in synthesizer.state_dict().items()
               if not name.startswith(unused_stages(synthesizer))}
    partial = path.with_name(path.name + ".partial")
    save_file(tensors, str(partial), metadata={"reggan": json.dumps(describe(synthesizer, **extra))})
    partial.replace(path)
    return path


def unused_stages(synthesizer: Synthesizer) -> tuple[str, ...]:
    """Prefixes of the weights a checkpoint need not store: the stages its generator does without (the StarGAN-style
    competitor has no warp, regression layer or familiarity gate; their defaults are exactly none, so leaving them
    out keeps its file at 1.3 MB instead of 30)."""
    return () if synthesizer.refiner.uses_coarse else ("warp.", "regression.", "familiarity.")


def save_refiner_variant(path: str | Path, synthesizer: Synthesizer, base: str | Path,
                         dtype: torch.dtype = torch.float16, **extra) -> Path:
    """Write ``synthesizer``'s refiner alone, on top of the checkpoint ``base`` (which must sit in the same folder:
    the two travel together)."""
    path, base = Path(path), Path(base)
    if base.resolve().parent != path.resolve().parent:
        raise ValueError(f"a refiner variant must sit beside its base checkpoint: {path} is not next to {base}")
    tensors = {name: value.detach().to("cpu", dtype).contiguous()
               for name, value in synthesizer.state_dict().items() if name.startswith("refiner.")}
    metadata = describe(synthesizer, base=base.name, base_sha256=file_sha256(base), **extra)
    partial = path.with_name(path.name + ".partial")
    save_file(tensors, str(partial), metadata={"reggan": json.dumps(metadata)})
    partial.replace(path)
    return path


# (path, inode, size, modification time in ns) -> SHA-256. Choosing the lite refiner and then loading it each check
# its base (31 MB, ~40 ms to hash); a file rewritten since has another key (checkpoints are saved by renaming a new
# file over the old one, which gives it a new inode), so a stale hash is never used.
_hashes: dict[tuple, str] = {}


def file_sha256(path: Path) -> str:
    path = Path(path).resolve()
    status = path.stat()
    key = (str(path), status.st_ino, status.st_size, status.st_mtime_ns)
    if key not in _hashes:
        _hashes[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return _hashes[key]


def read_metadata(path: str | Path) -> dict:
    """The JSON description in a checkpoint's header."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with open(path, "rb") as handle:
            header_size = int.from_bytes(handle.read(8), "little")
            if not 0 < header_size < 100_000_000:
                raise ValueError("bad header length")
            header = json.loads(handle.read(header_size))
        return json.loads(header["__metadata__"]["reggan"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is not a reggan checkpoint (corrupt or another format): {error}") from error


def read_tensors(path: Path) -> dict:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: cannot read the weights (corrupt or truncated file): {error}") from error


def variant_problem(path: Path, metadata: dict | None = None) -> str | None:
    """Why the refiner variant at ``path`` cannot load on its base (None: it can)."""
    metadata = metadata or read_metadata(path)
    base = Path(path).parent / metadata["base"]
    if not base.is_file():
        return f"{path} is a refiner on top of {base.name}, which is not beside it"
    if file_sha256(base) != metadata.get("base_sha256"):
        return (f"{path} was made for another version of {base.name} (its SHA-256 differs): make it again for this "
                "one with `reggan train distill`")
    return None


def base_tensors(path: Path, metadata: dict) -> dict:
    """A refiner variant's base checkpoint's tensors, less its own refiner."""
    problem = variant_problem(path, metadata)
    if problem:
        raise CheckpointError(problem)
    base = path.parent / metadata["base"]
    return {name: value for name, value in read_tensors(base).items() if not name.startswith("refiner.")}


def load_synthesizer(path: str | Path, device: str = "cpu") -> Synthesizer:
    """Rebuild the Synthesizer a checkpoint describes and load its weights as float32."""
    metadata = read_metadata(path)
    synthesizer = Synthesizer(
        metadata["expressions"], metadata["resolution"], metadata["kernel"], metadata["width"],
        metadata.get("generator", "refiner"), metadata.get("decoder", "transpose"), metadata.get("change_chroma", 1.0),
        metadata.get("detail_scale", 0), metadata.get("generator_scale", 1),
    )
    tensors = read_tensors(path)
    if "base" in metadata:
        tensors = {**base_tensors(Path(path), metadata), **tensors}
    expected = synthesizer.state_dict()
    # Checkpoints from before the warp stage have no fields (the zero field is exactly no warp), and those from
    # before the familiarity gate no statistics (the defaults keep the gate open): both load as they were.
    optional = [name for name in expected if name in OPTIONAL_TENSORS or name.startswith(unused_stages(synthesizer))]
    tensors = {**{name: expected[name] for name in optional if name not in tensors}, **tensors}
    missing = sorted(set(expected) - set(tensors))
    wrong = [f"{n}: file {tuple(tensors[n].shape)} vs model {tuple(v.shape)}" for n, v in expected.items()
             if n in tensors and tensors[n].shape != v.shape]
    if missing or wrong:
        detail = "; ".join((["missing " + ", ".join(missing[:5])] if missing else []) + wrong[:5])
        raise CheckpointError(f"{path} does not match the model its header describes: {detail}")
    synthesizer.load_state_dict({name: value.float() for name, value in tensors.items()})
    synthesizer.metadata = metadata
    return synthesizer.to(device).eval()
