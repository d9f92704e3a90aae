"""The minimal UNet of chapter 5, and the switches that grow it one change at a time.

With its defaults ``BasicUNet`` is the minimal UNet: three 5x5 convolutions down
(a 2x2 max-pool after the first two), three up (a 2x nearest upsampling before the
last two), additive skips, SiLU, no timestep input. Each keyword switches on one
improvement, so that chapter 5's ladder changes exactly one thing per row:

====================  ======================================================
``time_embedding``    sinusoid(t) -> MLP -> a per-channel bias on every hidden conv
``norm``              "group" or "batch" normalisation after every hidden conv
``residual``          each hidden layer adds its input back (1x1 conv if channels change)
``dropout``           dropout after every hidden activation
``attention``         self-attention on the lowest-resolution feature map
``skips``             "add" (default), "concat" (along channels) or "none"
``scale_shift``       FiLM: the embedding gives a per-channel scale and shift
``num_classes``       a learned class embedding added to the time embedding
====================  ======================================================

Hidden layer ``k`` (down 1, 2, 3, then up 1, 2) computes
``act(norm(conv(x)) + e_k)`` (or ``act(norm(conv(x)) * (1 + s_k) + b_k)``), then
dropout, then ``+ x`` when residual. The output convolution is left bare.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .layers import ConditionEmbedding, check_image_size, make_norm

__all__ = ["BasicUNet"]

SKIPS = ("add", "concat", "none")


class BasicUNet(nn.Module):
    """A minimal UNet (chapter 5; Ronneberger et al. 2015), with switches for chapter 5's ladder.

    Down: three 5x5 convolutions with SiLU, a 2x2 max-pool after the first two.
    Up: three 5x5 convolutions, each of the last two preceded by a 2x upsampling
    and the addition of the matching down activation (an additive skip).

    By default it takes no timestep: the network has to guess the noise level from
    the image. ``model(x)`` and ``model(x, t)`` both work (``t`` is ignored unless
    ``time_embedding=True``) so that the library's losses and samplers, which always
    pass ``t``, can use it as is. Image sides must be multiples of 4 (two poolings);
    28 and 32 px both work. The switches are listed in the module docstring.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: Sequence[int] = (32, 64, 64),
        *,
        skips: str = "add",
        time_embedding: bool = False,
        norm: str | None = None,
        residual: bool = False,
        dropout: float = 0.0,
        attention: bool = False,
        attention_heads: int = 4,
        scale_shift: bool = False,
        num_classes: int | None = None,
    ):
        super().__init__()
        if len(channels) != 3:
            raise ValueError(
                f"BasicUNet has three levels; channels must have 3 entries, got {tuple(channels)}."
            )
        if skips not in SKIPS:
            raise ValueError(f"skips must be one of {SKIPS}, got {skips!r}.")
        conditional = time_embedding or num_classes is not None
        if scale_shift and not conditional:
            raise ValueError(
                "scale_shift=True needs a condition to compute the scale and shift from: "
                "set time_embedding=True or num_classes."
            )
        c0, c1, c2 = channels
        self.config = {
            "in_channels": in_channels, "out_channels": out_channels, "channels": list(channels),
            "skips": skips, "time_embedding": time_embedding, "norm": norm, "residual": residual,
            "dropout": dropout, "attention": attention, "attention_heads": attention_heads,
            "scale_shift": scale_shift, "num_classes": num_classes,
        }  # fmt: skip
        self.skips, self.residual, self.scale_shift = skips, residual, scale_shift
        cat = 2 if skips == "concat" else 1  # a concatenated skip doubles the input channels
        self.down_layers = nn.ModuleList(
            [
                nn.Conv2d(in_channels, c0, 5, padding=2),
                nn.Conv2d(c0, c1, 5, padding=2),
                nn.Conv2d(c1, c2, 5, padding=2),
            ]
        )
        self.up_layers = nn.ModuleList(
            [
                nn.Conv2d(c2, c1, 5, padding=2),
                nn.Conv2d(cat * c1, c0, 5, padding=2),
                nn.Conv2d(cat * c0, out_channels, 5, padding=2),
            ]
        )
        self.act = nn.SiLU()
        self.downscale = nn.MaxPool2d(2)
        self.upscale = nn.Upsample(scale_factor=2)
        # the five hidden layers, down 1-3 then up 1-2: (input, output) channels
        hidden = [(in_channels, c0), (c0, c1), (c1, c2), (c2, c1), (cat * c1, c0)]
        if norm is not None:
            self.norms = nn.ModuleList([make_norm(norm, cout) for _, cout in hidden])
        if conditional:
            emb_dim = 4 * c0
            self.cond = ConditionEmbedding(emb_dim, time_embedding, num_classes, freq_dim=c0)
            k = 2 if scale_shift else 1
            self.emb_proj = nn.ModuleList([nn.Linear(emb_dim, k * cout) for _, cout in hidden])
        if residual:
            self.res = nn.ModuleList(
                [nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity() for cin, cout in hidden]
            )
        self.drop = nn.Dropout(dropout) if dropout else None
        if attention:
            from .unet import SelfAttention2d  # imported here: unet.py imports nothing from us

            self.attn = SelfAttention2d(c2, attention_heads, norm)

    def _hidden(self, k: int, x: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        """Hidden layer k: conv, (norm), (+ embedding), SiLU, (dropout), (+ input)."""
        layer = self.down_layers[k] if k < 3 else self.up_layers[k - 3]
        h = layer(x)
        if hasattr(self, "norms"):
            h = self.norms[k](h)
        if emb is not None:
            e = self.emb_proj[k](self.act(emb))[:, :, None, None]  # (B, c or 2c, 1, 1)
            if self.scale_shift:
                scale, shift = e.chunk(2, dim=1)
                h = h * (1 + scale) + shift
            else:
                h = h + e  # a per-channel bias, the same at every pixel
        h = self.act(h)
        if self.drop is not None:
            h = self.drop(h)
        return h + self.res[k](x) if self.residual else h

    def forward(self, x: torch.Tensor, t=None, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) -> (B, out_channels, H, W); ``t`` is ignored without a time embedding."""
        B, _, H, W = x.shape
        check_image_size(H, W, 4, "BasicUNet")
        emb = None
        if hasattr(self, "cond"):
            if self.cond.time_mlp is not None and t is None:
                raise ValueError("this BasicUNet has a time embedding: call it as model(x, t).")
            emb = self.cond(t, B, x.device, class_labels)  # (B, 4 c0)
        elif class_labels is not None:
            raise ValueError(
                "class_labels were given but this BasicUNet is unconditional (num_classes=None)."
            )
        h = []  # the skip activations, (B, c0, H, W) and (B, c1, H/2, W/2)
        for k in range(3):
            x = self._hidden(k, x, emb)
            if k < 2:
                h.append(x)
                x = self.downscale(x)
        if hasattr(self, "attn"):
            x = self.attn(x)  # every pixel of the H/4 map looks at every other
        for i in range(3):
            if i > 0:
                x, skip = self.upscale(x), h.pop()
                if self.skips == "add":
                    x = x + skip  # additive skip connection
                elif self.skips == "concat":
                    x = torch.cat([x, skip], dim=1)  # concatenated skip connection
            x = self._hidden(3 + i, x, emb) if i < 2 else self.up_layers[2](x)
        return x  # no activation on the output: it must reach negative values too
