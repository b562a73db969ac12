"""The training-side commands: ``reggan prepare``, ``reggan train regression|refine`` and ``reggan eval``.

reggan/cli.py parses the arguments and hands them here; this module turns them into calls on the training stages.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
from pathlib import Path

import cv2

from reggan.config import resolve_path, with_overrides
from reggan.errors import UserError
from reggan.from_config import bend_time, bending, checkpoint_path, lite_path


def run_prepare(args, config):
    from training.prepare import prepare

    data = dict(config["data"])
    sources = args.sources or data["sources"]
    data["sources"] = [kind + ":" + str(resolve_path(path)) for kind, _, path in (s.partition(":") for s in sources)]
    data["prepared_dir"] = resolve_path(args.prepared or data["prepared"])
    prepare({**config, "data": data}, rebuild_template=args.rebuild_template)


def run_train(args, config):
    import torch

    from reggan.checkpoint import load_synthesizer, save_synthesizer
    from reggan.networks import Synthesizer

    prepared = resolve_path(args.prepared or config["data"]["prepared"])
    regression_path = resolve_path(args.regression)
    if args.stage == "regression":
        from training.fit_regression import distinct_neutrals, fit_regression, load_training_pairs, to_tensor
        from training.fit_warp import fit_warp

        config = with_overrides(config, "regression", {"kernel": args.kernel, "ridge_lambda": args.ridge_lambda,
                                                       "robust_rounds": args.robust_rounds})
        model, settings = config["model"], config["regression"]
        synthesizer = Synthesizer(model["expressions"], model["resolution"], settings["kernel"],
                                  change_chroma=settings.get("change_chroma", 1.0))
        synthesizer.warp.field.copy_(fit_warp(prepared, model["expressions"], model["resolution"]))
        pairs = load_training_pairs(prepared, model["expressions"])
        layer = fit_regression(pairs, model["expressions"], model["resolution"], settings["kernel"],
                               settings["ridge_lambda"], settings["batch"], warp=synthesizer.warp,
                               robust_rounds=settings.get("robust_rounds", 0))
        synthesizer.regression.load_state_dict(layer.state_dict())
        synthesizer.familiarity.fit(to_tensor(distinct_neutrals(pairs)))
        save_synthesizer(regression_path, synthesizer, dtype=torch.float32, stages=["warp", "regression"],
                         ridge_lambda=settings["ridge_lambda"], robust_rounds=settings.get("robust_rounds", 0))
        print(f"wrote {regression_path}")
        return
    if args.stage == "distill":
        return run_distill(args, config, prepared)
    from training.prepare import read_manifest
    from training.train_refiner import STATE_NAME, on_stage1, train_refiner

    refine_keys = ("steps", "batch", "loss_l1", "loss_coarse", "loss_adversarial", "loss_classification",
                   "loss_identity", "lr_generator", "lr_discriminator", "coarse_pool", "decoder", "detail_scale")
    if args.generator == "stargan":
        # The competitor trains with the refiner's settings, less what [competitor] sets for it.
        config = {**config, "refine": {**config["refine"], **config.get("competitor", {})}}
    config = with_overrides(config, "refine", {key: getattr(args, key) for key in refine_keys})
    device = args.device or config["runtime"]["device"]
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but this PyTorch build sees no CUDA GPU")
    if args.generator == "stargan":
        return run_train_competitor(args, config, prepared, device)
    stage1 = load_synthesizer(regression_path)
    synthesizer = on_stage1(stage1, args.generator, config["refine"].get("decoder", "resize"),
                            config["refine"].get("detail_scale", 0))
    if args.init_refiner:
        try:
            synthesizer.refiner.load_state_dict(refiner_weights(resolve_path(args.init_refiner)))
        except RuntimeError as error:
            other = "transpose" if synthesizer.decoder == "resize" else "resize"
            raise UserError(f"--init-refiner {args.init_refiner} does not fit a refiner with the {synthesizer.decoder} "
                            f"decoder (the bundled refiner uses transpose: add --decoder {other}?): "
                            f"{str(error).splitlines()[0]}") from error
    out = resolve_path(args.out or config["model"]["checkpoint"])
    work_dir = resolve_path(args.work_dir or "cache/refine")
    stages = [stage for stage in stage1.metadata.get("stages", ["regression"]) if stage != "refine"]
    meta = {"stages": [*stages, "refine"], "ridge_lambda": stage1.metadata.get("ridge_lambda"),
            "training_command": training_command(out, work_dir / STATE_NAME)}
    if args.init_refiner and config["refine"]["steps"] == 0:
        # No step to take: the refiner given, as it is, on this stage-1 checkpoint. This is how a refiner trained
        # elsewhere (benchmarks/gpu_check.py on a lent GPU writes the refiner alone) becomes a checkpoint that
        # `reggan eval --split val --checkpoint` can score against the bundled one.
        save_synthesizer(out, synthesizer.eval(), steps=0, refiner_from=str(args.init_refiner), **meta)
        print(f"wrote {out} (the refiner of {args.init_refiner} on {regression_path}, not trained further)")
        return

    def save(model, step):
        save_synthesizer(out, model, steps=step, **meta)

    train_refiner(synthesizer.train(), read_manifest(prepared, "train"), config["refine"], work_dir, device,
                  max_minutes=args.max_minutes, on_checkpoint=save)
    print(f"wrote {out}")


def training_command(out: Path, state: Path) -> str:
    """This run's command line. A run that resumes a saved training state (``state``) continues the one that wrote
    ``out`` so far, so the checkpoint names both: its header then tells how the whole training went, not only its
    last leg (the bundled competitor was trained with --max-minutes 105, then resumed with 65)."""
    command = "reggan " + shlex.join(sys.argv[1:])
    if not state.is_file() or not out.is_file():
        return command
    from reggan.checkpoint import CheckpointError, read_metadata

    try:
        earlier = read_metadata(out).get("training_command")
    except CheckpointError:
        return command
    return f"{earlier}, resumed with {command}" if earlier else command


def run_train_competitor(args, config, prepared: Path, device: str):
    """The StarGAN-style competitor of the evaluation: trained on the same crops with the refiner's training loop, but
    built as its authors built it, from the aligned face and the label alone (none of our warp, regression layer or
    familiarity gate)."""
    from reggan.checkpoint import save_synthesizer
    from reggan.networks import Synthesizer
    from training.prepare import read_manifest
    from training.train_refiner import STATE_NAME, train_refiner

    settings = config["refine"]
    synthesizer = Synthesizer(config["model"]["expressions"], config["model"]["resolution"], generator="stargan",
                              width=settings.get("width", 32), generator_scale=settings.get("scale", 1))
    out = resolve_path(args.out or "cache/stargan.safetensors")
    work_dir = resolve_path(args.work_dir or "cache/stargan")
    meta = {"stages": ["stargan"], "training_command": training_command(out, work_dir / STATE_NAME)}

    def save(model, step):
        save_synthesizer(out, model, steps=step, batch=settings["batch"], device=device, **meta)

    train_refiner(synthesizer.train(), read_manifest(prepared, "train"), settings, work_dir, device,
                  max_minutes=args.max_minutes, on_checkpoint=save)
    print(f"wrote {out}")


def run_distill(args, config, prepared: Path):
    """A narrower refiner taught to reproduce the teacher's (training/distill_refiner.py), saved as a refiner
    variant beside the teacher: NAME-lite.safetensors is what ``[runtime].refiner = "lite"`` loads."""
    from reggan.checkpoint import load_synthesizer, save_refiner_variant
    from training.distill_refiner import STATE_NAME, distill_refiner, narrower
    from training.prepare import read_manifest

    config = with_overrides(config, "distill", {"width": args.width, "steps": args.steps, "batch": args.batch})
    if args.device == "cuda":
        raise UserError("reggan train distill runs on the CPU (it is meant for, and fast enough on, one)")
    teacher_path = checkpoint_path(config, args.teacher)
    teacher = load_synthesizer(teacher_path)
    if "base" in teacher.metadata:
        raise UserError(f"{teacher_path} is itself a refiner variant: distill from the checkpoint it sits on")
    rows = read_manifest(prepared, "train")
    crops = sorted({Path(row["neutral"]) for row in rows} | {Path(row["target"]) for row in rows})
    out = resolve_path(args.out) if args.out else lite_path(teacher_path)
    if out.resolve().parent != teacher_path.resolve().parent:  # said now, not at the first checkpoint
        raise UserError(f"--out {out}: a lite refiner is stored beside its teacher, in {teacher_path.parent}")
    settings = config["distill"]
    work_dir = resolve_path(args.work_dir or "cache/distill")
    meta = {"stages": [*teacher.metadata.get("stages", []), "distill"],
            "training_command": training_command(out, work_dir / STATE_NAME)}

    def save(model, step):
        save_refiner_variant(out, model, teacher_path, steps=step, **meta)

    distill_refiner(teacher, narrower(teacher, settings["width"]), crops, settings, work_dir,
                    max_minutes=args.max_minutes, on_checkpoint=save)
    print(f"wrote {out}")


def placements(prepared: Path, aligner, bend: bool):
    """Prepared crop path -> its keep mask (reggan/keep.py: open mouth, closed eyes), its bend onto the template
    (reggan/anchoring.py; None when ``bend`` is off) and its open mouth alone, from the landmarks `reggan prepare`
    stored, so the evaluation feeds the model what the tool would. A crop without stored landmarks (a folder
    assembled by hand) keeps nothing and is not bent."""
    import functools

    import numpy as np

    from reggan.keep import joined, keep_parts
    from training.prepare import read_landmarks

    try:
        landmarks = read_landmarks(prepared)
    except FileNotFoundError:
        landmarks = {}
    resolution = aligner.resolution

    # Each neutral photo is asked for once per method and expression: its mask and bend are made once.
    @functools.lru_cache(maxsize=None)
    def placement_of(path):
        points = landmarks.get(Path(path))
        if points is None:
            return np.zeros((resolution, resolution), np.float32), None, None
        open_mouth, closed_eyes = keep_parts(np.asarray(points), resolution)
        mask = joined(open_mouth, closed_eyes)
        for shared in (mask, open_mouth):
            shared.setflags(write=False)  # shared by every caller from now on
        return mask, aligner.bend(np.asarray(points)) if bend else None, open_mouth

    return placement_of


def refiner_weights(path: Path) -> dict:
    """Refiner tensors from a full checkpoint (``refiner.*`` entries) or a refiner-only safetensors file."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    prefixed = {name[len("refiner."):]: value.float() for name, value in tensors.items() if name.startswith("refiner.")}
    return prefixed or {name: value.float() for name, value in tensors.items()}


