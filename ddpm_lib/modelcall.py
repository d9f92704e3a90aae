"""How the library calls a denoising network (used by losses, samplers and the trainer).

A model is anything called as ``model(x_t, t)`` (or ``model(x_t, t, class_labels)``
for a conditional model) that returns a tensor shaped like ``x_t``, or an object
with a ``.sample`` tensor, which is what a diffusers ``UNet2DModel`` returns. So a
diffusers model is used as it is, without a wrapper.
"""

from __future__ import annotations

import torch

from .models.registry import model_num_classes, unwrap_model

__all__ = ["call_model", "null_class_of"]


def call_model(model, x_t: torch.Tensor, t, class_labels: torch.Tensor | None = None) -> torch.Tensor:
    """Evaluate ``model`` on a batch and return a plain tensor shaped like ``x_t``.

    ``t`` may be a Python number, a 0-d tensor or a ``(B,)`` tensor; it is passed on
    as a ``(B,)`` tensor on ``x_t``'s device. Integer timesteps stay integers (a
    diffusers UNet embeds them as given); float timesteps stay floats.
    """
    t = torch.as_tensor(t, device=x_t.device)
    if t.ndim == 0:
        t = t.expand(x_t.shape[0])
    if t.shape[0] != x_t.shape[0]:
        raise ValueError(
            f"t has {t.shape[0]} entries but the batch has {x_t.shape[0]} images; "
            "pass one timestep per image, or a single number for all of them."
        )
    if class_labels is None:
        out = model(x_t, t)
    else:
        out = model(x_t, t, class_labels=class_labels)
    out = getattr(out, "sample", out)  # diffusers models return a dataclass
    if isinstance(out, (tuple, list)):
        out = out[0]
    if out.shape != x_t.shape:
        raise ValueError(
            f"the model returned shape {tuple(out.shape)} for an input of shape "
            f"{tuple(x_t.shape)}; a denoiser must return one value per input value."
        )
    return out


def null_class_of(model) -> int | None:
    """The class index that means "no label" to ``model`` (classifier-free guidance), or None.

    A ``null_class`` attribute on the model wins; otherwise the library's convention
    is read from the network's config: ``num_classes=K`` (``UNet``, ``DiT``) or
    ``num_class_embeds=K + 1`` (a diffusers ``UNet2DModel``) means labels 0..K-1 and
    the null class K. None for an unconditional network or a plain function. Chapter 8.
    """
    explicit = getattr(unwrap_model(model), "null_class", None)
    if explicit is not None:
        return int(explicit)
    if not isinstance(model, torch.nn.Module):
        return None
    return model_num_classes(model)
