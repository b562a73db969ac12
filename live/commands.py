"""The frame-loop commands: ``reggan video``, ``reggan batch``, ``reggan live`` and ``reggan animate``.

reggan/cli.py parses the arguments and hands them here; this module wires sources, the frame processor and sinks.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from reggan.config import with_overrides
from reggan.errors import UserError
from reggan.from_config import (bend_time, clamped_intensity, cores_shared_with_the_file_loop, fine_flow,
                                make_editor, synthesis_interval)


def run_animate(args, config):
    from live.animate import animate_still
    from live.program import ExpressionProgram, parse_program
    from live.sinks import VideoFileSink
    from reggan.images import flatten, read_rgb_alpha

    image, alpha = read_rgb_alpha(args.image)
    if alpha is not None:
        print("note: the image is partly transparent; video has no transparency, so it shows white there")
        image = flatten(image, alpha)
    program = ExpressionProgram(parse_program(args.program), args.ramp, clamped_intensity(config, args))
    editor = make_editor(config, args)
    with VideoFileSink(args.out, args.fps, args.codec) as sink:
        frames = animate_still(image, editor, program, args.fps, sink)
    print(f"wrote {args.out} ({frames} frames, {program.duration:.1f} s)")


def make_processor(config, args, controller, editor=None, live: bool = False):
    """A fresh frame processor (its own tracks and smoothing state); pass ``editor`` to reuse a loaded model.
    live: for a camera, which drops frames it cannot keep up with (files never do)."""
    from live.processor import FrameProcessor
    from live.tracker import FaceTracker

    editor = editor or make_editor(config, args)
    for name in controller.expressions:
        editor.label_of(name)  # a clear error before any frame is read
    tracking = with_overrides(config, "tracker", {"max_faces": args.max_faces, "detect_every": args.detect_every,
                                                  "min_face": args.min_face})["tracker"]
    tracker = FaceTracker(editor.tracker, tracking["detect_every"], tracking["max_faces"], tracking["min_face"])
    editing = with_overrides(config, "edit", {"smoothing": args.smoothing})["edit"]
    every = synthesis_interval(config, args, editor.backend, live)
    return FrameProcessor(tracker, editor.backend, controller, editing["feather"], editing["max_intensity"],
                          editing["smoothing"], editor.compositor.colour_match, every,
                          bend_time(config, args), editing["fade_in"], fine_flow(config, live),
                          editing.get("lips_own_brightness", True))


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

    if Path(out_path).resolve() == Path(source_path).resolve():
        raise UserError(f"{out_path} is the input itself: writing there would replace the original; "
                        "choose another output name")
    editor = editor or make_editor(config, args)
    processor = make_processor(config, args, make_controller(config, args), editor)
    with VideoFileSource(source_path) as source:
        if getattr(args, "image_sequence", False):
            sink = ImageSequenceSink(out_path)
        else:
            # No size up front: the sink takes the first frame's, which is the stream's turned upright (sources.py).
            sink = VideoFileSink(out_path, source.fps, args.codec, audio_from=source.audio,
                                 time_base=source.video.time_base)
        with sink, cores_shared_with_the_file_loop(config, editor.backend) as workers:
            counts = run_file(source, processor, sink, show_progress=sys.stderr.isatty(), synthesis_workers=workers)
        # Said after the sink has closed: what could be read is a complete, playable file under its final name.
        if source.ended_early(counts["frames"]):
            raise UserError(f"{source_path} ended after {counts['frames']} of the {source.declared_frames} frames its "
                            f"index declares: the file is truncated or damaged. The frames read were processed and "
                            f"written to {out_path}, which is complete and plays.")
    return counts


def run_video(args, config):
    import time as clock

    started = clock.perf_counter()
    counts = process_video_file(config, args, args.input, args.out)
    seconds = clock.perf_counter() - started
    note = f", {counts['decode_errors']} damaged packets skipped" if counts["decode_errors"] else ""
    print(f"wrote {args.out} ({counts['frames']} frames in {seconds:.1f} s, "
          f"{counts['frames'] / max(seconds, 1e-9):.1f} fps{note})")


def batch_outputs(videos: list[Path], out_dir: Path) -> dict[Path, Path]:
    """Where each input of a batch goes: NAME.mp4, or NAME_EXT.mp4 where two inputs share a name (talk.mov and
    talk.mp4 would otherwise overwrite each other's result)."""
    stems = Counter(path.stem for path in videos)
    return {path: out_dir / (f"{path.stem}_{path.suffix[1:]}.mp4" if stems[path.stem] > 1 else f"{path.stem}.mp4")
            for path in videos}


def run_batch(args, config):
    from live.sources import videos_in

    videos = videos_in(args.input_dir)
    if not videos:
        raise UserError(f"no videos in {args.input_dir}")
    if Path(args.out).resolve() == Path(args.input_dir).resolve():
        # Said once, before the model loads, rather than as a failure of each video that a result would replace.
        raise UserError(f"the output folder is the input folder ({args.input_dir}): results would replace or mix "
                        "with the videos they came from; choose another -o")
    editor = make_editor(config, args)  # the model loads once; each file gets fresh tracks and smoothing
    failed = []
    for path, out in batch_outputs(videos, Path(args.out)).items():
        try:
            counts = process_video_file(config, args, path, out, editor)
            print(f"ok      {path.name} -> {out} ({counts['frames']} frames)")
        except (UserError, ValueError, OSError) as error:
            failed.append(path.name)
            print(f"FAILED  {path.name}: {error}", file=sys.stderr)
    print(f"{len(videos) - len(failed)} of {len(videos)} videos done" + (f"; failed: {', '.join(failed)}" if failed else ""))
    if failed:
        raise SystemExit(1)


def run_live(args, config):
    from live.loop import run_live as loop
    from live.sinks import NullSink, PreviewWindow, VirtualCameraSink, preview_unavailable
    from live.sources import WebcamSource

    if not (args.virtual_cam or args.preview):
        raise UserError("nothing to show the result on: add --virtual-cam and/or --preview")
    if args.preview and (problem := preview_unavailable()):
        raise UserError(problem)
    controller = make_controller(config, args)
    processor = make_processor(config, args, controller, live=True)
    preview = PreviewWindow(controller, processor.synthesize.backend.expressions,
                            config["edit"]["max_intensity"]) if args.preview else None
    with WebcamSource(args.camera, args.width, args.height, args.fps) as camera:
        sink = VirtualCameraSink(args.width, args.height, args.fps) if args.virtual_cam else NullSink()
        with sink:
            result = loop(camera, processor, sink, preview, args.delay, args.stats)
    print(f"\nprocessed {result['frames']} frames at {result['fps']:.1f} fps; camera delivered "
          f"{camera.measured_fps:.1f} fps")
