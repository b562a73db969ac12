"""Readers that turn a dataset's own file layout into one list of (neutral, expressive) pairs of the same person.

Every reader returns ``Pair`` records; nothing downstream knows which dataset a pair came from except for the
``dataset`` tag used by the held-out split.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path


# Datasets name the same expression differently; everything downstream uses the adjectives on the left.
EXPRESSION_ALIASES = {
    "happiness": "happy", "smiling": "happy", "smile": "happy", "sadness": "sad", "anger": "angry",
    "disgust": "disgusted", "fear": "fearful", "surprise": "surprised", "calm": "neutral",
}


def canonical_expression(name: str) -> str:
    name = name.strip().lower()
    return EXPRESSION_ALIASES.get(name, name)


@dataclass(frozen=True)
class Pair:
    dataset: str
    subject: str
    expression: str
    neutral: Path
    target: Path


def read_pairs_manifest(csv_path: str | Path, dataset: str = "pairs") -> list[Pair]:
    """A generic CSV with columns subject, expression, neutral, target (paths relative to the CSV)."""
    csv_path = Path(csv_path)
    root = csv_path.parent
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    missing = {"subject", "expression", "neutral", "target"} - set(rows[0] if rows else {})
    if missing:
        raise ValueError(f"{csv_path}: pairs manifest lacks the column(s) {', '.join(sorted(missing))}")
    return [
        Pair(dataset, row["subject"], canonical_expression(row["expression"]), root / row["neutral"], root / row["target"])
        for row in rows
    ]


def read_taiwanese(root: str | Path, perceived_must_match: bool = True) -> list[Pair]:
    """The Taiwanese performer set: every neutral take x every expressive take of the same performer.

    Observers often read the posed takes as another emotion (none of performers 26-30's "fearful" takes was
    seen as fear); keeping only takes whose perceived label matches the posed one gives clearer targets.
    """
    root = Path(root)
    with open(root / "labels.csv", newline="") as handle:
        takes = list(csv.DictReader(handle))
    neutrals: dict[str, list[Path]] = {}
    for take in takes:
        if take["expression_posed"] == "neutral":
            neutrals.setdefault(take["performer"], []).append(root / take["path"])
    pairs = []
    for take in takes:
        posed = take["expression_posed"]
        if posed in ("neutral", "unlabeled"):
            continue
        if perceived_must_match and take["perceived_max_category"] != posed:
            continue
        for neutral in neutrals.get(take["performer"], []):
            pairs.append(Pair("taiwanese", take["performer"], canonical_expression(posed), neutral, root / take["path"]))
    return pairs


def read_london(root: str | Path) -> list[Pair]:
    """The Face Research Lab London Set: neutral_front <-> smiling_front (= happy)."""
    return read_pairs_manifest(Path(root) / "pairs.csv", dataset="london")


# CFEE (Du, Tao & Martinez, PNAS 2014) category order, 22 in all; the first seven are the basic ones we name alike.
CFEE_CATEGORIES = [
    "neutral", "happy", "sad", "fearful", "angry", "surprised", "disgusted",
    "happily_surprised", "happily_disgusted", "sadly_fearful", "sadly_angry", "sadly_surprised", "sadly_disgusted",
    "fearfully_angry", "fearfully_surprised", "fearfully_disgusted", "angrily_surprised", "angrily_disgusted",
    "disgustedly_surprised", "appalled", "hatred", "awed",
]


def read_cfee(root: str | Path) -> list[Pair]:
    """CFEE as distributed by its authors: one folder per subject, files ``<subject>_<NN>.jpg`` with NN = 1..22
    in ``CFEE_CATEGORIES`` order (01 is neutral)."""
    pairs = []
    for subject_dir in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        images = {int(p.stem.split("_")[-1]): p for p in subject_dir.glob("*.jpg") if p.stem.split("_")[-1].isdigit()}
        if 1 not in images:
            continue
        for number, path in sorted(images.items()):
            if 2 <= number <= len(CFEE_CATEGORIES):
                pairs.append(Pair("cfee", subject_dir.name, CFEE_CATEGORIES[number - 1], images[1], path))
    return pairs


READERS = {"pairs": read_pairs_manifest, "taiwanese": read_taiwanese, "london": read_london, "cfee": read_cfee}


def read_sources(sources: list[str], perceived_must_match: bool = True) -> list[Pair]:
    """``["taiwanese:/path", "london:/path", "pairs:/path/pairs.csv"]`` -> all their pairs."""
    pairs: list[Pair] = []
    for source in sources:
        kind, _, path = source.partition(":")
        if kind not in READERS or not path:
            raise ValueError(f"bad data source {source!r}: write KIND:PATH with KIND one of {', '.join(READERS)}")
        if not Path(path).exists():
            raise FileNotFoundError(f"data source {source!r}: {path} does not exist")
        if kind == "taiwanese":
            pairs += read_taiwanese(path, perceived_must_match)
        else:
            pairs += READERS[kind](path)
    return pairs


def in_split(dataset: str, subject: str, rules: dict[str, str | list[str]]) -> bool:
    """Whether a person belongs to a split given as ``{"taiwanese": ["26", ...], "london": ">=120"}``."""
    rule = rules.get(dataset)
    if rule is None:
        return False
    if isinstance(rule, str) and rule.startswith(">="):
        return subject.isdigit() and int(subject) >= int(rule[2:])
    return subject in rule


def split_of(dataset: str, subject: str, data: dict) -> str:
    """"eval" for the fixed held-out people ([data.held_out]), "val" for the people kept out of training to choose
    between models ([data.validation]), else "train"."""
    if in_split(dataset, subject, data["held_out"]):
        return "eval"
    if in_split(dataset, subject, data.get("validation", {})):
        return "val"
    return "train"
