"""Building blocks shared by the networks of chapter 5.

Notation: ``t`` is the 0-based timestep index in [0, T-1] (the paper's t=1 is
index 0, as in diffusers; float values are allowed for continuous time), ``y`` a
class label, ``emb`` the conditioning vector made from ``t`` and ``y``.

=========================  ===================================================
``timestep_embedding``     sinusoidal features of t (Vaswani et al. 2017; Ho et al. 2020)
``ConditionEmbedding``     t -> sinusoid -> MLP, plus a learned class embedding
``make_norm``              "group" | "batch" | None, from a plain dict
``MultiHeadSelfAttention`` attention over a sequence via F.scaled_dot_product_attention
=========================  ===================================================
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "NORMS",
    "ConditionEmbedding",
    "MultiHeadSelfAttention",
    "as_timesteps",
    "check_image_size",
    "make_norm",
    "timestep_embedding",
]


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal features of the timestep: (B,) -> (B, dim) (chapter 5).

    ``[cos(t w_0), ..., cos(t w_{d/2-1}), sin(t w_0), ...]`` with
    ``w_i = max_period^(-i / (d/2))``: the Transformer's position encoding
    (Vaswani et al. 2017, section 3.5), used for t by Ho et al. 2020 (appendix B).
    """
    half = dim // 2
    w = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * w[None, :]  # (B, half)
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    if dim % 2:  # odd dim: pad one zero column
        emb = F.pad(emb, (0, 1))
    return emb  # (B, dim)


def check_image_size(height: int, width: int, factor: int, what: str) -> None:
    """Raise a ValueError unless both sides are multiples of ``factor`` (the total downsampling)."""
    if height % factor or width % factor or height < factor or width < factor:
        raise ValueError(
            f"{what} cannot handle images of size {height}x{width}: each side must be a "
            f"positive multiple of {factor} (e.g. {factor * 4}, {factor * 7} or {factor * 8} px); "
            "resize or pad the images, or change the number of levels."
        )


def as_timesteps(t, batch: int, device: torch.device) -> torch.Tensor:
    """Turn an int, float, 0-d or (B,) tensor ``t`` into a float (B,) tensor on ``device``."""
    t = torch.as_tensor(t, device=device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(
            f"t has shape {tuple(t.shape)} but the batch has {batch} images; "
            "pass one timestep per image (shape (B,)) or a single number."
        )
    return t.float()


class ConditionEmbedding(nn.Module):
    """The conditioning vector ``emb = MLP(sinusoid(t)) + E[y]`` (chapter 5).

    ``time_embedding=False`` drops the t part (the network is then blind to the
    noise level, like ``BasicUNet``). With ``num_classes=K`` a learned table of
    K + 1 rows is added; row K is the *null class* that classifier-free guidance
    (Ho & Salimans 2022) uses for the unconditional prediction, and it is also
    what ``class_labels=None`` means.
    """

    def __init__(
        self,
        dim: int,
        time_embedding: bool = True,
        num_classes: int | None = None,
        freq_dim: int | None = None,
    ):
        super().__init__()
        self.dim = dim
        self.num_classes = num_classes
        self.freq_dim = freq_dim or dim
        self.time_mlp = (
            nn.Sequential(nn.Linear(self.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
            if time_embedding
            else None
        )
        self.class_emb = nn.Embedding(num_classes + 1, dim) if num_classes is not None else None

    @property
    def enabled(self) -> bool:
        return self.time_mlp is not None or self.class_emb is not None

    def forward(
        self, t, batch: int, device: torch.device, class_labels: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """Return emb (B, dim), or None when neither t nor a class is used."""
        if class_labels is not None and self.class_emb is None:
            raise ValueError(
                "class_labels were given but this model is unconditional; "
                "build it with num_classes=K to condition on K classes."
            )
        emb = None
        if self.time_mlp is not None:
            if t is None:
                raise ValueError("this model is conditioned on the timestep: call it as model(x_t, t).")
            t = as_timesteps(t, batch, device)
            emb = self.time_mlp(timestep_embedding(t, self.freq_dim))  # (B, dim)
        if self.class_emb is not None:
            y = self._labels(class_labels, batch, device)
            emb = self.class_emb(y) if emb is None else emb + self.class_emb(y)
        return emb

    def _labels(self, class_labels, batch: int, device: torch.device) -> torch.Tensor:
        """Labels in [0, K]; None means "no class" (the null index K) for every image.

        Never waits for a GPU (one training step would otherwise stop here to read the labels
        back): numbers, lists and CPU tensors are checked on the host (a ``ValueError`` naming
        the values); labels already on an accelerator are checked there, asynchronously
        (``torch._assert_async``: on CUDA a bad label stops the program with a device-side
        assertion carrying this message, without the values; check such labels on the CPU to
        see them), as ``NoiseSchedule`` checks timesteps.
        """
        K = self.num_classes
        if class_labels is None:
            return torch.full((batch,), K, device=device, dtype=torch.long)
        y = torch.as_tensor(class_labels)  # numbers and lists: a CPU tensor; a tensor stays where it is
        if y.dtype == torch.bool:
            raise ValueError("class_labels must hold integer class indices, not booleans.")
        y = y.long()
        if y.ndim == 0:
            y = y.expand(batch)
        if y.shape != (batch,):
            raise ValueError(
                f"class_labels has shape {tuple(y.shape)}; expected ({batch},), one label per image."
            )
        rule = f"class labels must lie in [0, {K - 1}], or be {K} for the null class"
        if y.numel() and y.device.type == "cpu":
            if bool(y.min() < 0) or bool(y.max() > K):
                raise ValueError(f"{rule}; got values in [{int(y.min())}, {int(y.max())}].")
        elif y.numel():
            torch._assert_async(((y >= 0) & (y <= K)).all(), f"{rule}.")
        return y.to(device)


def _num_groups(channels: int) -> int:
    """GroupNorm groups: 32 as in Ho et al. 2020 where the channels allow it."""
    return math.gcd(channels, 32)


# Normalisation layers by name (chapter 5 compares them); each maps channels -> module.
NORMS = {
    "group": lambda ch: nn.GroupNorm(_num_groups(ch), ch),
    "batch": lambda ch: nn.BatchNorm2d(ch),
    None: lambda ch: nn.Identity(),
}


def make_norm(kind: str | None, channels: int) -> nn.Module:
    """A normalisation layer for ``channels`` feature maps: "group", "batch" or None (chapter 5)."""
    if kind not in NORMS:
        raise ValueError(f"unknown norm {kind!r}; choose one of {list(NORMS)}.")
    return NORMS[kind](channels)


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention over a sequence (B, N, D) -> (B, N, D) (chapter 5).

    ``softmax(Q K^T / sqrt(d)) V`` per head (Vaswani et al. 2017), computed by
    ``F.scaled_dot_product_attention`` (a fused kernel where one exists). The cost
    grows with N^2, which is why UNets use it only at low resolution.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}; pick heads that divide dim.")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, D // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, N, D/heads)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, D/heads)
        return self.proj(h.transpose(1, 2).reshape(B, N, D))
