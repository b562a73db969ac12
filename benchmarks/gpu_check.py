"""Every GPU check in one run (the GPU is a scarce, timed resource): a refiner training run, CUDA FP16 vs FP32
parity, synthesizer throughput / latency at batch 1, 8 and 32, the product's own torch backend (FP16 with CUDA
graphs, numpy in and out) against its eager path, and end-to-end 1280x720 file processing through the frame loop.

The end-to-end run uses the real dlib tracker and H.264 encoder when dlib and PyAV are installed on the GPU machine;
without dlib it feeds the tracker the known landmarks of a synthetic moving face (its tracking stages then time near
zero) and says so, so the other stages are still measured.

    python benchmarks/gpu_check.py --regression cache/regression_fp16.safetensors --prepared cache/prepared \
        --out OUT_DIR --train-minutes 6

Writes OUT_DIR/refiner.safetensors (the trained refiner, every checkpoint), OUT_DIR/samples.png,
OUT_DIR/gpu_check.json and prints a table.

A lent GPU comes for minutes, and a script broken by a change elsewhere would waste them. ``--device cpu`` runs
every stage here, small (a few steps, few frames, FP32 timings without CUDA graphs): a dry run that says nothing
about speed, only that the run on the GPU will get to its end (tests/test_gpu_check.py does it for CI).

    python benchmarks/gpu_check.py --regression reggan/models/default.safetensors --prepared cache/prepared \
        --out /tmp/dry --device cpu --steps 2 --batch 2 --frames 12 --baseline-minutes 0
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from reggan.checkpoint import load_synthesizer
from reggan.config import load_config
from reggan.images import read_rgb
from reggan.networks import Synthesizer
from training.prepare import read_manifest
from training.train_refiner import on_stage1, train_refiner


def save_generator(model, path: Path, **metadata) -> None:
    """A model's trained generator (its ``refiner`` module) as FP32 CPU tensors in one safetensors file."""
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in model.refiner.state_dict().items()}
    save_file(tensors, str(path), metadata={key: str(value) for key, value in metadata.items()})


