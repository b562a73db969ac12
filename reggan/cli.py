"""The ``reggan`` command. Each subcommand's --help carries examples you can paste.

Flags have the names of the config.toml keys they override (``--ridge-lambda`` -> [regression].ridge_lambda).
This module is the front door only: it parses, then hands over to the stage that does the work (imported lazily,
so ``reggan edit`` never loads the training code).
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
from pathlib import Path

from reggan.config import load_config, resolve_path, with_overrides

EXAMPLES = {
    "prepare": """examples:
  reggan prepare                                   # the sources listed in config.toml [data]
  reggan prepare --sources taiwanese:/data/taiwanese london:/data/london --prepared cache/prepared
  reggan prepare --sources pairs:/data/my_pairs.csv   # CSV columns: subject,expression,neutral,target
  reggan prepare --sources cfee:/data/CFEE_Database_230""",
    "train": """examples:
  reggan train regression                          # stage 1: closed-form ridge fit, ~1 min on 2 CPU cores
  reggan train refine --device cuda                # stage 2: adversarial refiner (resumes if interrupted)
  reggan train refine --steps 200 --batch 4        # a short CPU run
  torchrun --nproc-per-node 4 -m reggan.cli train refine --device cuda   # several GPUs (DDP)""",
    "edit": """examples:
  reggan edit photo.jpg --expression happy -o happy.png
  reggan edit photo.jpg --expression surprised --intensity 0.6 -o surprised.png
  reggan edit photo.jpg --expression all -o strip.png   # every expression side by side""",
    "eval": """examples:
  reggan eval                                      # held-out people of the prepared data -> docs/eval
  reggan eval --baseline stargan=cache/stargan.safetensors --out docs/eval""",
    "info": """examples:
  reggan info                                      # describe the bundled default model
  reggan info --checkpoint my_model.safetensors""",
}


class UserError(Exception):
    """An expected failure: printed as one line, exit code 2, no traceback."""


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="config file (default: config.toml at the project root)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reggan", description="Change the expression of faces in photos and video, keeping who they are.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  reggan edit photo.jpg --expression happy -o out.png\n  reggan <command> --help",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text, epilog=EXAMPLES.get(name),
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        add_common(sub)
        return sub

    prepare = command("prepare", "detect, align and cache training crops")
    prepare.add_argument("--sources", nargs="+", help="KIND:PATH, KIND one of taiwanese, london, cfee, pairs")
    prepare.add_argument("--prepared", help="output folder for crops, manifest.csv and report.txt")
    prepare.add_argument("--rebuild-template", action="store_true", help="recompute reggan/template_68.json")

    train = command("train", "fit the regression layer (stage 1) or train the refiner (stage 2)")
    train.add_argument("stage", choices=["regression", "refine"])
    train.add_argument("--prepared", help="prepared data folder")
    train.add_argument("--kernel", type=int, help="regression receptive field k")
    train.add_argument("--ridge-lambda", type=float, help="ridge penalty lambda")
    train.add_argument("--regression", default="cache/regression.safetensors", help="stage-1 checkpoint (in/out)")
    train.add_argument("--out", help="final checkpoint (stage 2; default: config [model].checkpoint)")
    train.add_argument("--work-dir", default="cache/refine", help="resumable state, losses and sample grids")
    train.add_argument("--steps", type=int)
    train.add_argument("--batch", type=int)
    train.add_argument("--device", choices=["cpu", "cuda"])
    train.add_argument("--generator", choices=["refiner", "stargan"], default="refiner",
                       help="stargan trains the StarGAN-style competitor with the same losses, for comparison")
    train.add_argument("--max-minutes", type=float, help="stop (and checkpoint) after this long; rerun to resume")

    edit = command("edit", "change the expression of the faces in a photo")
    edit.add_argument("photo")
    edit.add_argument("--expression", required=True, help="an expression name, or 'all' for a strip")
    edit.add_argument("--intensity", type=float, help="0 = unchanged, 1 = full expression (clamped to max_intensity)")
    edit.add_argument("-o", "--out", required=True, help="output image (.png or .jpg)")
    edit.add_argument("--checkpoint", help="model (default: the bundled one)")
    edit.add_argument("--tracker", choices=["dlib", "face-alignment"])
    edit.add_argument("--device", choices=["cpu", "cuda"])

    evaluate = command("eval", "score copy-the-input, regression only and full RegGAN on held-out people")
    evaluate.add_argument("--prepared", help="prepared data folder (its 'eval' split is used)")
    evaluate.add_argument("--checkpoint", help="model (default: the bundled one)")
    evaluate.add_argument("--baseline", action="append", default=[], metavar="NAME=CHECKPOINT",
                          help="another checkpoint to score as its own row")
    evaluate.add_argument("--out", default="docs/eval", help="folder for eval.md and eval.json")

    info = command("info", "describe a checkpoint")
    info.add_argument("--checkpoint")
    return parser


