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


def test_models_and_batch_size():
    dit = dl.DiT(image_size=16, patch_size=4, dim=32, depth=2, heads=4)
    one = dl.forward_flops(dit, torch.randn(1, 1, 16, 16), torch.tensor([10]))
    two = dl.forward_flops(dit, torch.randn(2, 1, 16, 16), torch.tensor([10, 20]))
    assert one > 0 and two == 2 * one
