"""One place for defaults: config.toml at the project root, overridable per run.

The command line uses the same names as the file (``--ridge-lambda`` overrides ``[regression].ridge_lambda``),
so a run is reproduced by its config plus the flags it was given.
"""

from __future__ import annotations

import copy
import os
import tomllib
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "config.toml"
# [runtime].precision values: here rather than in reggan/backends.py, so the command line can offer them without
# loading PyTorch for `reggan --help`.
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def load_config(path: str | os.PathLike | None = None) -> dict:
    """Read config.toml (or ``path``, or $REGGAN_CONFIG) into a nested dict."""
    chosen = Path(path or os.environ.get("REGGAN_CONFIG") or DEFAULT_CONFIG_PATH)
    if not chosen.is_file():
        raise FileNotFoundError(f"config file not found: {chosen} (pass --config PATH or set REGGAN_CONFIG)")
    with open(chosen, "rb") as handle:
        return tomllib.load(handle)


def with_overrides(config: dict, section: str, overrides: dict) -> dict:
    """Return a copy of ``config`` where ``[section]`` keys are replaced by the non-None ``overrides``."""
    merged = copy.deepcopy(config)
    for key, value in overrides.items():
        if value is not None:
            merged.setdefault(section, {})[key] = value
    return merged


def resolve_path(path: str | os.PathLike) -> Path:
    """Config paths are relative to the project root, so commands work from any directory."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else PROJECT_ROOT / candidate
