"""ddpm_lib.toy: the exact noised density, score and optimal predictors of Gaussian mixtures."""

import math

import pytest
import torch

import ddpm_lib as dl

F64 = torch.float64


def schedule_scales(schedule, t):
    """(a_t, s_t) in float64."""
    return tuple(u.to(F64) for u in schedule.scales(t))


@pytest.fixture(scope="module")
def schedule():
    return dl.make_schedule("linear", num_timesteps=1000, beta_start=1e-4, beta_end=0.02)


def _noised(mixture, n, t, schedule, seed=0):
    """x_t = a_t x_0 + s_t ε drawn from the forward process, with its t as a (n,) tensor."""
    g = torch.Generator().manual_seed(seed)
    x0 = mixture.sample(n, g, dtype=F64)
    t = torch.as_tensor(t).expand(n) if torch.as_tensor(t).ndim == 0 else torch.as_tensor(t)
    a, s = schedule_scales(schedule, t)
    return a[:, None] * x0 + s[:, None] * torch.randn(n, mixture.dim, generator=g, dtype=F64), t, x0


@pytest.mark.parametrize("mixture", [dl.make_2d_mixture("ellipses"), dl.make_mixture(16, k=4, seed=1)])
@pytest.mark.parametrize("t", [torch.tensor(0), torch.tensor(250.5, dtype=F64), torch.tensor([3, 400, 999] * 4)])
def test_score_is_the_gradient_of_the_noised_log_density(mixture, t, schedule):
    n = 12
    x, t, _ = _noised(mixture, n, t, schedule)
    x = x.requires_grad_()
    (grad,) = torch.autograd.grad(mixture.noised_log_prob(x, t, schedule).sum(), x)
    torch.testing.assert_close(mixture.score(x.detach(), t, schedule), grad, rtol=1e-9, atol=1e-9)


def test_clean_density_integrates_to_one():
    mixture = dl.make_2d_mixture("two_moons")
    u = torch.linspace(-2.5, 2.5, 401, dtype=F64)
    grid = torch.cartesian_prod(u, u)
    mass = mixture.log_prob(grid).exp().sum() * (u[1] - u[0]) ** 2
    assert abs(float(mass) - 1) < 1e-3


