"""The export-side commands: ``reggan export onnx|tensorrt`` and ``reggan bench``.

reggan/cli.py parses the arguments and hands them here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from reggan.errors import UserError
from reggan.from_config import load_model, make_editor, model_path


def run_export(args, config):
    from reggan.backends import exported_paths

    model_args = argparse.Namespace(checkpoint=args.checkpoint, refiner=args.refiner, device="cpu",
                                    regression_only=args.regression_only)
    checkpoint = model_path(config, model_args, frame_loop=False)
    synthesizer = load_model(config, model_args, checkpoint)
    paths = exported_paths(checkpoint, synthesizer.use_refiner)
    if args.format == "onnx":
        from reggan.onnx_export import check_forward, export_onnx

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
    from reggan.onnx_export import example_inputs

    inputs = example_inputs(synthesizer, 4)
    import torch

    with torch.no_grad():
        expected = synthesizer(*inputs).numpy()
    got = TensorRTBackend(synthesizer, engine)(*(value.numpy() for value in inputs))
    error = float(abs(got - expected).max())
    limit = 2e-2 if args.fp16 else args.tolerance
    print(f"max |TensorRT - torch FP32| = {error:.2e} (limit {limit:.0e})")
    if error > limit:
        raise UserError(f"the TensorRT engine differs from PyTorch by {error:.2e}")


def run_bench(args, config):
    from export.benchmark import run_synthesizer_benchmark

    device = args.device or config["runtime"]["device"]
    model_args = argparse.Namespace(checkpoint=args.checkpoint, refiner=args.refiner, device=device,
                                    regression_only=args.regression_only)
    checkpoint = model_path(config, model_args)
    # Loaded on the CPU whatever the device: each backend moves its own copy to where it runs.
    synthesizer = load_model(config, model_args, checkpoint, device="cpu")
    default_backends = (["torch:fp32", "torch:fp16", "tensorrt"] if device == "cuda"
                        else ["torch:fp32", "torch:bf16", "onnxruntime"])
    results = run_synthesizer_benchmark(synthesizer, checkpoint,
                                        args.backends or default_backends, device, args.batches, args.repeats)
    if args.video:
        from export.benchmark import run_pipeline_benchmark
        from live.commands import make_processor
        from live.control import ExpressionController

        loop_args = argparse.Namespace(checkpoint=args.checkpoint, refiner=args.refiner, device=device,
                                       backend=args.backend, precision=args.precision,
                                       regression_only=args.regression_only, tracker=None, max_faces=1,
                                       detect_every=None, min_face=None, smoothing=None,
                                       synthesize_every=args.synthesize_every)
        editor = make_editor(config, loop_args)  # one model for the file-mode and the live timing
        processor = make_processor(config, loop_args, ExpressionController("happy", 1.0, 0.0), editor)
        size = tuple(int(v) for v in args.resize.split("x")) if args.resize else None
        results["frame_loop"] = run_pipeline_benchmark(processor, args.video, args.frames, size, device=device)
        if size is None:  # `reggan video` keeps a file's own size
            from export.benchmark import run_file_benchmark

            from reggan.cli import build_parser

            # `reggan video`'s own defaults (expression, ramp, codec, ...) under this run's model and loop choices,
            # so the timing follows that command when its defaults change.
            video_defaults = build_parser().parse_args(["video", args.video, "-o", "unused.mp4"])
            file_args = argparse.Namespace(**(vars(video_defaults) | vars(loop_args)))
            results["file_loop"] = run_file_benchmark(config, file_args, args.video, editor, device)
        if args.live:
            import cv2

            from export.benchmark import run_live_benchmark
            from live.sources import read_clip

            clip, _ = read_clip(args.video, 300)
            if size:
                clip = [cv2.resize(frame, size) for frame in clip]
            # As `reggan live` runs: its own processor, with the live choice of [runtime].synthesize_every.
            live = make_processor(config, loop_args, ExpressionController("happy", 1.0, 0.0), editor, live=True)
            results["live"] = run_live_benchmark(live, clip)
        if args.soak:
            from export.benchmark import run_soak

            processor.record_timings = False
            results["soak"] = run_soak(processor, args.video, args.soak)
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(results, indent=1))
