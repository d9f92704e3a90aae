"""Tests for ddpm_lib.evaluate: Frechet distance, KID, the shipped MNIST classifier, FID fallbacks, JPEG."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

import ddpm_lib as dl
from ddpm_lib import evaluate as ev


def _scipy_fd(mu1, s1, mu2, s2):
    """The classic pytorch-fid formula with scipy's general sqrtm."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


def _random_cov(rng, d, n=None):
    A = rng.standard_normal((d, n or 2 * d))
    return A @ A.T / A.shape[1]


@pytest.fixture(scope="module")
def mnist_test():
    return dl.load_images("mnist-5k", split="test")


@pytest.fixture(scope="module")
def mnist_features():
    """Classifier features of the 5,000 digits in a fixed random order (disjoint halves = same distribution)."""
    x = dl.load_images("mnist-5k").images
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[perm], dl.classifier_features(x[perm])


# --------------------------------------------------------------------------- Frechet distance


@pytest.mark.parametrize("d", [1, 5, 40])
def test_frechet_distance_matches_scipy(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = _random_cov(rng, d), _random_cov(rng, d)
    ours = dl.frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(_scipy_fd(mu1, s1, mu2, s2), rel=1e-9, abs=1e-9)
    # torch float32 inputs are promoted to float64
    t = dl.frechet_distance(*(torch.as_tensor(a, dtype=torch.float32) for a in (mu1, s1, mu2, s2)))
    assert t == pytest.approx(ours, rel=1e-5)


def test_frechet_distance_closed_forms_and_singular_covariances():
    # 1-D: (m1 - m2)^2 + (sd1 - sd2)^2
    assert dl.frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + 1, abs=1e-12)
    rng = np.random.default_rng(0)
    mu, s = rng.standard_normal(30), _random_cov(rng, 30)
    assert abs(dl.frechet_distance(mu, s, mu, s)) < 1e-9  # identical Gaussians
    # rank-deficient covariances (fewer samples than dimensions): finite, non-negative, as scipy
    s_low1, s_low2 = _random_cov(rng, 30, n=10), _random_cov(rng, 30, n=10)
    ours = dl.frechet_distance(mu, s_low1, mu, s_low2)
    assert np.isfinite(ours) and ours >= 0
    assert ours == pytest.approx(_scipy_fd(mu, s_low1, mu, s_low2), rel=1e-5)
    with pytest.raises(ValueError, match="shapes do not match"):
        dl.frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))


def test_frechet_distance_from_features_uses_unbiased_covariance():
    rng = np.random.default_rng(1)
    f1, f2 = rng.standard_normal((200, 6)), rng.standard_normal((150, 6)) + 0.5
    mu1, mu2 = f1.mean(0), f2.mean(0)
    ref = _scipy_fd(mu1, np.cov(f1, rowvar=False), mu2, np.cov(f2, rowvar=False))
    assert dl.frechet_distance_from_features(torch.from_numpy(f1), f2) == pytest.approx(ref, rel=1e-9)
    with pytest.raises(ValueError, match="N >= 2"):
        dl.feature_statistics(np.zeros((1, 4)))


def test_fd_bias_shrinks_with_sample_size(mnist_features):
    _, f = mnist_features
    half_a, half_b = f[:2500], f[2500:]  # disjoint real digits: true FD is 0
    fd = dl.fd_by_sample_size(half_a, half_b, [100, 500, 2500])
    assert fd[100] > fd[500] > fd[2500] > 0
    assert fd[100] > 3 * fd[2500]
    with pytest.raises(ValueError, match="sample size"):
        dl.fd_by_sample_size(half_a, half_b, [5000])


# --------------------------------------------------------------------------- KID


def test_kid_matches_torchmetrics_and_is_unbiased():
    from torchmetrics.image.kid import poly_mmd

    rng = np.random.default_rng(2)
    f1, f2 = rng.standard_normal((60, 8)), rng.standard_normal((60, 8)) + 0.3
    mean, std = dl.kid(f1, f2, subsets=1, subset_size=60)  # one subset = the whole sets
    ref = poly_mmd(torch.from_numpy(f1), torch.from_numpy(f2)).item()
    assert mean == pytest.approx(ref, rel=1e-9) and std == 0
    same = dl.kid(rng.standard_normal((500, 8)), rng.standard_normal((500, 8)), subsets=20, subset_size=200)
    diff = dl.kid(rng.standard_normal((500, 8)), rng.standard_normal((500, 8)) + 0.5, subsets=20, subset_size=200)
    assert abs(same[0]) < 0.02 < diff[0]
    assert abs(same[0]) < 3 * same[1] + 1e-3  # zero within noise: no small-sample bias
    with pytest.raises(ValueError):
        dl.kid(f1, f2[:, :4])


# --------------------------------------------------------------------------- the MNIST classifier


