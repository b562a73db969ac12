"""The ``reggan eval`` report: the measured numbers (training/evaluate.py) as Markdown tables under a verdict, the
same numbers as JSON, and the contact sheet."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from training.evaluate import FULL, LITE, STABLE_REFERENCE
from training.judges import SAME_PERSON_THRESHOLD


COLUMNS = [("ecs_accuracy", "ECS acc ↑", "{:.3f}"), ("ecs_probability", "ECS prob ↑", "{:.3f}"),
           ("identity_distance", "FSS: ID dist to input ↓", "{:.3f}"),
           ("same_person_fraction", "same person ↑", "{:.2f}"),
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
    lines = ["| method | " + " | ".join(f"{e} ECS / ID" for e in expressions) + " |",
             "|---" * (len(expressions) + 1) + "|"]
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


# Rows the full model is not measured against in the verdict: the input itself, the ablation below the
# regression layer and its own lite refiner. The regression-only row and every --baseline row are.
NOT_COMPETITORS = {"copy-the-input", "warp only", FULL, LITE}
FLICKER_TARGET = 1.1


def paired_difference(hits: list[float], other_hits: list[float]) -> tuple[int, int, float]:
    """Two methods judged on the same pairs  # 0/1 per pair each: how many pairs only the first got right, how many
    only the second, and the two-sided exact McNemar p-value (a sign test on those discordant pairs): the chance of a
    split at least this uneven if neither method were better. At 78 pairs a one-pair lead is noise, and the reader
    should see that beside the accuracies."""
    only_first = sum(1 for a, b in zip(hits, other_hits) if a > b)
    only_second = sum(1 for a, b in zip(hits, other_hits) if b > a)
    discordant = only_first + only_second
    tail = sum(math.comb(discordant, k) for k in range(min(only_first, only_second) + 1)) / 2 ** discordant
    return only_first, only_second, min(1.0, 2 * tail)


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
            answers.append(f"ahead of {name} ({fmt.format(full[key])} vs {fmt.format(scores[key])}"
                           + significance(key, name) + "): " + ("yes" if ahead else "**no**"))
        return f"- {title}: " + "; ".join(answers) + ".", met

    def significance(key: str, name: str) -> str:
        """Whether the gap could be chance: for accuracy, how many pairs apart the two are and the exact test; for
        FID, how often the full model stays lower when the same photos are drawn again (older reports kept
        neither: nothing is said then)."""
        bootstrap = methods[name].get("fid_against_full")
        if key == "fid" and bootstrap:
            low, high = bootstrap["difference_interval"]
            return (f"; lower in {bootstrap['first_lower']:.0%} of {bootstrap['resamples']} paired redraws of the "
                    f"photos, difference {low:+.1f} to {high:+.1f}")
        hits, other_hits = methods[FULL].get("ecs_hits"), methods[name].get("ecs_hits")
        if key != "ecs_accuracy" or not hits or not other_hits:
            return ""
        only_full, only_other, p = paired_difference(hits, other_hits)
        chance = f"p = {p:.2f}" if p >= 0.01 else "p < 0.01"
        return (f"; {only_full} {'pair' if only_full == 1 else 'pairs'} only it got right, {only_other} only the "
                f"other, exact McNemar {chance}")

    answers = [compared("ecs_accuracy", "ECS accuracy", "{:.3f}", True),
               compared("fid", "FID (lower is better)", "{:.1f}", False)]
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


def competitors_section(competitors: dict) -> list[str]:
    """Where each competitor row comes from and how much training it got: a short retraining is a weak rival, and
    the reader must be able to see that."""
    if not competitors:
        return []
    lines = []
    for name, trained in competitors.items():
        budget = (f"{trained['steps']} steps at batch {trained['batch']}" if trained.get("batch")
                  else f"{trained['steps']} steps") if trained.get("steps") else "an unrecorded number of steps"
        where = f" on {trained['device'].upper() if trained['device'] == 'cpu' else trained['device']}" \
            if trained.get("device") else ""
        command = f" (`{trained['training_command']}`)" if trained.get("training_command") else ""
        lines.append(f"- **{name}**: a {trained['generator']} generator working at {trained['resolution']} px, "
                     f"trained by us on this project's training people and crops, {budget}{where}{command}; "
                     f"checkpoint `{trained['checkpoint']}`.")
    return ["Competitor rows, our retrainings (not their authors' weights):\n", "\n".join(lines) + "\n"]


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
             *competitors_section(results.get("competitors", {})),
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
        write_rgb(out_dir / "contact_sheet.png", sheet, png_compression=9)
        parts += ["## Contact sheet\n", "![inputs x methods x expressions](contact_sheet.png)\n"]
    report = out_dir / "results.md"
    report.write_text("\n".join(parts))
    return report
