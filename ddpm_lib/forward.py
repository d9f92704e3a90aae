"""The forward process: noising in one jump, one step at a time, and its posterior (chapter 4).

Notation (``t`` is the 0-based index into the schedule; the paper's t = 1 is index 0,
and "index -1" is the clean data x_0)::

    x_t = a_t x_0 + s_t ε              q(x_t | x_0); VP: a_t = √ᾱ_t, s_t = √(1 - ᾱ_t)
    α_{t|s} = a_t / a_s                the signal kept from step s to step t > s
    σ²_{t|s} = s_t² - α²_{t|s} s_s²    the noise added from s to t; VP, s = t - 1: β_t
                                       (Kingma et al. 2021, eq. 33)
    q(x_s | x_t, x_0) = N(μ̃, σ̃² I)     μ̃ = coef1 x_0 + coef2 x_t (Ho et al. 2020, eq. 7)
    coef1 = a_s σ²_{t|s} / s_t²        VP: √ᾱ_{t-1} β_t / (1 - ᾱ_t)
    coef2 = α_{t|s} s_s² / s_t²        VP: √α_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t)
    σ̃² = σ²_{t|s} s_s² / s_t²          VP: β̃_t = (1 - ᾱ_{t-1}) / (1 - ᾱ_t) β_t

σ²_{t|s} is computed as (s_t² / (1 - ᾱ_t)) (1 - ᾱ_t / ᾱ_s) with 1 - ᾱ_t / ᾱ_s =
-expm1(log ᾱ_t - log ᾱ_s), so no small β_t is lost to cancellation. These formulas
hold for every kind of schedule (VP, VE, "simple"), since each kind is a VP process
scaled by a per-step factor.
"""

from __future__ import annotations

import torch
from torch.nn.functional import logsigmoid

from .schedules import KINDS, NoiseSchedule, TimeLike

__all__ = [
    "add_noise",
    "forward_chain",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "posterior_variance",
    "q_posterior",
    "q_step",
]


def per_sample(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``values`` of shape () or (B,) as (B, 1, ..., 1) on x's device and dtype, to broadcast over x."""
    values = torch.as_tensor(values)
    if values.ndim > 1 or (values.ndim == 1 and values.shape[0] not in (1, x.shape[0])):
        raise ValueError(
            f"t has shape {tuple(values.shape)} but the batch has {x.shape[0]} samples; pass one timestep "
            "per sample (shape (B,)) or a single number for all of them."
        )
    return values.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: TimeLike, schedule: NoiseSchedule) -> torch.Tensor:
    """x_t = a_t x_0 + s_t ε, a sample of q(x_t | x_0) (Ho et al. 2020, eq. 4). Chapters 2 and 4.

    For a VP schedule this is √ᾱ_t x_0 + √(1 - ᾱ_t) ε, which equals diffusers'
    ``DDPMScheduler.add_noise``. ``t``: an int, a float, or a (B,) tensor.
    """
    if noise.shape != x0.shape:
        raise ValueError(
            f"noise has shape {tuple(noise.shape)} but x0 has {tuple(x0.shape)}; they must match."
        )
    a, s = schedule.scales(t)
    return per_sample(a, x0) * x0 + per_sample(s, x0) * noise  # (B, C, H, W)


# --------------------------------------------------------------------------- transitions between two steps


