"""sliced_wasserstein (chapter 7): zero for equal clouds, the 1-D closed form, sensitivity to a shift."""

import pytest
import torch

import ddpm_lib as dl


def test_zero_for_the_same_points_in_another_order():
    x = torch.randn(200, 3, generator=torch.Generator().manual_seed(0))
    assert dl.sliced_wasserstein(x, x[torch.randperm(200)]) < 1e-12


def test_one_dimensional_shift_is_the_shift():
    x = torch.randn(500, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    # in 1-D every direction is +-1, so the distance is exactly the shift
    assert dl.sliced_wasserstein(x, x + 0.3, num_projections=16) == pytest.approx(0.3, rel=1e-9)


def test_grows_with_a_shift_and_rejects_mismatched_shapes():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(1000, 2, generator=g), torch.randn(1000, 2, generator=g)
    same = dl.sliced_wasserstein(x, y)
    moved = dl.sliced_wasserstein(x, y + torch.tensor([1.0, 0.0]))
    assert same < 0.1 < moved
    with pytest.raises(ValueError, match="same shape"):
        dl.sliced_wasserstein(x, y[:10])
