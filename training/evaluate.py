"""``reggan eval``: how well each method shows the expression, keeps the person, and matches the real photo.

Per held-out (neutral photo, target expression), each method synthesizes one face; it is scored by
  - ECS: the independent judge's verdict (accuracy and mean probability of the target class),
  - FSS: dlib identity distance input <-> output (mean, and the fraction under the same-person threshold 0.6),
  - L1 and SSIM to the real expressive photo(s) of the same person, inside the template face box.
Rows: copy-the-input, regression only, full RegGAN, and any extra checkpoint (e.g. our StarGAN-style retraining).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import structural_similarity
from tqdm import tqdm

from reggan.images import read_rgb
from reggan.networks import Synthesizer
from training.judges import JUDGE_CLASSES, SAME_PERSON_THRESHOLD, ExpressionJudge, IdentityJudge, template_face_box


def synthesize_batch(synthesizer: Synthesizer, crops: list[np.ndarray], expressions: list[str], coarse_only=False):
    """Aligned uint8 crops + expression names -> synthesized uint8 crops (intensity 1)."""
    faces = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255
    labels = torch.tensor([synthesizer.expressions.index(e) for e in expressions])
    with torch.no_grad():
        run = synthesizer.coarse_only if coarse_only else synthesizer
        out = run(faces, labels, torch.ones(len(crops)))
    return list((out.permute(0, 2, 3, 1).numpy() * 255).round().clip(0, 255).astype(np.uint8))


def build_methods(reggan: Synthesizer, extra: dict[str, Synthesizer] | None = None) -> dict:
    """Method name -> function(crops, expressions) -> crops."""
    methods = {
        "copy-the-input": lambda crops, expressions: list(crops),
        "regression only": lambda crops, expressions: synthesize_batch(reggan, crops, expressions, coarse_only=True),
        "RegGAN (full)": lambda crops, expressions: synthesize_batch(reggan, crops, expressions),
    }
    for name, model in (extra or {}).items():
        methods[name] = lambda crops, expressions, model=model: synthesize_batch(model, crops, expressions)
    return methods


def face_region(crop: np.ndarray) -> np.ndarray:
    left, top, right, bottom = template_face_box(crop.shape[0], margin=0.0)
    return crop[max(top, 0) : bottom, max(left, 0) : right]


def evaluate(rows: list[dict], methods: dict, expressions: list[str], batch: int = 16) -> dict:
    """Scores per method, overall and per expression, on prepared held-out rows."""
    targets_of: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in rows:
        if row["expression"] in expressions:
            targets_of[(str(row["neutral"]), row["expression"])].append(str(row["target"]))
    jobs = sorted(targets_of)
    expression_judge, identity_judge = ExpressionJudge(), IdentityJudge()
    results = {}
    for name, method in methods.items():
        per_job = []
        for start in tqdm(range(0, len(jobs), batch), desc=name, unit="batch", leave=False):
            chunk = jobs[start : start + batch]
            inputs = [read_rgb(neutral) for neutral, _ in chunk]
            outputs = method(inputs, [expression for _, expression in chunk])
            probabilities = expression_judge.probabilities(outputs)
            for (neutral, expression), source, output, probability in zip(chunk, inputs, outputs, probabilities):
                reals = [read_rgb(t) for t in targets_of[(neutral, expression)]]
                per_job.append({
                    "expression": expression,
                    "ecs_hit": float(JUDGE_CLASSES[int(probability.argmax())] == expression),
                    "ecs_probability": float(probability[JUDGE_CLASSES.index(expression)]),
                    "identity_distance": identity_judge.distance(source, output),
                    "l1": float(np.mean([np.abs(face_region(output) / 255.0 - face_region(r) / 255.0).mean() for r in reals])),
                    "ssim": float(np.mean([structural_similarity(face_region(output), face_region(r), channel_axis=2)
                                           for r in reals])),
                })
        results[name] = summarise(per_job)
    return {"pairs": len(jobs), "methods": results}


def summarise(per_job: list[dict]) -> dict:
    def aggregate(items: list[dict]) -> dict:
        distances = np.array([item["identity_distance"] for item in items])
        return {
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
           ("identity_distance", "ID dist ↓", "{:.3f}"), ("same_person_fraction", "same person ↑", "{:.2f}"),
           ("l1", "L1 ↓", "{:.4f}"), ("ssim", "SSIM ↑", "{:.3f}")]


def markdown_table(results: dict) -> str:
    lines = ["| method | " + " | ".join(title for _, title, _ in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, scores in results["methods"].items():
        overall = scores["overall"]
        lines.append(f"| {name} | " + " | ".join(fmt.format(overall[key]) for key, _, fmt in COLUMNS) + " |")
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


def write_report(results: dict, out_dir: Path, command: str, machine: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(json.dumps(results, indent=1))
    text = (f"# reggan eval\n\nCommand: `{command}`\n\nMachine: {machine}\n\n"
            f"Held-out (neutral photo, expression) pairs: {results['pairs']}\n\n{markdown_table(results)}\n\n"
            f"Per expression (ECS accuracy / identity distance):\n\n{per_expression_table(results)}\n")
    (out_dir / "eval.md").write_text(text)
    return out_dir / "eval.md"
