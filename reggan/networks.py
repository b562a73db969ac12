"""The RegGAN networks: the refiner (generator) and the discriminator, plus the Synthesizer that is exported.

Refiner: takes the neutral face, the coarse expressive face from the regression layer and the target label, and
predicts a residual on top of the coarse face ("ultimate skip"), so it only has to add what the linear layer
cannot: realistic teeth, wrinkles, sharp edges. It has no normalisation layers at all: InstanceNorm is known to
turn FP16 engines of StarGAN-family generators black or NaN, and a residual generator this small trains fine
without one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from reggan.alignment import Aligner
from reggan.familiarity import FamiliarityGate
from reggan.regression import LocalRegression
from reggan.warp import ExpressionWarp


def conv_down(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels_in, channels_out, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True))


def conv_up(channels_in: int, channels_out: int, decoder: str = "transpose") -> nn.Sequential:
    """x2 upsampling. "transpose": a stride-2 transposed convolution (what the bundled refiner was trained with; its
    uneven kernel overlap leaves the fine mesh visible in its outputs). "resize": nearest upsampling then a 3x3
    convolution, which cannot make that checkerboard (Odena et al. 2016)."""
    if decoder == "transpose":
        upsample = nn.ConvTranspose2d(channels_in, channels_out, 4, 2, 1)
    elif decoder == "resize":
        upsample = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                 nn.Conv2d(channels_in, channels_out, 3, 1, 1))
    else:
        raise ValueError(f"unknown decoder {decoder!r}; choose transpose or resize")
    return nn.Sequential(upsample, nn.LeakyReLU(0.2, inplace=True))


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(channels, channels, 3, 1, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Refiner(nn.Module):
    """U-Net with three stride-2 levels; input [face, coarse, label planes], output coarse + residual."""

    uses_coarse = True

    def __init__(self, num_labels: int, width: int = 32, residual_blocks: int = 2, decoder: str = "transpose"):
        super().__init__()
        self.num_labels = num_labels
        self.down1 = conv_down(6 + num_labels, width)  # R/2
        self.down2 = conv_down(width, 2 * width)  # R/4
        self.down3 = conv_down(2 * width, 3 * width)  # R/8
        self.middle = nn.Sequential(*[ResidualBlock(3 * width) for _ in range(residual_blocks)])
        self.up3 = conv_up(3 * width, 2 * width, decoder)  # R/4
        self.up2 = conv_up(4 * width, width, decoder)  # R/2
        self.up1 = conv_up(2 * width, width // 2, decoder)  # R
        self.to_residual = nn.Conv2d(width // 2, 3, 3, 1, 1)

    def forward(self, face: torch.Tensor, coarse: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """face, coarse  # [B, 3, R, R] in [0, 1]; label  # [B] int64 -> refined face  # [B, 3, R, R]."""
        batch, _, height, width = face.shape
        # A comparison instead of F.one_hot: one_hot syncs with the device (breaking CUDA graphs) and exports worse.
        classes = torch.arange(self.num_labels, device=label.device)
        one_hot = (label[:, None] == classes[None, :]).to(face.dtype)
        planes = one_hot[:, :, None, None].expand(-1, -1, height, width)
        x = torch.cat([face * 2 - 1, coarse * 2 - 1, planes], dim=1)
        d1 = self.down1(x)
        d2 = self.down2(d1)
        d3 = self.middle(self.down3(d2))
        u3 = self.up3(d3)
        u2 = self.up2(torch.cat([u3, d2], dim=1))
        u1 = self.up1(torch.cat([u2, d1], dim=1))
        return coarse + torch.tanh(self.to_residual(u1))


