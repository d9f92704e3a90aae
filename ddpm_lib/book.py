"""Book set-up: the profile, the device, the seeds and the sizes of each chapter.

Every chapter notebook starts with ``cfg = dl.book.setup(chapter=N)`` and takes
its sizes from ``cfg`` instead of branching on the profile itself.

Profiles (environment variable ``DDPM_BOOK_PROFILE``):

* ``smoke``: tiny sizes so every notebook runs in well under a minute on two CPU
  cores; every code path still runs (this is what ``make test`` uses);
* ``cpu``: the default without a GPU; the whole book builds on a laptop CPU,
  with the shipped models in ``pretrained/`` standing in for long training runs;
* ``gpu``: the default with CUDA; the chapter-scale experiments, sized for a
  Colab T4.
"""

from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np
import torch

# Where the repository and its shipped models are (one place: ddpm_lib.paths); notebooks read them here.
from .paths import PRETRAINED_DIR, REPO_ROOT  # noqa: F401

__all__ = ["PROFILES", "ChapterConfig", "setup", "check", "get_profile", "pick_device", "seed_everything"]

PROFILES = ("smoke", "cpu", "gpu")
ENV_VAR = "DDPM_BOOK_PROFILE"


@dataclass(frozen=True)
class ChapterConfig:
    """Everything a chapter needs to know about where and how big it runs.

    The common sizes are fields; chapter-specific ones live in ``extra`` and are
    read as attributes too (``cfg.guidance_scales``) or with ``cfg["name"]``.
    """

    chapter: int
    profile: str  # "smoke" | "cpu" | "gpu"
    device: torch.device  # cuda, then mps, then cpu
    seed: int = 0  # torch, numpy and random are seeded with it
    image_size: int = 32  # side of the square training images, in pixels
    channels: int = 1  # 1 for MNIST, 3 for colour datasets
    dataset: str = "mnist-5k"  # name for dl.load_images
    num_images: int | None = None  # use only this many training images (None: all)
    train_steps: int = 0  # optimiser steps for the chapter's main training run
    batch_size: int = 64  # images per optimiser step
    num_samples: int = 16  # images to generate for figures
    sample_steps: int = 30  # sampler steps for figures
    extra: Mapping[str, Any] = field(default_factory=dict)  # chapter-specific sizes

    def __getattr__(self, name: str) -> Any:
        # Only called when normal attribute lookup fails: look in ``extra``.
        extra = self.__dict__.get("extra", {})
        if name in extra:
            return extra[name]
        raise AttributeError(
            f"chapter {self.__dict__.get('chapter')} has no setting {name!r}; "
            f"available: {sorted([f.name for f in dataclasses.fields(self)] + list(extra))}"
        )

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"


# Sizes per chapter and profile. Keys are ChapterConfig fields; anything else goes
# into ``extra``. Each chapter owns its own entry.
_COMMON: dict[str, dict[str, Any]] = {
    "smoke": dict(train_steps=20, batch_size=16, num_samples=8, sample_steps=5, num_images=256),
    "cpu": dict(train_steps=600, batch_size=64, num_samples=16, sample_steps=30),
    "gpu": dict(train_steps=4000, batch_size=128, num_samples=16, sample_steps=50),
}

