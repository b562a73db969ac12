"""Resumable training state: every tensor (weights and optimiser moments) in one safetensors file, the rest as JSON
in its header. Written to a side file and renamed, so an interrupted save keeps the previous state."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file


def save_training_state(path: Path, modules: dict, optimizers: dict, plain: dict) -> None:
    """modules, optimizers: name -> object; plain: JSON-able values (the step, a schedule's state)."""
    tensors, plain = {}, dict(plain)
    for prefix, module in modules.items():
        for name, value in module.state_dict().items():
            tensors[f"{prefix}.{name}"] = value.detach().cpu().contiguous()
    for prefix, optimizer in optimizers.items():
        state = optimizer.state_dict()
        plain[prefix] = {"param_groups": state["param_groups"], "keys": {}}
        for index, slots in state["state"].items():
            for slot, value in slots.items():
                tensors[f"{prefix}.{index}.{slot}"] = torch.as_tensor(value).detach().cpu().contiguous()
                plain[prefix]["keys"].setdefault(str(index), []).append(slot)
    partial = path.with_name(path.name + ".partial")
    save_file(tensors, str(partial), metadata={"training": json.dumps(plain)})
    partial.replace(path)


def load_training_state(path: Path, modules: dict, optimizers: dict) -> dict:
    """Load what ``save_training_state`` wrote into the same-named modules and optimisers; returns the plain values."""
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as handle:
        plain = json.loads(handle.metadata()["training"])
    for prefix, module in modules.items():
        module.load_state_dict({n[len(prefix) + 1:]: v for n, v in tensors.items() if n.startswith(prefix + ".")})
    for prefix, optimizer in optimizers.items():
        device = next(iter(optimizer.param_groups[0]["params"])).device
        state = {
            int(index): {slot: tensors[f"{prefix}.{index}.{slot}"].to(device) for slot in slots}
            for index, slots in plain[prefix]["keys"].items()
        }
        for slots in state.values():
            if "step" in slots:
                slots["step"] = slots["step"].cpu()
        optimizer.load_state_dict({"state": state, "param_groups": plain[prefix]["param_groups"]})
    return plain
