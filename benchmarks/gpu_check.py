"""Every GPU check in one run (the GPU is a scarce, timed resource): a refiner training run, CUDA FP16 vs FP32
parity, and synthesizer throughput / latency at batch 1, 8 and 32.

    python benchmarks/gpu_check.py --regression cache/regression_fp16.safetensors --prepared cache/prepared \
        --out OUT_DIR --train-minutes 6

Writes OUT_DIR/refiner.safetensors (the trained refiner, every checkpoint), OUT_DIR/samples.png,
OUT_DIR/gpu_check.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from reggan.checkpoint import load_synthesizer
from reggan.config import load_config
from reggan.images import read_rgb
from training.prepare import read_manifest
from training.train_refiner import train_refiner


def timed(function, repeats: int) -> float:
    """Median milliseconds of ``function`` on the GPU, after warm-up."""
    for _ in range(5):
        function()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        end.record()
        torch.cuda.synchronize()
        samples.append(start.elapsed_time(end))
    return sorted(samples)[len(samples) // 2]


def benchmark(synthesizer, faces: torch.Tensor) -> dict:
    results = {}
    count = len(synthesizer.expressions) - 1
    for precision in ("fp32", "fp16"):
        model = synthesizer.half() if precision == "fp16" else synthesizer.float()
        model.refiner.to(memory_format=torch.channels_last)  # the regression weights are rank 5: left as they are
        for batch in (1, 8, 32):
            x = faces[:batch].to(torch.float16 if precision == "fp16" else torch.float32)
            x = x.contiguous(memory_format=torch.channels_last)
            expression = torch.arange(batch, device=x.device) % count + 1
            intensity = torch.ones(batch, device=x.device, dtype=x.dtype)
            with torch.inference_mode():
                eager = timed(lambda: model(x, expression, intensity), 50)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regression", required=True)
    parser.add_argument("--prepared", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--train-minutes", type=float, default=6.0)
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--refiner", help="benchmark this trained refiner instead of training one")
    parser.add_argument("--baseline-minutes", type=float, default=2.0, help="StarGAN-style competitor; 0 skips")
    args = parser.parse_args()
    out = Path(args.out)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    card = torch.cuda.get_device_name(0)
    print(f"card: {card}; torch {torch.__version__}; python {platform.python_version()}", flush=True)

    settings = dict(load_config()["refine"])
    settings.update(steps=args.steps, batch=args.batch, sample_every=1000, checkpoint_every=500)
    synthesizer = load_synthesizer(args.regression, "cuda").train()
    work = Path("/tmp/refine_run")

    def keep_refiner(model, step):
        tensors = {k: v.detach().float().cpu().contiguous() for k, v in model.refiner.state_dict().items()}
        save_file(tensors, str(out / "refiner.safetensors"), metadata={"step": str(step), "card": card})

    started = time.perf_counter()
    rows = read_manifest(args.prepared, "train")
    if args.refiner:
        from safetensors.torch import load_file

        synthesizer.refiner.load_state_dict(load_file(args.refiner))
        args.train_minutes = args.baseline_minutes = 0
    steps_done = 0
    if args.train_minutes > 0:
        train_refiner(synthesizer, rows, settings, work, "cuda", resume=False, max_minutes=args.train_minutes,
                      on_checkpoint=keep_refiner)
        samples = sorted(work.glob("samples_*.png"))
        if samples:
            shutil.copy(samples[-1], out / "samples.png")
        shutil.copy(work / "losses.jsonl", out / "losses.jsonl")
        steps_done = sum(1 for _ in open(work / "losses.jsonl")) * 50
    train_seconds = time.perf_counter() - started

    if args.baseline_minutes > 0:
        from reggan.networks import Synthesizer

        baseline = Synthesizer(synthesizer.expressions[1:], synthesizer.resolution, generator="stargan").cuda().train()

        def keep_baseline(model, step):
            tensors = {k: v.detach().float().cpu().contiguous() for k, v in model.refiner.state_dict().items()}
            save_file(tensors, str(out / "stargan.safetensors"), metadata={"step": str(step), "card": card})

        train_refiner(baseline, rows, settings, Path("/tmp/stargan_run"), "cuda", resume=False,
                      max_minutes=args.baseline_minutes, on_checkpoint=keep_baseline)
        shutil.copy(Path("/tmp/stargan_run/losses.jsonl"), out / "stargan_losses.jsonl")

    eval_rows = read_manifest(args.prepared, "eval")
    photos = sorted({str(r["neutral"]) for r in eval_rows})[:32]
    faces = torch.stack([torch.from_numpy(read_rgb(p)).permute(2, 0, 1) for p in photos]).float().cuda() / 255
    while len(faces) < 32:
        faces = torch.cat([faces, faces])[:32]
    synthesizer.eval()
    report = {
        "card": card, "torch": torch.__version__,
        "training": {"seconds": train_seconds, "steps_logged": steps_done, "batch": args.batch},
        "parity_fp16_vs_fp32": parity(synthesizer, faces),
    }
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    try:
        report["throughput"] = benchmark(synthesizer, faces)
    except RuntimeError as error:  # keep the training result even if a timing path fails
        print(f"benchmark failed: {error}")
        report["throughput"] = {}
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    print(f"\nGPU check on {card}")
    print(f"training: {steps_done} steps at batch {args.batch} in {train_seconds:.0f} s")
    p = report["parity_fp16_vs_fp32"]
    print(f"FP16 vs FP32: max |error| {p['max_abs_levels']:.2f} / 255, mean {p['mean_abs_levels']:.3f} / 255")
    print("| precision | batch | eager ms | CUDA graph ms | ms per face |")
    print("|---|---|---|---|---|")
    for key, row in report["throughput"].items():
        precision, batch = key.split("_b")
        print(f"| {precision} | {batch} | {row['eager_ms']:.2f} | {row['cuda_graph_ms']:.2f} | {row['ms_per_face_graph']:.3f} |")


if __name__ == "__main__":
    main()
