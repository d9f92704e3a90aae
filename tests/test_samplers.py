"""ddpm_lib.samplers: parity with diffusers, and landing on the true distribution of a toy."""

import inspect

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UNet2DModel,
    UniPCMultistepScheduler,
)

import ddpm_lib as dl
from ddpm_lib import samplers as S

F64 = torch.float64
T = 1000


@pytest.fixture(scope="module")
def schedule():
    return dl.make_schedule("linear", num_timesteps=T, beta_start=1e-4, beta_end=0.02)


@pytest.fixture(scope="module")
def toy():
    return dl.make_2d_mixture("eight_gaussians")


@pytest.fixture(scope="module")
def x_T():
    return torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=F64)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _diffusers_loop(scheduler, model, x_T, steps, seed=5, **step_kwargs):
    """The usual diffusers sampling loop, with an explicit generator for its noise (where it takes one)."""
    scheduler.set_timesteps(steps)
    if "generator" in inspect.signature(scheduler.step).parameters:
        step_kwargs["generator"] = torch.Generator().manual_seed(seed)
    x = x_T * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.step(model(scheduler.scale_model_input(x, t), t), t, x, **step_kwargs).prev_sample
    return x


def _ours(model, x_T, schedule, sampler, steps, spacing, seed=5, **kwargs):
    g = torch.Generator().manual_seed(seed)
    return dl.sample(model, x_T.shape, schedule, sampler, steps, x_T=x_T, spacing=spacing, generator=g, **kwargs)


# ----------------------------------------------------------------- spacings
@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
@pytest.mark.parametrize("steps", [1, 7, 10, 50, 333, 1000])
def test_timesteps_match_diffusers_ddim(spacing, steps):
    ref = DDIMScheduler(num_train_timesteps=T, timestep_spacing=spacing, steps_offset=1 if spacing == "leading" else 0)
    ref.set_timesteps(steps)
    offset = 1 if spacing == "leading" else 0
    assert S.timesteps(T, steps, spacing, steps_offset=offset).tolist() == ref.timesteps.tolist()


def test_sigma_spacings_match_diffusers(schedule):
    lv = S.noise_levels(schedule, 12, "karras")
    ref = EulerDiscreteScheduler(num_train_timesteps=T, use_karras_sigmas=True)
    ref.set_timesteps(12)
    torch.testing.assert_close(lv.sigma[:-1], ref.sigmas[:-1].double(), rtol=2e-6, atol=0)
    lv = S.noise_levels(schedule, 12, "log_snr")
    ref = EulerDiscreteScheduler(num_train_timesteps=T, use_exponential_sigmas=True)
    ref.set_timesteps(12)
    torch.testing.assert_close(lv.sigma[:-1], ref.sigmas[:-1].double(), rtol=2e-6, atol=0)
    focused = S.noise_levels(schedule, 12, "focused")
    assert focused.t[0] == T - 1 and (focused.sigma[1:] < focused.sigma[:-1]).all()


def test_sigma_to_t_inverts_the_schedule(schedule):
    t = torch.tensor([0.0, 0.25, 17.5, 500.0, 998.9, 999.0], dtype=F64)
    a, s = schedule.scales(t)  # float64, since t is
    torch.testing.assert_close(S.sigma_to_t(s / a, schedule), t, rtol=0, atol=1e-8)


# ----------------------------------------------------- parity with diffusers
def test_ddpm_step_variance_matches_diffusers(schedule):
    ref = DDPMScheduler(num_train_timesteps=T)
    ref.set_timesteps(20)
    lv = S.noise_levels(schedule, 20, "leading")
    for i, t in enumerate(ref.timesteps.tolist()):
        beta_tilde = float(ref._get_variance(t)) if t > 0 else 0.0
        assert S._posterior_std(lv, i) ** 2 == pytest.approx(beta_tilde, rel=1e-5, abs=1e-12)


