"""``reggan eval``: how well each method shows the expression, keeps the person, looks real, and stays still.

Per held-out (neutral photo, target expression), each method synthesizes one face; it is scored by
  - ECS: the independent judge's verdict (accuracy and mean probability of the target class),
  - FSS: dlib identity distance input <-> output (mean, and the fraction under the same-person threshold 0.6),
    and on paired data also output <-> the real expressive photo of the same person,
  - L1 and SSIM to the real expressive photo(s) of the same person, inside the template face box,
  - FID and KID of all outputs against the real expressive photos, NIQE of the outputs.
Out-of-distribution stills (paintings, statues, cartoons) get ECS, FSS and NIQE; video clips get the flicker ratio.
Rows: copy-the-input, warp only (the expression's motion, no new appearance), regression only (warp + regression
layer), full RegGAN, and any extra checkpoint (e.g. our StarGAN-style retraining).
"""

from __future__ import annotations

import json
from collections import defaultdict
from functools import partial
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import structural_similarity
from tqdm import tqdm

from reggan.images import read_rgb
from reggan.networks import Synthesizer
from training.judges import JUDGE_CLASSES, SAME_PERSON_THRESHOLD, ExpressionJudge, IdentityJudge, template_face_box


def synthesize_batch(synthesizer: Synthesizer, crops: list[np.ndarray], expressions: list[str],
                     keeps: list[np.ndarray], stage="full"):
    """Aligned uint8 crops + expression names + keep masks (reggan/keep.py, as the tool makes them) ->
    synthesized uint8 crops (intensity 1).

    stage: "full", "regression" (warp + regression layer, no refiner) or "warp" (the expression's motion alone).
    """
    faces = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255
    labels = torch.tensor([synthesizer.expressions.index(e) for e in expressions])
    keep = torch.from_numpy(np.stack(keeps))[:, None]
    with torch.no_grad():
        if stage == "warp":
            out = synthesizer.warp(faces, labels, torch.ones(len(crops)))
        else:
            run = synthesizer if stage == "full" else synthesizer.coarse_only
            out = run(faces, labels, torch.ones(len(crops)), keep)
    return list((out.permute(0, 2, 3, 1).numpy() * 255).round().clip(0, 255).astype(np.uint8))


FULL = "RegGAN (full)"  # the method every other row is compared with (``verdict``)


def build_methods(reggan: Synthesizer, extra: dict[str, Synthesizer] | None = None) -> dict:
    """Method name -> function(crops, expressions, keeps) -> crops. The warp-only row is there when the model has a
    warp."""
    methods = {"copy-the-input": lambda crops, expressions, keeps: list(crops)}
    if torch.count_nonzero(reggan.warp.field):
        methods["warp only"] = partial(synthesize_batch, reggan, stage="warp")
    methods |= {"regression only": partial(synthesize_batch, reggan, stage="regression"),
                FULL: partial(synthesize_batch, reggan)}
    for name, model in (extra or {}).items():
        methods[name] = partial(synthesize_batch, model)
    return methods


def face_region(crop: np.ndarray) -> np.ndarray:
    left, top, right, bottom = template_face_box(crop.shape[0], margin=0.0)
    return crop[max(top, 0) : bottom, max(left, 0) : right]


