"""``reggan eval``: how well each method shows the expression, keeps the person, looks real, and stays still.

Per held-out (neutral photo, target expression), each method synthesizes one face; it is scored by
  - ECS: the independent judge's verdict (accuracy and mean probability of the target class),
  - FSS: dlib identity distance input <-> output (mean, and the fraction under the same-person threshold 0.6),
    and on paired data also output <-> the real expressive photo of the same person,
  - L1 and SSIM to the real expressive photo(s) of the same person, inside the template face box,
  - FID and KID of all outputs against the real expressive photos, NIQE of the outputs.
Out-of-distribution stills (paintings, statues, cartoons) get ECS, FSS and NIQE; video clips get the flicker ratio.
Rows: copy-the-input, warp only (the expression's motion, no new appearance), regression only (warp + regression
layer), full RegGAN, and any extra checkpoint (e.g. our StarGAN-style retraining). training/report.py writes the
numbers up.
"""

from __future__ import annotations

from collections import defaultdict
from functools import partial
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import structural_similarity
from tqdm import tqdm

from reggan.anchoring import FaceBend, synthesize_bent
from reggan.images import read_rgb
from reggan.networks import Synthesizer
from reggan.warp import Displacements
from training.judges import JUDGE_CLASSES, SAME_PERSON_THRESHOLD, ExpressionJudge, IdentityJudge, template_face_box


def synthesize_batch(synthesizer: Synthesizer, table: Displacements, crops: list[np.ndarray], expressions: list[str],
                     keeps: list[np.ndarray], bends: list[FaceBend | None],
                     open_mouths: list[np.ndarray | None] | None = None, stage="full"):
    """Aligned uint8 crops + expression names + keep masks, bends and open mouths (reggan/keep.py,
    reggan/anchoring.py; as the tool makes them) -> synthesized uint8 crops (intensity 1). ``table``: the
    synthesizer's warp as numpy, made once per model.

    stage: "full", "regression" (warp + regression layer, no refiner) or "warp" (the expression's motion alone).
    """
    labels = torch.tensor([synthesizer.expressions.index(e) for e in expressions])

    def synthesize(inputs: list[np.ndarray], masks: list[np.ndarray]) -> list[np.ndarray]:
        faces = torch.from_numpy(np.stack(inputs)).permute(0, 3, 1, 2).float() / 255
        keep = torch.from_numpy(np.stack(masks))[:, None]
        with torch.no_grad():
            if stage == "warp":
                out = synthesizer.warp(faces, labels, torch.ones(len(inputs)))
            else:
                run = synthesizer if stage == "full" else synthesizer.coarse_only
                out = run(faces, labels, torch.ones(len(inputs)), keep)
        return list(out.permute(0, 2, 3, 1).numpy() * 255)

    moves = [table(int(label), 1.0) for label in labels] if table.moves else None
    return [out.round().clip(0, 255).astype(np.uint8)
            for out in synthesize_bent(synthesize, crops, keeps, bends, moves, open_mouths)]


FULL = "RegGAN (full)"  # the method every other row is compared with (``verdict``)
LITE = "RegGAN lite (distilled refiner)"  # the same model with its narrow refiner ([runtime].refiner = "lite")


def build_methods(reggan: Synthesizer, extra: dict[str, Synthesizer] | None = None) -> dict:
    """Method name -> function(crops, expressions, keeps, bends, open_mouths) -> crops. The warp-only row is there
    when the model has a warp; ``extra`` rows (the lite refiner, --baseline checkpoints) follow the full model."""
    methods = {"copy-the-input": lambda crops, expressions, keeps, bends, open_mouths: list(crops)}
    table = Displacements(reggan.warp)
    if table.moves:
        methods["warp only"] = partial(synthesize_batch, reggan, table, stage="warp")
    methods |= {"regression only": partial(synthesize_batch, reggan, table, stage="regression"),
                FULL: partial(synthesize_batch, reggan, table)}
    for name, model in (extra or {}).items():
        methods[name] = partial(synthesize_batch, model, Displacements(model.warp))
    return methods


