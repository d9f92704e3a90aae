"""Training a denoiser: ``TrainConfig`` and ``Trainer`` (chapters 2 and 10).

The loop is the one chapter 2 writes by hand (draw t and ε, noise the images,
regress the target, step AdamW), plus what makes it fast and safe:

==========================  ==================================================
Hugging Face Accelerate      device placement, mixed precision, several GPUs or
                             nodes (``accelerate launch``), gradient accumulation
data kept on the device      small datasets live as one tensor; batches are
                             indexed from it (no DataLoader, no per-batch PIL work)
EMA                          θ_ema ← β θ_ema + (1 - β) θ after every step
warm-up then cosine          η(step) of AdamW, a ``LambdaLR``
checkpoints                  everything needed to continue bit for bit, written
                             atomically every ``checkpoint_every`` steps
==========================  ==================================================

Notation: θ network weights, β the EMA decay, η the learning rate, B the batch
size, t a 0-based timestep index in [0, T-1] (the paper's t = 1 is index 0, as in
diffusers).

Resuming is exact. Nothing random depends on how long the process has been
running: the data order of epoch e is a permutation drawn from (seed, e); the
random flips of a ``dl.load_images(..., flip=True)`` dataset, the timesteps, noise
and label dropout of step n come from a generator seeded with (seed, process, n)
(the Trainer flips whole batches itself, also with a DataLoader, so that no worker
holds a generator of its own); dropout inside the network uses torch's global
generator, whose state is saved in every checkpoint. So a run killed at any moment
(even with ``kill -9`` while it writes a checkpoint) and started again ends with
the same weights, bit for bit on the CPU, as a run that was never interrupted.
(Random augmentations inside your own ``Dataset`` are exact only if they are seeded.)

Checkpoints (``dl.checkpoint``) are ``out_dir/checkpoints/step_XXXXXX.pt`` files,
read with ``torch.load(weights_only=True)``; they hold the noise schedule too, so a
run trained with a custom ``schedule=`` continues with it. The newest
``keep_checkpoints`` are kept. When the newest one cannot be read, ``fit`` warns
(naming the file), leaves the file where it is and resumes from the previous one.
Resuming with settings that change what the run learns (lr, the effective batch
batch_size x grad_accum_steps, schedule, prediction, image_size, the network, ...)
is a ``CheckpointError`` naming them; max_steps, max_minutes, logging, sample grids
and speed settings may change (``dl.checkpoint.RESUMABLE_FIELDS``), and so may the
split of the effective batch into micro-batches (say 8 x 4 instead of 16 x 2, on a
device with less memory): every optimizer step still sees the same images, but not
bit for bit (a warning says what differs; see ``dl.checkpoint.check_resume``).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import hashlib
import math
import os
import random
import re
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import checkpoint, losses, pipelines, samplers, schedules
from .checkpoint import (  # noqa: F401 (also importable from here, as before they moved)
    CheckpointError,
    find_checkpoints,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from .models import model_config
from .models.registry import model_image_shape
from .models.registry import model_num_classes as _model_num_classes
from .models.registry import unwrap_model as _unwrap
from .paths import write_json as _write_json
from .targets import PREDICTIONS, WEIGHTINGS

# Checkpoint files (CheckpointError, save / load / find / latest_checkpoint) live in dl.checkpoint.
__all__ = ["EMA", "NonFiniteLossError", "TrainConfig", "TrainHistory", "Trainer"]

LR_SCHEDULES = ("cosine", "constant")  # after the warm-up
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
AUTO_OR_BOOL = ("auto", True, False)
_DATA_ON_DEVICE_MAX_BYTES = 2 * 1024**3  # "auto" keeps datasets up to 2 GiB (as float32) on the device


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs besides the model and the data (chapters 2 and 10).

    Checked when created: a bad value is a ``ValueError`` that says what is allowed.
    """

    # data
    image_size: int = 32  # side of the square training images; must match the data and the model
    data_on_device: bool | str = "auto"  # keep the data as one tensor on the device; "auto": when it fits
    num_workers: int = 0  # DataLoader worker processes (only without data_on_device)
    # optimisation
    batch_size: int = 64  # images per micro-batch on each process
    max_steps: int = 2000  # optimizer steps in all (a resumed run continues up to this)
    max_minutes: float | None = None  # wall-clock budget of training; the LR schedule plans against it (see fit)
    lr: float = 2e-4  # peak learning rate η of AdamW
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
    warmup_steps: int = 100  # η rises linearly from η/warmup_steps to η over these steps
    lr_schedule: str = "cosine"  # after the warm-up: "cosine" (down to 0 at max_steps) or "constant"
    grad_accum_steps: int = 1  # micro-batches per optimizer step
    grad_clip: float | None = 1.0  # clip the global gradient norm to this; None: no clipping
    # diffusion
    prediction: str = "eps"  # what the network predicts: "eps" | "x0" | "v" | "edm" (chapter 6)
    schedule: str = "linear"  # noise schedule name for dl.make_schedule: DDPM's linear betas (chapter 3)
    num_timesteps: int = 1000  # T, the number of noise levels
    weighting: str = "uniform"  # loss weight over t: "uniform" | "min_snr" (chapter 6)
    loss_type: str = "l2"  # distance between prediction and target, passed to dl.diffusion_loss
    class_dropout: float = 0.1  # chance that a label becomes the null class (guidance; class-conditional models)
    # exponential moving average of the weights
    ema_decay: float = 0.999  # β in θ_ema ← β θ_ema + (1 - β) θ
    ema_warmup: bool = True  # use min(β, (1 + n) / (10 + n)) after n updates, so θ_ema leaves the init quickly
    # speed
    mixed_precision: str = "auto"  # "auto": bf16 where the hardware has it, fp16 + loss scaling on older GPUs
    compile: bool = False  # torch.compile the network (minutes of compiling; then faster steps)
    channels_last: bool | str = "auto"  # NHWC memory layout; "auto": on GPUs only (no faster on the CPU)
    cpu: bool = False  # train on the CPU even when a GPU is there
    # bookkeeping
    out_dir: str = "runs/ddpm"  # checkpoints, loss.csv, samples/ and config.json go here
    log_every: int = 10  # steps between rows of loss.csv (and loss checks for NaN / inf)
    checkpoint_every: int = 500  # steps between checkpoints (one is always written at the end)
    keep_checkpoints: int = 2  # newest checkpoints kept on disk (>= 2: the previous good one survives)
    sample_every: int = 500  # steps between sample grids (0: only at the end)
    num_sample_images: int = 16  # images per sample grid (0: no grids)
    sample_steps: int = 25  # sampler steps for the grids
    sampler: str = "dpmpp_2m"  # sampler for the grids (see dl.sample)
    clip_x0: float | None = samplers.DEFAULT_CLIP_X0  # the grids' x0 clipping (see dl.sample; None: none)
    progress: bool = True  # show a tqdm progress bar
    resume: bool = True  # continue from the newest checkpoint in out_dir when there is one
    seed: int = 0  # seeds the data order, timesteps, noise, label dropout and sample grids

    def __post_init__(self) -> None:
        _check_positive_ints(self, "image_size", "batch_size", "max_steps", "grad_accum_steps", "num_timesteps",
                             "log_every", "checkpoint_every", "sample_steps")
        _check_non_negative_ints(self, "warmup_steps", "num_workers", "sample_every", "num_sample_images", "seed")
        if not _is_number(self.lr) or not self.lr > 0 or not math.isfinite(self.lr):
            raise ValueError(f"lr must be a positive number, e.g. 2e-4; got {self.lr!r}.")
        if self.max_minutes is not None and (not _is_number(self.max_minutes) or not self.max_minutes > 0
                                             or not math.isfinite(self.max_minutes)):
            raise ValueError(f"max_minutes must be a positive number of minutes, e.g. 15, or None (no time budget); "
                             f"got {self.max_minutes!r}.")
        if not _is_number(self.weight_decay) or self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0; got {self.weight_decay!r}.")
        if self.grad_clip is not None and (not _is_number(self.grad_clip) or not self.grad_clip > 0):
            raise ValueError(f"grad_clip must be a positive number or None (no clipping); got {self.grad_clip!r}.")
        if not _is_number(self.ema_decay) or not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), e.g. 0.999 (0: θ_ema = θ); got {self.ema_decay!r}.")
        if not _is_number(self.class_dropout) or not 0 <= self.class_dropout < 1:
            raise ValueError(f"class_dropout must be in [0, 1), e.g. 0.1; got {self.class_dropout!r}.")
        if not isinstance(self.keep_checkpoints, int) or self.keep_checkpoints < 2:
            raise ValueError(f"keep_checkpoints must be an int >= 2 (so that the previous good checkpoint "
                             f"survives a crash); got {self.keep_checkpoints!r}.")
        _check_choice("prediction", self.prediction, PREDICTIONS)
        _check_choice("weighting", self.weighting, WEIGHTINGS)
        _check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _check_choice("mixed_precision", self.mixed_precision, MIXED_PRECISION)
        _check_choice("data_on_device", self.data_on_device, AUTO_OR_BOOL)
        _check_choice("channels_last", self.channels_last, AUTO_OR_BOOL)
        _check_choice("sampler", self.sampler, tuple(samplers.SAMPLERS))
        known_schedules = getattr(schedules, "SCHEDULES", None)
        if known_schedules is not None:
            _check_choice("schedule", self.schedule, tuple(known_schedules))
        if not str(self.out_dir):
            raise ValueError("out_dir must be a folder name, e.g. 'runs/mnist'.")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-friendly dict (``TrainConfig(**d)`` rebuilds it)."""
        return dataclasses.asdict(self)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TrainConfig:
        """The training settings of a named recipe in ``dl.PRESETS`` (e.g. "mnist"), with ``overrides``.

        ``dl.preset_model(name)`` builds the recipe's network; ``dl.PRESETS[name]`` also
        holds its data and the sampler it was measured with (benchmarks/quality.py).
        """
        from .presets import get_preset

        return cls(**{**get_preset(name).train, **overrides})


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_positive_ints(cfg: TrainConfig, *names: str) -> None:
    for name in names:
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive whole number; got {v!r}.")


def _check_non_negative_ints(cfg: TrainConfig, *names: str) -> None:
    for name in names:
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{name} must be a whole number >= 0; got {v!r}.")


def _check_choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed or (isinstance(value, bool) and not any(a is value for a in allowed)):
        raise ValueError(f"{name}={value!r} is not allowed; choose one of {list(allowed)}.")


def lr_factor(step: int, warmup_steps: int, max_steps: int, schedule: str = "cosine") -> float:
    """η(step) / η: linear warm-up, then cosine decay to 0 at ``max_steps`` (Loshchilov & Hutter 2017).

    ``step`` counts optimizer steps from 0; the first step uses η / warmup_steps.
    Chapter 2.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------- EMA