@pytest.mark.parametrize("variance, diffusers_type", [("beta_tilde", "fixed_small"), ("beta", "fixed_large")])
@pytest.mark.parametrize("spacing, steps", [("leading", 25), ("linspace", 10)])
def test_ddpm_matches_diffusers_trajectory(variance, diffusers_type, spacing, steps, schedule, toy, x_T):
    """Same x_T, same generator, same model: DDPMScheduler.step mean and noise, step for step."""
    model = toy.as_model(schedule)
    ref = DDPMScheduler(num_train_timesteps=T, clip_sample=False, variance_type=diffusers_type, timestep_spacing=spacing)
    expected = _diffusers_loop(ref, model, x_T, steps)
    ours = _ours(model, x_T, schedule, "ddpm", steps, ref.timesteps.tolist(), variance=variance)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_ddim_matches_diffusers_trajectory(eta, spacing, schedule, toy, x_T):
    # diffusers' DDIM steps from t to t - T // steps, which is the next timestep only when steps divides T
    model = toy.as_model(schedule, "v")
    ref = DDIMScheduler(num_train_timesteps=T, clip_sample=False, timestep_spacing=spacing, prediction_type="v_prediction")
    expected = _diffusers_loop(ref, model, x_T, 20, eta=eta)
    ours = _ours(model, x_T, schedule, "ddim", 20, spacing, eta=eta, prediction="v")
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spacing, steps", [("trailing", 10), ("linspace", 20), ("leading", 8)])
def test_dpmpp_2m_matches_diffusers_trajectory(spacing, steps, schedule, toy, x_T):
    """DPM-Solver++(2M) over a whole trajectory, incl. the lower-order first and last steps."""
    model = toy.as_model(schedule, "x0")
    ref = DPMSolverMultistepScheduler(
        num_train_timesteps=T, solver_order=2, algorithm_type="dpmsolver++", timestep_spacing=spacing,
        prediction_type="sample",
    )
    expected = _diffusers_loop(ref, model, x_T, steps)
    ours = _ours(model, x_T, schedule, "dpmpp_2m", steps, ref.timesteps.tolist(), prediction="x0")
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("order", [2, 3])
def test_unipc_matches_diffusers_with_first_order_final_step(order, schedule, toy, x_T):
    """UniPC-bh2 with exponential (log-SNR uniform) sigmas; diffusers passes rounded float t, so the
    model here reads the noise level from the scheduler itself."""
    ref = UniPCMultistepScheduler(num_train_timesteps=T, solver_order=order, use_exponential_sigmas=True)

    def at_scheduler_sigma(x, t):
        sigma = ref.sigmas[ref.step_index or 0].double()
        a = 1 / torch.sqrt(1 + sigma**2)
        return toy.predict_eps_at(x, a, sigma * a)

    expected = _diffusers_loop(ref, at_scheduler_sigma, x_T, 10)
    ours = _ours(toy.as_model(schedule), x_T, schedule, "unipc", 10, "log_snr", order=order, final_order=1)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------- the true distribution
# (sampler, steps, spacing, options): enough steps for each to land within TOLERANCE.
CONVERGED = [
    ("ddpm", 1000, None, {}),
    ("ddpm", 1000, None, {"variance": "beta"}),
    ("ddim", 500, "linspace", {}),
    ("euler", 200, None, {}),
    ("heun", 30, None, {}),
    ("dpmpp_2m", 30, None, {}),
    ("unipc", 20, None, {}),
    ("euler_ancestral", 300, None, {}),
    ("pc", 1000, None, {}),
    ("langevin", 50, None, {}),
]
TOLERANCE = 0.1  # nats; the standard error of the mean log-likelihood of 2000 samples is ~0.02


@pytest.fixture(scope="module")
def truth_loglik(toy):
    return float(toy.log_prob(toy.sample(50_000, torch.Generator().manual_seed(1), dtype=F64)).mean())


@pytest.mark.parametrize("sampler, steps, spacing, options", CONVERGED, ids=lambda v: str(v))
def test_every_sampler_lands_on_the_true_distribution(sampler, steps, spacing, options, schedule, toy, truth_loglik):
    g = torch.Generator().manual_seed(2)
    x = dl.sample(toy.as_model(schedule), (2000, 2), schedule, sampler, steps, spacing=spacing, generator=g,
                  dtype=F64, **options)
    assert abs(float(toy.log_prob(x).mean()) - truth_loglik) < TOLERANCE


