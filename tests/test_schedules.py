"""Schedules: parity with diffusers, the kinds (VP, VE, simple), interpolation, shifts, bad input."""

import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

import ddpm_lib as dl
from ddpm_lib.schedules import NoiseSchedule

T = 1000

# (our name, our kwargs, diffusers config) that must give identical arrays
PARITY = [
    ("linear", {"beta_start": 1e-4, "beta_end": 0.02}, {"beta_schedule": "linear"}),
    ("linear", {"beta_start": 1e-3, "beta_end": 0.02}, {"beta_schedule": "linear", "beta_start": 1e-3}),
    (
        "scaled_linear",
        {"beta_start": 0.00085, "beta_end": 0.012},
        {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    ),
    ("cosine", {}, {"beta_schedule": "squaredcos_cap_v2"}),
    ("geodiff_sigmoid", {"beta_start": 1e-4, "beta_end": 0.02}, {"beta_schedule": "sigmoid"}),
]


@pytest.mark.parametrize("name,kwargs,config", PARITY)
def test_betas_and_alphas_cumprod_equal_diffusers_bit_for_bit(name, kwargs, config):
    ours = dl.make_schedule(name, num_timesteps=T, **kwargs)
    theirs = DDPMScheduler(num_train_timesteps=T, **config)
    assert ours.betas.dtype == torch.float32
    assert torch.equal(ours.betas, theirs.betas)
    assert torch.equal(ours.alphas, theirs.alphas)
    assert torch.equal(ours.alphas_cumprod, theirs.alphas_cumprod)


@pytest.mark.parametrize("name,kwargs,config", PARITY[:3])
def test_zero_terminal_snr_rescale_equals_diffusers(name, kwargs, config):
    ours = dl.rescale_zero_terminal_snr(dl.make_schedule(name, num_timesteps=T, **kwargs))
    theirs = DDPMScheduler(num_train_timesteps=T, rescale_betas_zero_snr=True, **config)
    assert torch.equal(ours.betas, theirs.betas)
    assert torch.equal(ours.alphas_cumprod, theirs.alphas_cumprod)
    assert ours.alphas_cumprod[-1] == 0 and ours.snr(T - 1) == 0
    assert ours.alpha_bar(0).item() == pytest.approx(
        dl.make_schedule(name, T, **kwargs).alpha_bar(0).item(), rel=1e-5
    )


def test_zero_terminal_snr_keeps_sqrt_alpha_bar_affine():
    """Lin et al. 2024: √ᾱ is shifted and scaled, so it stays an affine function of the old √ᾱ."""
    old = dl.make_schedule("linear", 200).to(dtype=torch.float64)
    new = dl.rescale_zero_terminal_snr(old)
    x, y = old.alphas_cumprod.sqrt(), new.alphas_cumprod.sqrt()
    slope = (y[0] - y[-1]) / (x[0] - x[-1])
    assert torch.allclose(y, y[-1] + slope * (x - x[-1]), atol=1e-12)


def test_functions_of_t_agree_with_the_arrays():
    s = dl.make_schedule("cosine", T)
    t = torch.arange(T)
    ab = s.alphas_cumprod.double()
    assert torch.allclose(s.alpha_bar(t).double(), ab, rtol=1e-5, atol=1e-7)
    # σ and SNR from ᾱ, on steps where 1 - ᾱ holds enough float32 digits
    mid = slice(50, T - 1)
    assert torch.allclose(s.snr(t)[mid].double(), (ab / (1 - ab))[mid], rtol=1e-3)
    assert torch.allclose(s.sigma(t)[mid].double(), ((1 - ab) / ab).sqrt()[mid], rtol=1e-3)
    assert torch.allclose(s.log_snr(t), s.snr(t).log(), rtol=1e-5, atol=1e-5)
    assert torch.allclose(s.sigmas, s.sigma(t))
    a, n = s.scales(t)
    assert torch.allclose(a, s.sqrt_alpha_bar(t)) and torch.allclose(n, s.sqrt_one_minus_alpha_bar(t))


def test_small_noise_levels():
    """VP: float32 like diffusers, exact in float64. VE: σ_t is kept in float64, so a float32 schedule
    still has σ_0 = 0.002 although float32 ᾱ_0 = 1/(1 + σ_0²) rounds to within 1 ulp of 1."""
    s = dl.make_schedule("linear", T)
    assert s.sqrt_one_minus_alpha_bar(0).item() == pytest.approx(
        (1 - s.alphas_cumprod[0].item()) ** 0.5, rel=1e-6
    )
    d = s.to(dtype=torch.float64)  # 1 - ᾱ_0 = β_0 exactly
    assert d.sqrt_one_minus_alpha_bar(0).item() == pytest.approx(d.betas[0].sqrt().item(), rel=1e-12)
    v = dl.make_schedule("ve", T, sigma_min=0.002, sigma_max=80)
    assert v.sigma(0).item() == pytest.approx(0.002, rel=1e-6)
    assert v.sigma(T - 1).item() == pytest.approx(80.0, rel=1e-6)


@pytest.mark.parametrize("name", list(dl.SCHEDULES))
def test_every_kind_splits_the_same_snr(name):
    s = dl.make_schedule(name, 100).to(dtype=torch.float64)
    t = torch.arange(99)  # the last step of "simple" has SNR 0
    a, n = s.scales(t)
    assert torch.allclose(a**2 / n**2, s.snr(t), rtol=1e-10)
    assert torch.allclose(s.snr(t), s.alpha_bar(t) / (1 - s.alpha_bar(t)), rtol=1e-8)
    assert bool((s.log_snrs[1:] < s.log_snrs[:-1]).all()), "noise must grow with t"
    expected_relation = {"vp": a**2 + n**2, "ve": a, "interpolation": a + n}[s.kind]
    assert torch.allclose(expected_relation, torch.ones_like(a))
    assert s.variance_preserving == (s.kind == "vp")


def test_simple_schedule_is_chapter_3_corrupt():
    s = dl.make_schedule("simple", 10)
    amount = torch.arange(1, 11) / 10  # index t is the paper's t + 1
    assert torch.allclose(s.noise_scale(torch.arange(10)), amount, atol=1e-6)
    assert torch.allclose(s.signal_scale(torch.arange(10)), 1 - amount, atol=1e-6)
    assert s.kind == "interpolation" and not s.variance_preserving


def test_ve_sigmas_are_geometric_and_interpolation_is_exact_between_steps():
    s = dl.make_schedule("ve", 11, sigma_min=0.01, sigma_max=100.0).to(dtype=torch.float64)
    t = torch.tensor([0.0, 2.5, 7.25, 10.0], dtype=torch.float64)
    assert torch.allclose(s.sigma(t), 0.01 * 1e4 ** (t / 10), rtol=1e-12)
    assert torch.allclose(s.signal_scale(t), torch.ones(4, dtype=torch.float64))


def test_float_t_interpolates_log_snr_linearly():
    s = dl.make_schedule("cosine", 50)
    ints = torch.arange(50)
    assert torch.equal(s.log_snr(ints.float()), s.log_snr(ints))
    mid = s.log_snr(torch.arange(49) + 0.5)
    assert torch.allclose(mid, (s.log_snrs[:-1] + s.log_snrs[1:]) / 2, rtol=1e-6)
    assert s.alpha_bar(3).shape == () and s.alpha_bar(torch.tensor([[1.5]])).shape == (1, 1)


def test_float_t_on_a_zero_terminal_snr_schedule_stays_finite_and_monotone():
    s = dl.rescale_zero_terminal_snr(dl.make_schedule("linear", 20))
    t = torch.linspace(17, 19, 41)
    ab = s.alpha_bar(t)
    assert bool(torch.isfinite(ab).all()) and ab[-1] == 0
    assert bool((ab[1:] <= ab[:-1]).all())
    assert s.alpha_bar(18.5).item() == pytest.approx(s.alpha_bar(18).item() / 2, rel=1e-5)  # linear in ᾱ


def test_resolution_shift_and_input_scaling_move_log_snr():
    s = dl.make_schedule("cosine", 100)
    shifted = dl.resolution_shift(s, image_size=256, base_size=64)
    assert torch.allclose(
        shifted.log_snrs - s.log_snrs, torch.full((100,), 2 * math.log(64 / 256)), atol=1e-5
    )
    scaled = dl.scale_input(s, 0.5)
    t = torch.arange(99)
    assert torch.allclose(scaled.snr(t) / s.snr(t), torch.full((99,), 0.25), rtol=1e-4)
    assert scaled.kind == "vp" and torch.allclose(
        scaled.alphas_cumprod, scaled.alpha_bar(torch.arange(100)), rtol=1e-5, atol=1e-7
    )
    ve = dl.shift_log_snr(dl.make_schedule("ve", 10), -1.0)
    assert ve.kind == "ve" and ve.sigma(0).item() == pytest.approx(0.002 * math.exp(0.5), rel=1e-5)


def test_to_changes_dtype_and_keeps_values():
    s = dl.make_schedule("cosine", 100)
    d = s.to(dtype=torch.float64)
    assert d.betas.dtype == d.alphas_cumprod.dtype == d.alpha_bar(5).dtype == torch.float64
    assert s.betas.dtype == torch.float32, "to() returns a new schedule"
    assert torch.allclose(d.alphas_cumprod, s.alphas_cumprod.double(), rtol=1e-5)
    assert d.name == "cosine" and d.args == s.args and len(d) == 100


@pytest.mark.parametrize("name,kwargs,config", PARITY)
def test_schedule_from_diffusers_round_trip(name, kwargs, config):
    scheduler = DDPMScheduler(num_train_timesteps=T, **config)
    s = dl.schedule_from_diffusers(scheduler)
    assert torch.equal(s.alphas_cumprod, scheduler.alphas_cumprod)
    assert s.name == name
    assert torch.equal(dl.make_schedule(s.name, **s.args).betas, scheduler.betas)


def test_schedule_from_other_diffusers_schedulers():
    ddim = DDIMScheduler(
        num_train_timesteps=T,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        rescale_betas_zero_snr=True,
    )
    s = dl.schedule_from_diffusers(ddim)
    assert torch.equal(s.alphas_cumprod, ddim.alphas_cumprod) and "zero_terminal_snr" in s.name
    trained = dl.schedule_from_diffusers(DDPMScheduler(num_train_timesteps=3, trained_betas=[0.1, 0.2, 0.3]))
    assert trained.name == "custom" and torch.allclose(trained.betas, torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="no betas"):
        dl.schedule_from_diffusers(object())


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: dl.make_schedule("cosinus"), "unknown schedule 'cosinus'; choose one of"),
        (lambda: dl.make_schedule("linear", num_timesteps=0), "integer >= 1"),
        (lambda: dl.make_schedule("linear", num_timesteps=10.5), "integer >= 1"),
        (lambda: dl.make_schedule("linear", beta_start=0.02, beta_end=0.02), "beta_end must be greater"),
        (
            lambda: dl.make_schedule("scaled_linear", beta_start=0.02, beta_end=1e-4),
            "beta_end must be greater",
        ),
        (lambda: dl.make_schedule("linear", beta_start=0.5, beta_end=1.5), r"lie in \(0, 1\)"),
        (lambda: dl.make_schedule("cosine", beta_start=0.1), r"takes the arguments \['s', 'max_beta'\]"),
        (lambda: dl.make_schedule("ve", sigma_min=80, sigma_max=1), "sigma_min < sigma_max"),
        (lambda: NoiseSchedule([0.1, 1.2, 0.3]), r"betas must lie in \(0, 1\)"),
        (lambda: NoiseSchedule([0.0, 0.1]), r"betas must lie in \(0, 1\)"),
        (lambda: NoiseSchedule([0.1, 1.0, 0.5]), r"only the last may equal 1"),
        (lambda: dl.make_schedule("linear", 10).alpha_bar(10), r"timesteps must lie in \[0, 9\]"),
        (lambda: dl.make_schedule("linear", 10).snr(torch.tensor([-0.5, 3.0])), r"\[0, 9\]"),
        (lambda: dl.rescale_zero_terminal_snr(dl.make_schedule("ve", 10)), "variance-preserving"),
        (lambda: dl.resolution_shift(dl.make_schedule("linear", 10), 0), "positive"),
        (lambda: dl.scale_input(dl.make_schedule("linear", 10), -1.0), "positive"),
    ],
)
def test_bad_input_raises_value_error_that_says_what_is_allowed(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_a_final_beta_of_one_is_allowed():
    s = NoiseSchedule([0.1, 0.5, 1.0])
    assert s.alphas_cumprod[-1] == 0 and torch.isinf(s.log_snr(2)) and s.sigma(2) == math.inf


def test_float64_timesteps_get_float64_answers_from_a_float32_schedule():
    s = dl.make_schedule("linear", T)
    ab = s.alphas_cumprod.double()
    lam = (ab / (1 - ab)).log()  # λ of the float32 arrays, in float64
    t = torch.tensor([0.25, 17.5, 998.9], dtype=torch.float64)
    lo = t.floor().long()
    expected = lam[lo] + (t - lo) * (lam[lo + 1] - lam[lo])
    assert s.log_snr(t).dtype == torch.float64 and s.scales(t)[0].dtype == torch.float64
    assert torch.allclose(s.log_snr(t), expected, rtol=1e-12)
    assert s.log_snr(t.float()).dtype == torch.float32