class EMA:
    """An exponential moving average of a network's weights (chapter 2).

    θ_ema ← β θ_ema + (1 - β) θ after every optimizer step; with ``warmup`` the
    decay is min(β, (1 + n) / (10 + n)) after n updates, so the average forgets
    the random initialisation quickly. Buffers (e.g. BatchNorm statistics) are
    copied. ``ema.model`` is a frozen copy in eval mode, used for sampling.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        self.model = copy.deepcopy(_unwrap(model)).eval().requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0

    def current_decay(self) -> float:
        """β used by the next update."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        beta = self.current_decay()
        ema_params = list(self.model.parameters())
        params = [p.detach() for p in _unwrap(model).parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - beta)  # θ_ema + (1 - β)(θ - θ_ema)
        for b_ema, b in zip(self.model.buffers(), _unwrap(model).buffers()):
            b_ema.copy_(b)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.num_updates = int(state["num_updates"])


# --------------------------------------------------------------------------- errors


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


# --------------------------------------------------------------------------- history


@dataclass
class TrainHistory:
    """What ``fit`` logged: one row per ``log_every`` steps (also in ``out_dir/loss.csv``).

    Iterating gives the rows as dicts, so ``dl.plot_loss(history)`` works.
    """

    rows: list[dict[str, float]] = field(default_factory=list)  # {"step", "loss", "lr", "images_per_sec"}
    out_dir: str = ""

    @property
    def steps(self) -> list[int]:
        return [int(r["step"]) for r in self.rows]

    @property
    def losses(self) -> list[float]:
        return [r["loss"] for r in self.rows]

    def __iter__(self) -> Iterator[dict[str, float]]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


