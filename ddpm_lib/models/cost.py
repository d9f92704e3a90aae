"""What a network costs: floating-point operations of one forward pass (chapter 5)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils import flop_counter

__all__ = ["forward_flops"]



def _cpu_attention_flops(*args, out_val=None, **kwargs) -> int:
    """torch counts the fused attention kernels of CUDA but not the CPU's: count it with the same formula."""
    return flop_counter.sdpa_flop(*args, out_val=out_val, **kwargs)  # sdpa_flop reads the shapes itself


_cpu_attention_flops._get_raw = True  # FlopCounterMode: pass the raw arguments, not their shapes
_CPU_ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops}


@torch.no_grad()
def forward_flops(model: nn.Module, *inputs, **kwargs) -> int:
    """Floating-point operations of ``model(*inputs, **kwargs)``, counted by torch (chapter 5).

    Counts matrix products and convolutions (2 FLOPs per multiply-add; elementwise work such
    as activations and norms is not counted), including attention on the CPU, so that a UNet
    and a transformer can be compared on the same footing. For example
    ``forward_flops(model, torch.randn(1, 1, 32, 32), torch.tensor([500]))``.
    """
    counter = flop_counter.FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION)
    with counter:
        model(*inputs, **kwargs)
    return int(counter.get_total_flops())