def evaluate(rows: list[dict], methods: dict, expressions: list[str], batch: int = 16,
             distribution: bool = True, keep_of=None) -> dict:
    """Scores per method, overall and per expression, on prepared held-out rows. ``keep_of``: neutral photo path ->
    its keep mask  # [R, R] (its open mouth); none given: nothing kept."""
    targets_of: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in rows:
        if row["expression"] in expressions:
            targets_of[(str(row["neutral"]), row["expression"])].append(str(row["target"]))
    jobs = sorted(targets_of)
    expression_judge, identity_judge = ExpressionJudge(), IdentityJudge()
    qualiclip = optional_qualiclip()
    if distribution:
        from training.quality import NIQE, InceptionFeatures, frechet_distance, kernel_inception_distance

        inception, niqe = InceptionFeatures(), NIQE()
        real_paths = sorted({t for targets in targets_of.values() for t in targets})
        real_features = inception([read_rgb(p) for p in real_paths])
    results = {}
    for name, method in methods.items():
        per_job, outputs = [], []
        for start in tqdm(range(0, len(jobs), batch), desc=name, unit="batch", leave=False):
            chunk = jobs[start : start + batch]
            inputs = [read_rgb(neutral) for neutral, _ in chunk]
            keeps = [keep_of(neutral) if keep_of else np.zeros(face.shape[:2], np.float32)
                     for face, (neutral, _) in zip(inputs, chunk)]
            batch_outputs = method(inputs, [expression for _, expression in chunk], keeps)
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
        if distribution:
            features = inception(outputs)
            results[name]["overall"]["fid"] = frechet_distance(features, real_features)
            results[name]["overall"]["kid"] = kernel_inception_distance(features, real_features)
            results[name]["overall"]["niqe"] = niqe.of_set(outputs)
        if not isinstance(qualiclip, str):
            results[name]["overall"]["qualiclip"] = float(qualiclip(outputs).mean())
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


def aligned_faces(paths: list, aligner, tracker) -> list[tuple[np.ndarray, np.ndarray]]:
    """The largest face of each still, aligned  # [R, R, 3] uint8, with its keep mask  # [R, R] as the tool makes it;
    stills without a face are left out."""
    from reggan.trackers import find_faces

    faces = []
    for path in paths:
        image = read_rgb(path)
        found = find_faces(tracker, image)
        if found:
            placed = aligner.place(found[0])
            faces.append((aligner.crop(image, placed.matrix), placed.keep))
    return faces


def evaluate_stills(paths: list, methods: dict, expressions: list[str], aligner, tracker) -> dict:
    """Out-of-distribution stills: each face aligned, every method x expression scored for ECS, FSS and NIQE."""
    from training.quality import NIQE

    faces = aligned_faces(paths, aligner, tracker)
    crops, keeps = [crop for crop, _ in faces], [keep for _, keep in faces]
    expression_judge, identity_judge, niqe = ExpressionJudge(), IdentityJudge(), NIQE()
    results = {}
    for name, method in methods.items():
        per_job, outputs_all = [], []
        for expression in expressions:
            outputs = method(crops, [expression] * len(crops), keeps)
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


def process_clip(frames: list[np.ndarray], backend, tracker_backend, fps: float, expression: str, smoothing: float):
    """Every frame through a fresh frame processor, smoothing as the tool is configured ([edit].smoothing) ->
    (outputs, face masks, aligned output faces)  # RGB uint8, bool [H, W] each, [R, R, 3] per frame with a face."""
    from live.control import ExpressionController
    from live.processor import FrameProcessor
    from live.tracker import FaceTracker

    processor = FrameProcessor(FaceTracker(tracker_backend, detect_every=10), backend,
                               ExpressionController(expression, 1.0, 0.0), smoothing=smoothing)
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
                     max_frames: int = 120, unsmoothed: tuple[str, ...] = ()) -> dict:
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
            outputs, masks, faces = process_clip(frames, backend, tracker_backend, rate, expression, time_constant)
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
                              expression: str = "happy", frames_each: int = 90) -> dict:
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
            exact = moving_clip(PhotoEditor(backend, tracker_backend).edit(still, expression), frames_each, seed=index)
            outputs, masks, _ = process_clip(frames, backend, tracker_backend, 30.0, expression, smoothing)
            scores[name]["flicker"].append(meter.ratio(outputs, masks))
            scores[name]["flicker_of_exact_answer"].append(meter.ratio(exact, masks))
            scores[name]["error_to_exact_answer"].append(float(np.mean(
                [np.abs(o.astype(np.float32) - e).mean(axis=2)[m].mean() for o, e, m in zip(outputs, exact, masks)
                 if m.any()])))
    return {"stills": len(stills), "frames_each": frames_each,
            "methods": {name: {key: float(np.mean(values)) for key, values in method.items()}
                        for name, method in scores.items()}}