def face_region(crop: np.ndarray) -> np.ndarray:
    left, top, right, bottom = template_face_box(crop.shape[0], margin=0.0)
    return crop[max(top, 0) : bottom, max(left, 0) : right]


def evaluate(rows: list[dict], methods: dict, expressions: list[str], batch: int = 16,
             distribution: bool = True, placement_of=None) -> dict:
    """Scores per method, overall and per expression, on prepared held-out rows. ``placement_of``: neutral photo
    path -> (its keep mask  # [R, R], its bend or None, its open mouth  # [R, R]); none given: nothing kept, nothing
    bent."""
    targets_of: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in rows:
        if row["expression"] in expressions:
            targets_of[(str(row["neutral"]), row["expression"])].append(str(row["target"]))
    jobs = sorted(targets_of)
    expression_judge, identity_judge = ExpressionJudge(), IdentityJudge()
    qualiclip = optional_qualiclip()
    if distribution:
        from training.quality import NIQE, FrechetReference, InceptionFeatures, kernel_inception_distance, paired_gap

        inception, niqe = InceptionFeatures(), NIQE()
        real_paths = sorted({t for targets in targets_of.values() for t in targets})
        real_features = inception([read_rgb(p) for p in real_paths])
        real_reference = FrechetReference(real_features)
    results, features_of = {}, {}
    for name, method in methods.items():
        per_job, outputs = [], []
        for start in tqdm(range(0, len(jobs), batch), desc=name, unit="batch", leave=False):
            chunk = jobs[start : start + batch]
            inputs = [read_rgb(neutral) for neutral, _ in chunk]
            placements = [placement_of(neutral) if placement_of
                          else (np.zeros(face.shape[:2], np.float32), None, None)
                          for face, (neutral, _) in zip(inputs, chunk)]
            keeps, bends, open_mouths = (list(column) for column in zip(*placements))
            batch_outputs = method(inputs, [expression for _, expression in chunk], keeps, bends, open_mouths)
            outputs += batch_outputs
            probabilities = expression_judge.probabilities(batch_outputs)
            for (neutral, expression), source, output, probability in zip(chunk, inputs, batch_outputs, probabilities):
                reals = [read_rgb(t) for t in targets_of[(neutral, expression)]]
                per_job.append({
                    "expression": expression,
                    "ecs_hit": float(JUDGE_CLASSES[int(probability.argmax())] == expression),
                    "ecs_probability": float(probability[JUDGE_CLASSES.index(expression)]),
                    "identity_distance": identity_judge.distance(source, output),
                    "identity_to_real": float(np.mean([identity_judge.distance(output, r) for r in reals])),
                    "l1": float(np.mean([np.abs(face_region(output) / 255.0 - face_region(r) / 255.0).mean() for r in reals])),
                    "ssim": float(np.mean([structural_similarity(face_region(output), face_region(r), channel_axis=2)
                                           for r in reals])),
                })
        results[name] = summarise(per_job)
        # Per pair, in the same order for every method: the verdict tests whether two accuracies differ by more
        # than chance (training/report.py, paired_difference).
        results[name]["ecs_hits"] = [item["ecs_hit"] for item in per_job]
        if distribution:
            features = features_of[name] = inception(outputs)
            results[name]["overall"]["fid"] = real_reference.distance(features)
            results[name]["overall"]["kid"] = kernel_inception_distance(features, real_features)
            results[name]["overall"]["niqe"] = niqe.of_set(outputs)
        if not isinstance(qualiclip, str):
            results[name]["overall"]["qualiclip"] = float(qualiclip(outputs).mean())
    if distribution and FULL in features_of:
        # Is a row's FID gap to the full model more than a redraw of the same photos would move it?
        full_redrawn = real_reference.redrawn(features_of[FULL])
        for name, features in features_of.items():
            if name != FULL:
                results[name]["fid_against_full"] = paired_gap(full_redrawn, real_reference.redrawn(features))
    summary = {"pairs": len(jobs), "methods": results}
    if isinstance(qualiclip, str):
        summary["qualiclip_unavailable"] = qualiclip
    if distribution:
        summary["fid_samples"] = {"outputs": len(jobs), "real": len(real_paths)}
        summary["real_photos"] = {"ecs_accuracy": float(np.mean([
            JUDGE_CLASSES[int(p.argmax())] == e for (n, e) in jobs for p in
            expression_judge.probabilities([read_rgb(t) for t in targets_of[(n, e)]])])),
            "niqe": niqe.of_set([read_rgb(p) for p in real_paths])}
    return summary


