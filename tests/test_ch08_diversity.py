"""feature_diversity (chapter 8): copies have none, per-label averaging, images go through the classifier."""

import pytest
import torch

import ddpm_lib as dl


def test_identical_features_have_zero_diversity():
    f = torch.ones(6, 4)
    assert dl.feature_diversity(f) == 0.0


def test_mean_over_labels_of_mean_pairwise_distance():
    f = torch.tensor([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0], [10.0, 1.0], [10.0, 2.0]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    # label 0: one pair at distance 5; label 1: distances 1, 2, 1 -> mean 4/3
    assert dl.feature_diversity(f, labels) == pytest.approx((5 + 4 / 3) / 2)
    with pytest.raises(ValueError, match="two images"):
        dl.feature_diversity(f[:1])


def test_real_digits_are_more_diverse_than_copies():
    images = dl.load_images("mnist-5k", max_images=20).images  # (20, 1, 32, 32) in [-1, 1]
    copies = images[:1].repeat(20, 1, 1, 1)
    assert dl.feature_diversity(copies) < 1e-4 < dl.feature_diversity(images)
