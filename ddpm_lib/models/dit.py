"""A tiny Diffusion Transformer (chapter 5; Peebles & Xie 2022, "Scalable Diffusion Models with Transformers").

Notation: p the patch size, N = (H/p)(W/p) the number of tokens, D the token
width, c the conditioning vector (timestep embedding + class embedding).

    image (B, C, H, W) --patchify--> tokens (B, N, D) + position embedding
    --depth x DiTBlock(c)--> final adaLN + linear (B, N, p*p*C) --unpatchify--> (B, C, H, W)

Every block is conditioned by adaptive LayerNorm with zero-initialised gates
("adaLN-Zero", section 3.2 of the paper): c regresses a shift, scale and gate for
the attention and the MLP branch, and the gates start at zero so every block
starts as the identity.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import ConditionEmbedding, MultiHeadSelfAttention, check_image_size

__all__ = ["DiT", "DiTBlock", "modulate"]


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: ``x * (1 + scale) + shift`` with per-image (B, D) shift and scale, x (B, N, D)."""
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


def _zero(module: nn.Linear) -> nn.Linear:
    nn.init.zeros_(module.weight)
    nn.init.zeros_(module.bias)
    return module


class DiTBlock(nn.Module):
    """A transformer block with adaLN-Zero conditioning (Peebles & Xie 2022, figure 3)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = MultiHeadSelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.adaLN = nn.Sequential(nn.SiLU(), _zero(nn.Linear(dim, 6 * dim)))  # c -> 6 (B, D) vectors

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN(c).chunk(6, dim=1)
        x = x + gate1[:, None, :] * self.attn(modulate(self.norm1(x), shift1, scale1))
        x = x + gate2[:, None, :] * self.mlp(modulate(self.norm2(x), shift2, scale2))
        return x  # (B, N, D)


class DiT(nn.Module):
    """A Diffusion Transformer: ``model(x_t, t, class_labels=None)`` (chapter 5).

    ``image_size`` must be a multiple of ``patch_size`` and ``dim`` of ``heads``.
    With ``num_classes=K``, label ``K`` (or ``class_labels=None``) is the null class
    used by classifier-free guidance. At initialisation the output is exactly zero
    (adaLN-Zero); it becomes useful after the first optimiser steps.
    """

    def __init__(
        self,
        image_size: int = 32,
        in_channels: int = 1,
        patch_size: int = 4,
        dim: int = 128,
        depth: int = 4,
        heads: int = 4,
        num_classes: int | None = None,
        out_channels: int | None = None,
        mlp_ratio: float = 4.0,
    ):
        super().__init__()
        out_channels = out_channels or in_channels
        check_image_size(image_size, image_size, patch_size, f"a DiT with patch_size={patch_size}")
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}; pick heads that divide dim.")
        self.config = {
            "image_size": image_size, "in_channels": in_channels, "patch_size": patch_size, "dim": dim, "depth": depth,
            "heads": heads, "num_classes": num_classes, "out_channels": out_channels, "mlp_ratio": mlp_ratio,
        }  # fmt: skip
        self.image_size, self.patch_size, self.out_channels = image_size, patch_size, out_channels
        num_tokens = (image_size // patch_size) ** 2
        self.patchify = nn.Conv2d(
            in_channels, dim, patch_size, stride=patch_size
        )  # one token per p x p patch
        self.pos_emb = nn.Parameter(torch.randn(1, num_tokens, dim) * 0.02)  # learned position embedding
        self.cond = ConditionEmbedding(dim, time_embedding=True, num_classes=num_classes, freq_dim=256)
        self.blocks = nn.ModuleList([DiTBlock(dim, heads, mlp_ratio) for _ in range(depth)])
        self.final_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.final_adaLN = nn.Sequential(nn.SiLU(), _zero(nn.Linear(dim, 2 * dim)))
        self.final_linear = _zero(nn.Linear(dim, patch_size * patch_size * out_channels))

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, p*p*C) -> (B, C, H, W), the inverse of cutting the image into patches."""
        B, _N, _ = x.shape
        p, C = self.patch_size, self.out_channels
        side = self.image_size // p
        x = x.reshape(B, side, side, p, p, C)
        return torch.einsum("bhwpqc->bchpwq", x).reshape(B, C, side * p, side * p)

    def forward(self, x: torch.Tensor, t=None, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W), t (B,) or scalar -> (B, out_channels, H, W)."""
        B, _, H, W = x.shape
        if (H, W) != (self.image_size, self.image_size):
            raise ValueError(
                f"this DiT was built for {self.image_size}x{self.image_size} images (its position "
                f"embedding has one entry per patch) but got {H}x{W}; resize the images or build a new DiT."
            )
        c = self.cond(t, B, x.device, class_labels)  # (B, D)
        h = self.patchify(x).flatten(2).transpose(1, 2) + self.pos_emb  # (B, N, D)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_adaLN(c).chunk(2, dim=1)
        h = self.final_linear(modulate(self.final_norm(h), shift, scale))  # (B, N, p*p*C)
        return self.unpatchify(h)
