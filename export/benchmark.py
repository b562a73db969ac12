"""``reggan bench``: synthesizer throughput and latency per backend and batch size, as a table and JSON."""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from reggan.backends import BackendUnavailable, make_backend, time_backend


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


def run_synthesizer_benchmark(synthesizer, checkpoint, backends, device, batches, repeats, json_path=None) -> dict:
    machine = machine_description(device)
    results = {"machine": machine, "device": device, "resolution": synthesizer.resolution, "backends": {}}
    print(f"synthesizer benchmark on {machine}; {synthesizer.resolution}px faces, median of {repeats}")
    print("| backend | batch | latency ms | ms per face | faces/s |")
    print("|---|---|---|---|---|")
    for name in backends:  # NAME or NAME:PRECISION (torch:bf16)
        backend_name, _, precision = name.partition(":")
        try:
            backend = make_backend(backend_name, synthesizer, checkpoint, device, precision or "auto")
        except BackendUnavailable as why:
            print(f"| {name} | – | unavailable: {why} | | |")
            results["backends"][name] = {"unavailable": str(why)}
            continue
        results["backends"][name] = {}
        for batch in batches:
            row = time_backend(backend, batch, repeats)
            results["backends"][name][str(batch)] = row
            print(f"| {name} | {batch} | {row['latency_ms']:.1f} | {row['ms_per_face']:.2f} | {row['faces_per_s']:.1f} |")
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=1))
    return results


def run_pipeline_benchmark(processor, video_path, frames: int = 200, resize: tuple[int, int] | None = None,
                           json_path=None, device: str = "cpu") -> dict:
    """Per-stage milliseconds and end-to-end fps of the frame loop on a real clip, stages run one after another
    (no threads, so each number is that stage alone; the threaded loop overlaps decode and encode with the rest).
    """
    import av
    import cv2

    from live.sinks import VideoFileSink
    from live.sources import upright_rgb

    timings: dict[str, list[float]] = {"decode": [], "encode": []}
    processor.record_timings = True
    processed = 0
    scratch = Path(tempfile.gettempdir()) / f"reggan-bench-{os.getpid()}.mp4"  # encoded only to time the encoder
    started = time.perf_counter()
    with av.open(str(video_path)) as container, VideoFileSink(
            scratch, float(container.streams.video[0].average_rate or 30)) as sink:
        decoder = container.decode(video=0)
        while processed < frames:
            clock = time.perf_counter()
            try:
                frame = upright_rgb(next(decoder))
            except StopIteration:
                break
            if resize:
                frame = cv2.resize(frame, resize, interpolation=cv2.INTER_LINEAR)
            timings["decode"].append((time.perf_counter() - clock) * 1000)
            out = processor.process(frame, processed / 30.0)
            clock = time.perf_counter()
            sink.write(out)
            timings["encode"].append((time.perf_counter() - clock) * 1000)
            processed += 1
    scratch.unlink(missing_ok=True)
    total = time.perf_counter() - started
    stages = {"decode": timings["decode"]}
    for name in ("track: detect + landmarks", "track: landmarks only", "align", "flow", "synthesize", "smooth",
                 "composite"):
        stages[name] = processor.timings[name]
    if processor.timings["repeat"]:
        stages["repeated frame: last change pasted again"] = processor.timings["repeat"]
    stages["encode"] = timings["encode"]
    height, width = frame.shape[:2]
    result = {"machine": machine_description(device), "video": str(video_path), "size": f"{width}x{height}",
              "frames": processed, "end_to_end_fps": processed / total,
              "stages_ms": {k: (float(np.mean(v)) if v else None) for k, v in stages.items()},
              "stage_frames": {k: len(v) for k, v in stages.items()}}
    print(f"frame loop on {result['machine']}: {result['size']}, {processed} frames, stages one after another")
    print("| stage | ms per frame | frames |")
    print("|---|---|---|")
    for name, values in stages.items():
        print(f"| {name} | {np.mean(values):.1f} | {len(values)} |" if values else f"| {name} | – | 0 |")
    print(f"| **end to end** | **{1000 / result['end_to_end_fps']:.1f}** ({result['end_to_end_fps']:.1f} fps) | |")
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=1))
    return result