def optional_qualiclip():
    """The QualiCLIP judge where it can run offline, else the reason it cannot (a string, for the report)."""
    from training.quality import QualiCLIP, QualityJudgeUnavailable

    try:
        return QualiCLIP()
    except QualityJudgeUnavailable as why:
        return str(why)


def aligned_faces(paths: list, aligner, tracker, bend: bool = True) -> list[tuple]:
    """The largest face of each still, aligned  # [R, R, 3] uint8, with its keep mask  # [R, R], its bend (None
    when ``bend`` is off) and its open mouth  # [R, R] as the tool makes them; stills without a face are left out."""
    from reggan.trackers import find_faces

    faces = []
    for path in paths:
        image = read_rgb(path)
        found = find_faces(tracker, image)
        if found:
            placed = aligner.place(found[0])
            face_bend = aligner.bend(placed.points) if bend else None
            faces.append((aligner.crop(image, placed.matrix), placed.keep, face_bend, placed.open_mouth))
    return faces


def evaluate_stills(paths: list, methods: dict, expressions: list[str], aligner, tracker, bend: bool = True) -> dict:
    """Out-of-distribution stills: each face aligned, every method x expression scored for ECS, FSS and NIQE."""
    from training.quality import NIQE

    faces = aligned_faces(paths, aligner, tracker, bend)
    crops, keeps, bends, open_mouths = (list(column) for column in zip(*faces)) if faces else ([], [], [], [])
    expression_judge, identity_judge, niqe = ExpressionJudge(), IdentityJudge(), NIQE()
    results = {}
    for name, method in methods.items():
        per_job, outputs_all = [], []
        for expression in expressions:
            outputs = method(crops, [expression] * len(crops), keeps, bends, open_mouths)
            outputs_all += outputs
            for source, output, probability in zip(crops, outputs, expression_judge.probabilities(outputs)):
                per_job.append({
                    "expression": expression,
                    "ecs_hit": float(JUDGE_CLASSES[int(probability.argmax())] == expression),
                    "ecs_probability": float(probability[JUDGE_CLASSES.index(expression)]),
                    "identity_distance": identity_judge.distance(source, output),
                })
        results[name] = {**summarise_simple(per_job), "niqe": niqe.of_set(outputs_all)}
    return {"faces": len(crops), "stills": len(paths), "methods": results}


def summarise_simple(per_job: list[dict]) -> dict:
    distances = np.array([item["identity_distance"] for item in per_job])
    return {"ecs_accuracy": float(np.mean([i["ecs_hit"] for i in per_job])),
            "ecs_probability": float(np.mean([i["ecs_probability"] for i in per_job])),
            "identity_distance": float(distances.mean()),
            "same_person_fraction": float((distances < SAME_PERSON_THRESHOLD).mean())}


def process_clip(frames: list[np.ndarray], backend, tracker_backend, fps: float, expression: str, smoothing: float,
                 bend_time: float | None = 2.0):
    """Every frame through a fresh frame processor, smoothing and bending as the tool is configured ([edit].smoothing,
    [edit].bend_time; None: no bend) -> (outputs, face masks, aligned output faces)  # RGB uint8, bool [H, W] each,
    [R, R, 3] per frame with a face."""
    from live.control import ExpressionController
    from live.processor import FrameProcessor
    from live.tracker import FaceTracker

    processor = FrameProcessor(FaceTracker(tracker_backend, detect_every=10), backend,
                               ExpressionController(expression, 1.0, 0.0), smoothing=smoothing, bend_time=bend_time)
    outputs, masks, faces = [], [], []
    for index, frame in enumerate(frames):
        outputs.append(processor.process(frame, index / fps))
        matrices = [processor.aligner.matrix_for(track.landmarks) for track in processor.tracker.tracks]
        mask = np.zeros(frame.shape[:2], bool)
        for matrix in matrices:
            mask |= processor.aligner.uncrop(processor.compositor.face, matrix, frame.shape) > 0.5
        if matrices:
            faces.append(processor.aligner.crop(outputs[-1], matrices[0]))
        masks.append(mask)
    return outputs, masks, faces


