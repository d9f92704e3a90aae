"""Build a network from a JSON-serialisable description, and count its parameters (chapter 5).

A description is ``{"class": "UNet", "config": {...constructor arguments...}}``;
``model_config(model)`` writes one and ``build_model`` reads it back, so a model
can be saved as JSON plus weights (see ``ddpm_lib.pipelines``).

``unwrap_model``, ``model_image_shape`` and ``model_num_classes`` read what a
network says about itself (its ``config``); the trainer and the export use them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from torch import nn

from .basic import BasicUNet
from .dit import DiT
from .layers import check_image_size
from .unet import UNet

__all__ = ["MODELS", "build_model", "count_parameters", "diffusers_unet", "model_config"]


def _unet2d(**config: Any) -> nn.Module:
    from diffusers import UNet2DModel  # imported on use: diffusers takes seconds to import

    return UNet2DModel.from_config(config)


# Model classes by name (a plain dict: add your own network here to save and load it).
MODELS: dict[str, Any] = {"BasicUNet": BasicUNet, "UNet": UNet, "DiT": DiT, "UNet2DModel": _unet2d}


def model_config(model: nn.Module) -> dict[str, Any]:
    """``{"class": name, "config": constructor arguments}`` for a model ``build_model`` can rebuild."""
    name = type(model).__name__
    if name not in MODELS or not hasattr(model, "config"):
        raise ValueError(
            f"cannot describe a {name} as JSON: only {list(MODELS)} (with a .config) can be rebuilt; "
            "add your class to ddpm_lib.MODELS and give it a .config dict of its constructor arguments."
        )
    config = {
        k: v for k, v in dict(model.config).items() if not k.startswith("_")
    }  # drop diffusers' _class_name
    json.dumps(config)  # fails early if something is not JSON-serialisable
    return {"class": name, "config": config}


def build_model(config: dict[str, Any]) -> nn.Module:
    """Build a network from ``{"class": "UNet", "config": {...}}`` (or the flat ``{"class": "UNet", ...}``).

    The inverse of ``model_config``: ``build_model(model_config(m))`` has the same
    architecture as ``m`` (fresh weights). Chapter 5.
    """
    if "class" not in config:
        raise ValueError(
            f"a model description needs a 'class' key, one of {list(MODELS)}; got keys {list(config)}."
        )
    name = config["class"]
    if name not in MODELS:
        raise ValueError(f"unknown model class {name!r}; known: {list(MODELS)}.")
    kwargs = (
        config["config"]
        if set(config) == {"class", "config"}
        else {k: v for k, v in config.items() if k != "class"}
    )
    return MODELS[name](**kwargs)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare network inside ``torch.compile`` (``_orig_mod``) and DistributedDataParallel (``module``),
    in either order."""
    model = getattr(model, "_orig_mod", model)
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def model_image_shape(model: nn.Module) -> tuple[int | None, int | None, int | None]:
    """(C, H, W) the network was built for, read from its ``config``; None for what it does not fix.

    A ``BasicUNet`` takes any image size: (C, None, None). Works for ddpm_lib networks
    (``image_size``) and diffusers ``UNet2DModel`` (``sample_size``, an int or (H, W)).
    """
    cfg = getattr(unwrap_model(model), "config", None) or {}
    size = cfg.get("image_size", cfg.get("sample_size"))
    h, w = (size, size) if size is None or isinstance(size, int) else (int(size[0]), int(size[1]))
    return cfg.get("in_channels"), h, w


def model_num_classes(model: nn.Module) -> int | None:
    """K of a class-conditional network (labels 0..K-1, K = the null class), else None."""
    cfg = getattr(unwrap_model(model), "config", None) or {}
    if cfg.get("num_class_embeds") is not None:  # diffusers UNet2DModel: K + 1 rows, the last one null
        return int(cfg["num_class_embeds"]) - 1
    k = cfg.get("num_classes")
    return None if k is None else int(k)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """The number of (trainable) parameters of a network (chapter 5)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def diffusers_unet(
    image_size: int = 32,
    in_channels: int = 1,
    out_channels: int | None = None,
    block_out_channels: Sequence[int] = (32, 64, 64),
    layers_per_block: int = 2,
    attention_blocks: int = 1,
    num_classes: int | None = None,
    dropout: float = 0.0,
) -> nn.Module:
    """A small diffusers ``UNet2DModel`` for MNIST-sized images (chapters 1, 2 and 5).

    The ``attention_blocks`` lowest-resolution levels use attention blocks
    (``AttnDownBlock2D`` / ``AttnUpBlock2D``), the others plain ResNet blocks; the
    middle block always has attention. With ``num_classes=K`` the model takes
    ``class_labels`` in [0, K], K being the null class for classifier-free guidance
    (so ``num_class_embeds = K + 1``). Chapter 2 uses the same class at 64 px with
    ``block_out_channels=(64, 128, 256, 512)`` and ``attention_blocks=2``.
    """
    from diffusers import UNet2DModel

    channels = [int(c) for c in block_out_channels]
    n = len(channels)
    check_image_size(image_size, image_size, 2 ** (n - 1), f"a UNet2DModel with {n} blocks")
    if not 0 <= attention_blocks <= n:
        raise ValueError(
            f"attention_blocks must be between 0 and {n} (the number of blocks); got {attention_blocks}."
        )
    plain = n - attention_blocks
    return UNet2DModel(
        sample_size=image_size,
        in_channels=in_channels,
        out_channels=out_channels or in_channels,
        block_out_channels=tuple(channels),
        layers_per_block=layers_per_block,
        down_block_types=("DownBlock2D",) * plain + ("AttnDownBlock2D",) * attention_blocks,
        up_block_types=("AttnUpBlock2D",) * attention_blocks + ("UpBlock2D",) * plain,
        norm_num_groups=min(32, math.gcd(*channels)),
        num_class_embeds=None if num_classes is None else num_classes + 1,
        dropout=dropout,
    )
