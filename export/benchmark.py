"""``reggan bench``: synthesizer throughput and latency per backend and batch size, as a table and JSON."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from reggan.backends import BackendUnavailable, make_backend


def machine_description(device: str) -> str:
    if device == "cuda":
        import torch

        return f"{torch.cuda.get_device_name(0)} (CUDA), host {platform.machine()} with {os.cpu_count()} CPU cores"
    model = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, CPU only"


def time_backend(backend, batch: int, resolution: int, repeats: int) -> dict:
    faces = np.random.default_rng(0).random((batch, 3, resolution, resolution), dtype=np.float32)
    expression = (np.arange(batch) % (len(backend.expressions) - 1) + 1).astype(np.int64)
    intensity = np.ones(batch, np.float32)
    for _ in range(2):
        backend(faces, expression, intensity)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        backend(faces, expression, intensity)
        samples.append((time.perf_counter() - start) * 1000)
    median = float(np.median(samples))
    return {"latency_ms": median, "ms_per_face": median / batch, "faces_per_s": 1000 * batch / median}


def run_synthesizer_benchmark(synthesizer, checkpoint, backends, device, batches, repeats, json_path=None) -> dict:
    machine = machine_description(device)
    results = {"machine": machine, "device": device, "resolution": synthesizer.resolution, "backends": {}}
    print(f"synthesizer benchmark on {machine}; {synthesizer.resolution}px faces, median of {repeats}")
    print("| backend | batch | latency ms | ms per face | faces/s |")
    print("|---|---|---|---|---|")
    for name in backends:
        try:
            backend = make_backend(name, synthesizer, checkpoint, device)
        except BackendUnavailable as why:
            print(f"| {name} | – | unavailable: {why} | | |")
            results["backends"][name] = {"unavailable": str(why)}
            continue
        results["backends"][name] = {}
        for batch in batches:
            row = time_backend(backend, batch, synthesizer.resolution, repeats)
            results["backends"][name][str(batch)] = row
            print(f"| {name} | {batch} | {row['latency_ms']:.1f} | {row['ms_per_face']:.2f} | {row['faces_per_s']:.1f} |")
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=1))
    return results