def run_file_benchmark(config, args, video_path, editor, device: str = "cpu") -> dict:
    """``reggan video`` itself on the whole clip, threads and all (live/loop.py: decode, the model, smoothing and
    pasting, encoding to H.264 side by side), against the clip's own frame rate: what "faster than real time" means
    for a file. The table above times the same stages one after another."""
    import av

    from live.commands import process_video_file

    with av.open(str(video_path)) as container:
        clip_fps = float(container.streams.video[0].average_rate or 30)
    scratch = Path(tempfile.gettempdir()) / f"reggan-bench-file-{os.getpid()}.mp4"
    started = time.perf_counter()
    try:
        counts = process_video_file(config, args, video_path, scratch, editor)
    finally:
        scratch.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    fps = counts["frames"] / seconds
    result = {"machine": machine_description(device), "video": str(video_path), "frames": counts["frames"],
              "seconds": seconds, "fps": fps, "clip_fps": clip_fps, "times_real_time": fps / clip_fps}
    print(f"file loop as `reggan video` runs it (threads, H.264 out): {counts['frames']} frames in {seconds:.1f} s, "
          f"{fps:.1f} fps, {fps / clip_fps:.2f}x real time (the clip is {clip_fps:.2f} fps)")
    return result


def resident_megabytes() -> float:
    """Current resident set size of this process (Linux /proc; 0 where unavailable)."""
    try:
        pages = int(open("/proc/self/statm").read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return 0.0


def run_soak(processor, video_path, frames: int, json_path=None) -> dict:
    """Hours-of-running check: loop a clip through the frame processor for ``frames`` frames and report RSS at the
    start, every tenth of the way, and at the end. Memory must stay flat."""
    from live.sources import read_clip

    clip, _ = read_clip(video_path, 300)
    samples = []
    started = time.perf_counter()
    for index in range(frames):
        processor.process(clip[index % len(clip)], index / 30.0)
        if index % max(frames // 10, 1) == 0 or index == frames - 1:
            samples.append((index, resident_megabytes()))
    for timings in processor.timings.values():
        timings.clear()
    seconds = time.perf_counter() - started
    result = {"frames": frames, "seconds": seconds, "rss_mb": samples,
              "rss_growth_mb": samples[-1][1] - samples[1][1] if len(samples) > 1 else 0.0}
    print(f"soak: {frames} frames in {seconds:.0f} s; RSS " +
          " -> ".join(f"{mb:.0f} MB@{i}" for i, mb in samples))
    print(f"RSS growth after warm-up: {result['rss_growth_mb']:+.1f} MB")
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=1))
    return result


class InMemoryClip:
    """Frames already in memory read like a video file: every frame, none dropped, timestamps at ``fps``."""

    def __init__(self, frames: list[np.ndarray], fps: float):
        self.frames, self.fps, self.frame_count = frames, fps, len(frames)

    def __iter__(self):
        for index, frame in enumerate(self.frames):
            yield "video", frame, index / self.fps, index


class Discard:
    """A sink that drops every frame: the loop is timed without an encoder."""

    def write(self, frame, pts=None):
        pass


class PacedClip:
    """A clip replayed like a camera: frames delivered in real time at ``fps`` with capture timestamps."""

    def __init__(self, frames: list[np.ndarray], fps: float, count: int):
        self.frames, self.fps, self.count = frames, fps, count

    def __iter__(self):
        started = time.monotonic()
        for index in range(self.count):
            due = started + index / self.fps
            time.sleep(max(0.0, due - time.monotonic()))
            yield ("video", self.frames[index % len(self.frames)], time.monotonic(), None)


def run_live_benchmark(processor, frames: list[np.ndarray], fps: float = 30.0, count: int = 300) -> dict:
    """The live loop (capture thread, newest frame wins) on a clip paced like a webcam: delivered fps and latency."""
    from live.loop import run_live

    latencies = []

    def record(frame, stats):
        latencies.append(stats["latency_ms"])

    result = run_live(PacedClip(frames, fps, count), processor, Discard(), on_frame=record)
    summary = {"camera_fps": fps, "frames_in": count, "frames_out": result["frames"], "fps": result["fps"],
               "latency_ms_median": float(np.median(latencies)), "latency_ms_p95": float(np.percentile(latencies, 95)),
               "dropped": result["dropped"]}
    print(f"live loop, camera paced at {fps:.0f} fps: {summary['fps']:.1f} fps out, latency median "
          f"{summary['latency_ms_median']:.0f} ms (p95 {summary['latency_ms_p95']:.0f} ms), "
          f"{summary['dropped']} of {count} frames dropped as stale")
    return summary
