"""Build the runtime pieces (model, backend, photo editor) from config.toml values and command-line flags.

Shared by every command module (reggan/cli.py, live/commands.py, training/commands.py, export/commands.py).
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from reggan.config import resolve_path
from reggan.errors import UserError


def checkpoint_path(config: dict, given: str | None) -> Path:
    return resolve_path(given or config["model"]["checkpoint"])


def lite_path(checkpoint: Path) -> Path:
    """Where the narrow refiner distilled from ``checkpoint`` lives (`reggan train distill` writes it there)."""
    return checkpoint.with_name(checkpoint.stem + "-lite.safetensors")


def model_path(config, args, frame_loop: bool = True) -> Path:
    """The checkpoint to run: --checkpoint or [model].checkpoint, or the lite refiner distilled from it, as
    [runtime].refiner (or --refiner) says. "auto": for video on a CPU without bfloat16 hardware, where the full
    refiner is half of a frame's time (docs/benchmarks.md), the lite one when it sits beside the checkpoint; the
    full one everywhere else, and outside a ``frame_loop`` (a photo is edited once, an export made once for whatever
    machine runs it, so their speed hardly matters here)."""
    checkpoint = checkpoint_path(config, getattr(args, "checkpoint", None))
    choice = getattr(args, "refiner", None) or config["runtime"].get("refiner", "auto")
    if choice not in ("auto", "full", "lite"):
        raise UserError(f"[runtime].refiner is {choice!r}: choose auto, full or lite")
    if choice == "full" or getattr(args, "regression_only", False):
        return checkpoint
    lite = lite_path(checkpoint)
    if choice == "lite":
        if not lite.is_file():
            raise UserError(f"--refiner lite: there is no {lite.name} beside {checkpoint}; make it with "
                            f"`reggan train distill --teacher {checkpoint}`")
        return lite
    from reggan.backends import cpu_has_fast_bf16
    from reggan.checkpoint import variant_problem

    device = getattr(args, "device", None) or config["runtime"]["device"]
    if not frame_loop or device == "cuda" or cpu_has_fast_bf16() or not lite.is_file():
        return checkpoint
    problem = variant_problem(lite)
    if problem:  # the checkpoint was retrained after its lite refiner was made: the full one, and why
        print(f"refiner: full, not the lite one: {problem}", file=sys.stderr)
        return checkpoint
    # Said as the backend's automatic choice is: the user sees why, and how to have the other.
    print(f"refiner: lite ({lite.name}), as this CPU has no bfloat16 hardware (--refiner full: the full one)",
          file=sys.stderr)
    return lite


def load_model(config, args, path: Path | None = None, device: str | None = None):
    """The Synthesizer at ``path`` (default: ``model_path``), on ``device`` (default: the configured one)."""
    from reggan.checkpoint import load_synthesizer

    path = path or model_path(config, args)
    synthesizer = load_synthesizer(path, device or args.device or config["runtime"]["device"])
    synthesizer.use_refiner = not getattr(args, "regression_only", False)
    return synthesizer


def make_editor(config, args, frame_loop: bool = True):
    """The photo editor (backend, tracker, paste-back) the commands share; ``frame_loop``: False for photos."""
    from reggan.backends import make_backend
    from reggan.editor import PhotoEditor
    from reggan.trackers import make_tracker

    device = args.device or config["runtime"]["device"]
    path = model_path(config, args, frame_loop)
    backend = make_backend(args.backend or config["runtime"]["backend"], load_model(config, args, path), path, device,
                           getattr(args, "precision", None) or config["runtime"]["precision"])
    tracker = make_tracker(args.tracker or config["tracker"]["backend"], upsample=config["tracker"].get("upsample", 0))
    colour_match = getattr(args, "colour_match", None) or config["edit"].get("colour_match", False)
    return PhotoEditor(backend, tracker, config["edit"]["feather"], config["edit"]["max_intensity"],
                       colour_match=colour_match, bend=bending(config, args))


def bending(config, args) -> bool:
    """[edit].bend, unless --no-bend was given."""
    return config["edit"].get("bend", True) and not getattr(args, "no_bend", False)


def bend_time(config, args) -> float | None:
    """On video: how many seconds of landmarks the bend follows ([edit].bend_time), or None when bending is off."""
    return config["edit"].get("bend_time", 2.0) if bending(config, args) else None


def fine_flow(config, live: bool) -> bool:
    """Whether the video smoothing refines its optical flow to full resolution ([edit].smoothing_flow): full, half,
    or auto, full for files and half for a live camera. Full lowers every evaluation clip's flicker by 0.007-0.02
    for 4-5 ms more a face: the file loop measures it on its synthesis workers, beside the model, but live every
    millisecond is latency (live/smoothing.py ``CropFlow``)."""
    choice = config["edit"].get("smoothing_flow", "auto")
    if choice not in ("auto", "full", "half"):
        raise UserError(f"[edit].smoothing_flow is {choice!r}: choose auto, full or half")
    return choice == "full" or (choice == "auto" and not live)


# A live camera's frame at 30 fps is 33 ms, and tracking, smoothing and pasting back take 10-15 ms of it on 2 CPU
# cores: a synthesis slower than this cannot keep up with every frame.
LIVE_SYNTHESIS_BUDGET_MS = 25.0


def synthesis_interval(config, args, backend, live: bool) -> int:
    """[runtime].synthesize_every as a number of frames. "auto": every frame, except for a live camera when one
    synthesis takes longer than ``LIVE_SYNTHESIS_BUDGET_MS`` here (timed on the backend, after its warm-up): live
    drops frames rather than fall behind, so the change is then synthesized every 2nd frame and carried along the
    face between, a steadier picture for a softer change. Measured on an AVX2-only 2-core CPU, 640 x 480 live: the
    full refiner (25-37 ms a face) 21 fps out with a third of the frames dropped, every 2nd frame 30 fps; the lite
    one (13-22 ms) 29 fps every frame (docs/benchmarks.md). Files never drop frames, so they keep every one."""
    setting = getattr(args, "synthesize_every", None) or config["runtime"].get("synthesize_every", "auto")
    if setting != "auto":
        return max(int(setting), 1)
    device = getattr(args, "device", None) or config["runtime"]["device"]
    if not live or device == "cuda" or getattr(args, "regression_only", False):
        return 1
    from reggan.backends import time_backend

    milliseconds = time_backend(backend, repeats=5)["latency_ms"]
    if milliseconds <= LIVE_SYNTHESIS_BUDGET_MS:
        return 1
    # Said as the backend's automatic choice is: the user sees why, and how to have every frame.
    print(f"synthesizing every 2nd frame to keep up: a face takes {milliseconds:.0f} ms here, the change carried "
          "along the face between (--synthesize-every 1: every frame)", file=sys.stderr)
    return 2


def cores_here() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def file_model_threads(config) -> int:
    """[runtime].file_threads as a number: how many CPU threads the model may use in file mode, all its synthesis
    workers together. "auto": half of the cores this process may run on, at least one. File mode decodes, tracks,
    smooths, pastes and encodes in threads beside the model (live/loop.py), and the model's own threads took the
    cores those were waiting for: on the 2-core AVX2 CPU, `reggan video WolfgangLanger_Pexels.mp4` (23.98 fps clip)
    ran 22.0 / 19.3 / 18.5 fps with the model on both cores and 24.2 / 22.6 / 22.6 fps with it on one, the two
    alternating (docs/benchmarks.md). Half is a rule for machines with more cores, where it was not measured."""
    setting = config["runtime"].get("file_threads", "auto")
    if setting != "auto":
        return max(int(setting), 1)
    return max(cores_here() // 2, 1)


def file_synthesis_workers(config, backend) -> int:
    """[runtime].file_workers as a number: how many frames file mode synthesizes at once. "auto": two where the
    backend may be called from two threads at once (the torch backend on a CPU) and there are two cores or more,
    else one. Measured on the 2-core AVX2 CPU, `reggan video WolfgangLanger_Pexels.mp4`, alternating four times:
    one worker with the model on one thread 22.5 fps, two workers on one thread each 26.3 fps (1.09x real time),
    two workers on two threads each 24.1 fps (docs/benchmarks.md)."""
    setting = config["runtime"].get("file_workers", "auto")
    if setting != "auto":
        return max(int(setting), 1)
    return 2 if getattr(backend, "concurrent_calls", False) and cores_here() >= 2 else 1


@contextlib.contextmanager
def cores_shared_with_the_file_loop(config, backend):
    """While a file is processed, the model has ``file_model_threads`` CPU threads shared among
    ``file_synthesis_workers`` workers (at least one thread each), where it is the torch backend on a CPU
    (onnxruntime fixes its threads when its session is made; on a GPU the model's work is not on these cores); the
    count before is put back after. Yields the number of workers (live/loop.py ``run_file``)."""
    workers = file_synthesis_workers(config, backend)
    if getattr(backend, "name", None) != "torch" or backend.device.type != "cpu":
        yield workers
        return
    import torch

    before = torch.get_num_threads()
    # Threads that PyTorch has not run an operation on yet take this count (the workers are made after it).
    torch.set_num_threads(max(file_model_threads(config) // workers, 1))
    try:
        yield workers
    finally:
        torch.set_num_threads(before)


def clamped_intensity(config, args) -> float:
    intensity = config["edit"]["intensity"] if args.intensity is None else args.intensity
    return float(min(max(intensity, 0.0), config["edit"]["max_intensity"]))
