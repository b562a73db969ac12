"""The ``reggan`` command. Each subcommand's --help carries examples you can paste.

Flags have the names of the config.toml keys they override (``--ridge-lambda`` -> [regression].ridge_lambda).
This module is the front door only: it parses, then hands over to the command module of the package that does the
work (training/commands.py, live/commands.py, export/commands.py), imported only when its command runs.
"""

from __future__ import annotations

import argparse
import sys

from reggan.config import PRECISIONS, load_config
from reggan.errors import UserError
from reggan.from_config import checkpoint_path, clamped_intensity, make_editor

NO_BEND_HELP = ("[edit].bend = false: synthesize on the similarity-aligned face as it is, instead of bent onto the "
                "template's nose, eye corners and upper lip")
PRECISION_HELP = "[runtime].precision: auto = fp16 on CUDA, bf16 on CPUs with AMX or AVX-512 BF16, else fp32"

EXAMPLES = {
    "prepare": """examples:
  reggan prepare                                   # the sources listed in config.toml [data]
  reggan prepare --sources taiwanese:/data/taiwanese london:/data/london --prepared cache/prepared
  reggan prepare --sources pairs:/data/my_pairs.csv   # CSV columns: subject,expression,neutral,target
  reggan prepare --sources cfee:/data/CFEE_Database_230""",
    "train": """examples:
  reggan train regression                          # stage 1: closed-form ridge fit + 2 robust refits, minutes
  reggan train refine --device cuda                # stage 2: adversarial refiner (resumes if interrupted)
  reggan train refine --steps 200 --batch 4        # a short CPU run
  reggan train refine --regression reggan/models/default.safetensors --init-refiner OUT/refiner.safetensors \
      --steps 0 --out cache/gpu.safetensors          # a refiner trained by benchmarks/gpu_check.py, as a checkpoint
  reggan train distill                             # a width-16 refiner reproducing the bundled one, for CPUs
  torchrun --nproc-per-node 4 -m reggan.cli train refine --device cuda   # several GPUs (DDP)""",
    "edit": """examples:
  reggan edit photo.jpg --expression happy -o happy.png
  reggan edit photo.jpg --expression surprised --intensity 0.6 -o surprised.png
  reggan edit photo.jpg --expression all -o strip.png   # every expression side by side""",
    "eval": """examples:
  reggan eval --out cache/eval                     # held-out people of the prepared data, with the bundled
                                                   # StarGAN-style competitor ([eval].baselines) beside our rows
  reggan eval --split val --checkpoint cache/candidate.safetensors --no-distribution --out cache/val
                                                   # validation people: choose between models without the held-out
  reggan eval --baseline "StarGAN-style, longer=cache/stargan.safetensors" \\
      --ood ../data/ood --videos ../data/video/d3.mp4 ../data/video/d20.mp4 --out docs""",
    "animate": """examples:
  reggan animate avatar.png -o avatar.mp4 --program neutral:1,happy:2,surprised:2
  reggan animate painting.jpg -o smile.mp4 --program neutral:0.5,happy:3 --intensity 0.8 --fps 25""",
    "export": """examples:
  reggan export onnx                               # bundled model -> ~/.cache/reggan/..., parity-checked
  reggan export onnx --checkpoint my.safetensors -o my.onnx
  reggan export tensorrt --fp16                    # needs TensorRT 10 and an NVIDIA GPU""",
    "bench": """examples:
  reggan bench                                     # torch and onnxruntime on the CPU
  reggan bench --device cuda --backends torch tensorrt --json bench.json
  reggan bench --video talk.mp4 --resize 640x480 --frames 300   # per-stage table of the frame loop
  reggan bench --backends torch --video talk.mp4 --soak 5000      # memory over a long run""",
    "video": """examples:
  reggan video talk.mp4 -o talk_happy.mp4 --expression happy
  reggan video talk.mp4 -o talk.mp4 --program neutral:2,surprised:1.5,happy:3 --intensity 0.8
  reggan video talk.mov -o talk.mkv --expression sad --codec vp9 --max-faces 3""",
    "batch": """examples:
  reggan batch clips/ -o clips_happy/ --expression happy     # every video in clips/; bad files are reported""",
    "live": """examples:
  reggan live --camera 0 --expression happy --virtual-cam            # into a video call
  reggan live --camera /dev/video2 --expression surprised --intensity 0.7 --preview
  reggan live --camera 0 --expression happy --virtual-cam --delay 0.1   # delay the mic by 100 ms to match""",
    "info": """examples:
  reggan info                                      # describe the bundled default model
  reggan info --checkpoint my_model.safetensors""",
}