SIZES: dict[int, dict[str, dict[str, Any]]] = {
    1: {  # pipeline: a folder name in pretrained/ or a Hub id; pipeline_steps: DDPM steps of the one-call demo
        "smoke": dict(sample_steps=5, num_samples=4, pipeline="ddpm-mnist", pipeline_steps=5, frames=5),
        "cpu": dict(sample_steps=30, num_samples=16, pipeline="ddpm-mnist", pipeline_steps=50, frames=30),
        "gpu": dict(sample_steps=30, num_samples=4, pipeline="google/ddpm-celebahq-256", pipeline_steps=1000,
                    frames=20),
    },
    2: {  # the same UNet2DModel trained twice (plain loop, then dl.Trainer) for train_steps each
        "smoke": dict(image_size=32, batch_size=16, train_steps=15, num_images=256, unet_channels=(16, 32, 32),
                      layers_per_block=1, attention_blocks=1, lr=1e-3, ddpm_steps=5, sample_steps=5,
                      num_samples=8, fd_samples=32),
        "cpu": dict(image_size=32, batch_size=32, train_steps=200, num_images=None, unet_channels=(16, 32, 32),
                    layers_per_block=1, attention_blocks=1, lr=1e-3, ddpm_steps=100, sample_steps=25,
                    num_samples=16, fd_samples=200),
        "gpu": dict(dataset="huggan/smithsonian_butterflies_subset", image_size=64, channels=3, batch_size=32,
                    train_steps=1500, num_images=None, unet_channels=(64, 128, 256, 512), layers_per_block=2,
                    attention_blocks=2, lr=2e-4, ddpm_steps=1000, sample_steps=50, num_samples=16,
                    fd_samples=256),
    },
    3: {  # variance_samples: draws per Var(x_t) estimate; explorer_sweeps: control -> values of the static explorer
        "smoke": dict(num_images=256, variance_samples=20_000, explorer_sweeps={"beta_end": (0.002, 0.02, 0.3)}),
        "cpu": dict(num_images=2000, variance_samples=200_000,
                    explorer_sweeps={"beta_end": (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.3),
                                     "schedule": ("linear", "cosine", "scaled_linear", "sigmoid", "simple")}),
        "gpu": dict(num_images=None, variance_samples=1_000_000,
                    explorer_sweeps={"beta_end": (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.3),
                                     "schedule": ("linear", "cosine", "scaled_linear", "sigmoid", "simple"),
                                     "image_size": (32, 64, 128, 256, 512)}),
    },
    4: {  # sample counts for the Monte Carlo checks and step counts of the toy samplers (all on the CPU)
        "smoke": dict(chain_samples=4000, grad_samples=20_000, vlb_samples=200, toy_samples=300, ddim_steps=50,
                      sde_steps=500, ode_steps=200, langevin_levels=100, langevin_plain_steps=300, quiver_grid=15),
        "cpu": dict(chain_samples=20_000, grad_samples=200_000, vlb_samples=500, toy_samples=2000, ddim_steps=50,
                    sde_steps=1000, ode_steps=200, langevin_levels=100, langevin_plain_steps=1000, quiver_grid=21),
        "gpu": dict(chain_samples=20_000, grad_samples=200_000, vlb_samples=500, toy_samples=4000, ddim_steps=50,
                    sde_steps=1000, ode_steps=200, langevin_levels=100, langevin_plain_steps=1000, quiver_grid=21),
    },
    5: {  # UNets and alternatives: every comparison shares one budget (train_steps x batch_size); 28 px as the
        # mnist preset; pretrained_samples: draws of pretrained/ddpm-mnist scored at the end; check_claims: the
        # runs are long enough for the training claims to be asserted (smoke runs only exercise the code)
        "smoke": dict(image_size=16, train_steps=10, batch_size=8, width=8, lr=2e-3, val_images=64,
                      pretrained_samples=40, check_claims=False),
        "cpu": dict(image_size=28, train_steps=100, batch_size=24, num_images=None, width=8, lr=2e-3,
                    val_images=250, pretrained_samples=200, check_claims=True),
        "gpu": dict(image_size=28, train_steps=3000, batch_size=128, num_images=None, width=32, lr=1e-3,
                    val_images=1000, pretrained_samples=1000, check_claims=True),
    },
    6: {  # targets: held-out digits for the checks; one toy MLP per target (eps, x0, v, EDM) on an exact mixture
        "smoke": dict(image_size=16, val_images=64, num_images=256, toy_train_steps=150, toy_seeds=1,
                      toy_eval_points=500),
        "cpu": dict(num_images=None, val_images=250, toy_train_steps=1000, toy_seeds=3, toy_eval_points=2000),
        "gpu": dict(num_images=None, val_images=1000, toy_train_steps=3000, toy_seeds=5, toy_eval_points=4000),
    },
    7: {  # toy: points, reference ODE steps, NFE budgets, DDPM's full chain, steps of the order check; MNIST likewise
        "smoke": dict(toy_points=200, toy_reference_steps=100, nfes=(5, 10), ddpm_full_steps=50,
                      order_steps=(10, 20), mnist_images=2, mnist_nfes=(2, 4), mnist_reference_steps=40),
        "cpu": dict(toy_points=1000, toy_reference_steps=400, nfes=(5, 10, 20, 50), ddpm_full_steps=1000,
                    order_steps=(25, 50, 100, 200), mnist_images=12, mnist_nfes=(5, 10, 20),
                    mnist_reference_steps=100),
        "gpu": dict(toy_points=4000, toy_reference_steps=1000, nfes=(5, 10, 20, 50, 100), ddpm_full_steps=1000,
                    order_steps=(25, 50, 100, 200), mnist_images=256, mnist_nfes=(5, 10, 20, 50),
                    mnist_reference_steps=250),
    },
    8: {  # toy: points, steps, steps of the exact-tilt comparison, scales; MNIST: guidance scales measured,
        # samples per digit, steps, grid rows; samples of the guidance-interval comparison
        "smoke": dict(toy_points=200, toy_steps=10, toy_exact_steps=30, toy_scales=(0, 1, 4),
                      guidance_scales=(0, 1, 4), samples_per_class=2, sample_steps=4, grid_scales=(0, 4),
                      loss_images=16, num_real=200, interval_images=100),
        "cpu": dict(toy_points=1000, toy_steps=30, toy_exact_steps=100, toy_scales=(0, 1, 2, 4, 8),
                    guidance_scales=(0, 1, 2, 3, 5, 8), samples_per_class=5, sample_steps=15,
                    grid_scales=(0, 1, 3, 8), loss_images=64, num_real=1000, interval_images=250),
        "gpu": dict(toy_points=4000, toy_steps=50, toy_exact_steps=200, toy_scales=(0, 1, 2, 4, 8),
                    guidance_scales=(0, 1, 1.5, 2, 3, 4, 6, 8), samples_per_class=100, sample_steps=25,
                    grid_scales=(0, 1, 3, 8), loss_images=256, num_real=1000, interval_images=1000),
    },
    9: {  # real digits for the caveat experiments, model samples to score, KID subsets, degradations
        "smoke": dict(num_real=2000, fd_sizes=(50, 200, 1000), num_samples=32, sample_steps=5, kid_subsets=20),
        "cpu": dict(num_real=5000, fd_sizes=(50, 100, 250, 500, 1000, 2500), num_samples=160, sample_steps=15,
                    kid_subsets=40),
        "gpu": dict(num_real=5000, fd_sizes=(50, 100, 250, 500, 1000, 2500), num_samples=1000, sample_steps=25,
                    kid_subsets=100),
    },
    10: {  # the project: which ready configuration, how long to train, when to checkpoint and "disconnect"
        "smoke": dict(preset="example-folder", train_steps=16, batch_size=16, checkpoint_every=8, interrupt_at=8,
                      sample_every=4, num_sample_images=8, sample_steps=5, eval_samples=16, exact_steps=4),
        "cpu": dict(preset="mnist-5k", num_images=None, train_steps=200, batch_size=32, checkpoint_every=50,
                    interrupt_at=100, sample_every=50, num_sample_images=16, sample_steps=20, eval_samples=100,
                    exact_steps=4),
        "gpu": dict(preset="cifar10", num_images=None, train_steps=5000, batch_size=128, checkpoint_every=500,
                    interrupt_at=2000, sample_every=1000, num_sample_images=16, sample_steps=25, eval_samples=5000,
                    exact_steps=4),
    },
}