def test_single_gaussian_denoiser_is_the_wiener_filter(schedule):
    """One component: E[x_0 | x_t] = μ + a Σ (a² Σ + s² I)⁻¹ (x_t - a μ), solved independently."""
    g = dl.make_2d_mixture("gaussian")
    x, t, _ = _noised(g, 20, torch.tensor([10, 300, 600, 900] * 5), schedule)
    a, s = schedule_scales(schedule, t)
    mu, cov = g.means[0], g.covs[0]
    expected = torch.stack(
        [mu + a_i * cov @ torch.linalg.solve(a_i**2 * cov + s_i**2 * torch.eye(2, dtype=F64), x_i - a_i * mu)
         for x_i, a_i, s_i in zip(x, a, s)]
    )
    torch.testing.assert_close(g.denoise_x0(x, t, schedule), expected, rtol=1e-10, atol=1e-10)
    # v = a ε - s x_0 with ε = (x_t - a x_0) / s: E[v | x_t] = (a x_t - (a² + s²) E[x_0 | x_t]) / s
    a_, s_ = a[:, None], s[:, None]
    expected_v = (a_ * x - (a_**2 + s_**2) * expected) / s_
    torch.testing.assert_close(g.predict_v(x, t, schedule), expected_v, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("mixture", [dl.make_2d_mixture("spiral"), dl.make_mixture(8, k=3, seed=2)])
def test_predictors_are_consistent(mixture, schedule):
    """Tweedie: x0 = (x + s² ∇log p) / a; x = a x0 + s eps; v = a eps - s x0."""
    x, t, _ = _noised(mixture, 30, torch.linspace(0, 999, 30).round().long(), schedule)
    a, s = (u[:, None] for u in schedule_scales(schedule, t))
    x0 = mixture.denoise_x0(x, t, schedule)
    eps = mixture.predict_eps(x, t, schedule)
    torch.testing.assert_close(a * x0 + s * eps, x, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(x0, (x + s**2 * mixture.score(x, t, schedule)) / a, rtol=1e-7, atol=1e-7)
    # v through the library's own conversion (targets.x0_to_v: v = (a x_t - (a² + s²) x0) / s), not the toy's
    torch.testing.assert_close(mixture.predict_v(x, t, schedule), dl.x0_to_v(x0, x, t, schedule),
                               rtol=1e-6, atol=1e-6)


def test_optimal_denoiser_beats_perturbations(schedule):
    """E[x_0 | x_t] minimises the mean squared error: nudging it in any direction costs."""
    mixture = dl.make_2d_mixture("eight_gaussians")
    x, t, x0 = _noised(mixture, 20000, torch.tensor(150), schedule, seed=3)
    x0_hat = mixture.denoise_x0(x, t, schedule)
    mse = ((x0_hat - x0) ** 2).sum(1).mean()
    for shift in (torch.tensor([0.05, 0.0]), torch.tensor([0.0, -0.05]), 0.05 * x0_hat):
        assert ((x0_hat + shift - x0) ** 2).sum(1).mean() > mse


def test_samples_have_the_mixture_moments():
    mixture = dl.make_mixture(4, k=3, seed=5)
    x = mixture.sample(200_000, torch.Generator().manual_seed(0), dtype=F64)
    torch.testing.assert_close(x.mean(0), mixture.mean(), atol=0.01, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), mixture.covariance(), atol=0.01, rtol=0)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_exact_model_on_image_shaped_inputs(prediction, schedule):
    mixture = dl.make_mixture(12, k=3, seed=0)  # 12 = 3 x 2 x 2
    model = mixture.as_model(schedule, prediction)
    x = torch.randn(5, 3, 2, 2)
    t = torch.tensor([0, 10, 500, 998, 999])
    out = model(x, t)
    assert out.shape == x.shape and out.dtype == torch.float32
    flat = model(x.reshape(5, 12).double(), t)
    assert flat.dtype == F64
    torch.testing.assert_close(out.reshape(5, 12), flat.float(), rtol=1e-5, atol=1e-5)
    expected = {"eps": mixture.predict_eps, "x0": mixture.denoise_x0, "v": mixture.predict_v}[prediction]
    torch.testing.assert_close(flat, expected(x.reshape(5, 12).double(), t, schedule))


def test_class_labels_condition_on_one_component(schedule):
    mixture = dl.make_2d_mixture("eight_gaussians")
    x, t, _ = _noised(mixture, 6, torch.tensor(400), schedule)
    K = mixture.num_components
    labels = torch.tensor([0, 3, K, K, 7, 1])
    out = mixture.denoise_x0(x, t, schedule, class_labels=labels)
    for i, k in enumerate(labels.tolist()):
        if k == K:  # the null class is the unconditional model
            expected = mixture.denoise_x0(x[i : i + 1], t[i : i + 1], schedule)
        else:
            single = dl.GaussianMixture(mixture.means[k : k + 1], covs=mixture.covs[k : k + 1])
            expected = single.denoise_x0(x[i : i + 1], t[i : i + 1], schedule)
        torch.testing.assert_close(out[i : i + 1], expected)
    cond = mixture.log_prob(mixture.means[:1], class_labels=torch.tensor([0]))
    assert float(cond) == pytest.approx(-math.log(2 * math.pi * 0.01))  # N(μ_0; μ_0, 0.1² I)


def test_bad_inputs_raise_value_errors(schedule):
    with pytest.raises(ValueError, match="mixture"):
        dl.make_2d_mixture("nine_gaussians")
    with pytest.raises(ValueError, match="prediction"):
        dl.make_2d_mixture().as_model(schedule, "score")
    with pytest.raises(ValueError, match="2-dimensional"):
        dl.make_2d_mixture().as_model(schedule)(torch.randn(4, 3), 5)
    with pytest.raises(ValueError, match="exactly one"):
        dl.GaussianMixture(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="weights"):
        dl.GaussianMixture(torch.zeros(2, 2), stds=0.1, weights=torch.tensor([1.0, -1.0]))
