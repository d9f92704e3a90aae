"""Consistency models (ddpm_lib.consistency): the boundary condition, the teacher's ODE step,
distillation on the 2-D toy against the exact probability-flow ODE, and sampling."""

import math

import pytest
import torch

import ddpm_lib as dl
from ddpm_lib.consistency import (
    ConsistencyConfig,
    ConsistencyModel,
    consistency_scalings,
    distill_consistency,
    ode_step,
    sample_consistency,
)

MIXTURE = dl.make_2d_mixture("eight_gaussians")


def exact_denoiser(x, sigma):
    """The toy's exact D(x; σ) = E[x_0 | x_0 + σ ε = x]."""
    return MIXTURE.denoise_at(x, torch.ones_like(sigma), sigma).to(x.dtype)


def test_boundary_condition_is_exact_whatever_the_weights():
    torch.manual_seed(0)
    model = ConsistencyModel(2, sigma_min=0.01, sigma_data=0.7)
    for p in model.parameters():  # large random weights: F is far from 0
        torch.nn.init.normal_(p, std=3.0)
    x = torch.randn(64, 2)
    assert torch.equal(model(x, 0.01), x)
    c_skip, c_out, _ = consistency_scalings(torch.tensor([0.01]), 0.01, 0.7)
    assert c_skip.item() == 1.0 and c_out.item() == 0.0
    assert not torch.allclose(model(x, 0.5), x)  # away from σ_min the network matters


def test_scalings_limits_and_bad_input():
    sigma = torch.tensor([1e4])
    c_skip, c_out, c_in = consistency_scalings(sigma, 0.002, 0.5)
    assert c_skip.item() < 1e-8 and abs(c_out.item() - 0.5) < 1e-3 and abs(c_in.item() - 1e-4) < 1e-8
    with pytest.raises(ValueError, match="sigma_min"):
        consistency_scalings(torch.tensor([0.001]), 0.002)
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        ConsistencyModel(2, 0.01)(torch.zeros(3, 3), 1.0)
    with pytest.raises(ValueError, match="decreasing"):
        sample_consistency(ConsistencyModel(2, 0.01), torch.zeros(3, 2), [1.0, 2.0])
    with pytest.raises(ValueError, match="solver"):
        ode_step(exact_denoiser, torch.zeros(2, 2), torch.ones(2), torch.ones(2) / 2, solver="rk4")


def test_ode_step_is_exact_for_point_data_and_heun_beats_euler():
    # single-point data: D = μ at every σ, and the flow is x_σ' = μ + σ'/σ (x_σ - μ): Euler is exact
    mu = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    x = torch.randn(5, 2, dtype=torch.float64)
    sigma, sigma_next = torch.full((5,), 1.0, dtype=torch.float64), torch.full((5,), 0.8, dtype=torch.float64)
    step = ode_step(lambda y, s: mu.expand_as(y), x, sigma, sigma_next, "euler")
    assert torch.allclose(step, mu + 0.8 * (x - mu))
    # the mixture: one Heun step is closer than one Euler step to a 200-step reference
    fine = x.clone()
    grid = torch.linspace(1.0, 0.8, 201, dtype=torch.float64)
    for a, b in zip(grid[:-1], grid[1:]):
        fine = ode_step(exact_denoiser, fine, a.expand(5), b.expand(5), "heun")
    err = {s: (ode_step(exact_denoiser, x, sigma, sigma_next, s) - fine).norm(dim=1).mean() for s in ("euler", "heun")}
    assert err["heun"] < err["euler"] / 2, err


def _short_run(seed=0, steps=150):
    config = ConsistencyConfig(sigma_min=0.01, sigma_max=80.0, steps=steps, batch_size=128, hidden=64,
                               sigma_data=0.7, target_decay=0.9, lr=2e-3, seed=seed)
    return distill_consistency(exact_denoiser, lambda n, g: MIXTURE.sample(n, g), config)


def test_short_run_is_deterministic_with_a_seed():
    a, b, c = _short_run(0, 40), _short_run(0, 40), _short_run(1, 40)
    assert a.losses == b.losses
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)
    assert a.losses != c.losses


def test_target_is_the_moving_average_of_the_online_network():
    result = _short_run(0, 5)
    assert any(not torch.equal(p, q) for p, q in zip(result.model.parameters(), result.target.parameters()))
    assert all(not p.requires_grad for p in result.target.parameters())


def test_distilled_one_step_model_beats_one_step_solvers_and_follows_the_ode():
    """1500 steps of distillation (a few seconds): one evaluation lands far closer to the exact
    ODE solution, and to the data, than any ODE solver with one evaluation (all of them return
    E[x_0 | x_T], near the centre)."""
    schedule = dl.make_schedule("linear", num_timesteps=1000)
    a, s = schedule.scales(torch.tensor([0.0, 999.0], dtype=torch.float64))
    sigma_min, sigma_max = (s / a).tolist()
    config = ConsistencyConfig(sigma_min=sigma_min, sigma_max=sigma_max, steps=1500, batch_size=256, hidden=128,
                               sigma_data=0.7, target_decay=0.9, lr=2e-3, seed=0)
    result = distill_consistency(exact_denoiser, lambda n, g: MIXTURE.sample(n, g), config)
    assert math.isfinite(result.losses[-1]) and sum(result.losses[-100:]) < sum(result.losses[:100]) / 5

    n = 500
    x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    truth = MIXTURE.sample(n, torch.Generator().manual_seed(1), dtype=torch.float64)
    model = MIXTURE.as_model(schedule)
    exact = dl.sample(model, x_T.shape, schedule, "dpmpp_2m", 200, x_T=x_T, dtype=torch.float64)
    one_step_solver = dl.sample(model, x_T.shape, schedule, "ddim", 1, x_T=x_T, dtype=torch.float64)
    cm = sample_consistency(result.target, x_T.float(), [sigma_max]).double()

    def ode_error(x):
        return (x - exact).norm(dim=1).mean().item()

    assert ode_error(cm) < ode_error(one_step_solver) / 3, (ode_error(cm), ode_error(one_step_solver))
    assert dl.sliced_wasserstein(cm, truth) < dl.sliced_wasserstein(one_step_solver, truth) / 3
    # more steps: each costs one evaluation and stays a valid sample (finite, same shape)
    four = sample_consistency(result.target, x_T.float(), [sigma_max, 0.8, 0.3, 0.1], torch.Generator().manual_seed(0))
    assert four.shape == (n, 2) and torch.isfinite(four).all()
