"""Forward process: add_noise and q_posterior against diffusers, the chain against the closed form,
the posterior against Bayes' rule on a grid."""

import math

import pytest
import torch
from diffusers import DDPMScheduler

import ddpm_lib as dl
from ddpm_lib.schedules import NoiseSchedule

F64 = torch.float64


@pytest.mark.parametrize("config", [{}, {"beta_schedule": "squaredcos_cap_v2"}])
def test_add_noise_equals_diffusers(config):
    scheduler = DDPMScheduler(num_train_timesteps=1000, **config)
    s = dl.schedule_from_diffusers(scheduler)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(6, 3, 8, 8, generator=g), torch.randn(6, 3, 8, 8, generator=g)
    t = torch.tensor([0, 1, 10, 500, 998, 999])
    assert torch.equal(dl.add_noise(x0, noise, t, s), scheduler.add_noise(x0, noise, t))  # bit for bit
    # one int for the whole batch
    assert torch.equal(dl.add_noise(x0, noise, 7, s), scheduler.add_noise(x0, noise, torch.full((6,), 7)))


def _diffusers_in_float64(scheduler):
    """Make DDPMScheduler.step compute in float64 from its own ᾱ (exact math on identical inputs)."""
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(F64)
    scheduler.one = torch.tensor(1.0, dtype=F64)
    return scheduler


def _step_mean(scheduler, x0, x_t, t):
    """The mean of DDPMScheduler.step with the true x0 as model output: the sample minus its noise."""
    prev = scheduler.step(x0, t, x_t, generator=torch.Generator().manual_seed(t)).prev_sample
    if t == 0:
        return prev
    z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(t), dtype=x0.dtype)
    return prev - scheduler._get_variance(t).sqrt() * z


@pytest.mark.parametrize("config", [{}, {"beta_schedule": "squaredcos_cap_v2"}])
def test_q_posterior_equals_ddpm_step_mean_and_both_variances(config):
    """Identical ᾱ in float64: diffusers' DDPM step and ours are the same formulas (eq. 7 of Ho et al.)."""
    scheduler = _diffusers_in_float64(DDPMScheduler(prediction_type="sample", clip_sample=False, **config))
    ab = scheduler.alphas_cumprod
    s = NoiseSchedule.from_log_snr(ab.log() - torch.log1p(-ab), dtype=F64)  # the same ᾱ, exactly
    g = torch.Generator().manual_seed(1)
    x0, x_t = torch.randn(2, 3, 4, 4, generator=g, dtype=F64), torch.randn(2, 3, 4, 4, generator=g, dtype=F64)
    for t in (0, 1, 2, 10, 500, 998, 999):
        mean, var = dl.q_posterior(x0, x_t, t, s)
        assert torch.allclose(mean, _step_mean(scheduler, x0, x_t, t), atol=1e-10), t
        if t > 0:
            assert var.flatten()[0].item() == pytest.approx(scheduler._get_variance(t).item(), rel=1e-9)
            fixed_large = scheduler._get_variance(t, variance_type="fixed_large").item()  # σ² = β_t
            assert s.betas[t].item() == pytest.approx(fixed_large, rel=1e-9)
        else:
            assert var.flatten()[0].item() == 0 and torch.allclose(mean, x0)


def test_q_posterior_matches_default_float32_diffusers_up_to_its_rounding():
    """In float32 diffusers computes β_t = 1 - ᾱ_t/ᾱ_{t-1} from rounded ᾱ ≈ 1 - 1e-4: about 1e-3 relative
    error at the first steps (ours comes from float64 log-SNR), hence the tolerance."""
    scheduler = DDPMScheduler(prediction_type="sample", clip_sample=False)
    s = dl.schedule_from_diffusers(scheduler)
    x0, x_t = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    for t in (0, 1, 5, 100, 999):
        mean, var = dl.q_posterior(x0, x_t, t, s)
        assert torch.allclose(mean, _step_mean(scheduler, x0, x_t, t), atol=2e-3), t
        if t > 0:
            assert var.flatten()[0].item() == pytest.approx(scheduler._get_variance(t).item(), rel=2e-3)


def test_posterior_coefficients_are_ho_et_al_eq_7():
    s = dl.make_schedule("cosine", 100).to(dtype=F64)
    beta, ab = s.betas, s.alphas_cumprod
    ab_prev = torch.cat([torch.ones(1, dtype=F64), ab[:-1]])
    t = torch.arange(100)
    assert torch.allclose(dl.posterior_mean_coef1(t, s), ab_prev.sqrt() * beta / (1 - ab), rtol=1e-9)
    assert torch.allclose(
        dl.posterior_mean_coef2(t, s), (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab), rtol=1e-9
    )
    assert torch.allclose(
        dl.posterior_variance(t, s), (1 - ab_prev) / (1 - ab) * beta, rtol=1e-9, atol=1e-300
    )


def _grid_posterior(x0, x_t, prev_given_x0, step):
    """Mean and variance of p(x_s | x_t, x0) ∝ q(x_t | x_s) q(x_s | x0), by brute force on a 1-D grid."""
    (m_s, v_s), (alpha, var_step) = prev_given_x0, step
    # the posterior lies between the prior mean and x_t / α, within a few of the wider standard deviation
    sd = max(math.sqrt(v_s), math.sqrt(var_step) / alpha)
    lo, hi = min(m_s, x_t / alpha) - 10 * sd, max(m_s, x_t / alpha) + 10 * sd
    grid = torch.linspace(lo, hi, 400_001, dtype=F64)
    log_p = -((x_t - alpha * grid) ** 2) / (2 * var_step) - (grid - m_s) ** 2 / (2 * v_s)
    p = torch.exp(log_p - log_p.max())
    p = p / p.sum()
    mean = (p * grid).sum()
    return mean.item(), (p * (grid - mean) ** 2).sum().item()


