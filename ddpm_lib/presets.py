"""Named training recipes, found by measurement (chapters 2, 5 and 10; ``benchmarks/quality.py``).

A preset is everything one needs to reproduce a measured result: the data, the
network, the ``TrainConfig`` fields and the sampler the samples were scored with::

    cfg = dl.TrainConfig.preset("mnist", max_minutes=15, out_dir="runs/mnist")
    model = dl.preset_model("mnist")
    data = dl.load_images(**dl.PRESETS["mnist"].data)
    dl.Trainer(model, data, cfg).fit()

or from the shell: ``python -m ddpm_lib train --preset mnist --max-minutes 15 --out runs/mnist``.
How each choice was made is in ``benchmarks/results/recipe_exploration.json``
(fixed-step runs, one change at a time), and what the preset buys against chapter
2's plain recipe at the same wall clock in ``benchmarks/results/quality.json``; both
are on the book's benchmarks page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = ["PRESETS", "Preset", "get_preset", "preset_model"]


@dataclass(frozen=True)
class Preset:
    """A training recipe: data, network, ``TrainConfig`` fields and the sampler to use."""

    description: str
    data: dict[str, Any]  # keyword arguments of dl.load_images
    model: dict[str, Any]  # keyword arguments of dl.diffusers_unet
    train: dict[str, Any]  # TrainConfig fields, the sampler's among them (sampler, sample_steps, clip_x0)
    conditional: bool = False  # train on the labels, with a null class for guidance

    @property
    def sampling(self) -> dict[str, Any]:
        """dl.sample's ``sampler``, ``steps`` and ``clip_x0`` for this recipe (recorded at export)."""
        t = self.train
        return {
            "sampler": t.get("sampler", "dpmpp_2m"),
            "steps": t.get("sample_steps", 20),
            "clip_x0": t.get("clip_x0"),
        }


_MNIST_DATA = {"name_or_path": "mnist-5k", "split": "train", "image_size": 28}
# 16-32-64 channels run 1.6x the steps of 32-64-64 in the same time and scored as well
# (recipe_exploration.json). No attention blocks in the levels (the middle block at 7 x 7 keeps
# its attention): the attention blocks at the lowest level took 45 % of a step on the CPU, and
# without them 5 minutes at 1 thread gave 51 % recognised instead of 43 % (quality.json's levers;
# two layers per level instead of one: 52 %, fewer steps, kept at one).
_MNIST_NET = {
    "image_size": 28,
    "in_channels": 1,
    "block_out_channels": (16, 32, 64),
    "layers_per_block": 1,
    "attention_blocks": 0,
}
_MNIST_TRAIN = {
    "image_size": 28,  # the digits as they are: no padding to 32 px (23 % fewer pixels per step)
    "batch_size": 64,
    "max_steps": 1_000_000,  # a time budget (max_minutes) ends the run
    "lr": 2e-3,  # 4e-3: no better after 5 minutes (quality.json's levers)
    "warmup_steps": 50,
    "lr_schedule": "cosine",
    "schedule": "cosine",  # with v: 51 % recognised after 600 steps; linear + eps: 5 % (exploration)
    "prediction": "v",
    "ema_decay": 0.995,
    "mixed_precision": "auto",  # bf16 autocast where the CPU or GPU has it in hardware (1.2-1.6x here)
    "channels_last": False,  # measured slower on the CPU
    "checkpoint_every": 250,
    "sample_every": 0,
    "log_every": 25,
    # the sampler it was measured with. Stochastic samplers lift the same network by about 5 points
    # at 2.5-5x the network evaluations: on the 15-minute preset model pc 25 steps (NFE 50) 78.8 %
    # and ddpm 100 steps 79.0 % against 73.6 % here (quality.json; recipe_exploration.json)
    "sampler": "dpmpp_2m",
    "sample_steps": 20,
    "clip_x0": None,  # x0 clipping did not help the v-prediction model (exploration, quality.json)
}

# name -> Preset (a plain dict: add your own)
PRESETS: dict[str, Preset] = {
    "mnist": Preset(
        description="unconditional 28 px MNIST digits in minutes on a laptop CPU",
        data=_MNIST_DATA,
        model=_MNIST_NET,
        train=_MNIST_TRAIN,
    ),
    "mnist-cond": Preset(
        description="class-conditional 28 px MNIST digits (labels 0-9, 10 = null class for guidance)",
        data=_MNIST_DATA,
        model={**_MNIST_NET, "num_classes": 10},
        train={**_MNIST_TRAIN, "class_dropout": 0.1},
        conditional=True,
    ),
}


def get_preset(name: str) -> Preset:
    """``PRESETS[name]``, or a ``ValueError`` that lists the valid names."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
    return PRESETS[name]


def preset_model(name: str) -> nn.Module:
    """A freshly initialised network of the preset ``name`` (a diffusers ``UNet2DModel``)."""
    from .models import diffusers_unet

    return diffusers_unet(**get_preset(name).model)
