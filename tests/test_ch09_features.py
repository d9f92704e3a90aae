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


def test_inception_branch_feeds_what_torchmetrics_feeds(monkeypatch, digits):
    """The uint8 batches reaching Inception are those torchmetrics' own FID.update makes (normalize=True).

    The reference is torchmetrics' code, not a copy of ours: its FrechetInceptionDistance
    gets the recording network, is fed [0, 1] three-channel images made here, and
    converts them itself (the conversion it applies whenever its built-in network is used).
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    seen = []

    class RecordingInception(torch.nn.Module):
        num_features = 3

        def forward(self, x):
            seen.append(x.clone())
            return x.float().mean(dim=(2, 3))  # (B, 3)

    network = RecordingInception()

    class FakeMetric:
        inception = network

    monkeypatch.setattr(evaluate, "_resolve_feature", lambda feature: ("inception", ""))
    monkeypatch.setattr(evaluate, "_make_inception_metric", lambda name, **kw: FakeMetric())
    # digits plus values on both sides of every uint8 boundary and outside [-1, 1]
    images = torch.cat([digits[:9], torch.linspace(-1.2, 1.2, 3 * 32 * 32).reshape(1, 3, 32, 32)[:, :1]])
    f = dl.image_features(images, feature="inception", batch_size=4)
    ours, seen[:] = list(seen), []
    assert f.shape == (10, 3) and f.dtype == torch.float64
    assert [(x.dtype, tuple(x.shape)) for x in ours] == [(torch.uint8, (4, 3, 32, 32))] * 2 + [(torch.uint8, (2, 3, 32, 32))]

    reference = FrechetInceptionDistance(feature=network, normalize=True)
    reference.used_custom_model = False  # so that update() converts [0, 1] floats to uint8 as for its own network
    unit = ((images.float() + 1) / 2).clamp(0, 1).repeat(1, 3, 1, 1)  # [0, 1], 3 channels
    for i in range(0, len(unit), 4):
        reference.update(unit[i: i + 4], real=True)
    assert len(seen) == len(ours)
    for a, b in zip(ours, seen):
        assert b.dtype == torch.uint8 and torch.equal(a, b)


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