def test_too_few_steps_miss_the_distribution(schedule, toy, truth_loglik):
    """The tolerance above is tight enough to catch a poor sampler."""
    x = dl.sample(toy.as_model(schedule), (2000, 2), schedule, "ddim", 3, generator=torch.Generator().manual_seed(2))
    assert abs(float(toy.log_prob(x.double()).mean()) - truth_loglik) > 3 * TOLERANCE


def test_ddim_eta_one_is_ddpm(schedule, toy, x_T):
    """DDIM with eta = 1 takes DDPM's (β̃) steps: same noise, same samples; and the same distribution."""
    model = toy.as_model(schedule)
    ddim = _ours(model, x_T, schedule, "ddim", 40, "trailing", eta=1.0)
    ddpm = _ours(model, x_T, schedule, "ddpm", 40, "trailing")
    torch.testing.assert_close(ddim, ddpm, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(ddim, _ours(model, x_T, schedule, "ddim", 40, "trailing", eta=0.0))


# --------------------------------------------------------- the API surface
@pytest.mark.parametrize("sampler", sorted(S.SAMPLERS))
def test_nfe_counts_network_calls_and_callback_runs_once_per_step(sampler, schedule, toy):
    calls, seen = [], []
    model = toy.as_model(schedule)

    def counting(x, t):
        calls.append(1)
        return model(x, t)

    steps = 6
    dl.sample(counting, (8, 2), schedule, sampler, steps, generator=torch.Generator().manual_seed(0),
              callback=lambda i, t, x, x0: seen.append((i, x.shape, x0.shape)))
    assert len(calls) == dl.nfe(sampler, steps)
    assert [i for i, _, _ in seen] == list(range(steps))
    assert all(xs == (8, 2) and x0s == (8, 2) for _, xs, x0s in seen)


@pytest.mark.parametrize("sampler", ["ddim", "heun", "dpmpp_2m", "unipc"])
def test_predictions_eps_x0_v_give_the_same_samples(sampler, schedule, toy, x_T):
    out = [_ours(toy.as_model(schedule, p), x_T, schedule, sampler, 8, None, prediction=p) for p in ("eps", "x0", "v")]
    torch.testing.assert_close(out[0], out[1], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out[0], out[2], rtol=1e-6, atol=1e-6)


def test_guidance_scale_one_is_the_conditional_model(schedule, toy, x_T):
    model, K = toy.as_model(schedule), toy.num_components
    labels = torch.arange(len(x_T)) % K
    cond = _ours(model, x_T, schedule, "dpmpp_2m", 10, None, class_labels=labels)
    guided = _ours(model, x_T, schedule, "dpmpp_2m", 10, None, class_labels=labels, null_class=K, guidance_scale=1.0)
    torch.testing.assert_close(guided, cond, rtol=1e-10, atol=1e-10)
    strong = _ours(model, x_T, schedule, "dpmpp_2m", 10, None, class_labels=labels, null_class=K, guidance_scale=3.0)
    # guidance pushes samples towards their class mean
    dist = lambda x: (x - toy.means[labels]).norm(dim=1).mean()
    assert dist(strong) < dist(cond) < dist(_ours(model, x_T, schedule, "dpmpp_2m", 10, None))


def test_image_shaped_float32_model_and_clipping(schedule):
    mixture = dl.make_mixture(16, k=3, seed=0, mean_range=1.5)  # 16 = 1 x 4 x 4, means beyond [-1, 1]
    model = mixture.as_model(schedule)
    g = torch.Generator().manual_seed(0)
    x = dl.sample(model, (4, 1, 4, 4), schedule, "ddim", 10, generator=g)
    assert x.shape == (4, 1, 4, 4) and x.dtype == torch.float32 and x.abs().max() > 1
    for clip in (1.0, "dynamic"):
        y = dl.sample(model, (4, 1, 4, 4), schedule, "ddim", 10, generator=torch.Generator().manual_seed(0), clip_x0=clip)
        assert y.abs().max() <= 1 + 1e-6


def test_diffusers_unet_is_used_as_it_is(schedule):
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       layers_per_block=1, norm_num_groups=4)
    for sampler in ("ddim", "dpmpp_2m"):  # integer and float timesteps
        x = dl.sample(unet, (2, 1, 8, 8), schedule, sampler, 3, generator=torch.Generator().manual_seed(0))
        assert x.shape == (2, 1, 8, 8) and torch.isfinite(x).all()


