"""Denoising networks (chapter 5).

Every network is called as ``model(x_t, t)`` (``model(x_t, t, class_labels)`` when
conditional) and returns a tensor shaped like ``x_t``; ``t`` is a 0-based timestep
index in [0, T-1] (an int, a float, or a (B,) tensor). A diffusers ``UNet2DModel``
is used as it is (see ``ddpm_lib.call_model``); ``diffusers_unet`` builds a small one.

==================  ========================================================
``BasicUNet``       the minimal UNet: no timestep input, additive skips
``UNet``            residual blocks, norms, dropout, attention, t and class conditioning
``DiT``             a tiny Diffusion Transformer (Peebles & Xie 2022)
``build_model``     rebuild any of them from ``model_config(model)`` (a JSON dict)
``forward_flops``   the FLOPs of one forward pass (attention included, on every device)
==================  ========================================================
"""

from .basic import BasicUNet
from .cost import forward_flops
from .dit import DiT
from .layers import timestep_embedding
from .registry import MODELS, build_model, count_parameters, diffusers_unet, model_config
from .unet import SelfAttention2d, UNet

# The building blocks (ConditionEmbedding, UNetBlock, DiTBlock, make_norm, ...) stay in
# their modules: ``from ddpm_lib.models.layers import ConditionEmbedding``.

__all__ = [
    "MODELS",
    "BasicUNet",
    "DiT",
    "SelfAttention2d",
    "UNet",
    "build_model",
    "count_parameters",
    "diffusers_unet",
    "forward_flops",
    "model_config",
    "timestep_embedding",
]