def timed(function, repeats: int, cuda: bool = True) -> float:
    """Median milliseconds of ``function`` after warm-up: CUDA events on the GPU, the wall clock on a CPU."""
    for _ in range(min(repeats, 5)):
        function()
    samples = []
    for _ in range(repeats):
        if not cuda:
            begin = time.perf_counter()
            function()
            samples.append((time.perf_counter() - begin) * 1000)
            continue
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        end.record()
        torch.cuda.synchronize()
        samples.append(start.elapsed_time(end))
    return sorted(samples)[len(samples) // 2]


def benchmark(synthesizer, faces: torch.Tensor) -> dict:
    """Eager and CUDA-graph latency per precision and batch; on a CPU (the dry run) FP32 eager only, batch 1 and 2."""
    results = {}
    count = len(synthesizer.expressions) - 1
    on_gpu = faces.device.type == "cuda"
    for precision in ("fp32", "fp16") if on_gpu else ("fp32",):
        model = synthesizer.half() if precision == "fp16" else synthesizer.float()
        model.refiner.to(memory_format=torch.channels_last)  # the regression weights are rank 5: left as they are
        for batch in (1, 8, 32) if on_gpu else (1, 2):
            x = faces[:batch].to(torch.float16 if precision == "fp16" else torch.float32)
            x = x.contiguous(memory_format=torch.channels_last)
            expression = torch.arange(batch, device=x.device) % count + 1
            intensity = torch.ones(batch, device=x.device, dtype=x.dtype)
            with torch.inference_mode():
                eager = timed(lambda: model(x, expression, intensity), 50 if on_gpu else 3, on_gpu)
                if not on_gpu:
                    results[f"{precision}_b{batch}"] = {"eager_ms": eager, "cuda_graph_ms": None,
                                                        "ms_per_face_graph": None}
                    continue
                graph = torch.cuda.CUDAGraph()
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    for _ in range(3):
                        model(x, expression, intensity)
                torch.cuda.current_stream().wait_stream(stream)
                with torch.cuda.graph(graph):
                    model(x, expression, intensity)
                replay = timed(graph.replay, 50)
            results[f"{precision}_b{batch}"] = {
                "eager_ms": eager, "cuda_graph_ms": replay, "ms_per_face_graph": replay / batch,
            }
    synthesizer.float()
    return results


def parity(synthesizer, faces: torch.Tensor) -> dict:
    count = len(synthesizer.expressions) - 1
    expression = torch.arange(len(faces), device=faces.device) % count + 1
    intensity = torch.ones(len(faces), device=faces.device)
    with torch.inference_mode():
        reference = synthesizer.float()(faces, expression, intensity)
        half = synthesizer.half()(faces.half(), expression, intensity.half()).float()
    synthesizer.float()
    error = (reference - half).abs() * 255
    return {"max_abs_levels": error.max().item(), "mean_abs_levels": error.mean().item(), "faces": len(faces)}


class KnownLandmarks:
    """A landmark backend that returns the true landmarks of a synthetic clip (for machines without dlib)."""

    name = "known"

    def __init__(self):
        self.current = None  # [68, 2], set before each frame is tracked

    def detect(self, image):
        from reggan.trackers import box_around

        return [box_around(self.current)]

    def landmarks(self, image, box):
        return self.current.astype("float32")


def end_to_end(synthesizer, still, frames: int = 300, device: str = "cuda", use_dlib: bool = True) -> dict:
    """1280x720 file processing through the frame loop: per-stage ms and fps, sequential (as `reggan bench`), then
    the fps of the threaded file loop that `reggan video` runs (decode and encode left out: the clip is in memory
    and the frames are dropped)."""
    import numpy as np

    from export.benchmark import Discard, InMemoryClip
    from live.control import ExpressionController
    from live.loop import run_file
    from live.processor import FrameProcessor
    from live.tracker import FaceTracker
    from reggan.alignment import load_template, transform_points
    from reggan.backends import TorchBackend
    from training.temporal import head_motion, moving_clip

    size = (1280, 720)
    clip = moving_clip(still, frames, 30.0, size, zoom=1.2)
    truth = load_template() * still.shape[0]  # a held-out crop is aligned: its landmarks sit on the template
    try:
        from reggan.trackers import make_tracker

        if not use_dlib:
            raise RuntimeError("not asked for")
        landmarks, tracker_name = make_tracker("dlib"), "dlib"
    except Exception as why:  # noqa: BLE001 - any reason dlib cannot start means: use the known landmarks
        landmarks, tracker_name = KnownLandmarks(), f"known landmarks (dlib unavailable: {why})"
    backend = TorchBackend(synthesizer, device, "auto", cuda_graphs=True)  # auto: fp16 on CUDA

    class KnownFacesProcessor(FrameProcessor):
        """Hands the known landmarks of each frame to the tracker just before the frame is tracked (in the threaded
        loop that is a frame ahead of the one being finished)."""

        def observe(self, frame, timestamp):
            if isinstance(landmarks, KnownLandmarks):
                landmarks.current = transform_points(truth, head_motion(timestamp, still.shape, size, 1.2))
            return super().observe(frame, timestamp)

    def new_processor():
        return KnownFacesProcessor(FaceTracker(landmarks, detect_every=10), backend,
                                   ExpressionController("happy", 1.0, 0.0))

    processor = new_processor()
    processor.record_timings = True
    encode_ms = []
    try:
        from live.sinks import VideoFileSink

        sink = VideoFileSink("/tmp/gpu_e2e.mp4", 30.0)
    except ImportError:  # no PyAV on the GPU machine: the encode stage is left out
        sink = None
    started = time.perf_counter()
    with sink or contextlib.nullcontext():
        for index, frame in enumerate(clip):
            out = processor.process(frame, index / 30)
            if sink is not None:
                begin = time.perf_counter()
                sink.write(out)
                encode_ms.append((time.perf_counter() - begin) * 1000)
        seconds = time.perf_counter() - started
    stages = {name: float(np.mean(values)) for name, values in processor.timings.items()}
    if encode_ms:
        stages["encode (H.264 veryfast)"] = float(np.mean(encode_ms))

    started = time.perf_counter()
    run_file(InMemoryClip(clip, 30.0), new_processor(), Discard(), show_progress=False)
    threaded = frames / (time.perf_counter() - started)
    return {"frames": frames, "size": list(size), "tracker": tracker_name, "fps": frames / seconds,
            "threaded_loop_fps": threaded, "ms_per_stage": stages, "bounding_stage": max(stages, key=stages.get)}


def backend_check(synthesizer, faces: torch.Tensor) -> dict:
    """The shipped torch backend on CUDA (FP16, CUDA graphs) against its eager path: parity and latency with the
    numpy copies in and out that the frame loop pays. On a CPU (the dry run) the FP32 backend against itself."""
    from reggan.backends import TorchBackend

    count = len(synthesizer.expressions) - 1
    device, on_gpu = faces.device.type, faces.device.type == "cuda"
    precision = "fp16" if on_gpu else "fp32"
    graphed = TorchBackend(synthesizer, device, precision, cuda_graphs=True)
    eager = TorchBackend(synthesizer, device, precision, cuda_graphs=False)
    results = {}
    for batch in (1, 32) if on_gpu else (1,):
        x = faces[:batch].float().cpu().numpy()
        expression = (torch.arange(batch) % count + 1).numpy()
        intensity = torch.ones(batch).numpy()
        difference = abs(graphed(x, expression, intensity) - eager(x, expression, intensity)).max() * 255
        timings = {}
        for name, backend in (("eager", eager), ("cuda_graph", graphed)):
            for _ in range(5):
                backend(x, expression, intensity)
            samples = []
            for _ in range(50 if on_gpu else 3):
                begin = time.perf_counter()
                backend(x, expression, intensity)
                samples.append((time.perf_counter() - begin) * 1000)
            timings[f"{name}_ms"] = sorted(samples)[len(samples) // 2]
        results[f"b{batch}"] = {**timings, "graph_vs_eager_max_levels": float(difference)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regression", required=True)
    parser.add_argument("--prepared", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--train-minutes", type=float, default=6.0)
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--snapshot-every", type=int, default=3000, help="also keep the refiner every N steps")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a [refine] setting for this run, e.g. --set loss_classification=0")
    parser.add_argument("--train-only", action="store_true", help="train and stop (no parity or timing checks)")
    parser.add_argument("--refiner", help="benchmark this trained refiner instead of training one")
    parser.add_argument("--baseline-minutes", type=float, default=2.0, help="StarGAN-style competitor; 0 skips")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cpu: a dry run of every stage, to check the script before a GPU is spent on it")
    parser.add_argument("--frames", type=int, default=300, help="length of the end-to-end clip")
    parser.add_argument("--decoder", choices=["resize", "transpose"],
                        help="the refiner's upsampling (default: [refine].decoder; transpose to benchmark an old "
                             "--refiner)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    device = args.device
    card = torch.cuda.get_device_name(0) if device == "cuda" else f"{platform.processor() or 'CPU'} (dry run)"
    print(f"card: {card}; torch {torch.__version__}; python {platform.python_version()}", flush=True)

    settings = dict(load_config()["refine"])
    settings.update(steps=args.steps, batch=args.batch, sample_every=1000, checkpoint_every=500)
    for assignment in args.set:
        key, value = assignment.split("=", 1)
        settings[key] = type(settings[key])(value)  # same type as the config's value; unknown keys fail here
    decoder = args.decoder or settings["decoder"]  # one source for the run: --set decoder=... counts too
    # Trained as it will be composed: the refiner's change kept finer than [refine].detail_scale only.
    synthesizer = on_stage1(load_synthesizer(args.regression), decoder=decoder,
                            detail_scale=settings.get("detail_scale", 0)).to(device).train()
    work = Path(tempfile.mkdtemp(prefix="refine_"))  # its own folder: two trainings may share the GPU

    steps_done = 0

    def keep_refiner(model, step):
        nonlocal steps_done
        steps_done = step
        save_generator(model, out / "refiner.safetensors", step=step, card=card, decoder=decoder,
                       detail_scale=model.detail_scale)
        if step % args.snapshot_every == 0:  # earlier steps kept too: longer adversarial training is not always better
            shutil.copy(out / "refiner.safetensors", out / f"refiner_{step}.safetensors")

    started = time.perf_counter()
    rows = read_manifest(args.prepared, "train")
    if args.refiner:
        from safetensors.torch import load_file

        synthesizer.refiner.load_state_dict(load_file(args.refiner))
        args.train_minutes = args.baseline_minutes = 0
    if args.train_minutes > 0:
        train_refiner(synthesizer, rows, settings, work, device, resume=False, max_minutes=args.train_minutes,
                      on_checkpoint=keep_refiner)
        samples = sorted(work.glob("samples_*.png"))
        if samples:
            shutil.copy(samples[-1], out / "samples.png")
        shutil.copy(work / "losses.jsonl", out / "losses.jsonl")
    train_seconds = time.perf_counter() - started

    if args.baseline_minutes > 0:
        baseline = Synthesizer(synthesizer.expressions[1:], synthesizer.resolution, generator="stargan").to(device).train()

        def keep_baseline(model, step):
            save_generator(model, out / "stargan.safetensors", step=step, card=card)

        baseline_work = Path(tempfile.mkdtemp(prefix="stargan_"))
        train_refiner(baseline, rows, settings, baseline_work, device, resume=False,
                      max_minutes=args.baseline_minutes, on_checkpoint=keep_baseline)
        shutil.copy(baseline_work / "losses.jsonl", out / "stargan_losses.jsonl")

    if args.train_only:
        print(f"trained {steps_done} steps at batch {args.batch} in {train_seconds:.0f} s with {args.set}")
        return
    eval_rows = read_manifest(args.prepared, "eval")
    photos = sorted({str(r["neutral"]) for r in eval_rows})[:32]
    faces = torch.stack([torch.from_numpy(read_rgb(p)).permute(2, 0, 1) for p in photos]).float().to(device) / 255
    while len(faces) < 32:
        faces = torch.cat([faces, faces])[:32]
    synthesizer.eval()
    report = {
        "card": card, "torch": torch.__version__,
        "training": {"seconds": train_seconds, "steps_logged": steps_done, "batch": args.batch},
        "parity_fp16_vs_fp32": parity(synthesizer, faces if device == "cuda" else faces[:2]),
    }
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    try:
        report["throughput"] = benchmark(synthesizer, faces)
    except RuntimeError as error:  # keep the training result even if a timing path fails
        print(f"benchmark failed: {error}")
        report["throughput"] = {}
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    for name, check in (("backend", lambda: backend_check(synthesizer, faces)),
                        ("end_to_end_720p", lambda: end_to_end(synthesizer, read_rgb(photos[0]), args.frames,
                                                               device))):
        try:
            report[name] = check()
        except Exception as error:  # noqa: BLE001 - one failed check must not lose the others' numbers
            print(f"{name} failed: {error!r}")
            report[name] = {"failed": repr(error)}
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    print(f"\nGPU check on {card}")
    print(f"training: {steps_done} steps at batch {args.batch} in {train_seconds:.0f} s")
    p = report["parity_fp16_vs_fp32"]
    print(f"FP16 vs FP32: max |error| {p['max_abs_levels']:.2f} / 255, mean {p['mean_abs_levels']:.3f} / 255")
    print("| precision | batch | eager ms | CUDA graph ms | ms per face |")
    print("|---|---|---|---|---|")
    for key, row in report["throughput"].items():
        precision, batch = key.split("_b")
        graph = "-" if row["cuda_graph_ms"] is None else f"{row['cuda_graph_ms']:.2f}"
        per_face = "-" if row["ms_per_face_graph"] is None else f"{row['ms_per_face_graph']:.3f}"
        print(f"| {precision} | {batch} | {row['eager_ms']:.2f} | {graph} | {per_face} |")
    print(f"torch backend ({'FP16' if device == 'cuda' else 'FP32'}, numpy in/out):", json.dumps(report["backend"]))
    print("end to end, 1280x720:", json.dumps(report["end_to_end_720p"]))


if __name__ == "__main__":
    main()