def test_bad_inputs_raise_value_errors_that_list_the_choices(schedule, toy):
    model = toy.as_model(schedule)
    cases = [
        ({"sampler": "plms"}, "dpmpp_2m"),
        ({"spacing": "cosine"}, "trailing"),
        ({"prediction": "score"}, "eps"),
        ({"steps": 0}, "steps"),
        ({"sampler": "ddim", "snr": 0.1}, "eta"),
        ({"sampler": "ddpm", "variance": "learned"}, "beta_tilde"),
        ({"guidance_scale": 2.0}, "null_class"),
        ({"x_T": torch.randn(3, 2)}, "shape"),
        ({"spacing": [10, 500]}, "decreasing"),
    ]
    for kwargs, hint in cases:
        with pytest.raises(ValueError, match=hint):
            dl.sample(model, (4, 2), schedule, **{"sampler": "dpmpp_2m", "steps": 4, **kwargs})
    with pytest.raises(ValueError, match="steps"):
        dl.nfe("heun", 0)


def test_parameterless_model_follows_schedule_dtype():
    """An exact model has no parameters: the starting noise takes the schedule's dtype."""
    schedule = dl.make_schedule("linear", 100).to(dtype=torch.float64)

    def zero_eps(x, t):
        return torch.zeros_like(x)

    x = dl.sample(zero_eps, (4, 2), schedule, "ddim", 5, generator=torch.Generator().manual_seed(0))
    assert x.dtype == torch.float64


def test_denoising_error_of_the_exact_model_is_the_gaussian_posterior_error(schedule):
    """A single Gaussian N(mu, c^2 I): the exact denoiser's x0-MSE is c^2 σ^2 / (c^2 + σ^2), and the
    eps error is the x0 error times a/s."""
    c = 0.5
    gauss = dl.GaussianMixture(torch.tensor([[0.3, -0.2]], dtype=F64), stds=c)
    x0 = gauss.sample(4000, torch.Generator().manual_seed(0), dtype=F64)
    err = S.denoising_error(gauss.as_model(schedule), schedule, x0, [900, 500, 200, 50], "eps",
                            generator=torch.Generator().manual_seed(1))
    assert err["t"].tolist() == [900, 500, 200, 50]
    sigma2 = torch.exp(-err["log_snr"])
    expected = c**2 * sigma2 / (c**2 + sigma2)
    assert torch.allclose(err["x0_mse"], expected, rtol=0.08), (err["x0_mse"], expected)
    assert torch.allclose(err["eps_mse"], err["x0_mse"] / sigma2, rtol=1e-6)


def test_angle_spacing_is_uniform_in_the_angle_and_matches_cosine_linspace():
    """σ = tan φ with φ uniform; on the cosine schedule that is (nearly) the linspace grid of timesteps."""
    sig = S.angle_sigmas(0.01, 100.0, 6)
    phi = torch.atan(sig)
    assert torch.allclose(phi[1:] - phi[:-1], (phi[1] - phi[0]).expand(5), atol=1e-12)
    assert sig[0] == pytest.approx(100.0) and sig[-1] == pytest.approx(0.01)
    cosine = dl.make_schedule("cosine", num_timesteps=T)
    angle, linspace = S.noise_levels(cosine, 10, "angle"), S.noise_levels(cosine, 10, "linspace")
    assert angle.t[0] == T - 1 and angle.t[-1] == pytest.approx(0, abs=1e-6)
    assert (angle.t - linspace.t).abs().max() < 0.02 * T  # the cosine schedule's offset s = 0.008 aside


