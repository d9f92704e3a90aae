"""The minimal UNet of chapter 5: three convolutions down, three up, additive skips."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .layers import check_image_size

__all__ = ["BasicUNet"]


class BasicUNet(nn.Module):
    """A minimal UNet with no timestep input (chapter 5; Ronneberger et al. 2015).

    Down: three 5x5 convolutions with SiLU, a 2x2 max-pool after the first two.
    Up: three 5x5 convolutions, each of the last two preceded by a 2x upsampling
    and the addition of the matching down activation (an additive skip).

    It takes no timestep: the network has to guess the noise level from the image.
    ``model(x)`` and ``model(x, t)`` both work (``t`` is ignored) so that the
    library's losses and samplers, which always pass ``t``, can use it as is.
    Image sides must be multiples of 4 (two poolings); 28 and 32 px both work.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, channels: Sequence[int] = (32, 64, 64)):
        super().__init__()
        if len(channels) != 3:
            raise ValueError(
                f"BasicUNet has three levels; channels must have 3 entries, got {tuple(channels)}."
            )
        c0, c1, c2 = channels
        self.config = {"in_channels": in_channels, "out_channels": out_channels, "channels": list(channels)}
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
                nn.Conv2d(c1, c0, 5, padding=2),
                nn.Conv2d(c0, out_channels, 5, padding=2),
            ]
        )
        self.act = nn.SiLU()
        self.downscale = nn.MaxPool2d(2)
        self.upscale = nn.Upsample(scale_factor=2)

    def forward(self, x: torch.Tensor, t=None) -> torch.Tensor:
        """(B, C, H, W) -> (B, out_channels, H, W); ``t`` is accepted and ignored."""
        check_image_size(x.shape[-2], x.shape[-1], 4, "BasicUNet")
        h = []  # the skip activations, (B, c0, H, W) and (B, c1, H/2, W/2)
        for i, layer in enumerate(self.down_layers):
            x = self.act(layer(x))
            if i < 2:
                h.append(x)
                x = self.downscale(x)
        for i, layer in enumerate(self.up_layers):
            if i > 0:
                x = self.upscale(x)
                x = x + h.pop()  # additive skip connection
            x = layer(x)
            if i < 2:  # no activation on the output: it must reach negative values too
                x = self.act(x)
        return x
