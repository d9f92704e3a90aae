"""Targets: every conversion round-trips (hypothesis, float64), loss weightings, effective x0 weights,
EDM preconditioning identities, bad names."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ddpm_lib as dl
from ddpm_lib.targets import weight_from_scales

F64 = torch.float64
T = 100
SCHEDULES = {name: dl.make_schedule(name, T).to(dtype=F64) for name in ("linear", "cosine", "ve", "simple")}
SCHEDULES["zero_snr"] = dl.rescale_zero_terminal_snr(dl.make_schedule("linear", T)).to(dtype=F64)


def _batch(seed: int, schedule, t):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(len(t), 2, 3, 3, generator=g, dtype=F64)
    eps = torch.randn(len(t), 2, 3, 3, generator=g, dtype=F64)
    return x0, eps, dl.add_noise(x0, eps, t, schedule)


timesteps = st.lists(st.one_of(st.integers(0, T - 2), st.floats(0, T - 2)), min_size=1, max_size=4)


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(sorted(SCHEDULES)), t=timesteps, seed=st.integers(0, 2**31 - 1))
def test_every_conversion_round_trips(name, t, seed):
    """t < T-1: the last step of zero-SNR schedules has a_t = 0, where x̂_0 cannot come from ε̂."""
    s = SCHEDULES[name]
    t = torch.tensor(t, dtype=F64 if any(isinstance(v, float) for v in t) else torch.long)
    x0, eps, x_t = _batch(seed, s, t)
    v = dl.x0_eps_to_v(x0, eps, t, s)

    def close(a, b):
        return torch.allclose(a, b, rtol=1e-8, atol=1e-8)

    assert close(dl.eps_to_x0(eps, x_t, t, s), x0) and close(dl.x0_to_eps(x0, x_t, t, s), eps)
    assert close(dl.v_to_x0(v, x_t, t, s), x0) and close(dl.v_to_eps(v, x_t, t, s), eps)
    assert close(dl.x0_to_v(x0, x_t, t, s), v) and close(dl.eps_to_v(eps, x_t, t, s), v)
    assert close(dl.score_to_eps(dl.eps_to_score(eps, t, s), t, s), eps)
    for prediction in dl.PREDICTIONS:
        x0_hat, eps_hat = dl.split_prediction(
            prediction, dl.make_target(prediction, x0, eps, t, s), x_t, t, s
        )
        assert close(x0_hat, x0) and close(eps_hat, eps), prediction


def test_targets_and_score_have_their_closed_forms():
    s = SCHEDULES["cosine"]
    t = torch.tensor([3, 50, 98])
    x0, eps, x_t = _batch(0, s, t)
    ab = s.alphas_cumprod[t].view(-1, 1, 1, 1)
    assert torch.equal(dl.make_target("eps", x0, eps, t, s), eps)
    assert torch.equal(dl.make_target("x0", x0, eps, t, s), x0)
    assert torch.allclose(dl.make_target("v", x0, eps, t, s), ab.sqrt() * eps - (1 - ab).sqrt() * x0)
    # score of q(x_t | x_0) = N(√ᾱ x_0, (1 - ᾱ) I) by autograd
    x = x_t.clone().requires_grad_(True)
    log_q = -((x - ab.sqrt() * x0) ** 2 / (2 * (1 - ab))).sum()
    (score,) = torch.autograd.grad(log_q, x)
    assert torch.allclose(dl.eps_to_score(eps, t, s), score)


def test_v_prediction_at_zero_terminal_snr_still_gives_x0():
    s = SCHEDULES["zero_snr"]
    x0, eps, x_t = _batch(1, s, torch.tensor([T - 1]))
    v = dl.make_target("v", x0, eps, T - 1, s)
    assert torch.allclose(v, -x0) and torch.allclose(dl.v_to_x0(v, x_t, T - 1, s), x0)


def test_min_snr_weights_per_target():
    s = SCHEDULES["cosine"]
    t = torch.arange(T)
    snr, g = s.snr(t), 5.0
    expected = {
        "eps": torch.minimum(snr, torch.tensor(g)) / snr,
        "x0": snr.clamp(max=g),
        "v": snr.clamp(max=g) / (snr + 1),
        "edm": snr.clamp(max=g) / (snr + 4),
    }
    for prediction, w in expected.items():
        assert torch.allclose(dl.loss_weight("min_snr", prediction, t, s, gamma=g), w, rtol=1e-7)
        assert torch.equal(dl.loss_weight("uniform", prediction, t, s), torch.ones(T, dtype=F64))
        # the effective weight on the x0 error becomes min(SNR, γ) for every target
        effective = dl.loss_weight("min_snr", prediction, t, s, gamma=g) * dl.x0_weight_of(prediction, snr)
        assert torch.allclose(effective, snr.clamp(max=g), rtol=1e-7)
    assert dl.loss_weight("min_snr", "eps", 0, s).item() < 1  # high SNR: down-weighted
    assert dl.loss_weight("min_snr", "eps", T - 1, s).item() == 1  # SNR < γ: unchanged


def test_min_snr_eps_weight_at_zero_snr_is_its_limit_one():
    w = dl.loss_weight("min_snr", "eps", T - 1, SCHEDULES["zero_snr"])
    assert w.item() == 1.0


@pytest.mark.parametrize("name", ["linear", "cosine", "ve"])
def test_effective_x0_weights_hold_for_random_predictions(name):
    """|ε̂ - ε|² = SNR |x̂_0 - x_0|², |v̂ - v|² = (1 + SNR) |x̂_0 - x_0|² (VP),
    |F̂ - F|² = (SNR + 1/σ_d²) |x̂_0 - x_0|², for any prediction x̂_0 at the same x_t;
    checked through the library's own conversions."""
    s = SCHEDULES[name]
    t = torch.tensor([0, 20, 60, 98])
    x0, eps, x_t = _batch(2, s, t)
    x0_hat = x0 + torch.randn(x0.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    mse_x0 = ((x0_hat - x0) ** 2).mean(dim=(1, 2, 3))
    outputs = {
        "eps": dl.x0_to_eps(x0_hat, x_t, t, s),
        "x0": x0_hat,
        "v": dl.x0_to_v(x0_hat, x_t, t, s),
        "edm": dl.make_target("edm", x0_hat, dl.x0_to_eps(x0_hat, x_t, t, s), t, s),  # F that yields x0_hat
    }
    a, n = s.scales(t)
    for prediction, out in outputs.items():
        mse = ((out - dl.make_target(prediction, x0, eps, t, s)) ** 2).mean(dim=(1, 2, 3))
        ratio = mse / mse_x0
        if s.variance_preserving:
            assert torch.allclose(ratio, dl.x0_weight_of(prediction, s.snr(t)), rtol=1e-6), prediction
        # min-SNR makes the effective weight min(SNR, γ) for any kind of schedule
        w = weight_from_scales("min_snr", prediction, a, n, gamma=5.0)
        assert torch.allclose(w * ratio, s.snr(t).clamp(max=5.0), rtol=1e-6), prediction


def test_edm_preconditioning_identities():
    sigma = torch.logspace(-3, 2, 50, dtype=F64)
    sd = 0.5
    c_skip, c_out, c_in, c_noise = dl.edm_preconditioning(sigma, sd)
    assert torch.allclose(c_in**2 * (sigma**2 + sd**2), torch.ones_like(sigma))  # unit-variance input
    # unit-variance training target (x_0 - c_skip x) / c_out when Var(x_0) = σ_d² (Karras et al. App. B.6)
    target_var = ((1 - c_skip) ** 2 * sd**2 + c_skip**2 * sigma**2) / c_out**2
    assert torch.allclose(target_var, torch.ones_like(sigma))
    assert torch.allclose(dl.edm_loss_weight(sigma, sd) * c_out**2, torch.ones_like(sigma))
    assert torch.allclose(c_noise, sigma.log() / 4)
    assert torch.allclose(c_skip, sd**2 * c_in**2)


def test_edm_sample_sigmas_are_log_normal_and_reproducible():
    n = 20_000
    sigma = dl.edm_sample_sigmas(n, P_mean=-1.2, P_std=1.2, generator=torch.Generator().manual_seed(0))
    log_sigma = sigma.log()
    assert abs(log_sigma.mean().item() + 1.2) < 5 * 1.2 / math.sqrt(n)  # 5 standard errors
    assert abs(log_sigma.std().item() - 1.2) < 5 * 1.2 / math.sqrt(2 * n)
    again = dl.edm_sample_sigmas(n, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sigma, again) and sigma.dtype == torch.float32


def test_edm_denoiser_is_c_skip_x_plus_c_out_F_and_its_x0_model_matches_split_prediction():
    calls = {}

    def network(x, c_noise, class_labels=None):
        calls["x"], calls["c_noise"], calls["labels"] = x, c_noise, class_labels
        return torch.tanh(x) * c_noise.view(-1, 1, 1, 1)

    denoiser = dl.EDMDenoiser(network, sigma_data=0.5)
    x, sigma = torch.randn(3, 1, 4, 4, dtype=F64), torch.tensor([0.1, 1.0, 10.0], dtype=F64)
    c_skip, c_out, c_in, c_noise = (c.view(-1, 1, 1, 1) for c in dl.edm_preconditioning(sigma, 0.5))
    d = denoiser(x, sigma, class_labels=torch.tensor([1, 2, 3]))
    assert torch.equal(calls["labels"], torch.tensor([1, 2, 3])) and torch.allclose(calls["x"], c_in * x)
    assert torch.allclose(calls["c_noise"], sigma.log() / 4)
    assert torch.allclose(d, c_skip * x + c_out * network(c_in * x, c_noise.flatten()))
    s = SCHEDULES["cosine"]
    t = torch.tensor([5, 40, 90])
    x_t = torch.randn(3, 1, 4, 4, dtype=F64)
    x0_hat = denoiser.x0_model(s)(x_t, t)
    a, n = (v.view(-1, 1, 1, 1) for v in s.scales(t))
    _, _, c_in_t, c_noise_t = (c.view(-1, 1, 1, 1) for c in dl.edm_preconditioning(n / a, 0.5))
    out = network(c_in_t * x_t / a, c_noise_t.flatten())
    assert torch.allclose(x0_hat, dl.split_prediction("edm", out, x_t, t, s)[0])


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda s, x: dl.make_target("epsilon", x, x, 1, s), "unknown prediction 'epsilon'; choose one of"),
        (lambda s, x: dl.split_prediction("noise", x, x, 1, s), r"\['eps', 'x0', 'v', 'edm'\]"),
        (lambda s, x: dl.loss_weight("min_snr", "sample", 1, s), "unknown prediction"),
        (
            lambda s, x: dl.loss_weight("snr", "eps", 1, s),
            r"unknown weighting 'snr'; choose one of \['uniform'",
        ),
        (lambda s, x: dl.x0_weight_of("velocity", torch.ones(1)), "unknown prediction"),
        (lambda s, x: dl.eps_to_x0(x, x, torch.tensor([1, 2, 3]), s), "t has shape"),
    ],
)
def test_bad_names_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call(SCHEDULES["linear"], torch.zeros(2, 1, 2, 2, dtype=F64))
