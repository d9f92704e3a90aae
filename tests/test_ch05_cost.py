"""forward_flops (chapter 5): exact counts for convolutions, linear layers and attention."""

import torch
from torch import nn

import ddpm_lib as dl


def test_conv_flops_are_two_per_multiply_add():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    # each of the 8 x 16 x 16 outputs needs 3 x 3 x 3 multiply-adds
    assert dl.forward_flops(conv, torch.randn(1, 3, 16, 16)) == 2 * 8 * 16 * 16 * 27


def test_attention_is_counted_on_the_cpu():
    C, heads = 32, 4
    for side in (4, 8):
        N = side * side
        flops = dl.forward_flops(dl.SelfAttention2d(C, heads, None), torch.randn(1, C, side, side))
        # q, k, v and output projections: 8 N C^2; Q K^T and A V: 2 x 2 N^2 C
        assert flops == 8 * N * C * C + 4 * N * N * C


def test_dit_count_by_hand_and_batch_size():
    """A tiny DiT counted layer by layer (2 FLOPs per multiply-add), then twice for a batch of two."""
    side, p, D, depth, freq = 16, 4, 32, 2, 256
    dit = dl.DiT(image_size=side, patch_size=p, dim=D, depth=depth, heads=4)
    N, hidden = (side // p) ** 2, 4 * D  # 16 tokens, MLP width
    time_mlp = 2 * (freq * D + D * D)  # sinusoid (256) -> D -> D
    patchify = 2 * N * D * (1 * p * p)  # one p x p x 1 patch per token and channel
    block = (2 * D * 6 * D  # adaLN: c -> 6 vectors
             + 2 * N * D * 3 * D  # q, k, v
             + 2 * 2 * N * N * D  # Q K^T and A V
             + 2 * N * D * D  # output projection
             + 2 * 2 * N * D * hidden)  # the MLP's two layers
    final = 2 * D * 2 * D + 2 * N * D * (p * p * 1)  # final adaLN and the linear back to patches
    expected = time_mlp + patchify + depth * block + final
    one = dl.forward_flops(dit, torch.randn(1, 1, side, side), torch.tensor([10]))
    two = dl.forward_flops(dit, torch.randn(2, 1, side, side), torch.tensor([10, 20]))
    assert one == expected
    assert two == 2 * one
