"""The only place with threads: capture, process and output run concurrently over bounded queues.

File mode never drops a frame: the output has the input's frame count and timestamps, and the audio packets are
muxed in-process. Live mode keeps only the newest captured frame, so latency stays bounded when processing is
slower than the camera. Ctrl-C (or SIGTERM, SIGHUP: reggan/cli.py) or a failure mid-file stops reading, writes out
what was processed, and closes the sink properly, so the file on disk is valid and playable up to that point.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import queue
import threading
import time

from tqdm import tqdm

END = object()


def _put(target: queue.Queue, item, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            target.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(source: queue.Queue, stop: threading.Event):
    """The next item, or END once ``stop`` is set (a thread downstream failed or the run is being cut short)."""
    while not stop.is_set():
        try:
            return source.get(timeout=0.1)
        except queue.Empty:
            continue
    return END


def run_file(source, processor, sink, show_progress: bool = True, synthesis_workers: int = 1) -> dict:
    """Process every frame of an open VideoFileSource into an open sink; returns counts.

    Threads over bounded queues: decode; ``processor.observe`` (track, align: each frame's tracks follow the last
    frame's, so in frame order); ``processor.synthesize_faces`` on ``synthesis_workers`` threads (the model's work
    needs no earlier frame's output, so frames are synthesized side by side); ``processor.finish`` here (smooth,
    paste back: in frame order, whichever synthesis ends first); encode. Two workers on a 2-core CPU, each running
    the model on one core, made `reggan video` 17 % faster than one worker running it on one core beside the loop's
    other threads (docs/benchmarks.md): a model on one thread uses its core better than on two, and the second
    worker fills the time the other threads leave. A backend that cannot be called twice at once (a CUDA graph)
    is serialised by the processor's own lock, so any worker count is safe."""
    decoded: queue.Queue = queue.Queue(maxsize=16)
    prepared: queue.Queue = queue.Queue(maxsize=4)  # each frame's synthesis, as a future
    outbox: queue.Queue = queue.Queue(maxsize=16)
    stop = threading.Event()
    failures: list[BaseException] = []
    fps = float(source.fps)

    def forward(items, target: queue.Queue, transform=lambda item: item) -> None:
        """Put each item, transformed, on ``target`` (a thread's whole job), then END."""
        try:
            for item in items:
                if not _put(target, transform(item), stop):
                    return
        except BaseException as error:  # handed to the main thread, which decides what the user sees
            failures.append(error)
        finally:
            _put(target, END, stop)  # once stopped, the next thread reads no more and needs no END

    video_frames = itertools.count()
    synthesis = concurrent.futures.ThreadPoolExecutor(max(synthesis_workers, 1), thread_name_prefix="synthesize")

    def observe(item):
        if item[0] != "video":
            return item  # audio goes through in its place
        _, frame, seconds, pts = item
        index = next(video_frames)
        observed = processor.observe(frame, seconds if seconds is not None else index / fps)
        return "video", synthesis.submit(processor.synthesize_faces, observed), pts

    def write() -> None:
        try:
            while True:
                item = outbox.get()
                if item is END:
                    return
                if item[0] == "video":
                    sink.write(item[1], item[2])
                else:
                    sink.write_audio_packet(item[1])
        except BaseException as error:
            failures.append(error)
            stop.set()

    threads = [threading.Thread(target=forward, args=(source, decoded), name="decode", daemon=True),
               threading.Thread(target=forward, args=(iter(lambda: _get(decoded, stop), END), prepared, observe),
                                name="observe", daemon=True)]
    writer = threading.Thread(target=write, name="encode", daemon=True)
    for thread in [*threads, writer]:
        thread.start()
    frames = 0
    progress = tqdm(total=source.frame_count or None, unit="frame", disable=not show_progress, desc="video")
    try:
        while True:
            item = _get(prepared, stop)
            if item is END:  # the end of the input, a failure upstream, or the writer failed (stop)
                break
            if item[0] == "video":
                item = ("video", processor.finish(item[1].result()), item[2])
                frames += 1
                progress.update()
            if not _put(outbox, item, stop):
                break
    finally:
        stop.set()  # tells the reader and the observer to stop; the writer drains what is queued
        progress.close()
        while writer.is_alive():  # a writer that failed reads no more: END must not wait for room then
            try:
                outbox.put(END, timeout=0.1)
                break
            except queue.Full:
                continue
        writer.join()
        for thread in threads:
            thread.join(timeout=5)
        synthesis.shutdown(wait=True, cancel_futures=True)
    if failures:
        raise failures[0]
    return {"frames": frames, "decode_errors": getattr(source, "decode_errors", 0)}


def run_live(source, processor, sink, on_frame=None, delay_s: float = 0.0, show_stats: bool = False) -> dict:
    """Newest-frame-wins processing of a live source. ``on_frame(frame, stats)`` may return False to stop."""
    latest: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    finished = threading.Event()
    failures: list[BaseException] = []
    dropped = 0

    def capture() -> None:
        nonlocal dropped
        try:
            for event in source:
                if stop.is_set():
                    return
                if event[0] != "video":
                    continue
                if latest.full():
                    try:
                        latest.get_nowait()
                        dropped += 1  # stale: processing fell behind, keep latency bounded
                    except queue.Empty:
                        pass
                latest.put(event)
        except BaseException as error:
            failures.append(error)
        finally:
            finished.set()  # the source ended (a clip) or failed (a camera unplugged): stop once it is drained

    thread = threading.Thread(target=capture, name="capture", daemon=True)
    thread.start()
    delayed: collections.deque = collections.deque()
    processed, started = 0, time.monotonic()
    stats = {"fps": 0.0, "latency_ms": 0.0, "dropped": 0}
    try:
        while not stop.is_set():
            try:
                _, frame, captured_at, _ = latest.get(timeout=0.1)
            except queue.Empty:
                if finished.is_set():
                    break
                continue
            out = processor.process(frame, captured_at)
            processed += 1
            now = time.monotonic()
            stats = {"fps": processed / (now - started), "latency_ms": 1000 * (now - captured_at), "dropped": dropped}
            if show_stats and processed % 30 == 0:
                print(f"\r{stats['fps']:5.1f} fps  latency {stats['latency_ms']:5.0f} ms  dropped {dropped}", end="")
            # A fixed output delay lets a call's audio (delayed by the same amount) line up with the face.
            delayed.append((captured_at, out))
            while delayed and now - delayed[0][0] >= delay_s:
                sink.write(delayed.popleft()[1])
            if on_frame is not None and on_frame(out, stats) is False:
                break
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        thread.join(timeout=2)
    if failures:
        raise failures[0]
    return {"frames": processed, **stats}
