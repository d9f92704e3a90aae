"""diffusion_loss: zero for a perfect model, the documented formula, random draws, EDM, bad input."""

import math

import pytest
import torch
from torch import nn

import ddpm_lib as dl

T = 50


@pytest.fixture
def schedule():
    return dl.make_schedule("cosine", T)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(4, 1, 6, 6, generator=g),
        torch.randn(4, 1, 6, 6, generator=g),
        torch.tensor([0, 9, 30, 49]),
    )


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("weighting", ["uniform", "min_snr"])
def test_a_model_that_outputs_the_target_has_zero_loss(schedule, batch, prediction, weighting):
    x0, noise, t = batch
    target = dl.make_target(prediction, x0, noise, t, schedule)
    loss = dl.diffusion_loss(
        lambda x_t, t_: target, x0, schedule, prediction=prediction, weighting=weighting, t=t, noise=noise
    )
    assert loss.item() == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("weighting", ["uniform", "min_snr"])
@pytest.mark.parametrize("loss_type", ["l2", "l1"])
def test_loss_is_the_weighted_mean_error_of_the_documented_formula(
    schedule, batch, prediction, weighting, loss_type
):
    x0, noise, t = batch
    seen = {}

    def model(x_t, t_):
        seen["x_t"], seen["t"] = x_t, t_
        return 0.3 * x_t

    options = {
        "prediction": prediction,
        "weighting": weighting,
        "loss_type": loss_type,
        "t": t,
        "noise": noise,
    }
    per_sample = dl.diffusion_loss(model, x0, schedule, min_snr_gamma=2.0, reduction="none", **options)
    x_t = (
        schedule.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1) * x0
        + (1 - schedule.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1) * noise
    )
    assert torch.allclose(seen["x_t"], x_t, atol=1e-6) and torch.equal(seen["t"], t)
    err = 0.3 * x_t - dl.make_target(prediction, x0, noise, t, schedule)
    err = err**2 if loss_type == "l2" else err.abs()
    expected = dl.loss_weight(weighting, prediction, t, schedule, gamma=2.0) * err.mean(dim=(1, 2, 3))
    assert per_sample.shape == (4,) and torch.allclose(per_sample, expected, rtol=1e-5)
    mean = dl.diffusion_loss(model, x0, schedule, min_snr_gamma=2.0, **options)
    assert mean.ndim == 0 and mean.item() == pytest.approx(expected.mean().item(), rel=1e-5)


def test_timesteps_are_uniform_and_noise_is_standard_normal_and_seeded(schedule):
    seen = {}

    def model(x_t, t):
        seen["t"], seen["x_t"] = t, x_t
        return torch.zeros_like(x_t)

    n = 4000
    x0 = torch.zeros(n, 1, 2, 2)  # x_t = s_t ε, so the "eps" loss of a zero model is the mean of ε²
    loss = dl.diffusion_loss(model, x0, schedule, generator=torch.Generator().manual_seed(1))
    t = seen["t"]
    assert t.dtype == torch.long and t.min() == 0 and t.max() == T - 1
    sd_mean = math.sqrt((T**2 - 1) / 12 / n)  # standard error of the mean of U{0..T-1}
    assert abs(t.float().mean().item() - (T - 1) / 2) < 5 * sd_mean
    assert abs(loss.item() - 1.0) < 5 * math.sqrt(2 / (4 * n))  # E ε² = 1, Var ε² = 2
    again = dl.diffusion_loss(model, x0, schedule, generator=torch.Generator().manual_seed(1))
    assert torch.equal(seen["t"], t) and again.item() == loss.item()


def test_edm_loss_uses_log_normal_sigmas_and_preconditioned_inputs():
    seen = {}

    def network(x, c_noise):
        seen["x"], seen["c_noise"] = x, c_noise
        return torch.zeros_like(x)

    n = 4000
    x0 = 0.5 * torch.randn(n, 1, 2, 2, generator=torch.Generator().manual_seed(2))  # σ_data = 0.5
    loss = dl.diffusion_loss(network, x0, None, prediction="edm", generator=torch.Generator().manual_seed(3))
    log_sigma = 4 * seen["c_noise"]  # c_noise = ln(σ)/4 plays the role of t
    assert abs(log_sigma.mean().item() + 1.2) < 5 * 1.2 / math.sqrt(n)
    assert abs(log_sigma.std().item() - 1.2) < 5 * 1.2 / math.sqrt(2 * n)
    assert abs(seen["x"].var().item() - 1.0) < 0.05  # c_in scales the input to unit variance
    # F = 0 means D = c_skip x; its weighted loss λ(σ)|D - x_0|² has unit expectation when Var(x_0) = σ_d²
    assert abs(loss.item() - 1.0) < 0.05


def test_edm_loss_with_given_sigma_is_edm_weighted_denoiser_error():
    x0, noise = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    sigma = torch.tensor([0.05, 1.0, 20.0])

    def network(x, c_noise):
        return torch.tanh(x)

    per_sample = dl.diffusion_loss(
        network, x0, None, prediction="edm", sigma=sigma, noise=noise, reduction="none"
    )
    x = x0 + sigma.view(-1, 1, 1, 1) * noise
    d = dl.EDMDenoiser(network)(x, sigma)
    expected = dl.edm_loss_weight(sigma) * ((d - x0) ** 2).mean(dim=(1, 2, 3))
    assert torch.allclose(per_sample, expected, rtol=1e-4)


def test_gradients_class_labels_and_half_precision_outputs(schedule, batch):
    x0, noise, t = batch

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x, t, class_labels=None):
            self.labels = class_labels
            return self.conv(x).half()

    net = Net()
    labels = torch.tensor([0, 1, 2, 3])
    loss = dl.diffusion_loss(net, x0, schedule, prediction="v", class_labels=labels, t=t, noise=noise)
    assert loss.dtype == torch.float32 and torch.equal(net.labels, labels)
    loss.backward()
    assert net.conv.weight.grad is not None and net.conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"prediction": "epsilon"}, "unknown prediction 'epsilon'; choose one of"),
        ({"weighting": "snr"}, "unknown weighting 'snr'"),
        ({"loss_type": "huber"}, r"unknown loss_type 'huber'; choose one of \['l2', 'l1'\]"),
        ({"reduction": "sum"}, "unknown reduction"),
        ({"t": torch.tensor([1, 2])}, "t has shape"),
        ({"t": torch.tensor([1, 2, 3, T])}, r"timesteps must lie in \[0, 49\]"),
        ({"noise": torch.zeros(4, 1, 3, 3)}, "noise has shape"),
    ],
)
def test_bad_input_raises_value_error(schedule, batch, kwargs, match):
    with pytest.raises(ValueError, match=match):
        dl.diffusion_loss(lambda x, t: x, batch[0], schedule, **kwargs)


def test_schedule_is_required_except_for_edm(batch):
    with pytest.raises(ValueError, match="needs a schedule"):
        dl.diffusion_loss(lambda x, t: x, batch[0], None)
