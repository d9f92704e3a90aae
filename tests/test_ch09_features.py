"""Chapter 9: dl.image_features, the features behind FD / KID computed once per image set."""

import pytest
import torch

import ddpm_lib as dl
from ddpm_lib import evaluate


@pytest.fixture(scope="module")
def digits():
    return dl.load_images("mnist-5k", max_images=64).images


def test_mnist_features_equal_classifier_features(digits):
    f = dl.image_features(digits, feature="mnist", batch_size=20)
    assert f.shape == (64, 128) and f.dtype == torch.float64
    torch.testing.assert_close(f, dl.classifier_features(digits).double(), rtol=1e-4, atol=1e-5)  # batching
    # the FD of the features equals the image-level domain FD
    fd = dl.frechet_distance_from_features(f[:32], f[32:])
    assert fd == pytest.approx(dl.domain_fd(digits[:32], digits[32:]).value, rel=1e-4)


def test_inception_branch_feeds_uint8_batches(monkeypatch, digits):
    seen = []

    class FakeInception(torch.nn.Module):
        def forward(self, x):
            seen.append((x.dtype, tuple(x.shape)))
            return x.float().mean(dim=(2, 3))  # (B, 3)

    class FakeMetric:
        inception = FakeInception()

    monkeypatch.setattr(evaluate, "_resolve_feature", lambda feature: ("inception", ""))
    monkeypatch.setattr(evaluate, "_make_inception_metric", lambda name, **kw: FakeMetric())
    f = dl.image_features(digits[:10], feature="inception", batch_size=4)
    assert f.shape == (10, 3) and f.dtype == torch.float64
    assert seen == [(torch.uint8, (4, 3, 32, 32)), (torch.uint8, (4, 3, 32, 32)), (torch.uint8, (2, 3, 32, 32))]
    expected = ((digits[:10] + 1) / 2 * 255).byte().float().mean(dim=(1, 2, 3))
    torch.testing.assert_close(f[:, 0], expected.double())


def test_inception_unavailable_is_a_clear_error(monkeypatch, digits):
    monkeypatch.setattr(evaluate, "inception_status", lambda timeout=3.0: (False, "offline (test)"))
    with pytest.raises(dl.InceptionUnavailableError, match="offline"):
        dl.image_features(digits, feature="inception")
    with pytest.warns(UserWarning, match="MNIST classifier"):
        f = dl.image_features(digits, feature="auto")
    assert f.shape == (64, 128)


def test_rejects_non_images():
    with pytest.raises(ValueError, match="N, C, H, W"):
        dl.image_features(torch.zeros(3, 32, 32))
