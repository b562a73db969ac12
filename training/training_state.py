"""Resumable training: the state (every tensor, weights and optimiser moments, in one safetensors file, the rest as
JSON in its header; written to a side file and renamed, so an interrupted save keeps the previous state) and the step
loop the trainings share (resume, log, samples, checkpoints, a time limit)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm import tqdm


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


def run_steps(training, take_step: Callable[[], dict], settings: dict, out_dir: Path, state_name: str, name: str,
              write_samples: Callable[[int], None], resume: bool = True, max_minutes: float | None = None,
              on_checkpoint: Callable[[int], None] | None = None, leader: bool = True) -> None:
    """Run ``take_step()`` (one update; returns its losses) from where ``training`` (step_count, save_state,
    load_state) left off in OUT/``state_name`` up to settings["steps"]. Every 50 steps the losses go to
    OUT/losses.jsonl; every settings["sample_every"] steps (default: checkpoint_every) ``write_samples(step)``;
    every settings["checkpoint_every"] steps, at the end and when ``max_minutes`` are up, the state is saved and
    ``on_checkpoint(step)`` called, so the same command resumes. ``leader``: False on every process of a distributed
    run but the first (it trains and writes nothing)."""
    state_path = out_dir / state_name
    if resume and state_path.is_file():
        training.load_state(state_path)
        print(f"resumed from {state_path} at step {training.step_count}")
    sample_every = settings.get("sample_every", settings["checkpoint_every"])
    started = time.perf_counter()
    progress = tqdm(range(training.step_count, settings["steps"]), desc=name, unit="step", disable=not leader,
                    mininterval=5)
    log = open(out_dir / "losses.jsonl", "a") if leader else None
    try:
        for step in progress:
            losses = take_step()
            progress.set_postfix({key: f"{value:.4f}" for key, value in losses.items()})
            done = step + 1
            out_of_time = max_minutes is not None and time.perf_counter() - started > max_minutes * 60
            last = done == settings["steps"] or out_of_time
            if leader:
                if done % 50 == 0:
                    log.write(json.dumps({"step": done, **losses}) + "\n")
                    log.flush()
                if done % sample_every == 0 or last:
                    write_samples(done)
                if done % settings["checkpoint_every"] == 0 or last:
                    training.save_state(state_path)
                    if on_checkpoint:
                        on_checkpoint(done)
            if out_of_time:
                print(f"stopping after {max_minutes} minutes at step {done}; resume with the same command")
                break
    finally:
        if log:
            log.close()