def frame_interval(text: str) -> int | str:
    """--synthesize-every: a whole number of frames (1 or more), or auto."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"wants a whole number of frames, 1 or more, or auto; got {text!r}")
    return value


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
        if name in ("edit", "animate", "video", "batch", "live", "export", "bench"):
            sub.add_argument("--regression-only", action="store_true",
                             help="skip the refiner: the intermediate representation alone, ~15x faster on a CPU")
            sub.add_argument("--refiner", choices=["auto", "full", "lite"],
                             help="[runtime].refiner: full, or the narrow one distilled from it for CPUs (lite); "
                                  "auto: lite for video on a CPU without bfloat16 hardware")
        return sub

    prepare = command("prepare", "detect, align and cache training crops")
    prepare.add_argument("--sources", nargs="+", help="KIND:PATH, KIND one of taiwanese, london, cfee, pairs")
    prepare.add_argument("--prepared", help="output folder for crops, manifest.csv and report.txt")
    prepare.add_argument("--rebuild-template", action="store_true", help="recompute reggan/template_68.json")

    train = command("train", "fit the regression layer (stage 1), train the refiner (stage 2) or distill a narrower "
                             "refiner from a trained one (for CPUs)")
    train.add_argument("stage", choices=["regression", "refine", "distill"])
    train.add_argument("--prepared", help="prepared data folder")
    train.add_argument("--kernel", type=int, help="regression receptive field k")
    train.add_argument("--ridge-lambda", type=float, help="ridge penalty lambda (pulls the weights towards the identity map)")
    train.add_argument("--robust-rounds", type=int,
                       help="robust refits of the regression layer (0: plain least squares; see [regression])")
    train.add_argument("--regression", default="cache/regression.safetensors", help="stage-1 checkpoint (in/out)")
    train.add_argument("--out", help="final checkpoint (stage 2; default: config [model].checkpoint; distill: "
                                     "NAME-lite.safetensors beside the teacher)")
    train.add_argument("--work-dir", help="resumable state, losses and sample grids (default: cache/refine, "
                                          "cache/distill)")
    train.add_argument("--teacher", help="distill: the checkpoint to reproduce (default: config [model].checkpoint)")
    train.add_argument("--width", type=int, help="distill: [distill].width, the narrow refiner's channels")
    train.add_argument("--steps", type=int)
    train.add_argument("--batch", type=int)
    train.add_argument("--device", choices=["cpu", "cuda"])
    train.add_argument("--generator", choices=["refiner", "stargan"], default="refiner",
                       help="stargan: the StarGAN-style competitor of `reggan eval`, from the aligned face alone "
                            "(no stage-1 checkpoint; [competitor] settings; default out cache/stargan.safetensors)")
    for key in ("loss_l1", "loss_coarse", "loss_adversarial", "loss_classification", "loss_identity",
                "lr_generator", "lr_discriminator"):
        train.add_argument("--" + key.replace("_", "-"), type=float, help=f"[refine].{key}")
    train.add_argument("--coarse-pool", type=int, help="[refine].coarse_pool")
    train.add_argument("--detail-scale", type=int,
                       help="[refine].detail_scale: the refiner may change only detail finer than this (pixels; 0: all)")
    train.add_argument("--decoder", choices=["resize", "transpose"],
                       help="[refine].decoder: the refiner's upsampling (transpose: to fine-tune the bundled refiner)")
    train.add_argument("--init-refiner", help="start stage 2 from these refiner weights (a checkpoint or refiner file); "
                                              "with --steps 0, only compose them with --regression into --out")
    train.add_argument("--max-minutes", type=float, help="stop (and checkpoint) after this long; rerun to resume")

    edit = command("edit", "change the expression of the faces in a photo")
    edit.add_argument("photo")
    edit.add_argument("--expression", required=True, help="an expression name, or 'all' for a strip")
    edit.add_argument("--intensity", type=float, help="0 = unchanged, 1 = full expression (clamped to max_intensity)")
    edit.add_argument("-o", "--out", required=True, help="output image (.png or .jpg)")
    edit.add_argument("--checkpoint", help="model (default: the bundled one)")
    edit.add_argument("--tracker", choices=["dlib", "face-alignment"])
    edit.add_argument("--device", choices=["cpu", "cuda"])
    edit.add_argument("--backend", choices=["auto", "torch", "onnxruntime", "tensorrt"])
    edit.add_argument("--colour-match", action="store_true", default=None,
                      help="[edit].colour_match: give the synthesized face the input face's colour")
    edit.add_argument("--no-bend", action="store_true", help=NO_BEND_HELP)
    edit.add_argument("--precision", choices=PRECISIONS, help=PRECISION_HELP)

    evaluate = command("eval", "score copy-the-input, regression only, full RegGAN and competitors on held-out people")
    evaluate.add_argument("--prepared", help="prepared data folder")
    evaluate.add_argument("--no-bend", action="store_true", help=NO_BEND_HELP)
    evaluate.add_argument("--split", choices=["eval", "val"], default="eval",
                          help="eval: the held-out people (reported numbers); val: the validation people (choosing "
                               "between models)")
    evaluate.add_argument("--checkpoint", help="model (default: the bundled one)")
    evaluate.add_argument("--baseline", action="append", default=[], metavar="NAME=CHECKPOINT",
                          help="another checkpoint to score as its own row (beside those of [eval].baselines)")
    evaluate.add_argument("--out", default="docs", help="folder for results.md, results.json, contact_sheet.png")
    evaluate.add_argument("--ood", nargs="*", default=[], help="out-of-distribution stills (files or folders)")
    evaluate.add_argument("--videos", nargs="*", default=[], help="clips for the flicker metric")
    evaluate.add_argument("--video-frames", type=int, default=90)
    evaluate.add_argument("--no-distribution", action="store_true", help="skip FID, KID and NIQE (faster)")

    animate = command("animate", "animate a still face with an expression program, to a video file")
    animate.add_argument("image")
    animate.add_argument("-o", "--out", required=True, help="output video (.mp4, .mkv, .webm)")
    animate.add_argument("--program", required=True, help="EXPRESSION:SECONDS,... e.g. neutral:1,happy:2")
    animate.add_argument("--intensity", type=float)
    animate.add_argument("--ramp", type=float, default=0.4, help="seconds to cross-fade between expressions")
    animate.add_argument("--fps", type=float, default=30.0)
    animate.add_argument("--codec", choices=["h264", "vp9", "av1"], default="h264")
    animate.add_argument("--checkpoint")
    animate.add_argument("--tracker", choices=["dlib", "face-alignment"])
    animate.add_argument("--device", choices=["cpu", "cuda"])
    animate.add_argument("--backend", choices=["auto", "torch", "onnxruntime", "tensorrt"])
    animate.add_argument("--precision", choices=PRECISIONS, help=PRECISION_HELP)
    animate.add_argument("--no-bend", action="store_true", help=NO_BEND_HELP)

    export = command("export", "export the synthesizer to ONNX (checked against PyTorch) or a TensorRT engine")
    export.add_argument("format", choices=["onnx", "tensorrt"])
    export.add_argument("--checkpoint")
    export.add_argument("-o", "--out", help="ONNX file (default: the cache folder the backends read)")
    export.add_argument("--check-forward", action="store_true", default=True,
                        help="compare the export with PyTorch and fail above --tolerance (always on)")
    export.add_argument("--tolerance", type=float, default=1e-4)
    export.add_argument("--fp16", action="store_true", help="TensorRT: build an FP16 engine (reductions stay FP32)")

    bench = command("bench", "synthesizer throughput and latency per backend at batch 1, 8 and 32")
    bench.add_argument("--checkpoint")
    bench.add_argument("--backends", nargs="+",
                       help="NAME[:PRECISION] each (default: torch:fp32 torch:bf16 onnxruntime on a CPU, "
                            "torch:fp32 torch:fp16 tensorrt on CUDA)")
    bench.add_argument("--device", choices=["cpu", "cuda"])
    bench.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    bench.add_argument("--repeats", type=int, default=10)
    bench.add_argument("--json", help="also write the results here")
    bench.add_argument("--video", help="also time the whole frame loop per stage on this clip")
    bench.add_argument("--frames", type=int, default=200)
    bench.add_argument("--resize", help="WxH: scale the clip's frames first (e.g. 640x480 for the live target)")
    bench.add_argument("--backend", default="auto", help="backend for the frame-loop timing")
    bench.add_argument("--precision", choices=PRECISIONS, help=PRECISION_HELP)
    bench.add_argument("--soak", type=int, help="also run this many frames of --video through the loop, reporting RSS")
    bench.add_argument("--live", action="store_true", help="also replay --video as a 30 fps camera through the live loop")
    bench.add_argument("--synthesize-every", type=frame_interval,
                       help="[runtime].synthesize_every for the frame loop: synthesize every Nth frame (or auto)")

    def frame_loop_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--expression", default="happy")
        sub.add_argument("--intensity", type=float)
        sub.add_argument("--ramp", type=float, default=0.5, help="seconds to move between expressions")
        sub.add_argument("--max-faces", type=int, help="[tracker].max_faces")
        sub.add_argument("--detect-every", type=int, help="[tracker].detect_every")
        sub.add_argument("--min-face", type=float, help="[tracker].min_face")
        sub.add_argument("--smoothing", type=float, help="[edit].smoothing: time constant (s) of the video smoothing")
        sub.add_argument("--synthesize-every", type=frame_interval,
                         help="[runtime].synthesize_every: synthesize every Nth frame, carry the change between "
                              "(auto: every frame, but every 2nd live where one synthesis takes over 25 ms)")
        sub.add_argument("--colour-match", action="store_true", default=None,
                         help="[edit].colour_match: give the synthesized face the input face's colour")
        sub.add_argument("--no-bend", action="store_true", help=NO_BEND_HELP)
        sub.add_argument("--checkpoint")
        sub.add_argument("--tracker", choices=["dlib", "face-alignment"])
        sub.add_argument("--backend", choices=["auto", "torch", "onnxruntime", "tensorrt"])
        sub.add_argument("--precision", choices=PRECISIONS, help=PRECISION_HELP)
        sub.add_argument("--device", choices=["cpu", "cuda"])

    video = command("video", "change the expression in a video file, keeping its audio in sync")
    video.add_argument("input")
    video.add_argument("-o", "--out", required=True)
    video.add_argument("--program", help="EXPRESSION:SECONDS,... instead of one --expression")
    video.add_argument("--codec", choices=["h264", "vp9", "av1"], default="h264")
    video.add_argument("--image-sequence", action="store_true", help="write numbered PNGs into the -o folder")
    frame_loop_options(video)

    batch = command("batch", "process every video of a folder; continues past bad files")
    batch.add_argument("input_dir")
    batch.add_argument("-o", "--out", required=True, help="output folder")
    batch.add_argument("--program")
    batch.add_argument("--codec", choices=["h264", "vp9", "av1"], default="h264")
    frame_loop_options(batch)

    live = command("live", "webcam in, changed expression out to a virtual camera and/or a preview window")
    live.add_argument("--camera", default="0", help="index or device path")
    live.add_argument("--width", type=int, default=1280)
    live.add_argument("--height", type=int, default=720)
    live.add_argument("--fps", type=float, default=30.0)
    live.add_argument("--virtual-cam", action="store_true")
    live.add_argument("--preview", action="store_true", help="window; keys 1-7 pick an expression, +/- intensity, q quits")
    live.add_argument("--delay", type=float, default=0.0, help="fixed output delay in seconds (delay the mic as much)")
    live.add_argument("--stats", action="store_true", help="print fps and latency")
    frame_loop_options(live)

    info = command("info", "describe a checkpoint")
    info.add_argument("--checkpoint")
    return parser


def run_edit(args, config):
    from reggan.images import flatten, read_rgb_alpha, write_rgb

    image, alpha = read_rgb_alpha(args.photo)  # a cut-out avatar keeps its transparency
    editor = make_editor(config, args, frame_loop=False)
    intensity = clamped_intensity(config, args)
    if args.expression == "all":
        image, alpha = flatten(image, alpha), None  # a strip of cut-outs is easier to read on white
        result = editor.strip(image, intensity)
    else:
        editor.label_of(args.expression)  # fail on a bad name before the slow part
        result = editor.edit(image, args.expression, intensity)
    write_rgb(args.out, result, alpha=alpha)
    print(f"wrote {args.out}")


def run_info(args, config):
    import json

    from reggan.checkpoint import read_metadata

    metadata = read_metadata(checkpoint_path(config, args.checkpoint))
    metadata.pop("template", None)
    print(json.dumps(metadata, indent=1))


# Command -> "module:function". The heavy stages live in their own packages and are imported only when their
# command runs, so `reggan edit` never loads the training code and reggan/ never imports live/ at import time.
HANDLERS = {"edit": "reggan.cli:run_edit", "info": "reggan.cli:run_info",
            "prepare": "training.commands:run_prepare", "train": "training.commands:run_train",
            "eval": "training.commands:run_eval",
            "video": "live.commands:run_video", "batch": "live.commands:run_batch", "live": "live.commands:run_live",
            "animate": "live.commands:run_animate",
            "export": "export.commands:run_export", "bench": "export.commands:run_bench"}


def handler(command: str):
    import importlib

    module, _, function = HANDLERS[command].partition(":")
    return getattr(importlib.import_module(module), function)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where Ctrl-C's KeyboardInterrupt would be: ``kill``, a closed terminal or a stopping
    container then finalise the output file the same way, instead of killing the process with its video half-muxed
    (an MP4 without its index does not play)."""

    def __init__(self, signal_number: int):
        super().__init__(signal_number)
        self.signal_number = signal_number


def stop_cleanly_on_termination() -> None:
    import signal

    def raise_terminated(signal_number, frame):
        raise Terminated(signal_number)

    for name in ("SIGTERM", "SIGHUP"):  # SIGHUP does not exist on Windows
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), raise_terminated)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stop_cleanly_on_termination()
    from reggan.checkpoint import CheckpointError
    from reggan.editor import NoFaceError
    from reggan.images import ImageReadError
    from reggan.backends import BackendUnavailable
    from reggan.trackers import TrackerUnavailable

    # UserError covers the stages' own expected failures too (a missing camera or a corrupt video: live.sources).
    # OSError: a file that cannot be read or written (a full disk, a path through a file); not a bug of ours.
    expected = (UserError, CheckpointError, NoFaceError, ImageReadError, TrackerUnavailable, BackendUnavailable,
                OSError, ValueError)
    try:
        config = load_config(args.config)
        handler(args.command)(args, config)
    except expected as error:
        print(f"reggan {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interruption:
        print(f"reggan {args.command}: interrupted", file=sys.stderr)
        # The shell's convention: 128 + the signal's number (Ctrl-C's SIGINT is 2).
        return 128 + getattr(interruption, "signal_number", 2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
