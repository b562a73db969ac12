"""Dataset readers turn each layout into (neutral, expressive) pairs; the held-out split is applied by rule."""

from __future__ import annotations

import pytest

from reggan.trackers import TrackerUnavailable, make_tracker
from training.datasets import canonical_expression, in_split, read_cfee, read_pairs_manifest, read_sources, split_of


def test_pairs_manifest_resolves_paths_and_names(tmp_path):
    (tmp_path / "pairs.csv").write_text("subject,expression,neutral,target\n7,smiling,n/7.jpg,s/7.jpg\n")
    (pair,) = read_pairs_manifest(tmp_path / "pairs.csv")
    assert pair.expression == "happy" and pair.neutral == tmp_path / "n/7.jpg" and pair.subject == "7"


def test_manifest_without_the_needed_columns_is_a_clear_error(tmp_path):
    (tmp_path / "bad.csv").write_text("who,what\n1,2\n")
    with pytest.raises(ValueError, match="lacks the column"):
        read_pairs_manifest(tmp_path / "bad.csv")


def test_taiwanese_pairs_every_neutral_with_matching_expressive_takes(tmp_path):
    (tmp_path / "labels.csv").write_text(
        "path,performer,performance_type,view,expression_posed,serial,perceived_max_category,perceived_max_intensity,"
        "rating_entropy\n"
        "a.jpg,01,0,1,neutral,01,happy,0.5,1\nb.jpg,01,0,1,neutral,02,sad,0.5,1\n"
        "c.jpg,01,1,1,surprise,01,surprise,4,1\nd.jpg,01,1,1,fear,02,surprise,4,1\n")
    pairs = read_sources([f"taiwanese:{tmp_path}"], perceived_must_match=True)
    assert {(p.neutral.name, p.target.name, p.expression) for p in pairs} == {
        ("a.jpg", "c.jpg", "surprised"), ("b.jpg", "c.jpg", "surprised")}
    assert len(read_sources([f"taiwanese:{tmp_path}"], perceived_must_match=False)) == 4


def test_cfee_layout(tmp_path):
    subject = tmp_path / "12"
    subject.mkdir()
    for number in (1, 2, 7, 22):
        (subject / f"12_{number:02d}.jpg").write_bytes(b"")
    pairs = read_cfee(tmp_path)
    assert [p.expression for p in pairs] == ["happy", "disgusted", "awed"]
    assert all(p.neutral.name == "12_01.jpg" for p in pairs)


def test_bad_source_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="KIND:PATH"):
        read_sources(["nonsense"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_sources([f"london:{tmp_path / 'absent'}"])


def test_split_rules():
    rules = {"taiwanese": ["26", "27"], "london": ">=120"}
    assert in_split("taiwanese", "26", rules) and not in_split("taiwanese", "25", rules)
    assert in_split("london", "120", rules) and not in_split("london", "119", rules)
    assert not in_split("pairs", "1", rules)
    data = {"held_out": rules, "validation": {"taiwanese": ["24", "26"], "london": ["119"]}}
    assert split_of("taiwanese", "26", data) == "eval"  # held out wins: evaluation people are never moved
    assert split_of("taiwanese", "24", data) == "val" and split_of("london", "119", data) == "val"
    assert split_of("taiwanese", "25", data) == "train"
    assert split_of("taiwanese", "24", {"held_out": rules}) == "train"  # no [data.validation]: train on everyone
    assert canonical_expression(" Fear ") == "fearful"


@pytest.mark.skipif(__import__("importlib").util.find_spec("face_alignment") is not None,
                    reason="face-alignment is installed here, possibly with its weights")
def test_face_alignment_backend_without_weights_names_the_fallback():
    with pytest.raises(TrackerUnavailable, match="--tracker dlib"):
        make_tracker("face-alignment")
    with pytest.raises(ValueError, match="unknown tracker"):
        make_tracker("magic")