@pytest.mark.parametrize("name", ["linear", "cosine", "ve", "simple"])
@pytest.mark.parametrize("t", [1, 7, 25, 48])
def test_q_posterior_matches_bayes_rule_on_a_grid(name, t):
    """The transition is built naively from the schedule's scales: x_t = (a_t/a_{t-1}) x_{t-1} + noise of
    variance s_t² - (a_t/a_{t-1})² s_{t-1}² (for VP that is √α_t and β_t from the betas)."""
    s = dl.make_schedule(name, 50).to(dtype=F64)
    a, n = (v.tolist() for v in s.scales(torch.tensor([t - 1, t])))
    x0 = 0.7
    x_t = a[1] * x0 - 0.8 * n[1]  # a plausible x_t (ε = -0.8)
    if s.kind == "vp":
        step = (math.sqrt(1 - s.betas[t].item()), s.betas[t].item())
    else:
        alpha = a[1] / a[0]
        step = (alpha, n[1] ** 2 - alpha**2 * n[0] ** 2)
    mean_ref, var_ref = _grid_posterior(x0, x_t, (a[0] * x0, n[0] ** 2), step)
    mean, var = dl.q_posterior(torch.tensor([x0], dtype=F64), torch.tensor([x_t], dtype=F64), t, s)
    assert mean.item() == pytest.approx(mean_ref, rel=1e-6, abs=1e-9)
    assert var.item() == pytest.approx(var_ref, rel=1e-5)


def test_q_posterior_skipping_steps_matches_bayes_rule():
    """q(x_s | x_t, x_0) for s = t - 5: the transition composes five VP steps."""
    s = dl.make_schedule("linear", 50, beta_start=1e-3, beta_end=0.2).to(dtype=F64)
    t, t_prev = 30, 25
    alphas = 1 - s.betas[t_prev + 1 : t + 1]
    step = (alphas.prod().sqrt().item(), 1 - alphas.prod().item())
    ab = s.alphas_cumprod[t_prev].item()
    x_t = s.alphas_cumprod[t].sqrt().item() * 1.2 + 0.5 * (1 - s.alphas_cumprod[t]).sqrt().item()
    mean_ref, var_ref = _grid_posterior(1.2, x_t, (math.sqrt(ab) * 1.2, 1 - ab), step)
    mean, var = dl.q_posterior(
        torch.tensor([1.2], dtype=F64), torch.tensor([x_t], dtype=F64), t, s, t_prev=t_prev
    )
    assert mean.item() == pytest.approx(mean_ref, rel=1e-6) and var.item() == pytest.approx(var_ref, rel=1e-5)


@pytest.mark.parametrize("name", ["linear", "ve", "simple"])
def test_closed_form_matches_the_statistics_of_the_step_by_step_chain(name):
    """q(x_t | x_0) = N(a_t x_0, s_t²) vs. the chain run N times from the same x_0 (Ho et al. eq. 4).

    Bounds: 5 standard errors for the mean (s_t/√N) and for the variance (s_t² √(2/N)); the run is seeded.
    """
    kwargs = {"beta_start": 1e-3, "beta_end": 0.2} if name == "linear" else {}
    s = dl.make_schedule(name, 40, **kwargs).to(dtype=F64)
    N, x0 = 20_000, 1.5
    states = dl.forward_chain(
        torch.full((N, 1), x0, dtype=F64), s, generator=torch.Generator().manual_seed(0)
    )
    assert states.shape == (41, N, 1) and bool((states[0] == x0).all())
    a, n = s.scales(torch.arange(40))
    xs = states[1:, :, 0]  # (T, N), states[k] is the paper's x_k = index k - 1
    assert bool(((xs.mean(1) - a * x0).abs() < 5 * n / math.sqrt(N)).all())
    assert bool(((xs.var(1) - n**2).abs() < 5 * n**2 * math.sqrt(2 / N)).all())


def test_q_step_from_clean_data_is_add_noise_at_t0():
    s = dl.make_schedule("cosine", 20)
    x0, noise = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    assert torch.allclose(dl.q_step(x0, noise, 0, s), dl.add_noise(x0, noise, 0, s), atol=1e-7)
    x1 = dl.q_step(x0, noise, 1, s)
    assert torch.allclose(x1, (1 - s.betas[1]).sqrt() * x0 + s.betas[1].sqrt() * noise, atol=1e-6)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda s, x: dl.add_noise(x, x, torch.tensor([1, 2, 3]), s), "t has shape"),
        (lambda s, x: dl.add_noise(x, x[:1], 1, s), "noise has shape"),
        (lambda s, x: dl.q_posterior(x, x, torch.tensor([1, 2]), s), "t has shape"),
        (lambda s, x: dl.q_posterior(x, x[:1], 1, s), "x_t has"),
        (lambda s, x: dl.q_posterior(x, x, 3, s, t_prev=3), "t_prev must be earlier"),
        (lambda s, x: dl.q_step(x, x, 10, s), r"\[0, 9\]"),
        (lambda s, x: dl.forward_chain(x, s, steps=11), r"steps must lie in \[1, 10\]"),
    ],
)
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call(dl.make_schedule("linear", 10), torch.zeros(4, 1, 2, 2))