def test_edm_spacing_is_karras_within_edms_range(schedule):
    """EDM's ρ = 7 grid between 0.002 and 80, clipped to the schedule: on the cosine schedule σ(T-1) ≈ 2e4
    would otherwise put the first steps where x0_hat is just the data mean."""
    cosine = dl.make_schedule("cosine", num_timesteps=T)
    sig_min = float(S.noise_levels(cosine, 2, "karras").sigma[-2])  # σ at t = 0
    edm = S.noise_levels(cosine, 8, "edm").sigma[:-1]
    assert torch.allclose(edm, S.karras_sigmas(max(sig_min, S.EDM_SIGMA_MIN), S.EDM_SIGMA_MAX, 8), rtol=1e-9)
    assert S.noise_levels(cosine, 8, "karras").sigma[0] > 1e4  # the schedule's own σ_max
    linear = S.noise_levels(schedule, 8, "edm").sigma[:-1]
    linear_min = float(S.noise_levels(schedule, 2, "karras").sigma[-2])  # σ at t = 0, 0.01 > 0.002
    assert linear[0] == pytest.approx(80.0) and linear[-1] == pytest.approx(linear_min)
    assert S.noise_levels(cosine, 8, "edm", sigma_max=10.0).sigma[0] == pytest.approx(10.0)


def test_default_ode_grids_stay_below_edms_sigma_max_on_the_cosine_schedule():
    """The defaults chosen with benchmarks/samplers.py: no ODE sampler, nor ancestral Euler, starts at
    σ ≈ 2e4 on the shipped models' cosine schedule (there the first steps of such a grid are wasted)."""
    cosine = dl.make_schedule("cosine", num_timesteps=T)
    for sampler in ("euler", "heun", "unipc", "euler_ancestral"):
        levels = S.noise_levels(cosine, 5, dl.DEFAULT_SPACING[sampler])
        assert float(levels.sigma[0]) <= S.EDM_SIGMA_MAX * (1 + 1e-9), (sampler, float(levels.sigma[0]))
    assert inspect.signature(dl.sample).parameters["sampler"].default == "unipc"


def test_guidance_switches_the_default_unipc_to_its_guided_settings(schedule, toy, x_T):
    """dl.sample's default sampler with guidance_scale != 1 and no spacing or options uses
    GUIDED_DEFAULTS (chosen with benchmarks/samplers.py on the shipped guided model); what the caller
    gives still wins, and w = 1 and samplers without guided settings keep DEFAULT_SPACING."""
    model, K = toy.as_model(schedule), toy.num_components
    labels = torch.arange(len(x_T)) % K
    guided = dict(class_labels=labels, null_class=K, guidance_scale=3.0)
    spacing, options = S.default_settings("unipc", 3.0)
    assert (spacing, options) != (S.DEFAULT_SPACING["unipc"], {}), "guidance should change unipc's defaults"
    assert S.default_settings("unipc", 1.0) == (S.DEFAULT_SPACING["unipc"], {})
    assert S.default_settings("dpmpp_2m", 3.0) == (S.DEFAULT_SPACING["dpmpp_2m"], {})
    default = dl.sample(model, x_T.shape, schedule, steps=6, x_T=x_T, **guided)
    explicit = _ours(model, x_T, schedule, "unipc", 6, spacing, **options, **guided)
    torch.testing.assert_close(default, explicit, rtol=0, atol=0)
    unguided_options = {k: inspect.signature(S.sample_unipc).parameters[k].default for k in options}
    plain = _ours(model, x_T, schedule, "unipc", 6, S.DEFAULT_SPACING["unipc"], **unguided_options, **guided)
    assert (default - plain).abs().max() > 1e-3, "the guided settings should change the samples"
    # each setting the caller gives wins over the guided one
    mine = {"spacing": S.DEFAULT_SPACING["unipc"], **unguided_options}
    torch.testing.assert_close(dl.sample(model, x_T.shape, schedule, steps=6, x_T=x_T, **mine, **guided), plain,
                               rtol=0, atol=0)
    # without guidance the default is DEFAULT_SPACING with the sampler's own options
    torch.testing.assert_close(dl.sample(model, x_T.shape, schedule, steps=6, x_T=x_T, class_labels=labels),
                               _ours(model, x_T, schedule, "unipc", 6, S.DEFAULT_SPACING["unipc"],
                                     class_labels=labels), rtol=0, atol=0)


