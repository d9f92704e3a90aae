"""A UNet whose every improvement can be switched on one at a time (chapter 5).

The switches, in the order chapter 5 adds them:

====================  ======================================================
``channels``          feature maps per level (more parameters)
``residual``          residual blocks (He et al. 2016) instead of plain conv blocks
``norm``              "group" (Wu & He 2018), "batch" (Ioffe & Szegedy 2015) or None
``dropout``           dropout inside each block (Ho et al. 2020 use 0.1 on CIFAR-10)
``attention_resolutions``  self-attention at these feature-map sizes only
``time_embedding``    sinusoid(t) -> MLP -> per-channel bias in every block
``scale_shift``       ... or a per-channel scale and shift (FiLM; Dhariwal & Nichol 2021)
``num_classes``       a learned class embedding added to the time embedding
====================  ======================================================

Timesteps ``t`` are 0-based indices in [0, T-1] (the paper's t=1 is index 0, as
in diffusers); floats are accepted for continuous time.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .layers import ConditionEmbedding, MultiHeadSelfAttention, check_image_size, make_norm

__all__ = ["SelfAttention2d", "UNet", "UNetBlock"]


class SelfAttention2d(nn.Module):
    """Self-attention over all pixels of a feature map, with a residual connection (chapter 5)."""

    def __init__(self, channels: int, heads: int, norm: str | None):
        super().__init__()
        self.norm = make_norm(norm, channels)
        self.attn = MultiHeadSelfAttention(channels, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)  # (B, H*W, C): one token per pixel
        h = self.attn(h).transpose(1, 2).reshape(B, C, H, W)
        return x + h


class UNetBlock(nn.Module):
    """norm -> SiLU -> conv -> norm -> (+ emb) -> SiLU -> dropout -> conv, (+ skip), (-> attention).

    With ``residual=True`` the input is added back (through a 1x1 convolution when
    the channel count changes): a residual block (He et al. 2016) as in Ho et al.
    2020. The embedding is added *after* the second normalisation so that neither
    GroupNorm nor BatchNorm can subtract the per-channel bias away again.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        emb_dim: int | None,
        norm: str | None = "group",
        dropout: float = 0.0,
        residual: bool = True,
        scale_shift: bool = False,
        attention_heads: int | None = None,
    ):
        super().__init__()
        self.act = nn.SiLU()
        self.norm1 = make_norm(norm, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = make_norm(norm, out_ch)
        self.scale_shift = scale_shift
        self.emb_proj = nn.Linear(emb_dim, out_ch * (2 if scale_shift else 1)) if emb_dim else None
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = (nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()) if residual else None
        self.attn = SelfAttention2d(out_ch, attention_heads, norm) if attention_heads else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        h = self.norm2(self.conv1(self.act(self.norm1(x))))  # (B, out_ch, H, W)
        if self.emb_proj is not None and emb is not None:
            e = self.emb_proj(self.act(emb))[:, :, None, None]  # (B, out_ch or 2 out_ch, 1, 1)
            if self.scale_shift:
                scale, shift = e.chunk(2, dim=1)
                h = h * (1 + scale) + shift
            else:
                h = h + e  # per-channel bias
        h = self.conv2(self.dropout(self.act(h)))
        if self.skip is not None:
            h = h + self.skip(x)
        return self.attn(h) if self.attn is not None else h


class UNet(nn.Module):
    """A configurable denoising UNet: ``model(x_t, t, class_labels=None)`` (chapter 5).

    Levels ``i = 0 .. L-1`` work at ``image_size / 2**i`` pixels with ``channels[i]``
    feature maps and ``layers_per_level`` blocks each; skips are concatenated
    (Ronneberger et al. 2015). Image sides must be multiples of ``2**(L-1)``.
    With ``num_classes=K``, label ``K`` (or ``class_labels=None``) is the null
    class used by classifier-free guidance.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        image_size: int = 32,
        channels: Sequence[int] = (32, 64, 128),
        layers_per_level: int = 2,
        residual: bool = True,
        norm: str | None = "group",
        dropout: float = 0.0,
        attention_resolutions: Sequence[int] = (8,),
        attention_heads: int = 4,
        time_embedding: bool = True,
        scale_shift: bool = False,
        num_classes: int | None = None,
    ):
        super().__init__()
        out_channels = out_channels or in_channels
        channels, attention_resolutions = list(channels), list(attention_resolutions)
        L = len(channels)
        if L < 1:
            raise ValueError("channels must list at least one level, e.g. channels=(32, 64, 128).")
        check_image_size(image_size, image_size, 2 ** (L - 1), f"a UNet with {L} levels")
        resolutions = [image_size // 2**i for i in range(L)]
        if not set(attention_resolutions) <= set(resolutions):
            raise ValueError(
                f"attention_resolutions={attention_resolutions} must be feature-map sizes of this UNet: "
                f"{resolutions} for image_size={image_size} and {L} levels (or () for no attention)."
            )
        self.config = {
            "in_channels": in_channels, "out_channels": out_channels, "image_size": image_size, "channels": channels,
            "layers_per_level": layers_per_level, "residual": residual, "norm": norm, "dropout": dropout,
            "attention_resolutions": attention_resolutions, "attention_heads": attention_heads,
            "time_embedding": time_embedding, "scale_shift": scale_shift, "num_classes": num_classes,
        }  # fmt: skip
        self.downsample_factor = 2 ** (L - 1)
        emb_dim = 4 * channels[0] if (time_embedding or num_classes is not None) else None
        self.cond = ConditionEmbedding(emb_dim or 1, time_embedding, num_classes, freq_dim=channels[0])

        def block(cin: int, cout: int, res: int) -> UNetBlock:
            heads = attention_heads if res in attention_resolutions else None
            return UNetBlock(cin, cout, emb_dim, norm, dropout, residual, scale_shift, heads)

        self.init_conv = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        ch, skip_chs = channels[0], []
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        for i, c in enumerate(channels):
            level = nn.ModuleList()
            for _ in range(layers_per_level):
                level.append(block(ch, c, resolutions[i]))
                ch = c
                skip_chs.append(ch)
            self.down.append(level)
            if i < L - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        self.mid = nn.ModuleList([block(ch, ch, resolutions[-1]), block(ch, ch, -1)])
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(L)):
            level = nn.ModuleList()
            for _ in range(layers_per_level):
                level.append(block(ch + skip_chs.pop(), channels[i], resolutions[i]))
                ch = channels[i]
            self.up.append(level)
            if i > 0:
                self.upsample.append(
                    nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(ch, ch, 3, padding=1))
                )
        self.out = nn.Sequential(make_norm(norm, ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t=None, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W), t (B,) or scalar -> (B, out_channels, H, W)."""
        B, _, H, W = x.shape
        check_image_size(H, W, self.downsample_factor, f"this UNet ({len(self.down)} levels)")
        emb = self.cond(t, B, x.device, class_labels)  # (B, 4 channels[0]) or None
        h = self.init_conv(x)
        skips = []
        for i, level in enumerate(self.down):
            for blk in level:
                h = blk(h, emb)
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)  # halve H and W
        for blk in self.mid:
            h = blk(h, emb)
        for i, level in enumerate(self.up):
            for blk in level:
                h = blk(torch.cat([h, skips.pop()], dim=1), emb)  # concatenated skip
            if i < len(self.upsample):
                h = self.upsample[i](h)  # double H and W
        return self.out(h)