_CSV_COLUMNS = ("step", "loss", "lr", "images_per_sec")


# --------------------------------------------------------------------------- data


class _BatchOrder:
    """Which images micro-batch m holds: epoch e = m // batches_per_epoch uses a permutation drawn from (seed, e).

    Process r of W takes the r-th of W consecutive slices of B indices, so the
    processes see disjoint images. A pure function of m: resuming needs only m.
    An epoch holds whole optimizer steps (A micro-batches each; the images left over
    are not used in that epoch), so optimizer step s sees the images
    ``perm[s A B W : (s + 1) A B W]`` however its A B images per process are split
    into micro-batches: a run resumed with another micro-batch B and the same
    effective batch A B sees the same images in every step.
    The permutation is drawn on the CPU and kept on ``device``, copied there once an
    epoch, so that a step on a GPU does not wait for a host-to-device copy.
    """

    def __init__(self, n: int, batch_size: int, world_size: int, rank: int, seed: int,
                 device: torch.device | str = "cpu", accum: int = 1):
        self.n, self.B, self.W, self.rank, self.seed = n, batch_size, world_size, rank, seed
        self.device = torch.device(device)
        steps_per_epoch = n // (batch_size * accum * world_size)
        if steps_per_epoch < 1:
            raise ValueError(
                f"the dataset has {n} images, fewer than one optimizer step of {batch_size} x {accum} "
                f"micro-batch(es) x {world_size} process(es); lower batch_size or grad_accum_steps, or add images."
            )
        self.per_epoch = steps_per_epoch * accum  # micro-batches
        self._epoch, self._perm = -1, None

    def indices(self, m: int) -> torch.Tensor:
        epoch, j = divmod(m, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(_mix(self.seed, epoch, 0x5EED))
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g).to(self.device)
        start = (j * self.W + self.rank) * self.B
        return self._perm[start : start + self.B]  # (B,)

    def epoch(self, m: int) -> int:
        return m // self.per_epoch


class _BatchSampler(torch.utils.data.Sampler):
    """Endless batch sampler for a DataLoader, starting at micro-batch m."""

    def __init__(self, order: _BatchOrder, start: int):
        self.order, self.start = order, start

    def __iter__(self) -> Iterator[list[int]]:
        m = self.start
        while True:
            yield self.order.indices(m).tolist()
            m += 1