def test_guided_default_grid_spends_no_evaluation_at_the_clean_end():
    """The reason for the guided grid (benchmarks/samplers.py, issue 23): with guidance every step costs
    two evaluations, so 5 NFE are 2 steps; a grid ending at t = 0 (edm) then spends the second one at
    σ ≈ 0.006, where nothing is left to decide. The guided default's levels all stay above σ = 0.1 up to
    10 steps on the shipped models' cosine schedule, and its 2-step grid evaluates at σ ≈ 1."""
    cosine = dl.make_schedule("cosine", num_timesteps=T)
    spacing, _ = S.default_settings("unipc", 3.0)
    for steps in (2, 5, 10):
        assert float(S.noise_levels(cosine, steps, spacing).sigma[-2]) > 0.1, (spacing, steps)
    assert float(S.noise_levels(cosine, 2, "edm").sigma[-2]) < 0.01
    assert 0.5 < float(S.noise_levels(cosine, 2, spacing).sigma[-2]) < 2


def test_guidance_interval_guides_only_inside_it_and_saves_evaluations(schedule, toy, x_T):
    """guidance_interval=(σ_lo, σ_hi) (Kynkäänniemi et al. 2024): an interval holding every level is full
    guidance, one holding none is the conditional model, and outside it each step costs one evaluation."""
    model, K = toy.as_model(schedule), toy.num_components
    labels = torch.arange(len(x_T)) % K
    guided = dict(class_labels=labels, null_class=K, guidance_scale=3.0)
    full = _ours(model, x_T, schedule, "unipc", 8, "trailing", guidance_interval=None, **guided)
    everywhere = _ours(model, x_T, schedule, "unipc", 8, "trailing", guidance_interval=(0.0, 1e30), **guided)
    torch.testing.assert_close(everywhere, full, rtol=0, atol=0)
    order = {k: v for k, v in S.GUIDED_DEFAULTS["unipc"].items() if k != "spacing"}  # as guided, explicitly
    cond = _ours(model, x_T, schedule, "unipc", 8, "trailing", class_labels=labels, **order)
    nowhere = _ours(model, x_T, schedule, "unipc", 8, "trailing", guidance_interval=(1e29, 1e30), **guided)
    torch.testing.assert_close(nowhere, cond, rtol=1e-12, atol=1e-12)
    # a real interval: guided below σ = 2 only, and the batch sizes the network sees say so
    levels = S.noise_levels(schedule, 8, "trailing")
    flags = S.guided_levels(levels, (0.0, 2.0))
    expect = [float(s) <= 2.0 for s in levels.sigma]
    assert flags == expect and any(flags[:-1]) and not all(flags[:-1]), flags
    seen = []

    def counting(x, t, class_labels=None):
        seen.append(x.shape[0])
        return model(x, t, class_labels=class_labels)

    part = _ours(counting, x_T, schedule, "unipc", 8, "trailing", guidance_interval=(0.0, 2.0), **guided)
    n = len(x_T)
    assert seen == [2 * n if f else n for f in flags[:-1]], seen
    assert S.guided_nfe(levels, (0.0, 2.0)) * n == sum(seen) and S.guided_nfe(levels) == 2 * 8
    assert (part - full).abs().max() > 1e-3 and (part - cond).abs().max() > 1e-3


def test_guidance_interval_auto_default_and_bad_values(schedule, toy, x_T):
    """"auto" is DEFAULT_GUIDANCE_INTERVAL for w > 1 and every level for w <= 1 (w = 0 stays the
    unconditional model); anything else that is not an interval is refused with a clear message."""
    model, K = toy.as_model(schedule), toy.num_components
    labels = torch.arange(len(x_T)) % K
    for w, expected in ((3.0, S.DEFAULT_GUIDANCE_INTERVAL), (0.0, None)):
        g = dict(class_labels=labels, null_class=K, guidance_scale=w)
        auto = _ours(model, x_T, schedule, "unipc", 6, "trailing", **g)
        explicit = _ours(model, x_T, schedule, "unipc", 6, "trailing", guidance_interval=expected, **g)
        torch.testing.assert_close(auto, explicit, rtol=0, atol=0)
    levels = S.noise_levels(schedule, 6, "trailing")
    for bad in ((2.0, 1.0), (-1.0, 1.0)):
        with pytest.raises(ValueError, match="sigma_lo"):
            S.guided_levels(levels, bad)
    with pytest.raises(ValueError, match="'auto'"):
        _ours(model, x_T, schedule, "unipc", 6, "trailing", guidance_interval="always", class_labels=labels,
              null_class=K, guidance_scale=3.0)