def get_profile() -> str:
    """The profile named by ``DDPM_BOOK_PROFILE``, else ``gpu`` with CUDA, else ``cpu``."""
    name = os.environ.get(ENV_VAR, "").strip().lower()
    if not name:
        return "gpu" if torch.cuda.is_available() else "cpu"
    if name not in PROFILES:
        raise ValueError(
            f"{ENV_VAR}={name!r} is not a profile; use one of {', '.join(PROFILES)} "
            f"(or unset it to pick gpu with CUDA, else cpu)."
        )
    return name


def pick_device() -> torch.device:
    """CUDA if present, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup(chapter: int, seed: int = 0, verbose: bool = True) -> ChapterConfig:
    """Pick the profile, the device and the seed, and return this chapter's sizes.

    Introduced in chapter 1; every chapter calls it once at the top.
    """
    if chapter not in SIZES:
        raise ValueError(f"chapter must be one of {sorted(SIZES)}, got {chapter!r}")
    profile = get_profile()
    device = pick_device()
    seed_everything(seed)
    values: dict[str, Any] = dict(_COMMON[profile])
    values.update(SIZES[chapter][profile])
    names = {f.name for f in dataclasses.fields(ChapterConfig)}
    known = {k: v for k, v in values.items() if k in names}
    extra = {k: v for k, v in values.items() if k not in names}
    cfg = ChapterConfig(
        chapter=chapter, profile=profile, device=device, seed=seed, extra=MappingProxyType(extra), **known
    )
    if verbose:
        print(
            f"Chapter {chapter}: profile '{profile}' on {device} "
            f"(set {ENV_VAR}=smoke|cpu|gpu to change), seed {seed}."
        )
    return cfg


def check(answer: Any, expected: Any, name: str = "your answer", rtol: float = 1e-4, atol: float = 1e-6) -> bool:
    """Check an exercise answer against the expected value and say so plainly.

    ``answer`` may be a number, a tensor or array, a string, a bool, or a tuple or
    list of these. ``None`` means "not attempted yet": the check says so and returns
    False without raising, so a notebook still runs top to bottom. Returns True when
    the answer is correct; otherwise prints what is wrong and returns False.
    Used by the exercises at the end of every chapter.
    """
    if answer is None:
        print(f"{name}: not attempted yet. Fill in the answer cell; the solution is in the hidden cell just before this check.")
        return False
    problem = _difference(answer, expected, rtol, atol)
    print(f"{name}: correct." if problem is None else f"{name}: not yet. {problem}")
    return problem is None


def _difference(answer: Any, expected: Any, rtol: float, atol: float) -> str | None:
    """None when ``answer`` matches ``expected``, else a sentence saying how it differs."""
    numeric = isinstance(expected, (tuple, list)) and all(
        isinstance(e, (int, float)) and not isinstance(e, bool) for e in expected
    )
    if isinstance(expected, (tuple, list)) and not (numeric and not isinstance(answer, (tuple, list))):
        if not isinstance(answer, (tuple, list)) or len(answer) != len(expected):
            return f"expected a sequence of {len(expected)} items, got {type(answer).__name__}."
        for i, (a, e) in enumerate(zip(answer, expected)):
            problem = _difference(a, e, rtol, atol)
            if problem is not None:
                return f"item {i}: {problem}"
        return None
    if isinstance(expected, (str, bool)):
        return None if answer == expected else f"expected {expected!r}, got {answer!r}."
    try:
        a = torch.as_tensor(np.asarray(answer.detach().cpu() if torch.is_tensor(answer) else answer), dtype=torch.float64)
        e = torch.as_tensor(np.asarray(expected.detach().cpu() if torch.is_tensor(expected) else expected), dtype=torch.float64)
    except (TypeError, ValueError):
        return None if answer == expected else f"expected {expected!r}, got {answer!r}."
    if a.shape != e.shape:
        return f"expected shape {tuple(e.shape)}, got {tuple(a.shape)}."
    if not torch.allclose(a, e, rtol=rtol, atol=atol, equal_nan=False):
        worst = (a - e).abs().max().item()
        return f"the values differ (largest difference {worst:.3g}); expected e.g. {e.flatten()[:3].tolist()}."
    return None