def _mix(*ints: int) -> int:
    """A 63-bit seed from several ints (a hash: nearby inputs give unrelated seeds)."""
    digest = hashlib.blake2b(repr(ints).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def _split_item(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(images, labels or None) from what a Dataset / DataLoader yields: a tensor, a tuple, or a dict."""
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, dict):
        key = next((k for k in ("images", "image", "pixel_values", "x") if k in batch), None)
        if key is None:
            raise ValueError(f"cannot find the images among the keys {list(batch)}; name them 'images'.")
        y = next((batch[k] for k in ("labels", "label", "class_labels", "y") if k in batch), None)
        return batch[key], None if y is None else torch.as_tensor(y)
    if isinstance(batch, (tuple, list)):
        return batch[0], (torch.as_tensor(batch[1]) if len(batch) > 1 else None)
    raise TypeError(f"a dataset item must be an image tensor, (image, label) or a dict; got {type(batch).__name__}.")


def _tensor_source(dataset: Any) -> tuple[int, Any] | None:
    """(number of image values, load(device) -> (images, labels or None)) for datasets held as tensors, else None.

    ``dl.load_images`` datasets, ``TensorDataset`` and plain ``(N, C, H, W)`` tensors
    can be moved to the device whole; any other Dataset is read item by item.
    """
    if isinstance(dataset, torch.Tensor):
        return dataset.numel(), lambda device: (dataset.to(device), None)
    if hasattr(dataset, "as_tensor") and hasattr(dataset, "pixels"):  # dl.load_images: uint8 pixels
        return dataset.pixels.numel(), lambda device: (dataset.as_tensor(device), dataset.labels.to(device))
    if isinstance(dataset, torch.utils.data.TensorDataset):
        t = dataset.tensors
        return t[0].numel(), lambda device: (t[0].to(device), t[1].to(device) if len(t) > 1 else None)
    return None


# --------------------------------------------------------------------------- trainer


class Trainer:
    """Train ``model`` on ``dataset`` with the settings of ``cfg`` (chapters 2 and 10).

    ``dataset`` is what ``dl.load_images`` returns, a ``TensorDataset``, an
    ``(N, C, H, W)`` tensor, or any ``Dataset`` whose items are an image tensor,
    ``(image, label)`` or a dict with "images" (and "labels"); images in [-1, 1].
    A class-conditional network (``num_classes`` / ``num_class_embeds`` in its
    config) is trained on the labels, each replaced by the null class K with
    probability ``cfg.class_dropout``.

    Everything is checked here, before any training: image size and channels of
    data, config and model, labels for a conditional model, and that ``out_dir``
    can be written. ``fit()`` trains (resuming from ``out_dir`` when a checkpoint
    is there) and returns the ``TrainHistory``; ``trainer.ema_model`` is the
    averaged network to sample from.
    """

    def __init__(self, model: nn.Module, dataset: Any, cfg: TrainConfig | None = None, schedule: Any = None):
        self.cfg = cfg = cfg or TrainConfig()
        self.out_dir = _check_out_dir(Path(cfg.out_dir))
        self.accelerator = _make_accelerator(cfg)
        self.device = self.accelerator.device
        self._own_schedule = schedule is not None  # a custom schedule: resuming checks it is the same
        self.schedule = self._on_device(schedule if schedule is not None else schedules.make_schedule(
            cfg.schedule, num_timesteps=cfg.num_timesteps))
        self.rank, self.world_size = self.accelerator.process_index, self.accelerator.num_processes
        self.channels_last = self.device.type == "cuda" if cfg.channels_last == "auto" else bool(cfg.channels_last)
        self.num_classes = _model_num_classes(model)
        self.model_config = _describe(model)

        # data: one tensor on the device, or a DataLoader
        self.dataset = dataset
        self.n_images = len(dataset)
        first, first_label = _split_item(dataset[0])
        self._check_shapes(model, tuple(first.shape))
        source = _tensor_source(dataset)
        self.data_on_device = self._use_device_tensor(source)
        self.images = self.labels = None  # (N, C, H, W) and (N,) on the device when data_on_device
        if self.data_on_device:
            images, labels = source[1](self.device)
            self.images = images.to(torch.float32)
            if self.channels_last:
                self.images = self.images.contiguous(memory_format=torch.channels_last)
            self.labels = None if labels is None else labels.long()
            _check_range(self.images)
        self._check_labels(self.labels if self.data_on_device else first_label)
        self.order = _BatchOrder(self.n_images, cfg.batch_size, self.world_size, self.rank, cfg.seed,
                                 device=self.device if self.data_on_device else "cpu", accum=cfg.grad_accum_steps)

        # network, EMA, optimizer, learning-rate schedule
        model = model.to(self.device)
        self.ema = EMA(model, cfg.ema_decay, cfg.ema_warmup)  # kept in the standard layout: export needs it
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                      **_fused_if_possible(self.device))
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        # The learning-rate schedule plans against self.planned_steps: cfg.max_steps, or with a
        # time budget (cfg.max_minutes) the steps the budget is measured to allow (see _plan_budget).
        self.planned_steps, self.warmup_steps = cfg.max_steps, cfg.warmup_steps
        self.elapsed_seconds = 0.0  # training time spent so far, resumed runs included
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer.optimizer if hasattr(self.optimizer, "optimizer") else self.optimizer,
            lambda step: lr_factor(step, self.warmup_steps, self.planned_steps, cfg.lr_schedule))
        self.generator = torch.Generator(device=self.device)  # timesteps, noise, label dropout
        self.step = 0  # optimizer steps done
        self.micro_batch = 0  # micro-batches done (per process): the position in the data order
        self.history = TrainHistory(out_dir=str(self.out_dir))
        self.checkpoint_path: Path | None = None  # the newest good checkpoint
        self._dry_run(first, first_label)

    def _dry_run(self, x0: torch.Tensor, y: Any) -> None:
        """One loss evaluation on one image, so that a network or option that does not fit fails here."""
        x0 = x0[None].to(self.device, torch.float32)  # (1, C, H, W)
        y = None if self.num_classes is None else torch.as_tensor(y, device=self.device).long().reshape(1)
        g = torch.Generator(device=self.device).manual_seed(0)
        cfg = self.cfg
        self.model.eval()
        try:
            with torch.no_grad():
                losses.diffusion_loss(self.model, x0, self.schedule, prediction=cfg.prediction,
                                      weighting=cfg.weighting, loss_type=cfg.loss_type, class_labels=y, generator=g)
        finally:
            self.model.train()

    # ------------------------------------------------------------------ checks

    def _check_shapes(self, model: nn.Module, item_shape: tuple[int, ...]) -> None:
        cfg = self.cfg
        if len(item_shape) != 3:
            raise ValueError(f"dataset items must be (C, H, W) images; got shape {tuple(item_shape)}.")
        c, h, w = item_shape
        if (h, w) != (cfg.image_size, cfg.image_size):
            raise ValueError(
                f"the data has {h} x {w} images but TrainConfig(image_size={cfg.image_size}); load the data with "
                f"load_images(..., image_size={cfg.image_size}) or set image_size={h}."
            )
        model_c, model_h, model_w = model_image_shape(model)
        model_size = model_h if model_h == model_w else (model_h, model_w)
        if model_size is not None and model_size != cfg.image_size:
            raise ValueError(
                f"the model was built for {model_size} px images but TrainConfig(image_size={cfg.image_size}); "
                "build the model with the same image_size as the data."
            )
        if model_c is not None and model_c != c:
            raise ValueError(f"the data has {c} channel(s) but the model takes {model_c}; they must match.")

    def _check_labels(self, labels: Any) -> None:
        if self.num_classes is None:
            return
        k = self.num_classes
        if labels is None:
            raise ValueError(f"the model is class-conditional ({k} classes) but the data has no labels; "
                             "train an unconditional model (num_classes=None) or load labelled data.")
        labels = torch.as_tensor(labels)
        if labels.numel() and (labels.min() < 0 or labels.max() >= k):
            raise ValueError(
                f"labels must be in [0, {k - 1}] for a model with {k} classes; the data has labels "
                f"from {int(labels.min())} to {int(labels.max())} (-1 means unlabelled)."
            )

    def _use_device_tensor(self, source) -> bool:
        want = self.cfg.data_on_device
        if source is None:
            if want is True:
                raise ValueError("data_on_device=True needs a dataset from dl.load_images, a TensorDataset "
                                 "or a tensor; this dataset can only be read item by item (use 'auto').")
            return False
        if want == "auto":
            return source[0] * 4 <= _DATA_ON_DEVICE_MAX_BYTES  # as float32
        return bool(want)

    # ------------------------------------------------------------------ properties

    @property
    def ema_model(self) -> nn.Module:
        """The exponential moving average of the weights (eval mode): sample from this."""
        return self.ema.model

    @property
    def unwrapped_model(self) -> nn.Module:
        """The trained network itself (not averaged), without compile / DDP wrappers."""
        return _unwrap(self.model)

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def epoch(self) -> int:
        return self.order.epoch(self.micro_batch)

    # ------------------------------------------------------------------ one step

    def _batch_iterator(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Micro-batches from ``self.micro_batch`` on: (x0 (B, C, H, W) on the device, labels (B,) or None)."""
        if self.data_on_device:
            while True:
                idx = self.order.indices(self.micro_batch)
                yield self.images[idx], (None if self.labels is None else self.labels[idx])
        loader = torch.utils.data.DataLoader(
            _without_flips(self.dataset), batch_sampler=_BatchSampler(self.order, self.micro_batch),
            num_workers=self.cfg.num_workers, pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(_mix(self.cfg.seed, self.micro_batch)),
        )
        for batch in loader:
            x, y = _split_item(batch)
            x = x.to(self.device, torch.float32, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, (None if y is None else y.to(self.device).long())

    def _labels_for_loss(self, y: torch.Tensor | None) -> torch.Tensor | None:
        """Class labels with label dropout: each becomes the null class K with probability p (CFG)."""
        if self.num_classes is None:
            return None
        p = self.cfg.class_dropout
        drop = torch.rand(y.shape[0], generator=self.generator, device=self.generator.device) < p
        return torch.where(drop.to(y.device), torch.full_like(y, self.num_classes), y)

    def _loss(self, x0: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        cfg = self.cfg
        if _flips(self.dataset):  # drawn from the step's generator: exact on resume, whatever the workers
            x0 = self.dataset.augment(x0, generator=self.generator)
        return losses.diffusion_loss(
            self.model, x0, self.schedule, prediction=cfg.prediction, weighting=cfg.weighting,
            loss_type=cfg.loss_type, class_labels=self._labels_for_loss(y), generator=self.generator,
        )

    # ------------------------------------------------------------------ fit

    def fit(self, on_step: Callable[[Trainer], None] | None = None) -> TrainHistory:
        """Train up to ``cfg.max_steps`` optimizer steps and return the history (chapters 2 and 10).

        Resumes from the newest readable checkpoint in ``out_dir`` (``cfg.resume``).
        With a time budget ``cfg.max_minutes`` the run stops cleanly (checkpoint, sample
        grid) once that much training time is spent, resumed parts included, or at
        ``max_steps``, whichever comes first. The learning-rate schedule then plans
        against the steps the budget allows, measured on this machine as training goes
        (so such runs resume correctly but not bit for bit); a budget too short for the
        warm-up shortens the warm-up, with a warning.
        ``on_step(trainer)`` is called after every optimizer step (not counted in the time
        budget), e.g. to keep snapshots of ``trainer.ema_model`` along the way.
        Raises ``NonFiniteLossError`` (a ``FloatingPointError``) when the loss
        becomes NaN or infinite; the last good checkpoint stays on disk. Raises
        ``CheckpointError`` before training when the checkpoint to resume from was written
        with other settings (naming them; see ``dl.checkpoint.check_resume``), and
        ``FileExistsError`` when another run holds ``out_dir/.lock``.
        """
        cfg, acc = self.cfg, self.accelerator
        lock = checkpoint.RunLock(self.out_dir) if self.is_main else None
        try:
            return self._fit(cfg, acc, on_step)
        finally:
            if lock is not None:
                lock.release()

    def _fit(self, cfg: TrainConfig, acc: Any, on_step: Callable[[Trainer], None] | None) -> TrainHistory:
        resumed = self._resume() if cfg.resume else False
        if not resumed:
            self._fresh_start()
        if self.is_main:
            _write_json(self.out_dir / "config.json", {"train_config": cfg.to_dict(), "model": self.model_config,
                                                       "num_processes": self.world_size})
            self._rewrite_csv()
        if self.step >= cfg.max_steps or self.budget_spent:
            return self.history

        from tqdm.auto import tqdm

        bar = tqdm(total=self.planned_steps, initial=self.step, desc="training", unit="step", dynamic_ncols=True,
                   disable=not (cfg.progress and self.is_main))
        batches = self._batch_iterator()
        loss_sum = torch.zeros((), device=self.device)  # summed on the device: no sync per step
        n_losses, since_step, since_time = 0, self.step, time.perf_counter()
        clock = _BudgetClock(self.step, self.elapsed_seconds)
        self.model.train()
        try:
            while self.step < cfg.max_steps:
                self.generator.manual_seed(_mix(cfg.seed, self.rank, self.step))
                for _ in range(cfg.grad_accum_steps):
                    x0, y = next(batches)
                    with acc.accumulate(self.model):
                        loss = self._loss(x0, y)
                        acc.backward(loss)
                        if acc.sync_gradients and cfg.grad_clip is not None:
                            acc.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                        self.optimizer.step()
                        self.optimizer.zero_grad(set_to_none=True)
                    self.micro_batch += 1
                    loss_sum += loss.detach()
                    n_losses += 1
                lr = self.lr_scheduler.get_last_lr()[0]
                self.lr_scheduler.step()
                self.ema.update(self.model)
                self.step += 1
                bar.update(1)
                self.elapsed_seconds = clock.elapsed()
                if cfg.max_minutes is not None:
                    self._plan_budget(clock)
                    bar.total = self.planned_steps  # the steps the budget allows, as measured so far

                last = self.step == cfg.max_steps or self.budget_spent
                save = last or self.step % cfg.checkpoint_every == 0
                if save or self.step % cfg.log_every == 0:
                    mean_loss = acc.reduce(loss_sum / n_losses, reduction="mean").item()
                    elapsed = time.perf_counter() - since_time
                    images = (self.step - since_step) * cfg.batch_size * cfg.grad_accum_steps * self.world_size
                    self._check_finite(mean_loss, since_step)
                    self._log({"step": self.step, "loss": mean_loss, "lr": lr,
                               "images_per_sec": images / max(elapsed, 1e-9)})
                    bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}")
                    loss_sum.zero_()
                    n_losses, since_step = 0, self.step
                if save:
                    self.save()
                if cfg.num_sample_images and (last or (cfg.sample_every and self.step % cfg.sample_every == 0)):
                    with clock.paused():  # sample grids do not count against the time budget
                        self.save_sample_grid()
                if save or self.step % cfg.log_every == 0:
                    since_time = time.perf_counter()  # images/s counts training only
                if on_step is not None:
                    with clock.paused():
                        on_step(self)
                if last:
                    break
        finally:
            bar.close()
        return self.history

    @property
    def budget_spent(self) -> bool:
        """Whether the time budget ``cfg.max_minutes`` (if any) has been used up."""
        budget = self.cfg.max_minutes
        return budget is not None and self.elapsed_seconds >= 60 * budget

    def _plan_budget(self, clock: _BudgetClock) -> None:
        """Set ``planned_steps`` to the steps the time budget allows at the speed measured so far."""
        cfg = self.cfg
        speed = clock.steps_per_second(self.step)
        if speed is None:
            return
        left = 60 * cfg.max_minutes - self.elapsed_seconds
        self.planned_steps = max(self.step + 1, min(cfg.max_steps, self.step + int(left * speed)))
        if not clock.planned_once:
            clock.planned_once = True
            if self.warmup_steps > self.planned_steps // 5:
                shorter = max(1, self.planned_steps // 10)
                warnings.warn(
                    f"a budget of {cfg.max_minutes:g} min allows about {self.planned_steps} steps on this machine, "
                    f"too few for warmup_steps={self.warmup_steps}: the warm-up is shortened to {shorter} steps "
                    "(a tenth of the run) so that training does not spend its time at a tiny learning rate.",
                    stacklevel=3)
                self.warmup_steps = shorter

    def _check_finite(self, mean_loss: float, since_step: int) -> None:
        if math.isfinite(mean_loss):
            return
        kept = f"the last good checkpoint {self.checkpoint_path} is kept" if self.checkpoint_path else \
            "no checkpoint had been written yet"
        raise NonFiniteLossError(
            f"the training loss became {mean_loss} between steps {since_step} and {self.step}; training stopped and "
            f"{kept}. Lower the learning rate (lr={self.cfg.lr:g}), keep grad_clip on, try mixed_precision='no', "
            "or look for NaN / inf in the data."
        )

    def _log(self, row: dict[str, float]) -> None:
        self.history.rows.append(row)
        if self.is_main:
            with open(self.out_dir / "loss.csv", "a", newline="") as f:
                csv.writer(f).writerow([row[k] for k in _CSV_COLUMNS])

    def _rewrite_csv(self) -> None:
        tmp = self.out_dir / ".loss.csv.tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(_CSV_COLUMNS)
            w.writerows([row[k] for k in _CSV_COLUMNS] for row in self.history.rows)
        os.replace(tmp, self.out_dir / "loss.csv")

    # ------------------------------------------------------------------ start, save, resume

    def _fresh_start(self) -> None:
        """Seed the global generators (dropout inside the network uses torch's)."""
        seed = _mix(self.cfg.seed, self.rank, 0xD0)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def _on_device(self, schedule: Any) -> Any:
        """The schedule with its tables on the training device (float32 on MPS, which has no float64)."""
        if not isinstance(schedule, schedules.NoiseSchedule) or schedule.device == self.device:
            return schedule
        mps64 = self.device.type == "mps" and schedule.dtype == torch.float64
        return schedule.to(self.device, torch.float32 if mps64 else None)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly (see ``save``)."""
        from accelerate.utils import gather_object

        scaler = self.accelerator.scaler
        rng = [checkpoint.rng_state()]
        state = {
            "format": checkpoint.CHECKPOINT_FORMAT,
            "step": self.step,
            "micro_batch": self.micro_batch,
            "epoch": self.epoch,
            "model": {"weights": self.unwrapped_model.state_dict()},
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": gather_object(rng) if self.world_size > 1 else rng,  # one dict per process
            "config": self.cfg.to_dict(),
            "model_config": self.model_config,
            "schedule": checkpoint.schedule_state(self.schedule),
            "history": list(self.history.rows),
            "budget": {"elapsed_seconds": self.elapsed_seconds, "planned_steps": self.planned_steps,
                       "warmup_steps": self.warmup_steps},
        }
        state["sha256"] = checkpoint.state_digest(state)
        return state

    def save(self) -> Path:
        """Write a checkpoint ``out_dir/checkpoints/step_XXXXXX.pt`` and prune old ones (chapter 10)."""
        state = self.state_dict()  # every process takes part (RNG states are gathered)
        path = checkpoint.checkpoint_path(self.out_dir, self.step)
        if self.is_main:
            save_checkpoint(state, path)
            checkpoint.prune_checkpoints(self.out_dir, self.cfg.keep_checkpoints)
        self.accelerator.wait_for_everyone()
        self.checkpoint_path = path
        return path

    def _resume(self) -> bool:
        if self.is_main:
            checkpoint.remove_partial_writes(self.out_dir)
        found = latest_checkpoint(self.out_dir)
        if found is None:
            return False
        path, state = found
        note = checkpoint.check_resume(path, state, self.cfg.to_dict(), self.model_config,
                                       self.schedule if self._own_schedule else None)
        if note and self.is_main:
            warnings.warn(note, stacklevel=4)  # at the caller of fit()
        try:
            self.load_state_dict(state)
        except (RuntimeError, KeyError, ValueError) as e:
            raise CheckpointError(
                f"checkpoint {path} does not fit this model or config ({str(e).splitlines()[0][:300]}); "
                "use another out_dir, or TrainConfig(resume=False) to start again."
            ) from e
        self.checkpoint_path = path
        return True

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state written by ``state_dict``: weights, EMA, optimizer, LR, scaler, random state,
        data position and the noise schedule (one not passed to the Trainer is taken from the checkpoint)."""
        self.unwrapped_model.load_state_dict(state["model"]["weights"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        if self.accelerator.scaler is not None and state.get("scaler") is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        saved_schedule = checkpoint.schedule_from_state(state)  # None in checkpoints of older versions
        if saved_schedule is not None and not self._own_schedule:
            self.schedule = self._on_device(saved_schedule)
        self.step, self.micro_batch = int(state["step"]), int(state["micro_batch"])
        saved_batch = int(state.get("config", {}).get("batch_size", self.cfg.batch_size))
        if saved_batch != self.cfg.batch_size:  # another split of the same effective batch (check_resume)
            images, left = divmod(self.micro_batch * saved_batch, self.cfg.batch_size)
            if left:
                raise ValueError(f"{self.micro_batch} micro-batches of {saved_batch} images are not a whole "
                                 f"number of micro-batches of {self.cfg.batch_size}")
            self.micro_batch = images  # the same position in the data order, in micro-batches of this run
        budget = state.get("budget") or {}  # absent in checkpoints of older versions
        self.elapsed_seconds = float(budget.get("elapsed_seconds", 0.0))
        self.warmup_steps = int(budget.get("warmup_steps", self.cfg.warmup_steps))
        # with a time budget the plan is the measured one; else the (possibly longer) max_steps of this run
        self.planned_steps = int(budget.get("planned_steps", self.cfg.max_steps)) \
            if self.cfg.max_minutes is not None else self.cfg.max_steps
        self.history.rows = [dict(r) for r in state["history"]]
        rng = state["rng"]
        if len(rng) == self.world_size:
            checkpoint.set_rng_state(rng[self.rank])
        else:
            warnings.warn(f"the checkpoint was written by {len(rng)} process(es), this run has {self.world_size}: "
                          "the data order continues, but dropout noise is re-seeded.", stacklevel=2)
            self._fresh_start()

    # ------------------------------------------------------------------ sampling and export

    @torch.no_grad()
    def sample(self, n: int | None = None, steps: int | None = None, seed: int | None = None,
               class_labels: torch.Tensor | None = None, guidance_scale: float = 1.0,
               clip_x0: float | str | None = "config") -> torch.Tensor:
        """Draw ``n`` images from the EMA network, shaped (n, C, H, W) in [-1, 1] (chapter 2).

        The same call as ``dl.sample(trainer.ema_model, ..., prediction=cfg.prediction)`` with
        ``cfg.sampler`` and ``cfg.sample_steps``; an "edm" network is sampled through
        ``EDMDenoiser`` as it was trained. Class-conditional models get labels 0, 1, 2, ...
        (cycling) unless ``class_labels`` is given. ``clip_x0`` defaults to ``cfg.clip_x0``
        (itself dl.sample's default, ``samplers.DEFAULT_CLIP_X0``, unless set); ``clip_x0=1``
        keeps each step's x0_hat in the data range [-1, 1] (diffusers' ``clip_sample``). Uses its own generator, so the training run's
        random state is untouched.
        """
        cfg = self.cfg
        clip_x0 = cfg.clip_x0 if clip_x0 == "config" else clip_x0
        n = n or cfg.num_sample_images
        model = self.ema_model
        c = _split_item(self.dataset[0])[0].shape[0]
        g = torch.Generator(device=self.device).manual_seed(cfg.seed if seed is None else seed)
        null = None
        if self.num_classes is not None:
            if class_labels is None:
                class_labels = torch.arange(n, device=self.device) % self.num_classes
            null = self.num_classes if guidance_scale != 1.0 else None
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            x = samplers.sample(model, (n, c, cfg.image_size, cfg.image_size), self.schedule, sampler=cfg.sampler,
                                steps=steps or cfg.sample_steps, prediction=cfg.prediction, generator=g,
                                class_labels=class_labels, guidance_scale=guidance_scale, null_class=null,
                                clip_x0=clip_x0)
        return x.clamp(-1, 1)

    def save_sample_grid(self) -> Path | None:
        """Sample a grid from the EMA network into ``out_dir/samples/step_XXXXXX.png`` (main process)."""
        if not self.is_main:
            return None
        from .viz import make_grid_image

        x = self.sample()
        path = self.out_dir / "samples" / f"step_{self.step:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        nrow = self.num_classes if self.num_classes and x.shape[0] % self.num_classes == 0 else None
        make_grid_image(x.float().cpu(), nrow=nrow, value_range=(-1, 1)).save(path)
        return path

    def export(self, path: str | os.PathLike, ema: bool = True, card: str | None = None) -> Path:
        """Write the (EMA) network and schedule as a pipeline folder with ``dl.export_pipeline`` (chapter 10).

        An "edm" network goes into a ddpm_lib folder whose ``prediction`` is "edm", so that
        ``dl.load_pretrained`` and ``dl.sample(pre.model, ..., prediction=pre.prediction)`` sample
        it exactly as ``trainer.sample()`` does."""
        model = self.ema_model if ema else self.unwrapped_model
        model = copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format)
        cfg = self.cfg
        schedule = self.schedule.to("cpu") if isinstance(self.schedule, schedules.NoiseSchedule) else self.schedule
        pipelines.export_pipeline(model, schedule, path, prediction=cfg.prediction, card=card,
                                  metadata={"train_config": cfg.to_dict(), "step": self.step},
                                  sampling={"sampler": cfg.sampler, "steps": cfg.sample_steps,
                                            "clip_x0": cfg.clip_x0})
        return Path(path)


# --------------------------------------------------------------------------- helpers


class _BudgetClock:
    """Training time of a ``fit`` call: seconds since it began plus those of earlier (resumed) parts.

    ``paused()`` stops the clock (sample grids); ``steps_per_second`` is the speed
    since the third step of this call (the first ones include one-off set-up work).
    """

    def __init__(self, step: int, elapsed_before: float):
        self.start, self.before, self.pause_total = time.perf_counter(), elapsed_before, 0.0
        self.first_step, self.mark = step, None  # (step, time) where speed measuring starts
        self.planned_once = False

    def elapsed(self) -> float:
        return self.before + time.perf_counter() - self.start - self.pause_total

    def steps_per_second(self, step: int) -> float | None:
        now = time.perf_counter() - self.pause_total
        if self.mark is None:
            if step - self.first_step >= 2:
                self.mark = (step, now)
            return None
        done, seconds = step - self.mark[0], now - self.mark[1]
        return done / seconds if done >= 3 and seconds > 0 else None

    @contextlib.contextmanager
    def paused(self):
        began = time.perf_counter()
        try:
            yield
        finally:
            self.pause_total += time.perf_counter() - began


def _check_out_dir(out_dir: Path) -> Path:
    """Create ``out_dir`` and prove it can be written, before any training starts."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise PermissionError(
            f"cannot write to out_dir {str(out_dir)!r} ({e.strerror or e}); choose a folder you can write to."
        ) from e
    return out_dir


def _resolve_mixed_precision(cfg: TrainConfig) -> str:
    """"auto": bf16 on GPUs and CPUs that have it in hardware, fp16 (with loss scaling) on older GPUs, else "no".

    On the book's build machines (CPUs with AVX-512 BF16) bf16 autocast trained the MNIST
    networks faster (benchmarks/results/train.json); CPUs without it would emulate bf16, slowly.
    """
    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision
    if cfg.cpu or not torch.cuda.is_available():
        return "bf16" if _cpu_native_bf16() else "no"
    return "bf16" if _native_bf16() else "fp16"


def _cpu_native_bf16() -> bool:
    """True when the CPU computes bf16 itself (AVX-512 BF16 or AMX flags in /proc/cpuinfo; Linux only)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # macOS, Windows: no such file; stay in fp32
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def _native_bf16() -> bool:
    """True when the GPU computes in bf16 itself (compute capability >= 8, Ampere on).

    ``torch.cuda.is_bf16_supported()`` alone is also True on a T4 (7.5), which only
    emulates bf16 and where cuDNN has no bf16 convolutions: fp16 is the fast choice there.
    """
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch < 2.4 has no including_emulation and did not count emulation
        return torch.cuda.get_device_capability()[0] >= 8


def _make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    # Several processes without a GPU (``accelerate launch --multi_gpu`` on a CPU machine): gloo on the CPU.
    cpu = cfg.cpu or (not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1)
    kwargs = {"mixed_precision": _resolve_mixed_precision(cfg), "gradient_accumulation_steps": cfg.grad_accum_steps,
              "cpu": cpu, "step_scheduler_with_optimizer": False}
    if cfg.compile:
        kwargs["dynamo_backend"] = "inductor"
    try:
        accelerator = Accelerator(**kwargs)
    except ValueError as e:  # a notebook made an Accelerator with other settings before
        if "already been initialized" not in str(e):
            raise
        AcceleratorState._reset_state()
        return Accelerator(**kwargs)
    # accelerate keeps the first Accelerator's state for the whole process and ignores another
    # compile setting without a word (it raises only for another precision): start it over then
    wanted = "INDUCTOR" if cfg.compile else "NO"
    if accelerator.state.dynamo_plugin.backend.name != wanted:
        AcceleratorState._reset_state()
        accelerator = Accelerator(**kwargs)
    return accelerator


def _fused_if_possible(device: torch.device) -> dict[str, bool]:
    """AdamW(fused=True): one kernel for all parameters, on CUDA and (torch >= 2.4) on the CPU."""
    return {"fused": True} if device.type in ("cuda", "cpu") else {}


def _flips(dataset: Any) -> bool:
    """True for a ``dl.load_images`` dataset made with ``flip=True`` (a tensor's ``.flip`` is a method, not this)."""
    return getattr(dataset, "flip", False) is True and callable(getattr(dataset, "augment", None))


def _without_flips(dataset: Any) -> Any:
    """The dataset whose items are not flipped (the Trainer flips whole batches with its own generator)."""
    if not _flips(dataset):
        return dataset
    unflipped = copy.copy(dataset)  # shallow: shares the pixels
    unflipped.flip = False
    return unflipped


def _check_range(images: torch.Tensor) -> None:
    lo, hi = (float(v) for v in torch.aminmax(images))
    if hi > 1.5 or lo < -1.5:
        raise ValueError(f"images must be in [-1, 1]; the data ranges from {lo:g} to {hi:g}. "
                         "Scale 0..255 pixels with x / 127.5 - 1 (dl.load_images does it).")
    if lo >= 0 and hi <= 1 and hi > 0.5:
        warnings.warn(f"the images range from {lo:g} to {hi:g}: [0, 1] data? The trainer expects [-1, 1] "
                      "(x * 2 - 1).", stacklevel=3)


def _describe(model: nn.Module) -> dict[str, Any] | None:
    try:
        return model_config(_unwrap(model))
    except (ValueError, TypeError):
        return None
