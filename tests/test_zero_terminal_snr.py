"""Zero terminal SNR (issue 19, item 2): every schedule with every sampler and spacing stays finite.

At t = T-1 of ``rescale_zero_terminal_snr`` schedules and of "simple", a_t = 0 and σ = ∞. The
grid computes there with ᾱ = 2^-24 (diffusers' clamp) or with half the SNR of step T-2 when
that is lower, so σ stays finite and grows with t; every grid is checked.
"""

from __future__ import annotations

import math

import pytest
import torch

import ddpm_lib as dl
from ddpm_lib import samplers as S

T = 1000
VP = ["linear", "scaled_linear", "cosine", "sigmoid", "geodiff_sigmoid"]


def _schedules() -> dict[str, dl.NoiseSchedule]:
    out = {name: dl.make_schedule(name, num_timesteps=T) for name in dl.SCHEDULES}
    out |= {f"{name}+zero_snr": dl.rescale_zero_terminal_snr(out[name]) for name in VP}
    return out


SCHEDULES = _schedules()


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def tiny_model(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A fixed, imperfect 'network' whose output depends on x_t and t (finite everywhere)."""
    return 0.9 * torch.tanh(x_t) + 1e-4 * t.to(x_t.dtype).reshape(-1, *([1] * (x_t.ndim - 1)))


def _levels(name: str, spacing: str, steps: int = 4) -> S.NoiseLevels:
    key = (name, spacing, steps)
    if key not in _LEVELS:  # σ spacings invert the schedule by bisection: compute each grid once
        _LEVELS[key] = S.noise_levels(SCHEDULES[name], steps, spacing)
    return _LEVELS[key]


_LEVELS: dict[tuple[str, str, int], S.NoiseLevels] = {}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_every_sampler_and_spacing_gives_finite_samples(name):
    x_T = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    for spacing in S.SPACINGS:
        levels = _levels(name, spacing)
        for sampler, fn in S.SAMPLERS.items():
            options = {"n_steps_each": 2} if sampler == "langevin" else {}
            for prediction in ("eps", "v"):
                denoise = dl.make_denoiser(tiny_model, levels, prediction)
                x = fn(denoise, x_T, levels, generator=torch.Generator().manual_seed(1), **options)
                assert torch.isfinite(x).all(), (name, sampler, spacing, prediction)


@pytest.mark.parametrize("name", ["simple", "linear+zero_snr"])
def test_dl_sample_with_every_sampler_is_finite(name):
    for sampler in S.SAMPLERS:
        x = dl.sample(tiny_model, (2, 1, 4, 4), SCHEDULES[name], sampler, steps=3,
                      generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(x).all(), sampler


@pytest.mark.parametrize("name", ["linear+zero_snr", "cosine+zero_snr", "simple"])
def test_grids_are_finite_and_strictly_decreasing(name):
    for spacing in S.SPACINGS:
        for steps in (1, 4, 10):
            levels = _levels(name, spacing, steps)
            sigma = levels.sigma
            assert torch.isfinite(sigma).all() and (levels.a[:-1] > 0).all(), (spacing, steps)
            assert (sigma[1:] < sigma[:-1]).all(), (spacing, steps)
    every = S.noise_levels(SCHEDULES[name], T, "trailing")  # T-1 and T-2 both on the grid
    assert every.t[0] == T - 1 and every.sigma[0] > every.sigma[1]


def test_the_clamp_is_diffusers_where_that_keeps_sigma_growing():
    # "simple": σ_{T-2} = 999 < 4096, so the step at SNR 0 gets ᾱ = 2^-24 exactly, as diffusers
    simple = S.noise_levels(SCHEDULES["simple"], 10, "trailing")
    alpha_bar = 1 / (1 + simple.sigma[0] ** 2)  # the ᾱ of the VP process with this σ
    assert simple.t[0] == T - 1 and math.isclose(float(alpha_bar), 2.0**-24, rel_tol=1e-6)
    # rescaled linear: σ_{T-2} ≈ 15406 > 4096, so half the SNR of step T-2: σ × √2
    linear = SCHEDULES["linear+zero_snr"]
    levels = S.noise_levels(linear, 10, "trailing")
    sigma_before = float(linear.sigma(torch.tensor(T - 2.0, dtype=torch.float64)))
    assert math.isclose(float(levels.sigma[0]), math.sqrt(2) * sigma_before, rel_tol=1e-6)


def test_sigma_spacings_start_at_the_clamped_sigma():
    levels = _levels("cosine+zero_snr", "karras")
    trailing = _levels("cosine+zero_snr", "trailing")
    assert math.isclose(float(levels.sigma[0]), float(trailing.sigma[0]), rel_tol=1e-6)
    assert T - 2 < float(levels.t[0]) <= T - 1


def test_eps_prediction_at_zero_snr_does_not_divide_by_zero():
    levels = S.noise_levels(SCHEDULES["linear+zero_snr"], 5, "trailing")
    denoise = dl.make_denoiser(tiny_model, levels, "eps")
    x0, eps = denoise(torch.randn(2, 1, 4, 4), 0)
    assert torch.isfinite(x0).all() and torch.isfinite(eps).all()


def test_an_unusable_grid_is_a_clear_error():
    schedule = SCHEDULES["linear"]
    with pytest.raises(ValueError, match="strictly decreasing"):
        S.noise_levels(schedule, 5, "karras", sigma_min=10.0, sigma_max=1.0)  # σ would grow
