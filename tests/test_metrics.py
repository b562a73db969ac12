"""Evaluation metrics on tiny inputs with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from training.temporal import flicker_ratio


def test_flicker_of_an_unchanged_video_is_one():
    rng = np.random.default_rng(0)
    base = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    frames = [np.roll(base, shift, axis=1) for shift in range(6)]  # a moving, textured picture
    noisy = [np.clip(f.astype(int) + rng.integers(-3, 4, f.shape), 0, 255).astype(np.uint8) for f in frames]
    masks = [np.ones((64, 64), bool)] * 6
    assert flicker_ratio(noisy, noisy, masks) == pytest.approx(1.0)
    jittery = [np.clip(f.astype(int) + rng.integers(-20, 21, f.shape), 0, 255).astype(np.uint8) for f in frames]
    assert flicker_ratio(noisy, jittery, masks) > 1.5


def test_flicker_calibration_edits_on_synthetic_head_motion(astronaut):
    from training.temporal import moving_clip, noisy_edit

    frames = moving_clip(astronaut, frames=12, frame_size=(320, 240), zoom=0.5)
    assert all(np.array_equal(a, b) for a, b in zip(frames, moving_clip(astronaut, 12, frame_size=(320, 240), zoom=0.5)))
    masks = [np.ones((240, 320), bool)] * len(frames)
    brighter = moving_clip(np.clip(astronaut.astype(int) + 10, 0, 255).astype(np.uint8), 12, frame_size=(320, 240),
                           zoom=0.5)
    assert flicker_ratio(frames, brighter, masks) == pytest.approx(1.0, abs=0.1)  # a stable edit, moved exactly
    rng = np.random.default_rng(0)
    assert flicker_ratio(frames, [noisy_edit(f, m, rng, sigma=6) for f, m in zip(frames, masks)], masks) > 1.5


def test_flicker_at_equal_contrast_forgives_contrast_but_not_noise(astronaut):
    from training.temporal import FlickerMeter, moving_clip, noisy_edit, stable_contrast_edit

    frames = moving_clip(astronaut, frames=12, frame_size=(320, 240), zoom=0.5)
    masks = [np.ones((240, 320), bool)] * len(frames)
    meter = FlickerMeter(frames)
    assert meter.scores(frames, masks) == {"flicker": 1.0, "flicker_equal_contrast": 1.0}
    contrast = meter.scores([stable_contrast_edit(f, m) for f, m in zip(frames, masks)], masks)
    assert contrast["flicker"] > 1.1  # the plain ratio counts the added contrast as flicker ...
    assert contrast["flicker_equal_contrast"] == pytest.approx(1.0, abs=0.1)  # ... this one does not
    rng = np.random.default_rng(0)
    noisy = meter.scores([noisy_edit(f, m, rng, sigma=6) for f, m in zip(frames, masks)], masks)
    assert noisy["flicker_equal_contrast"] > 1.5


def test_fid_of_a_set_against_itself_is_zero_and_kid_near_zero():
    from skimage import data

    from training.quality import InceptionFeatures, frechet_distance, kernel_inception_distance

    images = [data.astronaut()[:256, :256], data.chelsea()[:256, :256], data.coffee()[:256, :256],
              data.rocket()[:256, :256]]
    features = InceptionFeatures()(images)
    assert features.shape == (4, 2048)
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-3)
    other = InceptionFeatures()([np.full((256, 256, 3), v, np.uint8) for v in (0, 60, 120, 250)])
    assert frechet_distance(features, other) > 10
    # KID's estimator assumes independent sets (a set against itself reads slightly negative at n = 4).
    assert kernel_inception_distance(features, features) < kernel_inception_distance(features, other)


def test_niqe_ranks_a_clean_photo_above_blurred_and_noisy_copies():
    import cv2
    from skimage import data

    from training.quality import NIQE

    niqe = NIQE()
    photo = data.astronaut()
    noisy = np.clip(photo + np.random.default_rng(0).normal(0, 25, photo.shape), 0, 255).astype(np.uint8)
    assert niqe(photo) < niqe(cv2.GaussianBlur(photo, (0, 0), 3))
    assert niqe(photo) < niqe(noisy)


def test_identical_images_score_zero_l1_and_one_ssim():
    from skimage.metrics import structural_similarity

    from training.evaluate import face_region

    crop = (np.random.default_rng(1).random((256, 256, 3)) * 255).astype(np.uint8)
    region = face_region(crop)
    assert np.abs(region / 255.0 - region / 255.0).mean() == 0.0
    assert structural_similarity(region, region, channel_axis=2) == pytest.approx(1.0)


def test_report_renders(tmp_path):
    from training.report import write_report

    method = {"overall": {"ecs_accuracy": 0.5, "ecs_probability": 0.4, "identity_distance": 0.3,
                          "same_person_fraction": 1.0, "identity_to_real": 0.4, "l1": 0.08, "ssim": 0.6,
                          "fid": 50.0, "kid": 0.02, "niqe": 5.0, "count": 2},
              "per_expression": {"happy": {"ecs_accuracy": 0.5, "identity_distance": 0.3}}}
    from training.evaluate import STABLE_REFERENCE

    results = {"held_out": {"pairs": 2, "methods": {"RegGAN (full)": method}},
               "flicker": {"RegGAN (full)": {"per_clip": {"a.mp4": 1.02}, "mean": 1.02,
                                             "per_clip_equal_contrast": {"a.mp4": 0.97}, "mean_equal_contrast": 0.97,
                                             "per_clip_expression": {"a.mp4": 0.61}, "mean_expression": 0.61},
                           STABLE_REFERENCE: {"per_clip": {"a.mp4": 1.3}, "mean": 1.3,
                                              "per_clip_equal_contrast": {"a.mp4": 1.01},
                                              "mean_equal_contrast": 1.01}},
               "synthetic_motion": {"stills": 1, "frames_each": 90, "methods": {"RegGAN (full)": {
                   "flicker": 0.99, "flicker_of_exact_answer": 1.0, "error_to_exact_answer": 2.74}}},
               "competitors": {"StarGAN-style (our retraining)": {
                   "checkpoint": "sg.safetensors", "generator": "stargan", "steps": 4000, "batch": 8, "device": "cpu",
                   "resolution": 128, "training_command": "reggan train refine --generator stargan"}}}
    sheet = np.zeros((40, 80, 3), np.uint8)
    report = write_report(results, tmp_path, "reggan eval", "test machine", sheet)
    text = report.read_text()
    assert "| RegGAN (full) | 0.500 |" in text and "a.mp4" in text and "1.020" in text
    assert "At equal contrast" in text and "| RegGAN (full) | 0.970 | 0.970 |" in text
    assert "The expression on video" in text and "| RegGAN (full) | 0.610 | 0.610 |" in text
    assert "calibrate the metric" in text and "| RegGAN (full) | 0.990 | 1.000 | 2.74 |" in text
    assert ("**StarGAN-style (our retraining)**: a stargan generator working at 128 px, trained by us on this "
            "project's training people and crops, 4000 steps at batch 8 on CPU") in text
    assert (tmp_path / "results.json").is_file() and (tmp_path / "contact_sheet.png").is_file()


def test_the_verdict_answers_each_target_from_the_numbers(tmp_path):
    from training.report import verdict, write_report

    def row(ecs, fid, same=1.0):
        return {"overall": {"ecs_accuracy": ecs, "ecs_probability": ecs, "identity_distance": 0.3,
                            "same_person_fraction": same, "identity_to_real": 0.4, "l1": 0.08, "ssim": 0.6,
                            "fid": fid, "kid": 0.01, "niqe": 5.0, "count": 10}, "per_expression": {}}

    def flicker(per_clip):
        return {"RegGAN (full)": {"per_clip": per_clip, "mean": float(np.mean(list(per_clip.values())))}}

    # Ahead of the regression-only and a baseline row on both; copy-the-input (better FID here) and the model's
    # own lite refiner (better ECS here) are not rivals.
    rows = {"copy-the-input": row(0.0, 10.0), "regression only": row(0.5, 40.0), "RegGAN (full)": row(0.6, 39.0),
            "RegGAN lite (distilled refiner)": row(0.7, 39.5), "StarGAN-style": row(0.2, 45.0)}
    ahead = {"held_out": {"pairs": 10, "methods": rows},
             "flicker": flicker({"a.mp4": 1.05, "b.mp4": 1.08})}
    assert [met for _, met in verdict(ahead)] == [True, True, True, True]
    text = write_report(ahead, tmp_path / "ahead", "reggan eval", "test machine",
                        shortfall_note="see the card").read_text()
    assert "## Verdict" in text and "**no**" not in text and "see the card" not in text
    assert text.index("## Verdict") < text.index("## Held-out people")

    # Behind the regression-only row on ECS, one clip over the flicker target, one output another person.
    behind = {"held_out": {"pairs": 10, "methods": {"regression only": row(0.55, 38.7),
                                                    "RegGAN (full)": row(0.526, 39.1, same=0.9)}},
              "flicker": flicker({"a.mp4": 1.05, "d20.mp4": 1.213})}
    assert [met for _, met in verdict(behind)] == [False, False, False, False]
    text = write_report(behind, tmp_path / "behind", "reggan eval", "test machine",
                        shortfall_note="see the card").read_text()
    assert "ahead of regression only (0.526 vs 0.550): **no**" in text and "d20.mp4 1.213" in text
    assert "a.mp4 1.050" not in text and "see the card" in text

    # Without FID (--no-distribution) and without clips: said so, not counted as met or missed.
    unmeasured = {"held_out": {"pairs": 10, "methods": {"RegGAN (full)": row(0.6, 0.0)}}}
    del unmeasured["held_out"]["methods"]["RegGAN (full)"]["overall"]["fid"]
    assert [met for _, met in verdict(unmeasured)] == [None, None, True]


def test_the_verdict_says_whether_an_accuracy_gap_could_be_chance():
    from training.report import paired_difference, verdict

    assert paired_difference([1, 0, 1], [1, 0, 1]) == (0, 0, 1.0)
    assert paired_difference([1] * 10, [0] * 10) == (10, 0, pytest.approx(2 / 1024))  # all ten one way: not chance
    assert paired_difference([1, 1, 0, 0], [0, 1, 1, 1]) == (1, 2, 1.0)  # one pair against two: chance
    apart = {"other": {"overall": {"ecs_accuracy": 0.0}, "ecs_hits": [0] * 10},
             "RegGAN (full)": {"overall": {"ecs_accuracy": 1.0, "same_person_fraction": 1.0,
                                           "identity_distance": 0.3}, "ecs_hits": [1] * 10}}
    far = verdict({"held_out": {"pairs": 10, "methods": apart}})[0][0]
    assert "10 pairs only it got right, 0 only the other, exact McNemar p < 0.01): yes" in far

    def row(hits):
        accuracy = float(np.mean(hits))
        return {"overall": {"ecs_accuracy": accuracy, "same_person_fraction": 1.0, "identity_distance": 0.3},
                "ecs_hits": hits}

    full, regression = [1] * 52 + [0] * 26, [1] * 53 + [0] * 25
    line = verdict({"held_out": {"pairs": 78, "methods": {"regression only": row(regression),
                                                         "RegGAN (full)": row(full)}}})[0][0]
    assert "ahead of regression only (0.667 vs 0.679; 0 pairs only it got right, 1 only the other, " in line
    assert "exact McNemar p = 1.00): **no**" in line

    methods = {"regression only": {"overall": {"ecs_accuracy": 0.5, "fid": 39.0}, "fid_against_full": {
        "first_lower": 0.31, "resamples": 200, "difference_interval": [-1.04, 1.52]}},
        "RegGAN (full)": {"overall": {"ecs_accuracy": 0.5, "fid": 39.3, "same_person_fraction": 1.0,
                                      "identity_distance": 0.3}}}
    line = verdict({"held_out": {"pairs": 78, "methods": methods}})[1][0]
    assert "(39.3 vs 39.0; lower in 31% of 200 paired redraws of the photos, difference -1.0 to +1.5): **no**" in line


def test_fid_through_the_smaller_side_matches_the_full_square_root_and_the_bootstrap_tells_noise_from_a_gap():
    import scipy.linalg

    from training.quality import FrechetReference, paired_gap

    rng = np.random.default_rng(0)
    real, outputs = np.abs(rng.normal(0, 1, (60, 128))), np.abs(rng.normal(0.1, 1.1, (20, 128)))
    sigma_real, sigma_out = np.cov(real, rowvar=False), np.cov(outputs, rowvar=False)
    root = np.real(scipy.linalg.sqrtm(sigma_out @ sigma_real))
    expected = ((outputs.mean(0) - real.mean(0)) ** 2).sum() + np.trace(sigma_out + sigma_real - 2 * root)
    reference = FrechetReference(real)
    assert reference.distance(outputs) == pytest.approx(expected, rel=1e-6)  # fewer samples than features
    assert reference.distance(np.abs(rng.normal(0, 1, (200, 128)))) < reference.distance(outputs)  # and more

    # The same outputs with a little noise: the bootstrap cannot tell them apart. Shifted far: always lower.
    close = outputs + rng.normal(0, 0.01, outputs.shape)
    redrawn = reference.redrawn(outputs, resamples=50)
    level = paired_gap(redrawn, reference.redrawn(close, resamples=50))
    assert 0.1 < level["first_lower"] < 0.9 and level["difference_interval"][0] < 0 < level["difference_interval"][1]
    assert paired_gap(redrawn, reference.redrawn(outputs + 3.0, resamples=50))["first_lower"] == 1.0


def test_qualiclip_runs_only_where_its_weights_are_and_the_report_says_why_not(tmp_path, monkeypatch):
    from training.evaluate import optional_qualiclip
    from training.report import markdown_table

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))  # no weights here, whatever the machine
    reason = optional_qualiclip()
    assert isinstance(reason, str) and ("pyiqa" in reason or "QualiCLIP.pth" in reason)
    row = {"overall": {"ecs_accuracy": 0.5}, "per_expression": {}}
    assert "QualiCLIP" not in markdown_table({"methods": {"a": row}})
    row["overall"]["qualiclip"] = 0.61
    assert "QualiCLIP ↑" in markdown_table({"methods": {"a": row}}) and "0.610" in markdown_table({"methods": {"a": row}})


def test_eval_command_writes_the_whole_report(astronaut, astronaut_png, astronaut_landmarks, feat_media, tmp_path):
    """`reggan eval` from one command, every section, on a tiny prepared set made from the astronaut."""
    import csv
    import json
    import subprocess
    import sys

    from reggan.alignment import Aligner
    from reggan.images import write_rgb

    aligner = Aligner(256)
    crop = aligner.crop(astronaut, aligner.matrix_for(astronaut_landmarks))
    prepared = tmp_path / "prepared"
    (prepared / "crops").mkdir(parents=True)
    write_rgb(prepared / "crops" / "neutral.png", crop)
    write_rgb(prepared / "crops" / "smile.png", crop)  # her own smile: she smiles in the photo
    with open(prepared / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["dataset", "subject", "expression", "neutral", "target", "split"])
        for expression in ("happy", "surprised"):
            writer.writerow(["pairs", "1", expression, "crops/neutral.png", "crops/smile.png", "eval"])
    out = tmp_path / "report"
    result = subprocess.run(
        [sys.executable, "-m", "reggan.cli", "eval", "--prepared", str(prepared), "--no-distribution",
         "--ood", str(astronaut_png), "--videos", str(feat_media / "single_face.mp4"), "--video-frames", "6",
         "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"split", "held_out", "ood", "flicker", "synthetic_motion", "competitors"}
    assert results["split"] == "eval" and results["held_out"]["pairs"] == 2 and results["ood"]["faces"] == 1
    # The bundled model has its lite refiner beside it, and config.toml names the bundled StarGAN-style competitor
    # ([eval].baselines): each scored as its own row, and the report says how long the competitor was trained.
    competitor = "StarGAN-style (our retraining)"
    assert set(results["synthetic_motion"]["methods"]) == {"regression only", "RegGAN (full)",
                                                           "RegGAN lite (distilled refiner)", competitor}
    assert {"RegGAN lite (distilled refiner)", competitor} <= set(results["held_out"]["methods"])
    assert results["competitors"][competitor]["steps"] > 0 and competitor in results["flicker"]
    assert f"**{competitor}**: a stargan generator working at 128 px" in (out / "results.md").read_text()
    flicker = results["flicker"]
    assert "RegGAN (full), smoothing off" in flicker and 0 <= flicker["RegGAN (full)"]["mean_expression"] <= 1
    assert "The expression on video" in (out / "results.md").read_text()
    report = (out / "results.md").read_text()
    assert "single_face.mp4" in report and "answer known" in report and (out / "contact_sheet.png").is_file()
    assert not (out / "results.partial.json").exists()

    # The same manifest has no validation people: asking for them says what to do instead of scoring nothing.
    result = subprocess.run([sys.executable, "-m", "reggan.cli", "eval", "--prepared", str(prepared), "--split", "val",
                             "--no-distribution", "--out", str(tmp_path / "val")], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0 and "no 'val' rows" in result.stderr and "reggan prepare" in result.stderr
    assert "Traceback" not in result.stderr


def test_contact_sheet_labels_wrap_inside_their_column():
    from training.evaluate import contact_sheet

    face = np.full((64, 64, 3), 120, np.uint8)
    names = ["copy-the-input", "StarGAN-style (our retraining)"]
    sheet = contact_sheet([(face, None, None, None)], {name: (lambda crops, *_: list(crops)) for name in names},
                          ["happy", "sad"], tile=80)
    assert sheet.shape == (28 + 2 * 80, 2 * 80 + 3 * 80, 3)
    long_label = sheet[28 + 80:, : 2 * 80]
    ink_rows, ink_columns = np.nonzero(long_label.min(axis=2) < 128)
    assert ink_rows.max() - ink_rows.min() > 20  # wrapped onto a second line ...
    assert ink_columns.max() < 2 * 80 - 2  # ... instead of running into the input's tile


def test_report_images_are_written_small_and_lossless(astronaut, tmp_path):
    from reggan.images import read_rgb, write_rgb

    write_rgb(tmp_path / "default.png", astronaut)
    write_rgb(tmp_path / "small.png", astronaut, png_compression=9)
    assert np.array_equal(read_rgb(tmp_path / "small.png"), astronaut)
    assert (tmp_path / "small.png").stat().st_size < (tmp_path / "default.png").stat().st_size