def checkpoint_path(config: dict, given: str | None) -> Path:
    return resolve_path(given or config["model"]["checkpoint"])


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
        from training.fit_regression import fit_regression, load_training_pairs

        config = with_overrides(config, "regression", {"kernel": args.kernel, "ridge_lambda": args.ridge_lambda})
        model, settings = config["model"], config["regression"]
        pairs = load_training_pairs(prepared, model["expressions"])
        layer = fit_regression(pairs, model["expressions"], model["resolution"], settings["kernel"],
                               settings["ridge_lambda"], settings["batch"])
        synthesizer = Synthesizer(model["expressions"], model["resolution"], settings["kernel"])
        synthesizer.regression.load_state_dict(layer.state_dict())
        save_synthesizer(regression_path, synthesizer, dtype=torch.float32, stages=["regression"],
                         ridge_lambda=settings["ridge_lambda"])
        print(f"wrote {regression_path}")
        return
    from training.prepare import read_manifest
    from training.train_refiner import train_refiner

    config = with_overrides(config, "refine", {"steps": args.steps, "batch": args.batch})
    device = args.device or config["runtime"]["device"]
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but this PyTorch build sees no CUDA GPU")
    stage1 = load_synthesizer(regression_path)
    synthesizer = Synthesizer(stage1.expressions[1:], stage1.resolution, stage1.regression.kernel,
                              generator=args.generator)
    synthesizer.regression.load_state_dict(stage1.regression.state_dict())
    out = resolve_path(args.out or config["model"]["checkpoint"])
    meta = {"stages": ["regression", "refine"], "ridge_lambda": stage1.metadata.get("ridge_lambda"),
            "training_command": "reggan " + shlex.join(sys.argv[1:])}

    def save(model, step):
        save_synthesizer(out, model, steps=step, **meta)

    train_refiner(synthesizer.train(), read_manifest(prepared, "train"), config["refine"],
                  resolve_path(args.work_dir), device, max_minutes=args.max_minutes, on_checkpoint=save)
    print(f"wrote {out}")


def load_model(config, args):
    from reggan.checkpoint import load_synthesizer

    return load_synthesizer(checkpoint_path(config, args.checkpoint), args.device or config["runtime"]["device"])


def run_edit(args, config):
    from reggan.editor import PhotoEditor
    from reggan.images import read_rgb, write_rgb
    from reggan.trackers import make_tracker

    image = read_rgb(args.photo)
    synthesizer = load_model(config, args)
    tracker = make_tracker(args.tracker or config["tracker"]["backend"], upsample=config["tracker"].get("upsample", 0))
    edit = config["edit"]
    editor = PhotoEditor(synthesizer, tracker, edit["feather"], edit["max_intensity"])
    intensity = edit["intensity"] if args.intensity is None else args.intensity
    if args.expression == "all":
        result = editor.strip(image, intensity)
    else:
        editor.label_of(args.expression)  # fail on a bad name before the slow part
        result = editor.edit(image, args.expression, intensity)
    write_rgb(args.out, result)
    print(f"wrote {args.out}")


def run_eval(args, config):
    from reggan.checkpoint import load_synthesizer
    from training.evaluate import build_methods, evaluate, markdown_table, write_report
    from training.prepare import read_manifest

    synthesizer = load_synthesizer(checkpoint_path(config, args.checkpoint))
    extra = {}
    for item in args.baseline:
        name, _, path = item.partition("=")
        if not path:
            raise UserError(f"--baseline wants NAME=CHECKPOINT, got {item!r}")
        extra[name] = load_synthesizer(resolve_path(path))
    rows = read_manifest(resolve_path(args.prepared or config["data"]["prepared"]), "eval")
    results = evaluate(rows, build_methods(synthesizer, extra), synthesizer.expressions[1:])
    machine = f"{platform.machine()} CPU, {__import__('os').cpu_count()} cores, Python {platform.python_version()}"
    report = write_report(results, resolve_path(args.out), "reggan " + shlex.join(sys.argv[1:]), machine)
    print(markdown_table(results))
    print(f"wrote {report}")


def run_info(args, config):
    import json

    from reggan.checkpoint import read_metadata

    metadata = read_metadata(checkpoint_path(config, args.checkpoint))
    metadata.pop("template", None)
    print(json.dumps(metadata, indent=1))


HANDLERS = {"prepare": run_prepare, "train": run_train, "edit": run_edit, "eval": run_eval, "info": run_info}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from reggan.checkpoint import CheckpointError
    from reggan.editor import NoFaceError
    from reggan.images import ImageReadError
    from reggan.trackers import TrackerUnavailable

    expected = (UserError, CheckpointError, NoFaceError, ImageReadError, TrackerUnavailable, FileNotFoundError,
                ValueError)
    try:
        config = load_config(args.config)
        HANDLERS[args.command](args, config)
    except expected as error:
        print(f"reggan {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"reggan {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
