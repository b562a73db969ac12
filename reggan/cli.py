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
  reggan eval --baseline "StarGAN-style (our retraining)=cache/stargan.safetensors" \\
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
        if name in ("edit", "animate", "video", "batch", "live", "export", "bench"):
            sub.add_argument("--regression-only", action="store_true",
                             help="skip the refiner: the intermediate representation alone, ~15x faster on a CPU")
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
    for key in ("loss_l1", "loss_coarse", "loss_adversarial", "loss_classification", "loss_identity",
                "lr_generator", "lr_discriminator"):
        train.add_argument("--" + key.replace("_", "-"), type=float, help=f"[refine].{key}")
    train.add_argument("--coarse-pool", type=int, help="[refine].coarse_pool")
    train.add_argument("--init-refiner", help="start stage 2 from these refiner weights (a checkpoint or refiner file)")
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
    edit.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"],
                        help="[runtime].precision: auto = fp16 on CUDA, bf16 on CPUs with AMX, else fp32")

    evaluate = command("eval", "score copy-the-input, regression only and full RegGAN on held-out people")
    evaluate.add_argument("--prepared", help="prepared data folder (its 'eval' split is used)")
    evaluate.add_argument("--checkpoint", help="model (default: the bundled one)")
    evaluate.add_argument("--baseline", action="append", default=[], metavar="NAME=CHECKPOINT",
                          help="another checkpoint to score as its own row")
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
    animate.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"],
                        help="[runtime].precision: auto = fp16 on CUDA, bf16 on CPUs with AMX, else fp32")

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
    bench.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"],
                        help="[runtime].precision: auto = fp16 on CUDA, bf16 on CPUs with AMX, else fp32")
    bench.add_argument("--soak", type=int, help="also run this many frames of --video through the loop, reporting RSS")
    bench.add_argument("--live", action="store_true", help="also replay --video as a 30 fps camera through the live loop")

    def frame_loop_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--expression", default="happy")
        sub.add_argument("--intensity", type=float)
        sub.add_argument("--ramp", type=float, default=0.5, help="seconds to move between expressions")
        sub.add_argument("--max-faces", type=int, help="[tracker].max_faces")
        sub.add_argument("--detect-every", type=int, help="[tracker].detect_every")
        sub.add_argument("--min-face", type=float, help="[tracker].min_face")
        sub.add_argument("--smoothing", type=float, default=0.05, help="time constant (s) of the output smoothing")
        sub.add_argument("--checkpoint")
        sub.add_argument("--tracker", choices=["dlib", "face-alignment"])
        sub.add_argument("--backend", choices=["auto", "torch", "onnxruntime", "tensorrt"])
        sub.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"],
                         help="[runtime].precision: auto = fp16 on CUDA, bf16 on CPUs with AMX, else fp32")
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

    refine_keys = ("steps", "batch", "loss_l1", "loss_coarse", "loss_adversarial", "loss_classification",
                   "loss_identity", "lr_generator", "lr_discriminator", "coarse_pool")
    config = with_overrides(config, "refine", {key: getattr(args, key) for key in refine_keys})
    device = args.device or config["runtime"]["device"]
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but this PyTorch build sees no CUDA GPU")
    stage1 = load_synthesizer(regression_path)
    synthesizer = Synthesizer(stage1.expressions[1:], stage1.resolution, stage1.regression.kernel,
                              generator=args.generator)
    synthesizer.regression.load_state_dict(stage1.regression.state_dict())
    if args.init_refiner:
        synthesizer.refiner.load_state_dict(refiner_weights(resolve_path(args.init_refiner)))
    out = resolve_path(args.out or config["model"]["checkpoint"])
    meta = {"stages": ["regression", "refine"], "ridge_lambda": stage1.metadata.get("ridge_lambda"),
            "training_command": "reggan " + shlex.join(sys.argv[1:])}

    def save(model, step):
        save_synthesizer(out, model, steps=step, **meta)

    train_refiner(synthesizer.train(), read_manifest(prepared, "train"), config["refine"],
                  resolve_path(args.work_dir), device, max_minutes=args.max_minutes, on_checkpoint=save)
    print(f"wrote {out}")


