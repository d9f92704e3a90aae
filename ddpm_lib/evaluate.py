"""Evaluating generated images: Frechet distance, FID, KID and a small MNIST classifier.

Chapter 9. Notation (Heusel et al. 2017, "GANs trained by a two time-scale update
rule converge to a local Nash equilibrium"):

=================  =========================================================
``mu1, sigma1``    mean (d,) and covariance (d, d) of features of real images
``mu2, sigma2``    the same for generated images
FD                 ``||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))``
FID                FD on Inception-v3 pool features (d = 2048), images resized to 299 px
KID                squared MMD with the kernel ``k(x, y) = (x.y / d + 1)^3``,
                   unbiased, averaged over random subsets (Binkowski et al. 2018)
domain FD          FD on the features of ``MNISTClassifier`` (d = 128): offline, MNIST only
=================  =========================================================

Inception features come from torchmetrics (which uses torch-fidelity's port of the
original TensorFlow FID network). Its weights are downloaded from GitHub on first use;
when that is impossible (no torch-fidelity, no network, no cached weights),
``feature="inception"`` is an error and ``feature="auto"`` falls back, with a
printed note, to the MNIST classifier's features.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import textwrap
import warnings
from dataclasses import dataclass
from typing import NamedTuple
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import host_reachable, to_unit_range
from .paths import pretrained_dir

__all__ = [
    "ClassBalance",
    "InceptionUnavailableError",
    "MNISTClassifier",
    "MetricResult",
    "class_balance",
    "classifier_features",
    "classify",
    "confident_fraction",
    "domain_fd",
    "fd_by_sample_size",
    "feature_diversity",
    "feature_statistics",
    "fid",
    "frechet_distance",
    "frechet_distance_from_features",
    "image_features",
    "inception_status",
    "jpeg_roundtrip",
    "kid",
    "kid_score",
    "load_mnist_classifier",
    "MemorisationCheck",
    "memorisation_check",
    "nearest_neighbours",
    "Neighbours",
    "sliced_wasserstein",
]



# --------------------------------------------------------------------------- MNIST classifier


class MNISTClassifier(nn.Module):
    """A small CNN for 32 x 32 digits in [-1, 1] (chapter 9's domain feature extractor).

    Three conv blocks (conv 3x3, GroupNorm, ReLU, 2x2 max-pool: 32 -> 16 -> 8 -> 4 px),
    a 2 x 2 average pool, then ``Linear(4 * 4 * width, feature_dim)`` + ReLU: these
    ``feature_dim`` numbers are the features used for the domain FD, and a last
    ``Linear(feature_dim, num_classes)`` gives the logits.
    """

    def __init__(self, width: int = 32, feature_dim: int = 128, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.config = {"width": width, "feature_dim": feature_dim, "num_classes": num_classes,
                       "in_channels": in_channels}
        chans = [in_channels, width, 2 * width, 4 * width]
        blocks = []
        for c_in, c_out in itertools.pairwise(chans):
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.ReLU(), nn.MaxPool2d(2)]
        self.conv = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(2), nn.Flatten())  # (B, 2 * 2 * 4 * width)
        self.embed = nn.Sequential(nn.Linear(4 * chans[-1], feature_dim), nn.ReLU())  # (B, feature_dim)
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(feature_dim, num_classes))  # (B, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features ``(B, feature_dim)`` of images ``(B, C, 32, 32)`` in [-1, 1]."""
        return self.embed(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)``."""
        return self.head(self.features(x))


def load_mnist_classifier(
    path: str | os.PathLike | None = None, device: torch.device | str | None = None
) -> MNISTClassifier:
    """The shipped classifier (``pretrained/mnist-classifier``), in eval mode, on ``device``.

    Chapter 9. Loaded once per (path, device) and cached; do not train the returned model.
    """
    path = Path(path) if path is not None else pretrained_dir("mnist-classifier")
    return _load_classifier_cached(str(path.resolve()), str(torch.device(device or "cpu")))


@lru_cache(maxsize=4)
def _load_classifier_cached(path: str, device: str) -> MNISTClassifier:
    from safetensors.torch import load_file

    weights, config = Path(path) / "model.safetensors", Path(path) / "config.json"
    if not weights.is_file() or not config.is_file():
        raise FileNotFoundError(
            f"no MNIST classifier in {path} (expected model.safetensors and config.json); "
            "train one with `python pretrained/mnist-classifier/train_classifier.py`."
        )
    model = MNISTClassifier(**json.loads(config.read_text())["init"])
    model.load_state_dict(load_file(str(weights)))
    return model.eval().requires_grad_(False).to(device)


def _classifier_input(images: torch.Tensor, model: MNISTClassifier) -> torch.Tensor:
    """Images ``(B, C, H, W)`` in [-1, 1] -> ``(B, 1, 32, 32)`` on the model's device.

    Values are clamped to [-1, 1]; colour images are averaged to gray; other sizes
    are resized bilinearly (28 px digits are padded to 32 px, like the training data).
    """
    if images.ndim != 4:
        raise ValueError(f"expected images shaped (B, C, H, W), got {tuple(images.shape)}")
    x = images.to(next(model.parameters()).device, torch.float32).clamp(-1, 1)  # samples may overshoot
    if x.shape[1] != 1:
        x = x.mean(dim=1, keepdim=True)
    if x.shape[-2:] == (28, 28):
        x = F.pad(x, (2, 2, 2, 2), value=-1.0)
    elif x.shape[-2:] != (32, 32):
        x = F.interpolate(x, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    return x


@torch.no_grad()
def _batched(fn, images: torch.Tensor, model: MNISTClassifier, batch_size: int) -> torch.Tensor:
    outs = [fn(_classifier_input(images[i: i + batch_size], model)).cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(outs) if outs else torch.empty(0)


def classifier_features(
    images: torch.Tensor, model: MNISTClassifier | None = None, batch_size: int = 500
) -> torch.Tensor:
    """Penultimate-layer features ``(N, 128)`` (float32, CPU) of digits in [-1, 1]. Chapter 9."""
    model = model or load_mnist_classifier(device=images.device)
    return _batched(model.features, images, model, batch_size)


def classify(images: torch.Tensor, model: MNISTClassifier | None = None, batch_size: int = 500) -> torch.Tensor:
    """Class probabilities ``(N, 10)`` (float32, CPU) of digits in [-1, 1]. Chapter 9."""
    model = model or load_mnist_classifier(device=images.device)
    return _batched(model, images, model, batch_size).softmax(dim=-1)


# --------------------------------------------------------------------------- Frechet distance


def _float64(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


def _sqrt_psd(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix through its eigen-decomposition (negative
    eigenvalues from round-off are clipped to 0)."""
    w, V = np.linalg.eigh(sigma)
    return (V * np.sqrt(np.clip(w, 0.0, None))) @ V.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    ``||mu1 - mu2||^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr((sigma1 sigma2)^(1/2))``
    (Heusel et al. 2017; Dowson & Landau 1982). Chapter 9.

    ``sigma1 sigma2`` is not symmetric, so instead of a general matrix square root
    (scipy's ``sqrtm``, which goes complex on round-off) we use
    ``Tr((sigma1 sigma2)^(1/2)) = Tr((s sigma2 s)^(1/2))`` with ``s = sigma1^(1/2)``:
    ``s sigma2 s`` is symmetric PSD and has the same eigenvalues as ``sigma1 sigma2``,
    so the trace is the sum of the square roots of its (clipped) eigenvalues.
    A tiny negative result from round-off is returned as 0.
    """
    mu1, mu2 = _float64(mu1).ravel(), _float64(mu2).ravel()
    sigma1, sigma2 = np.atleast_2d(_float64(sigma1)), np.atleast_2d(_float64(sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"shapes do not match: mu1 {mu1.shape}, sigma1 {sigma1.shape}, mu2 {mu2.shape}, sigma2 "
            f"{sigma2.shape}; expected means (d,) and covariances (d, d) for the same d."
        )
    sigma1, sigma2 = (sigma1 + sigma1.T) / 2, (sigma2 + sigma2.T) / 2
    s = _sqrt_psd(sigma1)  # sigma1^(1/2)
    eig = np.linalg.eigvalsh(s @ sigma2 @ s)  # eigenvalues of sigma1 sigma2
    tr_covmean = np.sqrt(np.clip(eig, 0.0, None)).sum()  # Tr((sigma1 sigma2)^(1/2))
    diff = mu1 - mu2
    fd = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean
    return float(max(fd, 0.0))  # FD >= 0; round-off can leave about -1e-9 * Tr(sigma) for equal inputs


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(d,)`` and unbiased covariance ``(d, d)`` (float64) of features ``(N, d)``. Chapter 9."""
    f = _float64(features)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be (N, d) with N >= 2, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_distance_from_features(f1, f2) -> float:
    """Frechet distance between Gaussians fitted to features ``(N1, d)`` and ``(N2, d)``. Chapter 9."""
    return frechet_distance(*feature_statistics(f1), *feature_statistics(f2))


def fd_by_sample_size(f1, f2, sizes, seed: int = 0) -> dict[int, float]:
    """FD between the first n features of a random order of ``f1`` and of ``f2``, for each n.

    With ``f1`` and ``f2`` from the same distribution (two disjoint halves of the real
    data) the true distance is 0, so what remains is the estimator's bias, which
    shrinks as n grows: chapter 9's first caveat.
    """
    f1, f2 = _float64(f1), _float64(f2)
    rng = np.random.default_rng(seed)
    f1, f2 = f1[rng.permutation(len(f1))], f2[rng.permutation(len(f2))]
    out = {}
    for n in sizes:
        if n > min(len(f1), len(f2)) or n < 2:
            raise ValueError(f"sample size {n} must be in [2, {min(len(f1), len(f2))}] (the smaller set's size)")
        out[int(n)] = frechet_distance_from_features(f1[:n], f2[:n])
    return out


# --------------------------------------------------------------------------- KID


def kid(f1, f2, subsets: int = 100, subset_size: int = 1000, degree: int = 3, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance on features: mean and std of the unbiased squared MMD. Chapter 9.

    Kernel ``k(x, y) = (x . y / d + 1)^degree`` (Binkowski et al. 2018, "Demystifying
    MMD GANs"); each of ``subsets`` random draws of ``m = min(subset_size, N1, N2)``
    features from each set gives
    ``MMD^2 = mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean_{i, j} k(x_i, y_j)``.
    Unbiased: its expectation is 0 when both sets come from the same distribution,
    so (unlike FD) small samples add noise but no bias; values can be slightly negative.
    """
    f1, f2 = _float64(f1), _float64(f2)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"features must be (N1, d) and (N2, d), got {f1.shape} and {f2.shape}")
    m = min(subset_size, len(f1), len(f2))
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples in each set, got {len(f1)} and {len(f2)}")
    d = f1.shape[1]
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(subsets):
        x = f1[rng.choice(len(f1), m, replace=False)]
        y = f2[rng.choice(len(f2), m, replace=False)]
        k_xx, k_yy, k_xy = ((a @ b.T / d + 1.0) ** degree for a, b in ((x, x), (y, y), (x, y)))
        off_diag = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
        scores.append(off_diag - 2.0 * k_xy.mean())
    return float(np.mean(scores)), float(np.std(scores))


# --------------------------------------------------------------------------- Inception availability


class InceptionUnavailableError(RuntimeError):
    """Inception-v3 features cannot be computed here (package or weights missing, offline)."""


INCEPTION_WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
def inception_resize(antialias: bool = True) -> str:
    """How torchmetrics feeds images to Inception-v3 (a FID value is reported with it). Chapter 9."""
    how = ("bilinear with antialiasing (torchmetrics' default)" if antialias
           else "bilinear without antialiasing, like the original TensorFlow FID code")
    return f"to uint8, then {how} to 299 x 299 px"


def inception_status(timeout: float = 3.0) -> tuple[bool, str]:
    """Whether Inception FID/KID can run here, and why not; ``timeout`` seconds at most. Chapter 9.

    Needs ``torch-fidelity`` (``pip install torch-fidelity``) and its weights, either
    cached under ``torch.hub.get_dir()/checkpoints`` or downloadable from GitHub.
    """
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        return False, "the package torch-fidelity is not installed (pip install torch-fidelity)"
    cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_URL.rsplit("/", 1)[-1]
    if cached.is_file():
        return True, f"weights cached at {cached}"
    if not host_reachable("github.com", 443, timeout):
        return False, "the Inception weights are not cached and github.com cannot be reached (offline)"
    return True, "weights will be downloaded from GitHub on first use"


# --------------------------------------------------------------------------- FID / KID on images


@dataclass(frozen=True)
class MetricResult:
    """A score with what it was computed on (chapter 9: a FID without its N and resize means little)."""

    name: str  # "FID", "KID", "FD (MNIST classifier)", "KID (MNIST classifier)"
    value: float  # lower is better
    num_real: int  # real images used
    num_fake: int  # generated images used
    feature: str  # the feature extractor
    resize: str  # how images were resized before it
    std: float | None = None  # KID: standard deviation over subsets
    note: str = ""  # e.g. why a fallback was used

    def __float__(self) -> float:
        return self.value

    def __str__(self) -> str:
        pm = f" +- {self.std:.4g}" if self.std is not None else ""
        s = (f"{self.name} = {self.value:.4g}{pm} ({self.num_real} real / {self.num_fake} generated images; "
             f"features: {self.feature}; resize: {self.resize})")
        return s + (f"\nnote: {self.note}" if self.note else "")


FEATURES = ("auto", "inception", "mnist")
INCEPTION_FEATURE = "Inception-v3 pool3 (2048-d, torchmetrics / torch-fidelity weights)"
MNIST_FEATURE = "MNISTClassifier penultimate layer (128-d, pretrained/mnist-classifier)"


def _mnist_resize(images: torch.Tensor) -> str:
    size = tuple(images.shape[-2:])
    if size == (32, 32):
        return "none (32 px)" + (", colour averaged to gray" if images.shape[1] != 1 else "")
    how = "padded to 32 px" if size == (28, 28) else "bilinear (antialiased) to 32 px"
    return f"{size[0]}x{size[1]} px {how}" + (", colour averaged to gray" if images.shape[1] != 1 else "")


def _resolve_feature(feature: str) -> tuple[str, str]:
    """``"auto"`` -> ``"inception"`` when possible, else ``"mnist"`` with a printed note."""
    if feature not in FEATURES:
        raise ValueError(f"feature must be one of {FEATURES}, got {feature!r}")
    if feature == "mnist":
        return "mnist", ""
    ok, why = inception_status()
    if ok:
        return "inception", ""
    if feature == "inception":
        raise InceptionUnavailableError(
            f"Inception features are unavailable: {why}. Use feature='mnist' for the offline MNIST-classifier "
            "distance, or feature='auto' to fall back to it automatically."
        )
    note = (f"Inception-v3 is unavailable ({why}); using the MNIST classifier's features instead. "
            "The value is a domain FD/KID, not comparable with published FID/KID numbers.")
    print(textwrap.fill(f"note: {note}", width=88))  # fits the book's code column
    warnings.warn(note, stacklevel=3)
    return "mnist", note


def _for_inception(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images -> [0, 1] with 3 channels, as torchmetrics' ``normalize=True`` expects."""
    x = to_unit_range(images.float())
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def _make_inception_metric(name: str, **kwargs):
    """torchmetrics' ``FrechetInceptionDistance`` ("FID") or ``KernelInceptionDistance`` ("KID")."""
    if name == "FID":
        from torchmetrics.image.fid import FrechetInceptionDistance

        return FrechetInceptionDistance(feature=2048, normalize=True, **kwargs)
    from torchmetrics.image.kid import KernelInceptionDistance

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features")
        return KernelInceptionDistance(feature=2048, normalize=True, **kwargs)


def _inception_metric(metric, real: torch.Tensor, fake: torch.Tensor, batch_size: int, device) -> torch.Tensor:
    """Feed both image sets through a torchmetrics metric in batches and compute it."""
    metric = metric.to(device)
    for images, is_real in ((real, True), (fake, False)):
        for i in range(0, len(images), batch_size):
            metric.update(_for_inception(images[i: i + batch_size]).to(device), real=is_real)
    return metric.compute()


@torch.no_grad()
def image_features(
    images: torch.Tensor,
    feature: str = "auto",
    batch_size: int = 100,
    device: torch.device | str | None = None,
    antialias: bool = True,
) -> torch.Tensor:
    """Features ``(N, d)`` (float64, CPU) of images ``(N, C, H, W)`` in [-1, 1], for FD / KID. Chapter 9.

    ``feature="inception"``: the 2048-d Inception-v3 pool features that ``fid`` uses
    (torchmetrics' network: uint8 input, resized to 299 px, with antialiasing unless
    ``antialias=False``); ``"mnist"``: the MNIST classifier's 128-d features;
    ``"auto"``: Inception when available, else ``"mnist"`` with a printed note.
    Compute the features of a set once, then compare many sets with
    ``frechet_distance_from_features`` / ``kid`` / ``fd_by_sample_size``.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a (N, C, H, W) tensor in [-1, 1], got {getattr(images, 'shape', type(images))}")
    kind, _ = _resolve_feature(feature)
    if kind == "mnist":
        return classifier_features(images, batch_size=batch_size).double()
    device = torch.device(device) if device is not None else images.device
    metric = _make_inception_metric("FID", **({} if antialias else {"antialias": False}))
    net = metric.inception.to(device)
    outs = []
    for i in range(0, len(images), batch_size):
        x = _for_inception(images[i: i + batch_size]).to(device)  # (B, 3, H, W) in [0, 1]
        outs.append(net((x * 255).byte()).reshape(len(x), -1).double().cpu())  # as FrechetInceptionDistance.update
    return torch.cat(outs)


def _check_images(real: torch.Tensor, fake: torch.Tensor) -> None:
    for name, x in (("real", real), ("fake", fake)):
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or len(x) < 2:
            raise ValueError(f"{name} images must be a (N, C, H, W) tensor in [-1, 1] with N >= 2, "
                             f"got {getattr(x, 'shape', type(x))}")


def fid(
    real: torch.Tensor,
    fake: torch.Tensor,
    feature: str = "auto",
    batch_size: int = 100,
    device: torch.device | str | None = None,
    antialias: bool = True,
) -> MetricResult:
    """FID between real and generated images ``(N, C, H, W)`` in [-1, 1]. Chapter 9.

    ``feature="inception"``: torchmetrics' ``FrechetInceptionDistance`` (2048-d pool
    features; images resized to 299 px, with antialiasing unless ``antialias=False``;
    gray images repeated to 3 channels); an error when Inception is unavailable.
    ``"mnist"``: the domain FD on the MNIST classifier's features. ``"auto"``:
    Inception when available, else ``"mnist"`` with a printed note.
    """
    _check_images(real, fake)
    kind, note = _resolve_feature(feature)
    device = torch.device(device) if device is not None else real.device
    if kind == "mnist":
        return domain_fd(real, fake, note=note)
    metric = _make_inception_metric("FID", **({} if antialias else {"antialias": False}))
    value = _inception_metric(metric, real, fake, batch_size, device)
    return MetricResult("FID", float(value), len(real), len(fake), INCEPTION_FEATURE, inception_resize(antialias))


def kid_score(
    real: torch.Tensor,
    fake: torch.Tensor,
    feature: str = "auto",
    subsets: int = 100,
    subset_size: int = 1000,
    batch_size: int = 100,
    device: torch.device | str | None = None,
) -> MetricResult:
    """KID (mean +- std over subsets) between real and generated images in [-1, 1]. Chapter 9.

    Same ``feature`` choices as ``fid`` (torchmetrics' ``KernelInceptionDistance``
    resizes with antialiasing); ``subset_size`` is capped at the smaller set's size.
    """
    _check_images(real, fake)
    kind, note = _resolve_feature(feature)
    m = min(subset_size, len(real), len(fake))
    if kind == "mnist":
        mean, std = kid(classifier_features(real), classifier_features(fake), subsets=subsets, subset_size=m)
        return MetricResult("KID (MNIST classifier)", mean, len(real), len(fake), MNIST_FEATURE,
                            _mnist_resize(real), std=std, note=note)
    device = torch.device(device) if device is not None else real.device
    metric = _make_inception_metric("KID", subsets=subsets, subset_size=m)
    mean, std = _inception_metric(metric, real, fake, batch_size, device)
    return MetricResult("KID", float(mean), len(real), len(fake), INCEPTION_FEATURE, inception_resize(True),
                        std=float(std))


def domain_fd(real: torch.Tensor, fake: torch.Tensor, model: MNISTClassifier | None = None,
              note: str = "") -> MetricResult:
    """Frechet distance on the MNIST classifier's features (offline; digits only). Chapter 9."""
    _check_images(real, fake)
    value = frechet_distance_from_features(classifier_features(real, model), classifier_features(fake, model))
    return MetricResult("FD (MNIST classifier)", value, len(real), len(fake), MNIST_FEATURE, _mnist_resize(real),
                        note=note)


# --------------------------------------------------------------------------- digits: class balance


@dataclass(frozen=True)
class ClassBalance:
    """How evenly generated digits cover the 10 classes, and how recognisable they are.

    ``counts`` is the histogram of the predicted (argmax) class of every image, even
    unrecognisable ones, so read ``balance`` together with ``confident_fraction``.
    """

    counts: tuple[int, ...]  # images predicted as each class
    balance: float  # entropy of the class histogram / log(10): 1 = uniform, 0 = a single class
    kl_to_uniform: float  # KL(histogram || uniform) in nats: 0 = uniform
    confident_fraction: float  # fraction of images whose top probability >= threshold
    mean_max_prob: float  # average top probability
    threshold: float  # used for confident_fraction

    @property
    def num_images(self) -> int:
        return sum(self.counts)

    def __str__(self) -> str:
        return (f"{self.num_images} digits; per class {list(self.counts)}; balance {self.balance:.3f} "
                f"(1 = uniform); KL to uniform {self.kl_to_uniform:.3f} nats; "
                f"{100 * self.confident_fraction:.1f}% recognised with p >= {self.threshold}; "
                f"mean top probability {self.mean_max_prob:.3f}")


def _probabilities(images_or_probs: torch.Tensor, model: MNISTClassifier | None) -> torch.Tensor:
    """Images ``(N, C, H, W)`` are classified; a ``(N, 10)`` tensor is taken as probabilities."""
    if images_or_probs.ndim == 2:
        return images_or_probs.float().cpu()
    return classify(images_or_probs, model)


def confident_fraction(images_or_probs: torch.Tensor, threshold: float = 0.9,
                       model: MNISTClassifier | None = None) -> float:
    """Fraction of digits the classifier recognises with probability >= ``threshold``. Chapter 9."""
    return (_probabilities(images_or_probs, model).max(dim=-1).values >= threshold).float().mean().item()


def class_balance(images_or_probs: torch.Tensor, threshold: float = 0.9,
                  model: MNISTClassifier | None = None) -> ClassBalance:
    """Class histogram of generated digits, its normalised entropy and KL to uniform. Chapter 9.

    A model that collapses onto a few digits (mode collapse, too strong guidance)
    has balance well below 1 even when every digit looks good.
    """
    p = _probabilities(images_or_probs, model)  # (N, K)
    K = p.shape[1]
    counts = torch.bincount(p.argmax(dim=-1), minlength=K)
    q = counts.double() / counts.sum()
    nz = q[q > 0]
    entropy = max(0.0, float(-(nz * nz.log()).sum()))
    top = p.max(dim=-1).values
    return ClassBalance(
        counts=tuple(int(c) for c in counts),
        balance=entropy / math.log(K),
        kl_to_uniform=math.log(K) - entropy,  # KL(q || 1/K) = log K - H(q)
        confident_fraction=(top >= threshold).float().mean().item(),
        mean_max_prob=top.mean().item(),
        threshold=threshold,
    )


# --------------------------------------------------------------------------- JPEG


def jpeg_roundtrip(images: torch.Tensor, quality: int = 75) -> torch.Tensor:
    """Encode each image as JPEG at ``quality`` (1-95) with PIL and decode it again. Chapter 9.

    Images ``(N, C, H, W)`` in [-1, 1] with C = 1 or 3; returns the same shape and range.
    Saving generated samples as JPEG before computing FID changes the score.
    """
    from PIL import Image

    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected (N, 1 or 3, H, W) images, got {tuple(images.shape)}")
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100 (95 is the useful maximum), got {quality}")
    pixels = ((images.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    out = []
    for p in pixels:  # (C, H, W)
        arr = p[0].numpy() if p.shape[0] == 1 else p.permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
        dec = torch.from_numpy(np.asarray(Image.open(io.BytesIO(buf.getvalue()))).copy())
        out.append(dec.unsqueeze(0) if dec.ndim == 2 else dec.permute(2, 0, 1))
    return (torch.stack(out).float() / 127.5 - 1.0).to(images.device, images.dtype)


# --------------------------------------------------------------------------- point clouds and diversity


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, num_projections: int = 256, seed: int = 0) -> float:
    """Sliced Wasserstein-1 distance between two equally sized point clouds ``(N, d)``.

    The mean over random unit directions θ of the 1-D Wasserstein-1 distance between
    θ·x and θ·y, which for N points each is the mean absolute difference of the sorted
    projections. Two samples of the same distribution are not at 0: compare with the
    distance between two independent samples of the truth. Chapter 7 (samplers on the toy).
    """
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(f"expected two point clouds of the same shape (N, d); got {tuple(x.shape)} and {tuple(y.shape)}.")
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(x.shape[1], num_projections, generator=g, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)  # (d, P) unit directions
    px = (x.detach().cpu().double() @ theta).sort(dim=0).values  # (N, P)
    py = (y.detach().cpu().double() @ theta).sort(dim=0).values
    return float((px - py).abs().mean())


def feature_diversity(images_or_features: torch.Tensor, labels: torch.Tensor | None = None,
                      model: MNISTClassifier | None = None) -> float:
    """Mean pairwise Euclidean distance between the MNIST classifier's features of images with the same label.

    Images ``(N, C, H, W)`` in [-1, 1] are embedded with ``classifier_features``; a ``(N, F)``
    tensor is taken as features. Without ``labels`` all pairs count; with labels, the mean
    distance inside each label (groups of one are skipped) is averaged over the labels.
    Near-copies give small values; compare with real digits. Chapter 8 (guidance's diversity).
    """
    f = images_or_features.float().cpu() if images_or_features.ndim == 2 else classifier_features(images_or_features, model)
    labels = torch.zeros(len(f), dtype=torch.long) if labels is None else torch.as_tensor(labels).cpu().long()
    if labels.shape != (len(f),):
        raise ValueError(f"labels must have shape ({len(f)},), one per image; got {tuple(labels.shape)}.")
    means = [torch.pdist(f[labels == k]).mean() for k in labels.unique() if int((labels == k).sum()) >= 2]
    if not means:
        raise ValueError("feature_diversity needs at least two images with the same label.")
    return float(torch.stack(means).mean())



# --------------------------------------------------------------------------- memorisation (chapter 10)


class Neighbours(NamedTuple):
    """For each query image: its nearest reference image (``indices``) and the distance to it."""

    distances: torch.Tensor  # (N,) float64: Euclidean distance in the space below
    indices: torch.Tensor  # (N,) int64: index into the reference images
    space: str  # "pixels" or the feature extractor's description


@torch.no_grad()
def nearest_neighbours(queries: torch.Tensor, references: torch.Tensor, feature: str = "pixels",
                       batch_size: int = 256) -> Neighbours:
    """Each query's nearest reference image, by Euclidean distance in pixels or in features (chapter 10).

    ``queries`` (N, C, H, W) and ``references`` (M, C, H, W) in [-1, 1], same shape per image.
    ``feature="pixels"``: distance between the images themselves, divided by the square root
    of the number of values, so it is a root-mean-square pixel difference (0 for an exact
    copy, about 0.82 between two independent uniform-noise images). ``"mnist"``,
    ``"inception"``, ``"auto"``: distance between ``image_features`` (chapter 9), which
    ignores small shifts and stroke changes that pixels punish.
    """
    _check_comparable(queries, references)
    kind = "pixels" if feature == "pixels" else _resolve_feature(feature)[0]
    return _nearest(_vectors(queries, kind), _vectors(references, kind), kind, batch_size)


def _check_comparable(queries: torch.Tensor, references: torch.Tensor,
                      names: tuple[str, str] = ("queries", "references")) -> None:
    """Both non-empty (N, C, H, W) tensors of the same image shape, or a ValueError saying which is not."""
    for name, x in zip(names, (queries, references)):
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or len(x) == 0:
            raise ValueError(f"{name} must be a non-empty (N, C, H, W) tensor in [-1, 1], "
                             f"got {getattr(x, 'shape', type(x))}.")
    if queries.shape[1:] != references.shape[1:]:
        raise ValueError(f"{names[0]} are {tuple(queries.shape[1:])} images but {names[1]} are "
                         f"{tuple(references.shape[1:])}; compare images of the same shape.")


def _vectors(images: torch.Tensor, kind: str) -> torch.Tensor:
    """(N, d) float64 CPU vectors of images: the pixels, or their features (kind "mnist" / "inception")."""
    if kind == "pixels":
        return images.detach().cpu().double().flatten(1)
    return image_features(images.detach().cpu(), feature=kind)


def _nearest(q: torch.Tensor, r: torch.Tensor, kind: str, batch_size: int = 256) -> Neighbours:
    scale = q.shape[1] ** 0.5 if kind == "pixels" else 1.0  # pixels: a root-mean-square difference
    space = {"pixels": "pixels (root-mean-square difference)", "inception": INCEPTION_FEATURE}.get(kind, MNIST_FEATURE)
    dists, idx = [], []
    for i in range(0, len(q), batch_size):
        d = torch.cdist(q[i: i + batch_size], r, compute_mode="donot_use_mm_for_euclid_dist")  # (b, M), exact
        best = d.min(dim=1)
        dists.append(best.values / scale)
        idx.append(best.indices)
    return Neighbours(torch.cat(dists), torch.cat(idx), space)


@dataclass
class MemorisationCheck:
    """Nearest training images of generated samples and of held-out real images, in two spaces.

    A model that copies its training data puts its samples much closer to training
    images than new real images are: compare ``samples[space].distances`` with
    ``held_out[space].distances`` (``ratio``) and look at the pairs (``plot``).
    """

    samples: dict[str, Neighbours]  # "pixels" and "features" -> neighbours of the generated images
    held_out: dict[str, Neighbours]  # the same for real images the model never saw
    feature: str  # the feature extractor behind "features"

    def ratio(self, space: str = "pixels") -> float:
        """Median nearest-training distance of the samples over that of held-out images (< 1: closer)."""
        return float(self.samples[space].distances.median() / self.held_out[space].distances.median())

    def copies(self, space: str = "pixels", quantile: float = 0.01) -> int:
        """Samples closer to a training image than all but ``quantile`` of held-out images are."""
        limit = torch.quantile(self.held_out[space].distances, quantile)
        return int((self.samples[space].distances < limit).sum())

    def __str__(self) -> str:
        lines = []
        for space in ("pixels", "features"):
            s, h = self.samples[space].distances, self.held_out[space].distances
            lines.append(f"{space}: median nearest-training distance {s.median():.3f} for {len(s)} samples, "
                         f"{h.median():.3f} for {len(h)} held-out images (ratio {self.ratio(space):.2f}); "
                         f"{self.copies(space)} samples closer than 99 % of held-out images")
        return "\n".join(lines)

    def plot(self, samples: torch.Tensor, train: torch.Tensor, n: int = 8, title: str | None = None):
        """Samples over their nearest training images (pixels, features), and both distance histograms."""
        import matplotlib.pyplot as plt

        from .viz import show_images

        n = min(n, len(samples))
        fig = plt.figure(figsize=(max(8.0, 1.1 * n), 6.4))
        grid = fig.add_gridspec(2, 2, height_ratios=[1.6, 1.0])
        ax = fig.add_subplot(grid[0, :])
        idx_p, idx_f = self.samples["pixels"].indices[:n], self.samples["features"].indices[:n]
        rows = torch.cat([samples[:n].cpu(), train[idx_p].cpu(), train[idx_f].cpu()])
        show_images(rows.float(), nrow=n, ax=ax,
                    title="top: generated; middle: nearest training image in pixels; bottom: in features")
        for k, space in enumerate(("pixels", "features")):
            a = fig.add_subplot(grid[1, k])
            s, h = self.samples[space].distances.numpy(), self.held_out[space].distances.numpy()
            bins = np.histogram_bin_edges(np.concatenate([s, h]), bins=20)
            a.hist(h, bins=bins, alpha=0.6, label=f"held-out real ({len(h)})", color="C0")
            a.hist(s, bins=bins, alpha=0.6, label=f"generated ({len(s)})", color="C1")
            a.set_xlabel(f"distance to the nearest training image ({space})")
            a.set_ylabel("images")
            a.legend(fontsize=8)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        return fig


def memorisation_check(samples: torch.Tensor, train: torch.Tensor, held_out: torch.Tensor,
                       feature: str = "auto") -> MemorisationCheck:
    """Nearest training image of every generated sample and of every held-out real image (chapter 10).

    ``train`` is what the model was trained on, ``held_out`` real images it never saw
    (the same number as ``samples`` makes the histograms comparable), all (N, C, H, W)
    in [-1, 1]. Distances in pixels and in ``feature`` space (``nearest_neighbours``).
    """
    for name, x in (("samples", samples), ("held_out", held_out)):
        _check_comparable(x, train, (name, "train"))  # a clear error before any features are computed
    kind, _ = _resolve_feature(feature)
    train_vectors = {"pixels": _vectors(train, "pixels"), "features": _vectors(train, kind)}  # once
    out: dict[str, dict[str, Neighbours]] = {"samples": {}, "held_out": {}}
    for key, x in (("samples", samples), ("held_out", held_out)):
        out[key]["pixels"] = _nearest(_vectors(x, "pixels"), train_vectors["pixels"], "pixels")
        out[key]["features"] = _nearest(_vectors(x, kind), train_vectors["features"], kind)
    return MemorisationCheck(out["samples"], out["held_out"], out["samples"]["features"].space)