def competitor_training(metadata: dict, path: str) -> dict:
    """How a competitor row was trained, from its checkpoint's header, so the report can say how much it got."""
    return {"checkpoint": path, "generator": metadata.get("generator"), "steps": metadata.get("steps"),
            "batch": metadata.get("batch"), "device": metadata.get("device"),
            "resolution": metadata["resolution"] // metadata.get("generator_scale", 1),
            "training_command": metadata.get("training_command")}


def run_eval(args, config):
    """Every section of the report in turn; the numbers so far are kept in OUT/results.partial.json after each, so
    a failure late in a long run loses nothing already measured."""
    import copy
    import json

    from reggan.alignment import Aligner
    from reggan.backends import TorchBackend
    from reggan.checkpoint import load_synthesizer
    from reggan.images import read_rgb
    from reggan.trackers import make_tracker
    from training import evaluate as ev
    from training import report
    from training.prepare import read_manifest

    out_dir = resolve_path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict = {}

    def keep(section: str, value) -> None:
        results[section] = value
        (out_dir / "results.partial.json").write_text(json.dumps(results, indent=1))

    # The split is checked before any model is loaded: a wrong --split fails at once.
    prepared = resolve_path(args.prepared or config["data"]["prepared"])
    rows = read_manifest(prepared, args.split)
    if not rows:
        raise UserError(f"{prepared / 'manifest.csv'} has no {args.split!r} rows: run `reggan prepare` again (a "
                        "manifest written before [data.validation] existed has no 'val' split)")
    results["split"] = args.split
    checkpoint = checkpoint_path(config, args.checkpoint)
    synthesizer = load_synthesizer(checkpoint)
    # The lite refiner distilled from this checkpoint, when there is one: its own row, for what it costs in quality.
    extra = {ev.LITE: load_synthesizer(lite_path(checkpoint))} if lite_path(checkpoint).is_file() else {}
    for item, asked in [*((item, False) for item in config.get("eval", {}).get("baselines", [])),
                        *((item, True) for item in args.baseline)]:
        name, _, path = item.partition("=")
        if not path:
            raise UserError(f"--baseline wants NAME=CHECKPOINT, got {item!r}")
        if not asked and not resolve_path(path).is_file():
            print(f"note: no {name} row: {path} ([eval].baselines) is not there")
            continue
        extra[name] = load_synthesizer(resolve_path(path))
        results.setdefault("competitors", {})[name] = competitor_training(extra[name].metadata, path)
    methods = ev.build_methods(synthesizer, extra)
    expressions = synthesizer.expressions[1:]
    aligner = Aligner(synthesizer.resolution)
    tracker = make_tracker(config["tracker"]["backend"])

    bend = bending(config, args)
    placement_of = placements(prepared, aligner, bend)
    keep("held_out", ev.evaluate(rows, methods, expressions, distribution=not args.no_distribution,
                                 placement_of=placement_of))
    print(report.markdown_table(results["held_out"]))
    held_out_faces = [(read_rgb(p), *placement_of(p)) for p in sorted({str(r["neutral"]) for r in rows})[::12][:3]]

    ood_paths = [p for item in args.ood for p in (sorted(Path(item).glob("*.jpg")) + sorted(Path(item).glob("*.png"))
                                                  if Path(item).is_dir() else [Path(item)])]
    if ood_paths:
        keep("ood", ev.evaluate_stills(ood_paths, methods, expressions, aligner, tracker, bend))

    if args.videos:
        regression = copy.deepcopy(synthesizer)
        regression.use_refiner = False
        backends = {"regression only": TorchBackend(regression), ev.FULL: TorchBackend(synthesizer)}
        backends.update({name: TorchBackend(model) for name, model in extra.items()})
        smoothing = config["edit"]["smoothing"]  # scored as the tool delivers video
        seconds = bend_time(config, args)
        keep("flicker", ev.evaluate_flicker(args.videos, backends, tracker, smoothing=smoothing,
                                            max_frames=args.video_frames, unsmoothed=(ev.FULL,), bend_time=seconds))
        # Held-out aligned crops at 384 px: in a 640x480 frame the face is then about the size of a webcam's.
        moving = [cv2.resize(face, (384, 384), interpolation=cv2.INTER_CUBIC) for face, *_ in held_out_faces]
        keep("synthetic_motion", ev.evaluate_synthetic_motion(moving, backends, tracker, smoothing=smoothing,
                                                              bend_time=seconds))

    # Two held-out and two out-of-distribution faces: enough to see each method, small enough to commit.
    sheet_inputs = held_out_faces[:2] + ev.aligned_faces(ood_paths[:2], aligner, tracker, bend)
    sheet = ev.contact_sheet(sheet_inputs, methods, expressions) if sheet_inputs else None
    machine = f"{platform.machine()} CPU, {os.cpu_count()} cores, Python {platform.python_version()}"
    # Only the bundled model's misses are written up in the model card; another checkpoint's are for its trainer.
    note = ("What was tried to close these gaps: MODEL_CARD.md (Results, Known limitations)."
            if args.checkpoint is None else "")
    written = report.write_report(results, out_dir, "reggan " + shlex.join(sys.argv[1:]), machine, sheet,
                                  shortfall_note=note)
    (out_dir / "results.partial.json").unlink(missing_ok=True)
    print(f"wrote {written}")