def refiner_weights(path: Path) -> dict:
    """Refiner tensors from a full checkpoint (``refiner.*`` entries) or a refiner-only safetensors file."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    prefixed = {name[len("refiner."):]: value.float() for name, value in tensors.items() if name.startswith("refiner.")}
    return prefixed or {name: value.float() for name, value in tensors.items()}


def load_model(config, args):
    from reggan.checkpoint import load_synthesizer

    synthesizer = load_synthesizer(checkpoint_path(config, args.checkpoint), args.device or config["runtime"]["device"])
    synthesizer.use_refiner = not getattr(args, "regression_only", False)
    return synthesizer


def make_editor(config, args):
    from reggan.backends import make_backend
    from reggan.editor import PhotoEditor
    from reggan.trackers import make_tracker

    device = args.device or config["runtime"]["device"]
    backend = make_backend(args.backend or config["runtime"]["backend"], load_model(config, args),
                           checkpoint_path(config, args.checkpoint), device,
                           getattr(args, "precision", None) or config["runtime"]["precision"])
    tracker = make_tracker(args.tracker or config["tracker"]["backend"], upsample=config["tracker"].get("upsample", 0))
    return PhotoEditor(backend, tracker, config["edit"]["feather"], config["edit"]["max_intensity"])


def clamped_intensity(config, args) -> float:
    intensity = config["edit"]["intensity"] if args.intensity is None else args.intensity
    return float(min(max(intensity, 0.0), config["edit"]["max_intensity"]))


def run_animate(args, config):
    from live.animate import animate_still
    from live.program import ExpressionProgram, parse_program
    from live.sinks import VideoFileSink
    from reggan.images import read_rgb

    image = read_rgb(args.image)
    program = ExpressionProgram(parse_program(args.program), args.ramp, clamped_intensity(config, args))
    editor = make_editor(config, args)
    with VideoFileSink(args.out, args.fps, args.codec) as sink:
        frames = animate_still(image, editor, program, args.fps, sink)
    print(f"wrote {args.out} ({frames} frames, {program.duration:.1f} s)")


def make_processor(config, args, controller, editor=None):
    """A fresh frame processor (its own tracks and smoothing state); pass ``editor`` to reuse a loaded model."""
    from live.processor import FrameProcessor
    from live.tracker import FaceTracker

    editor = editor or make_editor(config, args)
    for name in controller.expressions:
        editor.label_of(name)  # a clear error before any frame is read
    tracking = with_overrides(config, "tracker", {"max_faces": args.max_faces, "detect_every": args.detect_every,
                                                  "min_face": args.min_face})["tracker"]
    tracker = FaceTracker(editor.tracker, tracking["detect_every"], tracking["max_faces"], tracking["min_face"])
    return FrameProcessor(tracker, editor.backend, controller, config["edit"]["feather"],
                          config["edit"]["max_intensity"], args.smoothing)


def make_controller(config, args):
    from live.control import ExpressionController
    from live.program import ExpressionProgram, parse_program

    intensity = clamped_intensity(config, args)
    program = getattr(args, "program", None)
    if program:
        return ExpressionProgram(parse_program(program), args.ramp, intensity)
    return ExpressionController(args.expression, intensity, args.ramp)


def process_video_file(config, args, source_path, out_path, editor=None) -> dict:
    from live.loop import run_file
    from live.sinks import ImageSequenceSink, VideoFileSink
    from live.sources import VideoFileSource

    processor = make_processor(config, args, make_controller(config, args), editor)
    with VideoFileSource(source_path) as source:
        if getattr(args, "image_sequence", False):
            sink = ImageSequenceSink(out_path)
        else:
            sink = VideoFileSink(out_path, source.fps, args.codec, audio_from=source.audio,
                                 time_base=source.video.time_base, size=(source.video.width, source.video.height))
        with sink:
            counts = run_file(source, processor, sink, show_progress=sys.stderr.isatty())
    return counts


def run_video(args, config):
    import time as clock

    started = clock.perf_counter()
    counts = process_video_file(config, args, args.input, args.out)
    seconds = clock.perf_counter() - started
    note = f", {counts['decode_errors']} damaged packets skipped" if counts["decode_errors"] else ""
    print(f"wrote {args.out} ({counts['frames']} frames in {seconds:.1f} s, "
          f"{counts['frames'] / max(seconds, 1e-9):.1f} fps{note})")


def run_batch(args, config):
    from live.sources import SourceError, videos_in

    videos = videos_in(args.input_dir)
    if not videos:
        raise UserError(f"no videos in {args.input_dir}")
    editor = make_editor(config, args)  # the model loads once; each file gets fresh tracks and smoothing
    failed = []
    for path in videos:
        out = Path(args.out) / (path.stem + ".mp4")
        try:
            counts = process_video_file(config, args, path, out, editor)
            print(f"ok      {path.name} -> {out} ({counts['frames']} frames)")
        except (SourceError, ValueError, OSError) as error:
            failed.append(path.name)
            print(f"FAILED  {path.name}: {error}", file=sys.stderr)
    print(f"{len(videos) - len(failed)} of {len(videos)} videos done" + (f"; failed: {', '.join(failed)}" if failed else ""))
    if failed:
        raise SystemExit(1)


def run_live(args, config):
    from live.loop import run_live as loop
    from live.sinks import VirtualCameraSink
    from live.sources import WebcamSource

    controller = make_controller(config, args)
    processor = make_processor(config, args, controller)
    if not (args.virtual_cam or args.preview):
        raise UserError("nothing to show the result on: add --virtual-cam and/or --preview")
    preview = PreviewWindow(controller, processor.synthesize.backend.expressions) if args.preview else None
    with WebcamSource(args.camera, args.width, args.height, args.fps) as camera:
        sink = VirtualCameraSink(args.width, args.height, args.fps) if args.virtual_cam else NullSink()
        with sink:
            result = loop(camera, processor, sink, preview, args.delay, args.stats)
    print(f"\nprocessed {result['frames']} frames at {result['fps']:.1f} fps; camera delivered "
          f"{camera.measured_fps:.1f} fps")


class NullSink:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def write(self, frame, pts=None):
        pass


class PreviewWindow:
    """OpenCV window: keys 1..9 pick an expression, + and - change intensity, q or Esc quits."""

    def __init__(self, controller, expressions):
        self.controller, self.expressions = controller, expressions

    def __call__(self, frame, stats) -> bool:
        import time as clock

        import cv2

        shown = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        cv2.putText(shown, f"{stats['fps']:.0f} fps {stats['latency_ms']:.0f} ms", (10, 30),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 255, 0), 2)
        cv2.imshow("reggan", shown)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            return False
        name, intensity = self.controller.target
        if ord("1") <= key < ord("1") + len(self.expressions):
            self.controller.set(self.expressions[key - ord("1")], intensity, clock.monotonic())
        elif key in (ord("+"), ord("=")):
            self.controller.set(name, min(intensity + 0.1, 1.5), clock.monotonic())
        elif key == ord("-"):
            self.controller.set(name, max(intensity - 0.1, 0.0), clock.monotonic())
        return True


def run_edit(args, config):
    from reggan.images import read_rgb, write_rgb

    image = read_rgb(args.photo)
    editor = make_editor(config, args)
    intensity = clamped_intensity(config, args)
    if args.expression == "all":
        result = editor.strip(image, intensity)
    else:
        editor.label_of(args.expression)  # fail on a bad name before the slow part
        result = editor.edit(image, args.expression, intensity)
    write_rgb(args.out, result)
    print(f"wrote {args.out}")


def run_eval(args, config):
    from reggan.alignment import Aligner
    from reggan.backends import TorchBackend
    from reggan.checkpoint import load_synthesizer
    from reggan.images import read_rgb
    from reggan.trackers import make_tracker
    from training import evaluate as ev
    from training.prepare import read_manifest

    synthesizer = load_synthesizer(checkpoint_path(config, args.checkpoint))
    extra = {}
    for item in args.baseline:
        name, _, path = item.partition("=")
        if not path:
            raise UserError(f"--baseline wants NAME=CHECKPOINT, got {item!r}")
        extra[name] = load_synthesizer(resolve_path(path))
    methods = ev.build_methods(synthesizer, extra)
    expressions = synthesizer.expressions[1:]
    rows = read_manifest(resolve_path(args.prepared or config["data"]["prepared"]), "eval")
    results = {"held_out": ev.evaluate(rows, methods, expressions, distribution=not args.no_distribution)}
    print(ev.markdown_table(results["held_out"]))
    tracker = make_tracker(config["tracker"]["backend"])
    stills = [p for item in args.ood for p in (sorted(Path(item).glob("*.jpg")) + sorted(Path(item).glob("*.png"))
                                               if Path(item).is_dir() else [Path(item)])]
    if stills:
        results["ood"] = ev.evaluate_stills(stills, methods, expressions, Aligner(synthesizer.resolution), tracker)
    if args.videos:
        regression = load_synthesizer(checkpoint_path(config, args.checkpoint))
        regression.use_refiner = False
        backends = {"regression only": TorchBackend(regression), "RegGAN (full)": TorchBackend(synthesizer)}
        backends.update({name: TorchBackend(model) for name, model in extra.items()})
        results["flicker"] = ev.evaluate_flicker(args.videos, backends, tracker, max_frames=args.video_frames)
    sheet_inputs = [read_rgb(p) for p in sorted({str(r["neutral"]) for r in rows})[::12][:3]]
    if args.videos:
        import cv2

        # Held-out aligned crops at 384 px: in a 640x480 frame the face is then about the size of a webcam's.
        stills = [cv2.resize(crop, (384, 384), interpolation=cv2.INTER_CUBIC) for crop in sheet_inputs]
        results["synthetic_motion"] = ev.evaluate_synthetic_motion(stills, backends, tracker)
    if stills:
        aligner = Aligner(synthesizer.resolution)
        for path in stills[:3]:
            from reggan.trackers import find_faces

            image = read_rgb(path)
            faces = find_faces(tracker, image)
            if faces:
                sheet_inputs.append(aligner.crop(image, aligner.matrix_for(faces[0])))
    sheet = ev.contact_sheet(sheet_inputs, methods, expressions) if sheet_inputs else None
    machine = f"{platform.machine()} CPU, {__import__('os').cpu_count()} cores, Python {platform.python_version()}"
    report = ev.write_report(results, resolve_path(args.out), "reggan " + shlex.join(sys.argv[1:]), machine, sheet)
    print(f"wrote {report}")


def run_export(args, config):
    from reggan.backends import exported_paths

    checkpoint = checkpoint_path(config, args.checkpoint)
    synthesizer = load_model(config, argparse.Namespace(checkpoint=args.checkpoint, device="cpu",
                                                        regression_only=args.regression_only))
    paths = exported_paths(checkpoint, synthesizer.use_refiner)
    if args.format == "onnx":
        from export.onnx_export import check_forward, export_onnx

        out = Path(args.out) if args.out else paths["onnx"]
        export_onnx(synthesizer, out)
        print(f"wrote {out}; checking it against PyTorch:")
        error = check_forward(synthesizer, out, tolerance=args.tolerance)
        print(f"parity OK: max |error| {error:.2e} <= {args.tolerance:.0e}")
        return
    from export.tensorrt_build import build_engine
    from reggan.tensorrt_runtime import TensorRTUnavailable, require_tensorrt

    try:
        require_tensorrt()
    except TensorRTUnavailable as why:
        raise UserError(str(why)) from why
    from reggan.backends import TensorRTBackend, ensure_onnx

    engine = build_engine(ensure_onnx(synthesizer, checkpoint), paths["engine_dir"], synthesizer.resolution,
                          args.fp16)
    print(f"engine: {engine}; checking it against PyTorch FP32:")
    from export.onnx_export import example_inputs

    face, expression, intensity = example_inputs(synthesizer, 4)
    import torch

    with torch.no_grad():
        expected = synthesizer(face, expression, intensity).numpy()
    got = TensorRTBackend(synthesizer, engine)(face.numpy(), expression.numpy(), intensity.numpy())
    error = float(abs(got - expected).max())
    limit = 2e-2 if args.fp16 else args.tolerance
    print(f"max |TensorRT - torch FP32| = {error:.2e} (limit {limit:.0e})")
    if error > limit:
        raise UserError(f"the TensorRT engine differs from PyTorch by {error:.2e}")


def run_bench(args, config):
    from export.benchmark import run_synthesizer_benchmark

    device = args.device or config["runtime"]["device"]
    synthesizer = load_model(config, argparse.Namespace(checkpoint=args.checkpoint, device="cpu",
                                                        regression_only=args.regression_only))
    default_backends = (["torch:fp32", "torch:fp16", "tensorrt"] if device == "cuda"
                        else ["torch:fp32", "torch:bf16", "onnxruntime"])
    results = run_synthesizer_benchmark(synthesizer, checkpoint_path(config, args.checkpoint),
                                        args.backends or default_backends, device, args.batches, args.repeats)
    if args.video:
        from export.benchmark import run_pipeline_benchmark
        from live.control import ExpressionController

        loop_args = argparse.Namespace(checkpoint=args.checkpoint, device=device, backend=args.backend,
                                       precision=args.precision, regression_only=args.regression_only, tracker=None, max_faces=1, detect_every=None, min_face=None, smoothing=0.05)
        processor = make_processor(config, loop_args, ExpressionController("happy", 1.0, 0.0))
        size = tuple(int(v) for v in args.resize.split("x")) if args.resize else None
        results["frame_loop"] = run_pipeline_benchmark(processor, args.video, args.frames, size, device=device)
        if args.live:
            import av
            import cv2

            from export.benchmark import run_live_benchmark

            with av.open(args.video) as container:
                clip = [f.to_ndarray(format="rgb24") for _, f in zip(range(300), container.decode(video=0))]
            if size:
                clip = [cv2.resize(frame, size) for frame in clip]
            processor.record_timings = False
            results["live"] = run_live_benchmark(processor, clip)
        if args.soak:
            from export.benchmark import run_soak

            processor.record_timings = False
            results["soak"] = run_soak(processor, args.video, args.soak)
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(results, indent=1))


def run_info(args, config):
    import json

    from reggan.checkpoint import read_metadata

    metadata = read_metadata(checkpoint_path(config, args.checkpoint))
    metadata.pop("template", None)
    print(json.dumps(metadata, indent=1))


HANDLERS = {"prepare": run_prepare, "train": run_train, "edit": run_edit, "animate": run_animate, "eval": run_eval,
            "export": run_export, "bench": run_bench, "info": run_info, "video": run_video, "batch": run_batch,
            "live": run_live}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from reggan.checkpoint import CheckpointError
    from reggan.editor import NoFaceError
    from reggan.images import ImageReadError
    from reggan.backends import BackendUnavailable
    from reggan.trackers import TrackerUnavailable

    from live.sources import SourceError

    expected = (UserError, CheckpointError, NoFaceError, ImageReadError, TrackerUnavailable, BackendUnavailable,
                SourceError, FileNotFoundError, ValueError)
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