def test_shipped_classifier_accuracy_on_held_out_digits(mnist_test):
    model = dl.load_mnist_classifier()
    assert dl.load_mnist_classifier() is model  # cached
    assert 100_000 <= sum(p.numel() for p in model.parameters()) <= 300_000
    probs = dl.classify(mnist_test.images)
    assert probs.shape == (1000, 10) and torch.allclose(probs.sum(-1), torch.ones(1000), atol=1e-5)
    accuracy = (probs.argmax(-1) == mnist_test.labels).float().mean().item()
    assert accuracy >= 0.97
    # 28 px inputs are padded like the training data; colour inputs are averaged to gray
    x = mnist_test.images[:20]
    assert torch.allclose(dl.classify(x[:, :, 2:30, 2:30]), probs[:20], atol=1e-5)
    assert torch.allclose(dl.classify(x.expand(-1, 3, -1, -1)), probs[:20], atol=1e-5)
    assert dl.classifier_features(x).shape == (20, 128)
    with pytest.raises(FileNotFoundError, match="train_classifier.py"):
        dl.load_mnist_classifier("/nonexistent/dir")


def test_class_balance_and_confidence(mnist_test):
    x, y = mnist_test.images, mnist_test.labels
    probs = dl.classify(x)
    full = dl.class_balance(probs)
    assert full.num_images == 1000 and full.balance > 0.99 and full.kl_to_uniform < 0.01
    assert full.confident_fraction > 0.9 and full.mean_max_prob > 0.9
    only_ones = dl.class_balance(x[y == 1])
    assert only_ones.counts[1] >= 95 and only_ones.balance < 0.15 and only_ones.kl_to_uniform > 2.0
    noise = torch.randn(200, 1, 32, 32, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    assert dl.confident_fraction(noise) < 0.2  # pure noise is not a recognisable digit
    assert dl.confident_fraction(probs) > 0.9
    assert "balance" in str(full)


# --------------------------------------------------------------------------- FID / KID on images


def test_domain_fd_detects_jpeg_and_same_set_is_zero(mnist_features, mnist_test):
    x, _ = mnist_features
    real, other = x[:500], x[500:1000]
    assert 0 <= dl.domain_fd(real, real).value < 1e-4
    clean = dl.domain_fd(real, other)
    jpeg = dl.domain_fd(real, dl.jpeg_roundtrip(other, quality=10))
    mild = dl.domain_fd(real, dl.jpeg_roundtrip(other, quality=95))
    assert jpeg.value > 2 * clean.value and mild.value < jpeg.value
    assert clean.num_real == 500 and clean.num_fake == 500 and "32 px" in clean.resize


def test_jpeg_roundtrip_shapes_and_error():
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    for q in (10, 95):
        y = dl.jpeg_roundtrip(x, quality=q)
        assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    assert (dl.jpeg_roundtrip(x, 95) - x).abs().mean() < (dl.jpeg_roundtrip(x, 10) - x).abs().mean()
    g = torch.rand(2, 1, 8, 8) * 2 - 1
    assert dl.jpeg_roundtrip(g, 90).shape == g.shape
    with pytest.raises(ValueError, match="quality"):
        dl.jpeg_roundtrip(x, 0)


def test_inception_status_names_each_reason(monkeypatch, tmp_path):
    """Each branch: package missing, weights cached, not cached and offline, not cached but online."""
    import sys
    import types

    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # import fails
    assert dl.inception_status() == (False, "the package torch-fidelity is not installed (pip install torch-fidelity)")
    monkeypatch.setitem(sys.modules, "torch_fidelity", types.ModuleType("torch_fidelity"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    asked = []
    monkeypatch.setattr(ev, "host_reachable", lambda host, port, timeout: asked.append((host, port)) or False)
    ok, why = dl.inception_status(timeout=0.5)
    assert not ok and "offline" in why and asked == [("github.com", 443)]
    monkeypatch.setattr(ev, "host_reachable", lambda host, port, timeout: True)
    assert dl.inception_status()[0] is True
    weights = tmp_path / "checkpoints" / ev.INCEPTION_WEIGHTS_URL.rsplit("/", 1)[-1]
    weights.parent.mkdir()
    weights.write_bytes(b"")
    monkeypatch.setattr(ev, "host_reachable", lambda *a, **k: pytest.fail("cached weights need no network"))
    ok, why = dl.inception_status()
    assert ok and str(weights) in why


def test_host_reachable_is_bounded_by_its_timeout(monkeypatch):
    """A listening port is reachable, a closed one is not, and a hanging lookup returns after the timeout."""
    import socket

    from ddpm_lib.data import host_reachable

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert host_reachable("127.0.0.1", port, timeout=5.0)
    assert not host_reachable("127.0.0.1", port, timeout=5.0)  # closed now
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: time.sleep(2) or socket.socket())
    start = time.perf_counter()
    assert not host_reachable("example.invalid", 443, timeout=0.5)
    assert time.perf_counter() - start < 5


def test_auto_falls_back_visibly_and_inception_request_fails(monkeypatch, capsys, mnist_features):
    x, _ = mnist_features
    monkeypatch.setattr(ev, "inception_status", lambda timeout=3.0: (False, "test: offline"))
    with pytest.warns(UserWarning, match="test: offline"):
        r = dl.fid(x[:300], x[300:600])
    assert "note:" in capsys.readouterr().out
    assert r.name == "FD (MNIST classifier)" and "test: offline" in r.note and "note:" in str(r)
    assert r.value == pytest.approx(dl.domain_fd(x[:300], x[300:600]).value)
    with pytest.warns(UserWarning):
        k = dl.kid_score(x[:300], x[300:600], subsets=10, subset_size=100)
    assert k.std is not None and k.num_real == 300 and "KID" in k.name
    with pytest.raises(dl.InceptionUnavailableError, match="feature='mnist'"):
        dl.fid(x[:10], x[10:20], feature="inception")
    with pytest.raises(ValueError, match="feature must be"):
        dl.fid(x[:10], x[10:20], feature="clip")
    assert dl.fid(x[:100], x[100:200], feature="mnist").note == ""  # explicit choice: no note


class _TinyFeatures(nn.Module):
    """Stands in for Inception-v3 offline: mean colour and brightness spread of [0, 1] images."""

    num_features = 4

    def forward(self, x):
        assert x.shape[1] == 3 and 0 <= x.min() and x.max() <= 1  # what torchmetrics passes on
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(1, 2, 3))[:, None]], dim=1)


