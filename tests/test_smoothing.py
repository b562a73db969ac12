"""The video smoothing of the synthesized change (live/smoothing.py), on crops whose motion is known."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from live.smoothing import ChangeSmoother

SIZE = 128
FPS = 25.0
# "As synthesized" means within 0.01 grey levels: OpenCV's weighted blend divides by the weights' sum plus 1e-5.


def skin(seed: int = 0) -> np.ndarray:
    """A smooth random texture with enough detail for optical flow  # [S + 40, S + 40, 3] uint8."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 1, (SIZE + 40, SIZE + 40)).astype(np.float32)
    grey = cv2.GaussianBlur(noise, (0, 0), 2.5)
    grey = 128 + 60 * grey / grey.std()
    return np.repeat(grey.clip(0, 255)[..., None], 3, axis=2)


def blob(centre_x: float) -> np.ndarray:
    """The 'expression': a bright soft spot painted on the skin  # [S + 40, S + 40, 3] float32."""
    y, x = np.mgrid[: SIZE + 40, : SIZE + 40].astype(np.float32)
    return np.repeat((40 * np.exp(-((x - centre_x) ** 2 + (y - SIZE / 2 - 20) ** 2) / (2 * 8.0**2)))[..., None], 3, 2)


def window(image: np.ndarray, shift: float) -> np.ndarray:
    """The crop seen when the content has moved ``shift`` px to the right (sub-pixel, like real motion)."""
    matrix = np.float32([[1, 0, shift], [0, 1, 0]])
    moved = cv2.warpAffine(image.astype(np.float32), matrix, (image.shape[1], image.shape[0]),
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return moved[20 : 20 + SIZE, 20 : 20 + SIZE]


def sliding_face(frames: int = 30, speed: float = 1.5, shimmer: float = 4.0):
    """Crops whose skin slides right ``speed`` px a frame, the synthesized crops (the spot on the skin plus fresh
    noise: the network's shimmer), and the exact answer (the spot moving with the skin)."""
    rng = np.random.default_rng(1)
    texture, spot = skin(), blob(SIZE / 2)
    for index in range(frames):
        crop = window(texture, index * speed).round().clip(0, 255).astype(np.uint8)
        exact = window(spot, index * speed)
        noise = rng.normal(0, shimmer, exact.shape).astype(np.float32)
        yield index / FPS, crop, crop.astype(np.float32) + exact + noise, exact


def test_the_change_follows_the_skin_and_its_shimmer_is_averaged_away():
    smoother = ChangeSmoother(time_constant=0.5)
    raw_error, smoothed_error = [], []
    for index, (time, crop, synthesized, exact) in enumerate(sliding_face()):
        out = smoother(0, crop, synthesized, time, fresh=index == 0)
        if index >= 10:
            inner = (slice(16, -16), slice(16, -16))  # away from the border, where the flow has to guess
            raw_error.append(np.abs(synthesized - crop - exact)[inner].mean())
            smoothed_error.append(np.abs(out - crop - exact)[inner].mean())
    # The raw change is off by the shimmer alone (mean |N(0, 4)| = 3.2); an average at fixed pixels would also
    # lag behind the moving spot. Carried along the flow, the average keeps up with it and the shimmer drops.
    assert np.mean(raw_error) > 3.0
    assert np.mean(smoothed_error) < 0.6 * np.mean(raw_error)


def test_an_average_at_fixed_pixels_would_lag_behind_the_moving_spot():
    # The reason for carrying the change: the same average without the flow (and trusting every pixel, as the
    # flow-free smoother did) leaves the spot behind.
    def error_after_settling(smoother) -> float:
        errors = [np.abs(smoother(0, crop, synthesized, time, fresh=index == 0) - crop - exact)[16:-16, 16:-16].mean()
                  for index, (time, crop, synthesized, exact) in enumerate(sliding_face())]
        return float(np.mean(errors[10:]))

    fixed = ChangeSmoother(time_constant=0.5, mismatch_level=1e9)
    fixed.flow = lambda grey, previous: np.zeros((*grey.shape, 2), np.float32)  # no motion: fixed pixels
    assert error_after_settling(fixed) > 3 * error_after_settling(ChangeSmoother(time_constant=0.5))


def test_where_the_crop_no_longer_matches_the_change_is_taken_as_synthesized():
    smoother = ChangeSmoother(time_constant=0.5)
    frames = list(sliding_face(frames=6))
    for index, (time, crop, synthesized, _) in enumerate(frames[:-1]):
        smoother(0, crop, synthesized, time, fresh=index == 0)
    time, crop, synthesized, _ = frames[-1]
    crop = crop.copy()
    crop[40:90, 40:90] = 250  # a hand in front of the face: nothing there was there before
    out = smoother(0, crop, synthesized, time, fresh=False)
    assert np.allclose(out[55:75, 55:75], synthesized[55:75, 55:75], atol=0.01)
    assert not np.allclose(out[:30], synthesized[:30], atol=1.0)  # elsewhere the change is still averaged


def test_inside_the_keep_mask_and_during_a_ramp_the_change_is_as_synthesized():
    frames = list(sliding_face(frames=6))
    keep = np.zeros((SIZE, SIZE), np.float32)
    keep[50:80, 30:100] = 1.0  # an open mouth
    for steady in (True, False):
        smoother = ChangeSmoother(time_constant=0.5)
        for index, (time, crop, synthesized, _) in enumerate(frames):
            out = smoother(0, crop, synthesized, time, fresh=index == 0, keep=keep, steady=steady)
        assert np.allclose(out[50:80, 30:100], synthesized[50:80, 30:100], atol=0.01)
        assert np.allclose(out, synthesized, atol=0.01) == (not steady)


def test_a_lid_closed_on_the_frame_before_keeps_its_change_carried_a_lid_just_closed_does_not():
    frames = list(sliding_face(frames=12))
    lids = np.zeros((SIZE, SIZE), np.float32)
    lids[50:80, 30:100] = 1.0  # closed eyes: kept from the networks' paint
    inside = (slice(55, 75), slice(45, 85))  # the lids' inside, away from the sliding border

    def run(closed_from: int) -> list[np.ndarray]:
        """Outputs with the lids closed from frame ``closed_from`` on."""
        smoother, outputs = ChangeSmoother(time_constant=0.5), []
        for index, (time, crop, synthesized, _) in enumerate(frames):
            closed = lids if index >= closed_from else np.zeros_like(lids)
            outputs.append(smoother(0, crop, synthesized, time, fresh=index == 0, keep=closed, closed_eyes=closed))
        return outputs

    closed_throughout, closing = run(0), run(8)
    # Closed on both frames: carried and averaged, so the network's frame-to-frame shimmer is smoothed away there.
    shimmer = np.abs(closed_throughout[-1][inside] - frames[-1][2][inside]).mean()
    assert shimmer > 1.0 and np.abs(closed_throughout[-1][inside] - frames[-1][1][inside] - frames[-1][3][inside]).mean() < 0.6 * shimmer
    # The frame the lids close, what was painted over the open eye is not carried onto them: as synthesized.
    assert np.allclose(closing[8][inside], frames[8][2][inside], atol=0.01)
    # Without the lids named apart, the kept region takes every change as synthesized, as before.
    smoother = ChangeSmoother(time_constant=0.5)
    for index, (time, crop, synthesized, _) in enumerate(frames):
        out = smoother(0, crop, synthesized, time, fresh=index == 0, keep=lids)
    assert np.allclose(out[inside], frames[-1][2][inside], atol=0.01)


@pytest.mark.parametrize("fresh, time_constant", [(True, 0.5), (False, 0.0)])
def test_a_new_track_or_smoothing_off_gives_the_change_as_synthesized(fresh, time_constant):
    smoother = ChangeSmoother(time_constant=time_constant)
    frames = list(sliding_face(frames=3))
    for index, (time, crop, synthesized, _) in enumerate(frames):
        out = smoother(0, crop, synthesized, time, fresh=index == 0 or fresh)
    assert np.allclose(out, synthesized, atol=0.01)


def test_a_cut_restarts_the_average():
    smoother = ChangeSmoother(time_constant=0.5)
    for index, (time, crop, synthesized, _) in enumerate(sliding_face(frames=5)):
        smoother(0, crop, synthesized, time, fresh=index == 0)
    other = skin(seed=7)[20 : 20 + SIZE, 20 : 20 + SIZE].round().astype(np.uint8)
    other = 255 - other  # another shot: every pixel far from before
    synthesized = other.astype(np.float32) + 10
    assert np.allclose(smoother(0, other, synthesized, 1.0, fresh=False), synthesized, atol=0.01)


# --- repeated frames -------------------------------------------------------------------------------------------

def repeated_frames_setup():
    """A 320 x 480 frame with one face whose 128 px crop starts at (100, 60), its processed result (+20 there), the
    half that recognises a repeat and the half that keeps the change."""
    from live.smoothing import LastChange, RepeatedFrames
    from reggan.alignment import Aligner

    frame = np.ascontiguousarray(skin(seed=3)[:, :, 0:3].repeat(3, axis=0)[:320, :].round().astype(np.uint8))
    frame = np.ascontiguousarray(np.concatenate([frame] * 3, axis=1)[:, :480])
    matrix = np.float32([[1, 0, -100], [0, 1, -60]])  # image -> crop
    result = frame.copy()
    result[60:188, 100:228] = np.clip(frame[60:188, 100:228].astype(int) + 20, 0, 255)
    repeats = RepeatedFrames(Aligner(SIZE))
    regions = repeats.remember(frame, [matrix], [("happy", 1.0)])
    last_change = LastChange()
    last_change.remember(frame, result, regions)
    return frame, result, repeats, last_change


def test_a_repeated_frame_gets_the_last_change_pasted_again():
    frame, result, repeats, last_change = repeated_frames_setup()
    rng = np.random.default_rng(0)
    again = (frame + rng.integers(-1, 2, frame.shape) * (rng.random(frame.shape) < 0.2)).clip(0, 255).astype(np.uint8)
    assert repeats.matches(again, [("happy", 1.0)])
    expected = (again.astype(int) + (result.astype(int) - frame)).clip(0, 255)
    assert np.array_equal(last_change.paste(again), expected)


def test_a_frame_that_moved_changed_elsewhere_or_wants_another_expression_is_processed():
    frame, _, repeats, _ = repeated_frames_setup()
    assert not repeats.matches(np.roll(frame, 2, axis=1), [("happy", 1.0)])  # the face moved
    newcomer = frame.copy()
    newcomer[200:300, 350:450] = 255  # a face coming into the still scene, outside the known face
    assert not repeats.matches(newcomer, [("happy", 1.0)])
    assert not repeats.matches(frame, [("happy", 0.9)])  # a ramp
    assert not repeats.matches(frame[:, :400], [("happy", 1.0)])  # a stream that changed size
    repeats.forget()  # a frame without a face came between
    assert not repeats.matches(frame, [("happy", 1.0)])


def test_a_carried_change_follows_the_skin_on_frames_the_synthesizer_skips():
    smoother = ChangeSmoother(time_constant=0.5)
    carried_error, shimmer = [], []
    for index, (time, crop, synthesized, exact) in enumerate(sliding_face()):
        if index % 2 == 0:
            smoother(0, crop, synthesized, time, fresh=index == 0)
        else:
            out = smoother.carry(0, crop, time)
            carried_error.append(np.abs(out - crop - exact)[16:-16, 16:-16].mean())
            shimmer.append(np.abs(synthesized - crop - exact)[16:-16, 16:-16].mean())
    assert np.mean(carried_error[5:]) < 0.5 * np.mean(shimmer[5:])
    assert ChangeSmoother().carry(0, crop, time) is None  # nothing to carry yet


def test_a_face_that_comes_in_later_gets_its_change_gradually():
    from live.smoothing import FadeIn

    fade = FadeIn(seconds=0.25)
    fade.update([1], 0.0)
    assert fade.share(1, 0.0) == 1.0  # on the stream's first frame: nothing to pop from
    fade.update([1, 2], 1.0)
    assert fade.share(1, 1.0) == 1.0 and fade.share(2, 1.0) == 0.0  # a face found again starts from none
    fade.update([1, 2], 1.1)
    assert fade.share(2, 1.1) == pytest.approx(0.4)
    fade.update([1], 1.2)
    fade.update([1, 2], 2.0)
    assert fade.share(2, 2.0) == 0.0  # lost and found again: it fades in again
    no_fade = FadeIn(seconds=0)
    no_fade.update([], 0.0)
    no_fade.update([3], 5.0)
    assert no_fade.share(3, 5.0) == 1.0


def test_a_flow_measured_ahead_is_used_only_against_the_crop_the_change_was_taken_on():
    from live.smoothing import CropMotion, grey_of

    frames = list(sliding_face(frames=3))
    on_its_own, ahead, stale = (ChangeSmoother(time_constant=0.5) for _ in range(3))
    previous_grey = None
    for index, (time, crop, synthesized, _) in enumerate(frames):
        grey = grey_of(crop)
        motion = ahead.motion(grey, previous_grey)  # what the file loop's workers hand the smoother
        expected = on_its_own(0, crop, synthesized, time, fresh=index == 0)
        assert np.array_equal(ahead(0, crop, synthesized, time, fresh=index == 0, motion=motion), expected)
        # A flow measured against some other crop (here: with nonsense in it) is not trusted: measured anew.
        wrong = CropMotion(grey, grey_of(crop), np.full(grey.shape + (2,), 9.0, np.float32))
        assert np.array_equal(stale(0, crop, synthesized, time, fresh=index == 0, motion=wrong), expected)
        previous_grey = grey
    assert motion.flow is not None and ahead.motion(grey, None).flow is None  # a new track has nothing to carry
    assert ChangeSmoother(time_constant=0).motion(grey, previous_grey).flow is None  # smoothing off: none needed


def talking(frames: int = 30, speed: float = 0.8):
    """Like ``sliding_face``, but only the crop's lower half slides (lips moving against a still face), without
    shimmer: the motion breaks off along a line, as it does at a talking mouth."""
    texture, spot = skin(), blob(SIZE / 2)
    half = SIZE // 2
    for index in range(frames):
        crop, exact = window(texture, 0), window(spot, 0)
        crop[half:], exact[half:] = window(texture, index * speed)[half:], window(spot, index * speed)[half:]
        crop = crop.round().clip(0, 255).astype(np.uint8)
        yield index / FPS, crop, crop.astype(np.float32) + exact, exact


def test_the_flow_refined_to_full_resolution_keeps_the_change_on_a_talking_mouth():
    def error(fine: bool) -> float:
        smoother, errors = ChangeSmoother(time_constant=0.5, fine_flow=fine), []
        for index, (time, crop, synthesized, exact) in enumerate(talking()):
            out = smoother(0, crop, synthesized, time, fresh=index == 0)
            if index >= 10:
                errors.append(np.abs(out - crop - exact)[16:-16, 16:-16].mean())
        return float(np.mean(errors))

    # Half resolution smears the motion across the line where it breaks off (measured: 0.17 against 0.09).
    assert error(fine=True) < 0.7 * error(fine=False)
