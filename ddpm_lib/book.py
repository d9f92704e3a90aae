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
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np
import torch

__all__ = ["PROFILES", "ChapterConfig", "setup", "get_profile", "pick_device", "seed_everything"]

PROFILES = ("smoke", "cpu", "gpu")
ENV_VAR = "DDPM_BOOK_PROFILE"
REPO_ROOT = Path(__file__).resolve().parent.parent
PRETRAINED_DIR = REPO_ROOT / "pretrained"


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
    1: {
        "smoke": dict(sample_steps=5, num_samples=4),
        "cpu": dict(sample_steps=30, num_samples=16),
        "gpu": dict(sample_steps=30, num_samples=16),
    },
    2: {"smoke": {}, "cpu": {}, "gpu": dict(dataset="huggan/smithsonian_butterflies_subset", image_size=64, channels=3)},
    3: {"smoke": {}, "cpu": {}, "gpu": {}},
    4: {"smoke": {}, "cpu": {}, "gpu": {}},
    5: {"smoke": {}, "cpu": {}, "gpu": {}},
    6: {"smoke": {}, "cpu": {}, "gpu": {}},
    7: {"smoke": {}, "cpu": {}, "gpu": {}},
    8: {"smoke": {}, "cpu": {}, "gpu": {}},
    9: {"smoke": {}, "cpu": {}, "gpu": {}},
    10: {"smoke": {}, "cpu": {}, "gpu": {}},
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