def expression_shown(faces: list[np.ndarray], expression: str, judge) -> float:
    """The judge's mean probability of ``expression`` over a clip's aligned faces (0 without faces)."""
    if not faces:
        return 0.0
    return float(judge.probabilities(faces)[:, JUDGE_CLASSES.index(expression)].mean())


STABLE_REFERENCE = "reference: contrast x1.5 in the face (no flicker by construction)"
NOISY_REFERENCE = "reference: fresh noise, sigma 3, in the face (flicker by construction)"


def evaluate_flicker(clips: list, backends: dict, tracker_backend, *, smoothing: float, expression: str = "happy",
                     max_frames: int = 120, unsmoothed: tuple[str, ...] = (), bend_time: float | None = 2.0) -> dict:
    """Flicker ratio (output / input, face region) of each method's backend on each clip, and of two reference
    edits whose answer is known, on the face masks of the first method; and how strongly each method shows the
    expression on the clip (the judge's mean probability of it on the output faces: the smoothing that lowers
    flicker also softens the change, so the two are read together). Methods named in ``unsmoothed`` are scored
    once more with the smoothing off."""
    from live.sources import read_clip
    from training.temporal import FlickerMeter, noisy_edit, stable_contrast_edit

    judge = ExpressionJudge()
    runs = [(name, backend, smoothing) for name, backend in backends.items()]
    runs += [(f"{name}, smoothing off", backends[name], 0.0) for name in unsmoothed]
    results: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)  # method -> clip -> scores
    for clip in clips:
        frames, rate = read_clip(clip, max_frames)
        meter = FlickerMeter(frames)
        reference_masks = None
        for name, backend, time_constant in runs:
            outputs, masks, faces = process_clip(frames, backend, tracker_backend, rate, expression, time_constant,
                                                 bend_time)
            reference_masks = reference_masks or masks
            results[name][Path(clip).name] = {**meter.scores(outputs, masks),
                                              "expression": expression_shown(faces, expression, judge)}
        rng = np.random.default_rng(0)
        results[STABLE_REFERENCE][Path(clip).name] = meter.scores(
            [stable_contrast_edit(f, m) for f, m in zip(frames, reference_masks)], reference_masks)
        results[NOISY_REFERENCE][Path(clip).name] = meter.scores(
            [noisy_edit(f, m, rng) for f, m in zip(frames, reference_masks)], reference_masks)

    def summary(per_clip: dict[str, dict[str, float]], score: str) -> dict[str, float]:
        return {clip: scores[score] for clip, scores in per_clip.items()}

    def scored(per_clip: dict[str, dict[str, float]], score: str) -> dict:
        if not all(score in scores for scores in per_clip.values()):
            return {}
        return {f"per_clip_{score}": summary(per_clip, score),
                f"mean_{score}": float(np.mean([s[score] for s in per_clip.values()]))}

    return {name: {"per_clip": summary(per_clip, "flicker"),
                   "mean": float(np.mean([s["flicker"] for s in per_clip.values()])),
                   "per_clip_equal_contrast": summary(per_clip, "flicker_equal_contrast"),
                   "mean_equal_contrast": float(np.mean([s["flicker_equal_contrast"] for s in per_clip.values()])),
                   **scored(per_clip, "expression")}
            for name, per_clip in results.items()}


