"""Bend an aligned face so its features sit on the template's before synthesis, and the change back after.

The similarity alignment (reggan/alignment.py) puts the eyes and nose on the template, but nothing else: a long face,
a face tilted down or a wide mouth keeps its mouth a few pixels off the template's. The regression layer's receptive
fields are local and fixed to template pixels, so it paints the template's mouth where the template has it: on
d3.mp4 (a face looking down at notes) a happy face got its teeth painted as a grey smear across the upper lip and
philtrum. Bending the crop with a thin-plate spline that takes the face's nose, eye corners and upper lip onto the
template's before the networks see it (``ANCHORS``), and bending their change back by the inverse, paints the change
where this face has its features. On the held-out people (78 pairs, full model) the judge's accuracy went from 0.526
to 0.667, the identity distance from 0.290 to 0.253 and NIQE from 9.04 to 7.82; FID 39.1 -> 39.3 (docs/results.md
has the current numbers).

The face's own pixels are never bent: the networks' warp is carried through the bend as a motion of them, sampled
once, and only the appearance the networks paint on top of it is bent back (``synthesize_bent``), so a face already
on the template comes out as before.

The lower lip and jaw are left free: when someone talks they move by more than any face differs from the template,
and pinning them would squash an open mouth shut. On video the bend follows the face's slow geometry only (its shape,
its pose; ``AnchorSmoother``): bending along with every syllable added flicker (the first 90 frames of the three
evaluation clips: flicker 1.150 unbent; with the eyelids among the anchors, 1.189 bent to each frame's landmarks and
1.156 to their 2 s average; with the eye corners instead, 1.147 to the 2 s average, while the judge's probability of
happy rose from 0.568 to 0.723).
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from reggan.warp import displace, held_together

# iBUG 68: the nose 27-35, the eyes' corners 36, 39, 42, 45 and the outer upper lip from corner to corner 48-54. Not
# the eyelids: they close with every blink and for long stretches of looking down, and on WolfgangLanger_Pexels.mp4
# (eyes closed half the clip) bending with them flickered 1.139 against 1.112 with the corners alone (the first 90
# frames); on the held-out people the corners gave the same expression accuracy (0.667), a closer identity (0.253
# against 0.268) and NIQE 7.82 against 8.27; on the validation people one pair less (0.500 against 0.528), NIQE
# 8.48 against 8.75.
ANCHORS = np.r_[27:36, 36, 39, 42, 45, 48:55]
# Grid step (pixels) at which the spline is evaluated; the maps are interpolated in between. Measured on 40 training
# faces at 256 px: a face's bend both ways costs 2.4 ms at step 8 (9.5 ms at 4), and its maps stay within 0.8 px of
# the spline's own values (1.9 px at step 16).
STEP = 8
# Thin-plate regularisation (pixels squared): small against the kernel's values at facial distances (about 2e4 at
# 50 px), so the spline still passes within a pixel of the anchors, but the system stays well conditioned when two
# landmarks nearly coincide.
STIFFNESS = 1.0
# The least local area ratio either map may have (1 = no squeeze, 0 = a fold). A face turned well away from the
# camera sits up to 34 px off the template (Vermeer's girl with a pearl earring, among the out-of-distribution
# stills), and bending it all the way folded the crop along the far cheek: the change painted there came back as a
# thin bright arc on the background. Such a face is bent part of the way instead (``FaceBend``). Of the twelve
# out-of-distribution stills, nine stay at 0.54 or more bent all the way; three turned ones reach 0.39, 0.30 and
# -0.08, and the last two are bent half the way.
LEAST_AREA_RATIO = 0.35
# On video a face's bend is rebuilt once the landmarks it follows have moved this far (pixels) at some anchor since it
# was built (``VideoBends``).
REBUILD_TOLERANCE = 0.25


def _radial(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The thin-plate kernel r^2 log r^2 (0 at r = 0) between each point and each centre  # [P, N]. The squared
    distances as |p|^2 + |c|^2 - 2 p.c, one matrix product: it runs for every grid point of every face of every
    frame, and numpy's broadcast difference took four times as long."""
    squared = (points**2).sum(axis=1)[:, None] + (centres**2).sum(axis=1)[None] - 2 * points @ centres.T
    return np.maximum(squared, 0.0) * np.log(np.maximum(squared, 1e-12))


