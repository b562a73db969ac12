"""``reggan prepare``: find every face once, warp it to the template, cache the crops and a pairs manifest.

Stages: pairs -> landmarks per unique photo -> (template) -> aligned crops + manifest.csv + report.txt.
Photos without a face are listed in the report and their pairs dropped; they never stop the run.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from reggan.alignment import Aligner, transform_points
from reggan.images import ImageReadError, read_rgb, write_rgb
from reggan.trackers import find_faces, make_tracker
from training.datasets import Pair, in_split, read_sources, split_of
from training.template import write_template


def locate_landmarks(paths: list[Path], tracker) -> tuple[dict[Path, np.ndarray], dict[Path, str]]:
    """Landmarks of the largest face in each photo, and why the others failed."""
    found, failed = {}, {}
    for path in tqdm(paths, desc="landmarks", unit="photo"):
        try:
            faces = find_faces(tracker, read_rgb(path))
        except ImageReadError as error:
            failed[path] = str(error)
            continue
        if faces:
            found[path] = faces[0]
        else:
            failed[path] = "no face found"
    return found, failed


def crop_name(path: Path, dataset: str) -> str:
    return f"crops/{dataset}/{path.parent.name}_{path.stem}.jpg"


def prepare(config: dict, rebuild_template: bool = False) -> Path:
    data = config["data"]
    out_dir = Path(data["prepared_dir"])
    pairs = read_sources(data["sources"], data.get("perceived_must_match", True))
    if not pairs:
        raise ValueError("the data sources hold no pairs")
    dataset_of = {}
    for pair in pairs:
        dataset_of.setdefault(pair.neutral, pair.dataset)
        dataset_of.setdefault(pair.target, pair.dataset)
    tracker = make_tracker(config["tracker"]["backend"], upsample=config["tracker"].get("upsample", 0))
    landmarks, failed = locate_landmarks(sorted(dataset_of), tracker)

    if rebuild_template:
        training_photos = {
            p for pair in pairs if not in_split(pair.dataset, pair.subject, data["held_out"])
            for p in (pair.neutral, pair.target) if p in landmarks
        }
        write_template([landmarks[p].astype(np.float64) for p in sorted(training_photos)])

    aligner = Aligner(config["model"]["resolution"])
    aligned_landmarks = {}
    for path in tqdm(sorted(landmarks), desc="align", unit="photo"):
        matrix = aligner.matrix_for(landmarks[path])
        name = crop_name(path, dataset_of[path])
        write_rgb(out_dir / name, aligner.crop(read_rgb(path), matrix), quality=95)
        aligned_landmarks[name] = transform_points(landmarks[path], matrix).round(2).tolist()

    kept = [pair for pair in pairs if pair.neutral in landmarks and pair.target in landmarks]
    write_manifest(out_dir / "manifest.csv", kept, data)
    with open(out_dir / "landmarks.json", "w") as handle:
        json.dump(aligned_landmarks, handle)
    write_report(out_dir / "report.txt", pairs, kept, failed)
    return out_dir


def write_manifest(path: Path, pairs: list[Pair], data: dict) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["dataset", "subject", "expression", "neutral", "target", "split"])
        for pair in pairs:
            split = split_of(pair.dataset, pair.subject, data)
            writer.writerow([
                pair.dataset, pair.subject, pair.expression,
                crop_name(pair.neutral, pair.dataset), crop_name(pair.target, pair.dataset), split,
            ])


def write_report(path: Path, pairs: list[Pair], kept: list[Pair], failed: dict[Path, str]) -> None:
    lines = [f"pairs read: {len(pairs)}", f"pairs kept: {len(kept)}", f"photos without a usable face: {len(failed)}"]
    lines += [f"  {photo}: {why}" for photo, why in sorted(failed.items())]
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:3]) + f"\nreport: {path}")


def read_manifest(prepared_dir: str | Path, split: str | None = None) -> list[dict]:
    """Rows of a prepared manifest (optionally one split), crop paths made absolute."""
    prepared_dir = Path(prepared_dir)
    manifest = prepared_dir / "manifest.csv"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} not found: run `reggan prepare` first")
    with open(manifest, newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if split is None or row["split"] == split]
    for row in rows:
        row["neutral"] = prepared_dir / row["neutral"]
        row["target"] = prepared_dir / row["target"]
    return rows


def read_landmarks(prepared_dir: str | Path) -> dict[Path, np.ndarray]:
    """The aligned crops' 68 landmarks  # [68, 2] (crop pixels) that `reggan prepare` stored, by absolute crop path
    (the paths read_manifest gives)."""
    prepared_dir = Path(prepared_dir)
    path = prepared_dir / "landmarks.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `reggan prepare` first")
    return {prepared_dir / name: np.asarray(points) for name, points in json.loads(path.read_text()).items()}