def evaluate_synthetic_motion(stills: list[np.ndarray], backends: dict, tracker_backend, *, smoothing: float,
                              expression: str = "happy", frames_each: int = 90, bend_time: float | None = 2.0) -> dict:
    """Flicker where the right answer is known: each still moved along a head-like path (training/temporal.py),
    through the frame loop, against the still edited once and moved along the same path (the exact answer).

    Per method: the flicker ratio of the loop's output, that of the exact answer (what the metric gives a perfect
    result), and the mean absolute error to the exact answer inside the face (grey levels).
    """
    from reggan.editor import PhotoEditor
    from training.temporal import FlickerMeter, moving_clip

    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for index, still in enumerate(stills):
        frames = moving_clip(still, frames_each, seed=index)
        meter = FlickerMeter(frames)
        for name, backend in backends.items():
            editor = PhotoEditor(backend, tracker_backend, bend=bend_time is not None)
            exact = moving_clip(editor.edit(still, expression), frames_each, seed=index)
            outputs, masks, _ = process_clip(frames, backend, tracker_backend, 30.0, expression, smoothing, bend_time)
            scores[name]["flicker"].append(meter.ratio(outputs, masks))
            scores[name]["flicker_of_exact_answer"].append(meter.ratio(exact, masks))
            scores[name]["error_to_exact_answer"].append(float(np.mean(
                [np.abs(o.astype(np.float32) - e).mean(axis=2)[m].mean() for o, e, m in zip(outputs, exact, masks)
                 if m.any()])))
    return {"stills": len(stills), "frames_each": frames_each,
            "methods": {name: {key: float(np.mean(values)) for key, values in method.items()}
                        for name, method in scores.items()}}


def label_tile(text: str, width: int, height: int, scale: float = 0.45) -> np.ndarray:
    """White tile with ``text`` wrapped word by word to fit ``width``  # [height, width, 3] uint8."""
    import cv2

    lines: list[str] = []
    for word in text.split(" "):
        wider = f"{lines[-1]} {word}" if lines else word
        if lines and cv2.getTextSize(wider, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] <= width - 8:
            lines[-1] = wider
        else:
            lines.append(word)
    tile = np.full((height, width, 3), 255, np.uint8)
    for index, line in enumerate(lines):
        cv2.putText(tile, line, (4, 20 + 18 * index), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return tile


def contact_sheet(faces: list[tuple], methods: dict, expressions: list[str], tile: int = 80) -> np.ndarray:
    """Rows: each input (crop, keep mask, bend, open mouth) x each method; columns: the method's name, the input,
    then each expression  # [H, W, 3] uint8."""
    import cv2

    label_width = 2 * tile  # room for names such as "StarGAN-style (our retraining)" in three lines
    rows = []
    for crop, keep, bend, open_mouth in faces:
        for name, method in methods.items():
            count = len(expressions)
            outputs = method([crop] * count, expressions, [keep] * count, [bend] * count, [open_mouth] * count)
            tiles = [cv2.resize(image, (tile, tile), interpolation=cv2.INTER_AREA) for image in [crop, *outputs]]
            rows.append(np.hstack([label_tile(name, label_width, tile), *tiles]))
    header = np.full((28, rows[0].shape[1], 3), 255, np.uint8)
    for column, text in enumerate(["input", *expressions]):
        cv2.putText(header, text, (label_width + column * tile + 6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                    cv2.LINE_AA)
    cv2.putText(header, "method", (4, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([header, *rows])


def summarise(per_job: list[dict]) -> dict:
    def aggregate(items: list[dict]) -> dict:
        distances = np.array([item["identity_distance"] for item in items])
        return {
            "identity_to_real": float(np.mean([item["identity_to_real"] for item in items])),
            "ecs_accuracy": float(np.mean([item["ecs_hit"] for item in items])),
            "ecs_probability": float(np.mean([item["ecs_probability"] for item in items])),
            "identity_distance": float(distances.mean()),
            "same_person_fraction": float((distances < SAME_PERSON_THRESHOLD).mean()),
            "l1": float(np.mean([item["l1"] for item in items])),
            "ssim": float(np.mean([item["ssim"] for item in items])),
            "count": len(items),
        }

    by_expression = defaultdict(list)
    for item in per_job:
        by_expression[item["expression"]].append(item)
    return {"overall": aggregate(per_job), "per_expression": {e: aggregate(v) for e, v in sorted(by_expression.items())}}