class StarGANGenerator(nn.Module):
    """The competitor we retrain for comparison: a StarGAN-style conditional generator in the US-GAN variant
    (Akram & Khan: one residual block and a skip from the input to the output). It sees only the face and the
    label; the ``coarse`` argument is accepted and ignored so both generators share one training loop.

    ``scale`` 2 runs it at half our crop's side (128 px, the resolution StarGAN and US-GAN were published at) and
    adds its change, upsampled, to the full-resolution face: a quarter of the work, which is what let it be
    trained for thousands of steps on a 2-core CPU.
    """

    uses_coarse = False

    def __init__(self, num_labels: int, width: int = 32, scale: int = 1):
        super().__init__()
        self.num_labels = num_labels
        self.scale = scale
        act = lambda: nn.LeakyReLU(0.2, inplace=True)  # noqa: E731
        self.body = nn.Sequential(
            nn.Conv2d(3 + num_labels, width, 7, 1, 3), act(),
            nn.Conv2d(width, 2 * width, 4, 2, 1), act(),
            nn.Conv2d(2 * width, 4 * width, 4, 2, 1), act(),
            ResidualBlock(4 * width),
            nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1), act(),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), act(),
            nn.Conv2d(width, 3, 7, 1, 3),
        )

    def forward(self, face: torch.Tensor, coarse: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        small = F.avg_pool2d(face, self.scale) if self.scale > 1 else face
        height, width = small.shape[-2:]
        classes = torch.arange(self.num_labels, device=label.device)
        planes = (label[:, None] == classes[None, :]).to(face.dtype)[:, :, None, None].expand(-1, -1, height, width)
        change = torch.tanh(self.body(torch.cat([small * 2 - 1, planes], dim=1)))
        if self.scale > 1:
            change = F.interpolate(change, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return face + change


GENERATORS = {"refiner": Refiner, "stargan": StarGANGenerator}


class Discriminator(nn.Module):
    """PatchGAN with an expression-classification head (StarGAN / US-GAN style), spectral-normalised."""

    def __init__(self, num_labels: int, resolution: int, width: int = 64, levels: int = 5):
        super().__init__()
        layers, channels = [], 3
        for level in range(levels):
            out = min(width * 2**level, 512)
            layers += [spectral_norm(nn.Conv2d(channels, out, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
            channels = out
        self.trunk = nn.Sequential(*layers)
        self.real_or_fake = spectral_norm(nn.Conv2d(channels, 1, 3, 1, 1))  # one logit per patch
        self.classify = nn.Conv2d(channels, num_labels, resolution // 2**levels)  # one logit per label

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image  # [B, 3, R, R] in [0, 1] -> patch logits  # [B, 1, R/32, R/32], label logits  # [B, L]."""
        features = self.trunk(image * 2 - 1)
        return self.real_or_fake(features), self.classify(features).flatten(1)


LUMA = torch.tensor([0.299, 0.587, 0.114])[None, :, None, None]  # ITU-R BT.601 weights of R, G, B


class Synthesizer(nn.Module):
    """The whole per-face model: warp -> regression layer -> refiner -> intensity blend. This is what is exported.

    Label 0 is neutral: its output is exactly the input. ``intensity`` scales the warp and blends the added
    appearance (0: the input, 1: the full expression); callers clamp it (values a little above 1 exaggerate).
    The added appearance is kept inside a soft mask of the face (hair and background are never the
    expression's business, and halos there were most of what set our outputs apart from real photos).
    """

    edit_mask_feather = 0.04  # fraction of the crop side; tighter than the paste-back mask's default 0.08
    # Mean spread of R, G, B in the face (0-1 units) below which a face is black and white (an old photo, a grey
    # film frame): it then gets a grey change, whatever ``change_chroma`` says, since networks trained on colour
    # photos would tint it (bluish brows, a yellow-green blotch for disgusted). Measured: the least colourful of the
    # 1072 training and evaluation crops has 18.5 grey levels, the black-and-white still among the
    # out-of-distribution faces 0.0; JPEG chroma noise on a grey photo stays well under 3.
    grey_spread = 3.0 / 255

    def __init__(
        self, expressions: list[str], resolution: int, kernel: int = 3, width: int = 32, generator: str = "refiner",
        decoder: str = "transpose", change_chroma: float = 1.0, detail_scale: int = 0, generator_scale: int = 1,
    ):
        super().__init__()
        self.expressions = ["neutral", *expressions]
        # How much of the added appearance's colour (what is left after its luma) is kept; 1: all of it (checkpoints
        # from before this setting). See ``compose``.
        self.change_chroma = change_chroma
        self.resolution = resolution
        self.generator = generator
        self.width = width
        self.decoder = decoder
        # The refiner's change is kept at scales finer than this many pixels only; coarser shading comes from the
        # regression layer (0: the refiner's change whole, as checkpoints from before this setting). See ``detail``.
        self.detail_scale = detail_scale
        self.warp = ExpressionWarp(len(expressions), resolution)
        self.regression = LocalRegression(len(expressions), resolution, kernel)
        self.generator_scale = generator_scale
        extra = {"decoder": decoder} if generator == "refiner" else {"scale": generator_scale}
        self.refiner = GENERATORS[generator](len(self.expressions), width, **extra)
        mask = torch.from_numpy(Aligner(resolution).face_mask(self.edit_mask_feather))
        self.register_buffer("edit_mask", mask[None, None], persistent=False)
        self.familiarity = FamiliarityGate(resolution, self.edit_mask)
        # False: run the regression layer alone (about 15x faster on a CPU; the exported graph follows this too).
        self.use_refiner = True

    def forward(self, face: torch.Tensor, expression: torch.Tensor, intensity: torch.Tensor,
                keep: torch.Tensor | None = None) -> torch.Tensor:
        """face  # [B, 3, R, R] in [0, 1]; expression  # [B] int64; intensity  # [B] float -> [B, 3, R, R].

        keep  # [B, 1, R, R] in [0, 1], optional: where the caller knows the face must only be warped, not painted
        (an open mouth, closed eyes: reggan/keep.py)."""
        if not self.use_refiner:
            return self.coarse_only(face, expression, intensity, keep)
        strength = self.strength(expression, intensity)
        warped, coarse, gate = self.intermediate(face, expression, strength, keep)
        return self.compose(warped, self.detail(self.refiner(warped, coarse, expression), coarse), strength, gate)

    def coarse_only(self, face: torch.Tensor, expression: torch.Tensor, intensity: torch.Tensor,
                    keep: torch.Tensor | None = None) -> torch.Tensor:
        """The regression-only ablation (the intermediate representation), same blending as ``forward``."""
        strength = self.strength(expression, intensity)
        warped, coarse, gate = self.intermediate(face, expression, strength, keep)
        return self.compose(warped, coarse, strength, gate)

    @staticmethod
    def strength(expression: torch.Tensor, intensity: torch.Tensor) -> torch.Tensor:
        """Per-sample intensity, forced to 0 for neutral  # [B]."""
        return intensity * (expression > 0).to(intensity.dtype)

    def intermediate(self, face: torch.Tensor, expression: torch.Tensor, strength: torch.Tensor,
                     keep: torch.Tensor | None = None):
        """The warped face, the regression layer's coarse expressive face on top of it, and where the input is
        familiar enough for the added appearance to be trusted (FamiliarityGate, closed where ``keep`` says so,
        moved with the face)."""
        gate = self.familiarity(face)
        if keep is not None:
            gate = gate * (1.0 - keep.float())
        # Face and gate moved in one sampling pass (the warp samples in FP32 whatever the face's precision, so
        # stacking them as FP32 changes nothing; one pass instead of two saves a grid and a kernel launch).
        both = self.warp(torch.cat([face.float(), gate], dim=1), expression, strength)
        warped, gate = both[:, :3].to(face.dtype), both[:, 3:].clamp(0.0, 1.0)
        coarse = self.regression(warped, expression) if self.refiner.uses_coarse else warped
        return warped, coarse, gate

    def detail(self, refined: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """The refined face with the broad part of the refiner's change (its ``detail_scale``-pixel block means,
        spread back bilinearly) replaced by the regression layer's: the refiner adds texture (teeth, skin, sharp
        furrows) and the expression's shading stays what the regression fitted. Its training already asked for
        this (the coarse anchor, [refine].coarse_pool); doing it by construction removed the brown and yellow
        blotches the bundled refiner painted on disgusted and angry cheeks and brows, and scored better on the
        validation people (docs/results.md, MODEL_CARD.md)  # [B, 3, R, R]."""
        if not self.detail_scale or not self.refiner.uses_coarse:
            return refined
        change = refined - coarse
        broad = F.interpolate(F.avg_pool2d(change, self.detail_scale), scale_factor=self.detail_scale,
                              mode="bilinear", align_corners=False)
        return refined - broad

    def compose(self, warped: torch.Tensor, expressive: torch.Tensor, strength: torch.Tensor,
                gate: torch.Tensor) -> torch.Tensor:
        """Warped face + intensity x the appearance the network added, inside the face mask where the input is
        familiar (gate  # [B, 1, R, R]), with ``change_chroma`` of its colour (none on a black-and-white face),
        clamped to [0, 1].

        Why the colour is turned down: an expression changes the shading of a face (furrows, cheeks, teeth) and
        hardly its colour, but the regression layer fits each colour channel on its own from 21 people for most
        expressions, and where the channels disagree it paints colour the photos never showed: orange and blue
        streaks on the brows and cheeks of faces filmed in other light (the clips in our evaluation)."""
        weight = (strength.to(warped.dtype)[:, None, None, None] * self.edit_mask.to(warped.dtype)
                  * gate.to(warped.dtype))
        change = expressive - warped
        in_colour = (self.colour_spread(warped) >= self.grey_spread).to(change.dtype)
        chroma = self.change_chroma * in_colour[:, None, None, None]
        luma = (change * LUMA.to(change)).sum(1, keepdim=True)  # a grey change of this luma has the same luma
        change = luma + chroma * (change - luma)
        return torch.clamp(warped + weight * change, 0.0, 1.0)

    def colour_spread(self, faces: torch.Tensor) -> torch.Tensor:
        """Mean max - min of R, G, B over the face  # [B] (0 for a black-and-white face)."""
        inside = (self.edit_mask > 0.5).to(faces.dtype)
        spread = (faces.amax(1, keepdim=True) - faces.amin(1, keepdim=True)) * inside
        return spread.sum((1, 2, 3)) / inside.sum()