def contact_sheet(faces: list[tuple[np.ndarray, np.ndarray]], methods: dict, expressions: list[str],
                  tile: int = 80) -> np.ndarray:
    """Rows: each input (crop, keep mask) x each method; columns: input, then each expression  # [H, W, 3] uint8."""
    import cv2

    rows = []
    for crop, keep in faces:
        for name, method in methods.items():
            outputs = method([crop] * len(expressions), expressions, [keep] * len(expressions))
            tiles = [cv2.resize(image, (tile, tile), interpolation=cv2.INTER_AREA) for image in [crop, *outputs]]
            label = np.full((tile, tile, 3), 255, np.uint8)
            for line, text in enumerate(name.split(" ")):
                cv2.putText(label, text, (6, 30 + 22 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
            rows.append(np.hstack([label, *tiles]))
    header = np.full((28, rows[0].shape[1], 3), 255, np.uint8)
    for column, text in enumerate(["method", "input", *expressions]):
        cv2.putText(header, text, (column * tile + 6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
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


COLUMNS = [("ecs_accuracy", "ECS acc ↑", "{:.3f}"), ("ecs_probability", "ECS prob ↑", "{:.3f}"),
           ("identity_distance", "FSS: ID dist to input ↓", "{:.3f}"), ("same_person_fraction", "same person ↑", "{:.2f}"),
           ("identity_to_real", "ID dist to real photo ↓", "{:.3f}"),
           ("fid", "FID ↓", "{:.1f}"), ("kid", "KID ↓", "{:.4f}"), ("niqe", "NIQE ↓", "{:.2f}"),
           ("qualiclip", "QualiCLIP ↑", "{:.3f}"), ("l1", "L1 ↓", "{:.4f}"), ("ssim", "SSIM ↑", "{:.3f}")]
OPTIONAL_COLUMNS = {"qualiclip"}  # shown only when some method has it (the judge could run)


def markdown_table(results: dict) -> str:
    present = {key for scores in results["methods"].values() for key in scores["overall"]}
    columns = [c for c in COLUMNS if c[0] not in OPTIONAL_COLUMNS or c[0] in present]
    lines = ["| method | " + " | ".join(title for _, title, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, scores in results["methods"].items():
        overall = scores["overall"]
        lines.append(f"| {name} | " + " | ".join(fmt.format(overall[key]) if key in overall else "–"
                                                 for key, _, fmt in columns) + " |")
    return "\n".join(lines)


def per_expression_table(results: dict) -> str:
    expressions = sorted({e for s in results["methods"].values() for e in s["per_expression"]})
    lines = ["| method | " + " | ".join(f"{e} ECS / ID" for e in expressions) + " |", "|---" * (len(expressions) + 1) + "|"]
    for name, scores in results["methods"].items():
        cells = []
        for e in expressions:
            item = scores["per_expression"].get(e)
            cells.append(f"{item['ecs_accuracy']:.2f} / {item['identity_distance']:.2f}" if item else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def simple_table(methods: dict, columns: list[tuple[str, str, str]]) -> str:
    lines = ["| method | " + " | ".join(title for _, title, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, scores in methods.items():
        lines.append(f"| {name} | " + " | ".join(fmt.format(scores[key]) for key, _, fmt in columns) + " |")
    return "\n".join(lines)


SPLIT_HEADINGS = {
    "eval": "## Held-out people (paired)\n",
    "val": "## Validation people (paired; for choosing between models, the held-out people stay unseen)\n",
}


def flicker_table(flicker: dict, per_clip: str, mean: str) -> str:
    clips = sorted(next(iter(flicker.values()))[per_clip])
    lines = ["| method | " + " | ".join(clips) + " | mean |", "|---" * (len(clips) + 2) + "|"]
    for name, scores in flicker.items():
        lines.append(f"| {name} | " + " | ".join(f"{scores[per_clip][c]:.3f}" for c in clips)
                     + f" | {scores[mean]:.3f} |")
    return "\n".join(lines) + "\n"


# Rows the full model is not measured against in the verdict: the input itself and the ablation below the
# regression layer. The regression-only row and every --baseline row are.
NOT_COMPETITORS = {"copy-the-input", "warp only", FULL}
FLICKER_TARGET = 1.1


def verdict(results: dict) -> list[tuple[str, bool | None]]:
    """The targets this project set the full model, each answered from the numbers in ``results``: ahead of every
    competing row on ECS accuracy and FID, every output the same person, flicker at most FLICKER_TARGET on every
    clip. A plain answer on top of the report, so a miss cannot hide in the tables. (Markdown line, met) pairs;
    met is None where this run did not measure it."""
    methods = results["held_out"]["methods"]
    if FULL not in methods:
        return []
    full = methods[FULL]["overall"]
    rivals = {name: scores["overall"] for name, scores in methods.items() if name not in NOT_COMPETITORS}

    def compared(key: str, title: str, fmt: str, higher_is_better: bool) -> tuple[str, bool | None]:
        if key not in full or not rivals:
            return f"- {title}: not measured in this run, or no other model to compare with.", None
        answers, met = [], True
        for name, scores in rivals.items():
            ahead = full[key] > scores[key] if higher_is_better else full[key] < scores[key]
            met &= ahead
            answers.append(f"ahead of {name} ({fmt.format(full[key])} vs {fmt.format(scores[key])}): "
                           + ("yes" if ahead else "**no**"))
        return f"- {title}: " + "; ".join(answers) + ".", met

    answers = [compared("ecs_accuracy", "ECS accuracy", "{:.3f}", True), compared("fid", "FID (lower is better)", "{:.1f}", False)]
    same = full["same_person_fraction"] == 1.0
    answers.append((f"- Identity, every output the same person (distance under {SAME_PERSON_THRESHOLD}): "
                    f"{'yes' if same else '**no**'} ({full['same_person_fraction']:.0%}, mean distance "
                    f"{full['identity_distance']:.3f}).", same))
    flicker = results.get("flicker", {}).get(FULL)
    if flicker:
        over = {clip: value for clip, value in sorted(flicker["per_clip"].items()) if value > FLICKER_TARGET}
        answer = ("**no** (" + ", ".join(f"{clip} {value:.3f}" for clip, value in over.items()) + ")" if over
                  else f"yes (highest {max(flicker['per_clip'].values()):.3f})")
        answers.append((f"- Flicker at most {FLICKER_TARGET} on every clip: {answer}.", not over))
    return answers


def verdict_section(results: dict, shortfall_note: str) -> list[str]:
    answers = verdict(results)
    if not answers:
        return []
    missed = any(met is False for _, met in answers)
    note = [shortfall_note + "\n"] if missed and shortfall_note else []
    return ["## Verdict\n", f"The targets for {FULL}, answered from the tables below:\n",
            "\n".join(line for line, _ in answers) + "\n", *note]


def write_report(results: dict, out_dir: Path, command: str, machine: str, sheet: np.ndarray | None = None,
                 title: str = "reggan eval", shortfall_note: str = "") -> Path:
    """results.md (a verdict, then the tables), results.json (the same numbers) and contact_sheet.png in
    ``out_dir``. shortfall_note: said under the verdict when a target is missed (where to read what was tried)."""
    from reggan.images import write_rgb

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    held = results["held_out"]
    parts = [f"# {title}\n", f"Command: `{command}`\n", f"Machine: {machine}\n",
             *verdict_section(results, shortfall_note),
             SPLIT_HEADINGS[results.get("split", "eval")],
             f"{held['pairs']} (neutral photo, expression) pairs of people left out of training. "
             + (f"FID/KID: {held['fid_samples']['outputs']} outputs against {held['fid_samples']['real']} real "
                "expressive photos — FID is strongly biased at this sample count, so compare rows with each other "
                "and read KID beside it. " if "fid_samples" in held else "")
             + (f"The judge's accuracy on the real expressive photos themselves (its ceiling here): "
                f"{held['real_photos']['ecs_accuracy']:.3f}; their NIQE: {held['real_photos']['niqe']:.2f}.\n"
                if "real_photos" in held else "\n"),
             markdown_table(held) + "\n",
             *([f"QualiCLIP (the paper's no-reference score) was not computed: {held['qualiclip_unavailable']}.\n"]
               if "qualiclip_unavailable" in held else []),
             "Per expression (ECS accuracy / identity distance to the input):\n", per_expression_table(held) + "\n"]
    if "ood" in results:
        ood = results["ood"]
        parts += ["## Out of distribution (paintings, statue, cartoon, portraits)\n",
                  f"{ood['faces']} faces found in {ood['stills']} stills, every expression each. NIQE pools the "
                  "96-px patches of all of a method's outputs into one fit (a 256-px crop alone has only four).\n",
                  simple_table(ood["methods"], [("ecs_accuracy", "ECS acc ↑", "{:.3f}"),
                                                ("ecs_probability", "ECS prob ↑", "{:.3f}"),
                                                ("identity_distance", "ID dist ↓", "{:.3f}"),
                                                ("same_person_fraction", "same person ↑", "{:.2f}"),
                                                ("niqe", "NIQE ↓", "{:.2f}")]) + "\n"]
    if "flicker" in results:
        flicker = results["flicker"]
        parts += ["## Temporal stability on video\n",
                  "Flicker of the face region relative to the input after optical-flow motion compensation "
                  "(1.0 = no more flicker than the source; happy, full intensity).\n",
                  flicker_table(flicker, "per_clip", "mean")]
        if STABLE_REFERENCE in flicker:
            parts.append("The two reference rows calibrate the metric on the same clips and face masks: an edit that "
                         "cannot flicker but adds contrast already scores above 1, because the flow's errors leave "
                         "more residual on higher contrast; fresh per-frame noise is what real flicker looks like.\n")
        if all("per_clip_equal_contrast" in scores for scores in flicker.values()):
            parts += ["### At equal contrast\n",
                      "The same residuals, each clip's divided by its structure (the gradient of the frame blurred "
                      "by 1.5 px: what a flow error turns into residual, nearly blind to sensor noise), output over "
                      "input. Contrast alone no longer counts; change over time that the input's motion does not "
                      "explain still does.\n",
                      flicker_table(flicker, "per_clip_equal_contrast", "mean_equal_contrast")]
        shown = {name: scores for name, scores in flicker.items() if "per_clip_expression" in scores}
        if shown:
            parts += ["### The expression on video\n",
                      "The judge's mean probability of the target expression on each clip's output faces (aligned "
                      "crops, every frame with a face). The video smoothing that lowers flicker also softens the "
                      "change, so read this with the flicker above; a row marked \"smoothing off\" is the same model "
                      "with every frame's change as synthesized.\n",
                      flicker_table(shown, "per_clip_expression", "mean_expression")]
    if "synthetic_motion" in results:
        synthetic = results["synthetic_motion"]
        parts += ["### Synthetic head motion, answer known\n",
                  f"{synthetic['stills']} held-out neutral faces, each moved along a smooth head-like path (sway, nod, "
                  f"roll, zoom; {synthetic['frames_each']} frames at 30 fps, sensor noise) and run through the frame "
                  "loop. The exact answer is the face edited once and moved along the same path.\n",
                  simple_table(synthetic["methods"], [("flicker", "flicker ↓", "{:.3f}"),
                                                      ("flicker_of_exact_answer", "flicker of the exact answer",
                                                       "{:.3f}"),
                                                      ("error_to_exact_answer", "error to the exact answer ↓",
                                                       "{:.2f}")]) + "\n"]
    if sheet is not None:
        write_rgb(out_dir / "contact_sheet.png", sheet)
        parts += ["## Contact sheet\n", "![inputs x methods x expressions](contact_sheet.png)\n"]
    report = out_dir / "results.md"
    report.write_text("\n".join(parts))
    return report