@functools.lru_cache(maxsize=4)
def _grids(resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The coarse grid's points  # [G*G, 2], and each pixel's position on that grid (x, y  # [R, R] each)."""
    steps = np.arange(0, resolution + STEP, STEP, dtype=np.float64)
    coarse = np.stack(np.meshgrid(steps, steps), axis=2).reshape(-1, 2)
    position = np.arange(resolution, dtype=np.float32) / STEP
    at_x, at_y = np.meshgrid(position, position)
    return coarse, at_x, at_y


def thin_plate_maps(source: np.ndarray, target: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """The smooth map f with f(source) ~= target  # [N, 2] each, evaluated at every pixel of a [R, R] image:
    (map_x, map_y) float32 for cv2.remap, so that ``remap(image, map_x, map_y)`` at p shows image at f(p)."""
    count = len(source)
    affine_terms = np.hstack([np.ones((count, 1)), source])
    system = np.zeros((count + 3, count + 3))
    system[:count, :count] = _radial(source, source) + STIFFNESS * np.eye(count)
    system[:count, count:] = affine_terms
    system[count:, :count] = affine_terms.T
    right = np.zeros((count + 3, 2))
    right[:count] = target
    coefficients = np.linalg.solve(system, right)
    grid, at_x, at_y = _grids(resolution)
    values = _radial(grid, source) @ coefficients[:count] + grid @ coefficients[count + 1:] + coefficients[count]
    side = int(round(math.sqrt(len(grid))))
    coarse = values.reshape(side, side, 2).astype(np.float32)
    # The coarse grid's values at every pixel (bilinear).
    return tuple(cv2.remap(np.ascontiguousarray(coarse[..., axis]), at_x, at_y, cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE) for axis in (0, 1))


def least_area_ratio(map_x: np.ndarray, map_y: np.ndarray) -> float:
    """The smallest local area ratio (Jacobian determinant) of a map, on every 4th pixel: below 0 it folds."""
    x, y = map_x[::4, ::4], map_y[::4, ::4]
    return float((np.gradient(x, axis=1) * np.gradient(y, axis=0)
                  - np.gradient(x, axis=0) * np.gradient(y, axis=1)).min() / 16)


class FaceBend:
    """One face's bend onto the template and back, from its landmarks in crop coordinates."""

    def __init__(self, points: np.ndarray, template: np.ndarray, resolution: int):
        """points, template  # [68, 2] crop pixels. Where bending all the way would squeeze or fold the crop (a face
        turned far from the template's), the face is bent half the way, then a quarter, ... (``self.share``)."""
        size = float(resolution)
        # The crop's border stays where it is: the bend is local to the face, and the background around it (which the
        # compositor blends in) is not moved.
        border = np.array([[0, 0], [size, 0], [0, size], [size, size],
                           [size / 2, 0], [0, size / 2], [size, size / 2], [size / 2, size]])
        on_template = np.vstack([template[ANCHORS], border])
        offsets = np.vstack([points[ANCHORS] - template[ANCHORS], np.zeros_like(border)])
        self.share = 1.0
        while True:
            on_face = on_template + self.share * offsets
            self.to_template = thin_plate_maps(on_template, on_face, resolution)  # template pixel -> on the face
            self.to_face = thin_plate_maps(on_face, on_template, resolution)  # face pixel -> on the template
            if self.share < 0.1 or min(least_area_ratio(*self.to_template),
                                       least_area_ratio(*self.to_face)) >= LEAST_AREA_RATIO:
                break
            self.share /= 2
        self._shift: tuple[np.ndarray, np.ndarray] | None = None  # (displacement, its shift on the face)

    def bend(self, image: np.ndarray) -> np.ndarray:
        """A crop (or mask) of the face -> the same with the face's anchors on the template's."""
        return cv2.remap(image, *self.to_template, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def unbend(self, image: np.ndarray) -> np.ndarray:
        """An image in the bent frame (the synthesized change) -> on the face as it is."""
        return cv2.remap(image, *self.to_face, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def shift_on_face(self, displacement: np.ndarray) -> np.ndarray:
        """A displacement in the bent frame -> the one it makes on the face  # [R, R, 2]. Kept for the last
        displacement asked about: on video the bend and the expression stay the same for many frames, and
        ``Displacements`` hands out the same array for the same expression and strength."""
        if self._shift is not None and self._shift[0] is displacement:
            return self._shift[1]
        in_bent_frame = np.dstack(self.to_face)  # where each face pixel lies in the bent frame
        moved = in_bent_frame + self.unbend(displacement)  # ... and where the warp read it from there
        on_face = np.dstack(self.to_template)
        # Where that is on the face, less where the unmoved pixel is: no displacement is then exactly no motion,
        # though the two maps are each other's inverse only to within 0.8 px.
        shift = (cv2.remap(on_face, moved[..., 0], moved[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                 - cv2.remap(on_face, *self.to_face, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
        self._shift = (displacement, shift)
        return shift

    def warp_on_face(self, crop: np.ndarray, displacement: np.ndarray,
                     open_mouth: np.ndarray | None = None) -> np.ndarray:
        """The crop moved as its bent version was moved by ``displacement`` (pixels  # [R, R, 2] in the bent frame,
        ``reggan.warp.Displacements``), sampled once from the crop's own pixels, with the inside of an open mouth
        (``open_mouth``  # [R, R] on the crop, reggan/open_mouth.py) moved as one piece (``held_together``) ->
        float32."""
        return displace(crop, held_together(self.shift_on_face(displacement), open_mouth))


def synthesize_bent(synthesize, crops: list[np.ndarray], keeps: list[np.ndarray],
                    bends: list[FaceBend | None] | None = None, displacements: list[np.ndarray | None] | None = None,
                    open_mouths: list[np.ndarray | None] | None = None):
    """Run ``synthesize(crops, keeps) -> float crops (0-255)`` on the bent crops and keep masks, and bring each
    result's change back onto its face. A face without a bend (None, or no bends at all) goes through as it is.

    displacements: for each crop, the expression warp its output holds (pixels  # [R, R, 2] in the bent frame,
    ``reggan.warp.Displacements``; None: none). The change is then taken apart: the warp is applied to the face's own
    pixels through the bend, sampled once, and only the appearance the networks added on top of it is bent back.
    Bending back the whole change, the warp too as differences of pixel values, left the face's fine detail where it
    was while the warp moved the rest: a ghost of every moved edge (teeth striped like braces on a talking mouth, a
    second upper lip on a surprised one, a pale line along a jaw).

    open_mouths: where each face's mouth is open (reggan/open_mouth.py; None: nowhere). The warp moves the inside of
    an open mouth as one piece (``reggan.warp.held_together``: teeth do not stretch), on a bent face and on an unbent
    one alike."""
    bends = bends or [None] * len(crops)
    displacements = displacements or [None] * len(crops)
    open_mouths = open_mouths or [None] * len(crops)
    bent = [crop if bend is None else bend.bend(crop) for crop, bend in zip(crops, bends)]
    bent_keeps = [keep if bend is None else bend.bend(np.ascontiguousarray(keep, dtype=np.float32))
                  for keep, bend in zip(keeps, bends)]
    outputs = synthesize(bent, bent_keeps)
    results = []
    for crop, bent_crop, output, bend, moved, mouth in zip(crops, bent, outputs, bends, displacements, open_mouths):
        output = np.asarray(output, np.float32)
        if bend is None:
            if moved is not None and mouth is not None and mouth.any():
                # The networks moved the whole face with their own warp: the open mouth is moved again, held together.
                output = output + displace(crop, held_together(moved, mouth)) - displace(crop, moved)
            results.append(output)
        elif moved is None:
            results.append(crop.astype(np.float32) + bend.unbend(output - bent_crop.astype(np.float32)))
        else:
            results.append(bend.warp_on_face(crop, moved, mouth) + bend.unbend(output - displace(bent_crop, moved)))
    return results


class AnchorSmoother:
    """Per track: the face's landmarks relative to the template, averaged over ``time_constant`` seconds, so that on
    video the bend follows the face's shape and pose but not its mouth moving with speech."""

    def __init__(self, template: np.ndarray, time_constant: float = 2.0):
        """template  # [68, 2] crop pixels."""
        self.template = template
        self.time_constant = time_constant
        self.state: dict[int, tuple[np.ndarray, float]] = {}  # identity -> (offsets [68, 2], time)

    def __call__(self, identity: int, points: np.ndarray, timestamp: float, fresh: bool) -> np.ndarray:
        """This frame's landmarks in crop pixels  # [68, 2] -> the ones to bend with."""
        offsets = points - self.template
        previous = self.state.get(identity)
        if previous is not None and not fresh and self.time_constant > 0 and timestamp > previous[1]:
            keep = math.exp(-(timestamp - previous[1]) / self.time_constant)
            offsets = keep * previous[0] + (1 - keep) * offsets
        self.state[identity] = (offsets, timestamp)
        return self.template + offsets

    def forget_except(self, identities: set[int]) -> None:
        for identity in list(self.state):
            if identity not in identities:
                del self.state[identity]


class VideoBends:
    """Per track on video: the face's bend, following its landmarks averaged over ``time_constant`` seconds
    (``AnchorSmoother``) and rebuilt only once that average has moved by more than ``tolerance`` pixels at some anchor.
    The average drifts by hundredths of a pixel a frame, and building a bend (two thin-plate maps, 2.4 ms a face on
    two CPU cores) is most of what bending costs."""

    def __init__(self, build, template: np.ndarray, time_constant: float = 2.0,
                 tolerance: float = REBUILD_TOLERANCE):
        """build: landmarks  # [68, 2] -> FaceBend (``Aligner.bend``); template  # [68, 2] crop pixels."""
        self.build = build
        self.average = AnchorSmoother(template, time_constant)
        self.tolerance = tolerance
        self.kept: dict[int, tuple[np.ndarray, FaceBend]] = {}  # identity -> (anchors it was built for, bend)

    def __call__(self, identity: int, points: np.ndarray, timestamp: float, fresh: bool) -> FaceBend:
        """This frame's landmarks in crop pixels  # [68, 2] -> the bend to synthesize this face with."""
        averaged = self.average(identity, points, timestamp, fresh)
        kept = self.kept.get(identity)
        if kept is not None and not fresh and np.abs(averaged[ANCHORS] - kept[0]).max() <= self.tolerance:
            return kept[1]
        bend = self.build(averaged)
        self.kept[identity] = (averaged[ANCHORS], bend)
        return bend

    def forget_except(self, identities: set[int]) -> None:
        self.average.forget_except(identities)
        self.kept = {identity: kept for identity, kept in self.kept.items() if identity in identities}