def _previous(t: TimeLike, t_prev: TimeLike | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(t, t_prev) as tensors; t_prev defaults to t - 1, and any t_prev < 0 means the clean data."""
    t = torch.as_tensor(t)
    t_prev = t - 1 if t_prev is None else torch.as_tensor(t_prev, device=t.device)
    if bool((t_prev >= t).any()):
        raise ValueError(f"t_prev must be earlier than t; got t={t.tolist()}, t_prev={t_prev.tolist()}.")
    return t, t_prev


def _step_terms(t: TimeLike, t_prev: TimeLike | None, schedule: NoiseSchedule):
    """(a_s, s_s², a_t, s_t², α_{t|s}, σ²_{t|s}) for the steps s = t_prev < t, in the schedule's dtype."""
    t, t_prev = _previous(t, t_prev)
    clean = (t_prev < 0).to(schedule.device)  # s is the data itself: a_s = 1, s_s = 0, ᾱ_s = 1
    lam_t, lam_s = schedule.log_snr(t), schedule.log_snr(t_prev.clamp(min=0))
    a_t, s_t = KINDS[schedule.kind](lam_t)
    a_s, s_s = KINDS[schedule.kind](lam_s)
    a_s, s_s = torch.where(clean, 1.0, a_s), torch.where(clean, 0.0, s_s)
    log_alpha_bar_s = torch.where(clean, 0.0, logsigmoid(lam_s))
    beta_ts = -torch.expm1(logsigmoid(lam_t) - log_alpha_bar_s)  # 1 - ᾱ_t / ᾱ_s (= β_t for s = t - 1)
    sigma2_ts = s_t**2 / torch.sigmoid(-lam_t) * beta_ts  # σ²_{t|s} = c_t² β_{t|s}, c_t = s_t / √(1 - ᾱ_t)
    return a_s, s_s**2, a_t, s_t**2, a_t / a_s, sigma2_ts


def posterior_mean_coef1(
    t: TimeLike, schedule: NoiseSchedule, t_prev: TimeLike | None = None
) -> torch.Tensor:
    """The weight of x_0 in μ̃ of q(x_{t-1} | x_t, x_0): √ᾱ_{t-1} β_t / (1 - ᾱ_t) (Ho et al. 2020, eq. 7).

    ``t_prev`` (default t - 1; below 0 means the clean data) gives q(x_s | x_t, x_0)
    for any earlier step s. Chapter 4.
    """
    a_s, _, _, s2_t, _, sigma2_ts = _step_terms(t, t_prev, schedule)
    return a_s * sigma2_ts / s2_t


def posterior_mean_coef2(
    t: TimeLike, schedule: NoiseSchedule, t_prev: TimeLike | None = None
) -> torch.Tensor:
    """The weight of x_t in μ̃ of q(x_{t-1} | x_t, x_0): √α_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t) (Ho et al., eq. 7).

    Chapter 4.
    """
    _, s2_s, _, s2_t, alpha_ts, _ = _step_terms(t, t_prev, schedule)
    return alpha_ts * s2_s / s2_t


def posterior_variance(t: TimeLike, schedule: NoiseSchedule, t_prev: TimeLike | None = None) -> torch.Tensor:
    """β̃_t = (1 - ᾱ_{t-1}) / (1 - ᾱ_t) β_t, the variance of q(x_{t-1} | x_t, x_0) (Ho et al. 2020, eq. 7).

    0 at t = 0 (the step to the clean data). Chapter 4.
    """
    _, s2_s, _, s2_t, _, sigma2_ts = _step_terms(t, t_prev, schedule)
    return sigma2_ts * s2_s / s2_t


def q_posterior(
    x0: torch.Tensor, x_t: torch.Tensor, t: TimeLike, schedule: NoiseSchedule, t_prev: TimeLike | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(μ̃, β̃) of q(x_{t-1} | x_t, x_0) = N(μ̃, β̃ I) by Bayes' rule (Ho et al. 2020, eqs. 6-7). Chapter 4.

    μ̃ has x's shape; β̃ has shape (B, 1, ..., 1) (or (1, 1, ..., 1) for a single t)
    and broadcasts over x. With ``t_prev`` it is q(x_s | x_t, x_0) for s = t_prev.
    """
    if x0.shape != x_t.shape:
        raise ValueError(f"x0 has shape {tuple(x0.shape)} but x_t has {tuple(x_t.shape)}; they must match.")
    a_s, s2_s, _, s2_t, alpha_ts, sigma2_ts = _step_terms(t, t_prev, schedule)
    coef1 = per_sample(a_s * sigma2_ts / s2_t, x_t)  # weight of x_0
    coef2 = per_sample(alpha_ts * s2_s / s2_t, x_t)  # weight of x_t
    return coef1 * x0 + coef2 * x_t, per_sample(sigma2_ts * s2_s / s2_t, x_t)


# --------------------------------------------------------------------------- the step-by-step chain


def q_step(x_prev: torch.Tensor, noise: torch.Tensor, t: TimeLike, schedule: NoiseSchedule) -> torch.Tensor:
    """One forward step x_t = α_{t|t-1} x_{t-1} + σ_{t|t-1} ε: for VP √(1 - β_t) x_{t-1} + √β_t ε.

    q(x_t | x_{t-1}) = N(√(1 - β_t) x_{t-1}, β_t I) (Ho et al. 2020, eq. 2). At t = 0,
    ``x_prev`` is the clean data. Chapter 4.
    """
    if noise.shape != x_prev.shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)} but x_prev has {tuple(x_prev.shape)}.")
    *_, alpha_ts, sigma2_ts = _step_terms(t, None, schedule)
    return per_sample(alpha_ts, x_prev) * x_prev + per_sample(sigma2_ts.sqrt(), x_prev) * noise


def forward_chain(
    x0: torch.Tensor,
    schedule: NoiseSchedule,
    steps: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Run the Markov chain q(x_t | x_{t-1}) one step at a time from x_0 (chapter 4).

    Returns the stacked states, shape ``(steps + 1, *x0.shape)``: ``states[0]`` is x_0 and
    ``states[k]`` is the state after index k - 1, the paper's x_k. ``steps``
    defaults to T. The noise is drawn with ``generator`` on its device.
    """
    steps = schedule.num_timesteps if steps is None else steps
    if not 1 <= steps <= schedule.num_timesteps:
        raise ValueError(f"steps must lie in [1, {schedule.num_timesteps}] (the schedule's T); got {steps}.")
    device = generator.device if generator is not None else x0.device
    states = [x0]
    for t in range(steps):
        noise = torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype).to(x0.device)
        states.append(q_step(states[-1], noise, t, schedule))
    return torch.stack(states)  # (steps + 1, *x0.shape)