def test_inception_path_through_torchmetrics_with_a_stand_in_network(monkeypatch):
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    def factory(name, **kwargs):
        kwargs.pop("antialias", None)
        if name == "FID":
            return FrechetInceptionDistance(feature=_TinyFeatures(), normalize=True, **kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchmetrics' note on memory use
            return KernelInceptionDistance(feature=_TinyFeatures(), normalize=True, **kwargs)

    monkeypatch.setattr(ev, "inception_status", lambda timeout=3.0: (True, "test"))
    monkeypatch.setattr(ev, "_make_inception_metric", factory)
    g = torch.Generator().manual_seed(0)
    real = torch.rand(64, 1, 8, 8, generator=g) * 2 - 1
    fake = torch.rand(48, 1, 8, 8, generator=g) * 2 - 1
    r = dl.fid(real, fake, feature="inception", batch_size=16)
    feats = [_TinyFeatures()(((x + 1) / 2).expand(-1, 3, -1, -1)) for x in (real, fake)]
    assert r.value == pytest.approx(dl.frechet_distance_from_features(*feats), rel=1e-4, abs=1e-6)
    assert r.name == "FID" and r.num_real == 64 and r.num_fake == 48 and "299" in r.resize
    assert "without" in dl.fid(real, fake, feature="auto", antialias=False).resize
    k = dl.kid_score(real, fake, subsets=5, subset_size=200)
    assert k.name == "KID" and k.std is not None and np.isfinite(k.value)


# ----------------------------------------------------------------------------- memorisation (chapter 10)


def _digits():
    return dl.load_images("mnist-5k", image_size=32, max_images=300).images  # (300, 1, 32, 32)


def test_nearest_neighbours_finds_copies_in_pixels_and_features():
    train = _digits()[:200]
    queries = train[[5, 17, 150]]
    for feature in ("pixels", "mnist"):
        nn_ = dl.nearest_neighbours(queries, train, feature=feature)
        assert nn_.indices.tolist() == [5, 17, 150], feature
        assert (nn_.distances < 1e-4).all(), (feature, nn_.distances)  # features: float32 batch rounding
    noise = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    far = dl.nearest_neighbours(noise[:2], noise[2:], feature="pixels")
    assert ((far.distances > 0.7) & (far.distances < 0.95)).all(), "uniform noise: about 0.82 rms apart"


def test_memorisation_check_tells_a_copying_model_from_a_new_one():
    digits = _digits()
    train, held_out = digits[:200], digits[200:250]
    copies = train[torch.arange(0, 200, 4)]  # a model that returns training images
    shifted = torch.roll(held_out, shifts=1, dims=-1)  # new digits, not in the training set
    copying = dl.memorisation_check(copies, train, held_out, feature="mnist")
    fresh = dl.memorisation_check(shifted, train, held_out, feature="mnist")
    for space in ("pixels", "features"):
        assert copying.ratio(space) < 0.01 and copying.copies(space) == 50, space
        assert fresh.ratio(space) > 0.5 and fresh.copies(space) < 5, space
    assert "ratio" in str(copying) and copying.feature.startswith("MNISTClassifier")
    fig = copying.plot(copies, train, n=6, title="copies")
    assert len(fig.axes) == 3
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_nearest_neighbours_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        dl.nearest_neighbours(torch.zeros(2, 1, 8, 8), torch.zeros(3, 1, 16, 16))
    with pytest.raises(ValueError, match="non-empty"):
        dl.nearest_neighbours(torch.zeros(0, 1, 8, 8), torch.zeros(3, 1, 8, 8))
    with pytest.raises(ValueError, match="feature"):
        dl.nearest_neighbours(torch.zeros(2, 1, 8, 8), torch.zeros(3, 1, 8, 8), feature="clip")
