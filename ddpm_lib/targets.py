"""What the network predicts: eps, x0, v or EDM's F, the conversions, and loss weightings (chapter 6).

Notation (x_t = a_t x_0 + s_t ε; for a VP schedule a_t = √ᾱ_t, s_t = √(1 - ᾱ_t))

==================  ==========================================================
``"eps"``           ε, the noise (Ho et al. 2020)
``"x0"``            x_0, the clean data
``"v"``             v = a_t ε - s_t x_0, the "velocity" (Salimans & Ho 2022, sec. 4)
``"edm"``           F, the raw network of D(x; σ) = c_skip x + c_out F(c_in x; c_noise)
                    (Karras et al. 2022, eq. 7), with x = x_t / a_t and σ = s_t / a_t
SNR                 a_t² / s_t², the signal-to-noise ratio (``schedule.snr(t)``)
score               ∇_x log q(x_t) = -ε / s_t (Song et al. 2021; Vincent 2011)
==================  ==========================================================

Every conversion takes the prediction, the noisy input ``x_t``, the timestep ``t``
(0-based index, int, float or (B,) tensor) and the schedule, and holds for every
kind of schedule. Conversions that divide by a_t (``eps_to_x0``) are undefined at
SNR 0 (the last step of a zero-terminal-SNR schedule); predict v or x0 there.

Loss weightings: the mean squared error on one target equals a multiple of the
mean squared error on x_0, w_x0 · ‖x̂_0 - x_0‖² ("the effective x0 weight"):
SNR for eps, 1 for x0, 1 + SNR for v (VP), SNR + 1/σ_data² for EDM. Min-SNR-γ
(Hang et al. 2023) reweights each target so that the effective x0 weight becomes
min(SNR, γ).
"""

from __future__ import annotations

import torch
from torch import nn

from .forward import per_sample
from .modelcall import call_model
from .schedules import NoiseSchedule, TimeLike

__all__ = [
    "PREDICTIONS",
    "EDMDenoiser",
    "edm_loss_weight",
    "edm_preconditioning",
    "edm_sample_sigmas",
    "edm_target",
    "eps_to_score",
    "eps_to_v",
    "eps_to_x0",
    "loss_weight",
    "make_target",
    "score_to_eps",
    "split_prediction",
    "v_to_eps",
    "v_to_x0",
    "x0_eps_to_v",
    "x0_to_eps",
    "x0_to_v",
    "x0_weight_of",
]

PREDICTIONS = ("eps", "x0", "v", "edm")
WEIGHTINGS = ("uniform", "min_snr")
SIGMA_DATA = 0.5  # σ_data, the standard deviation of images in [-1, 1] assumed by EDM (Karras et al. 2022)


def _check_prediction(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; choose one of {list(PREDICTIONS)}.")


def _scales_like(x: torch.Tensor, t: TimeLike, schedule: NoiseSchedule) -> tuple[torch.Tensor, torch.Tensor]:
    """(a_t, s_t) shaped (B, 1, ..., 1) to broadcast over x."""
    a, s = schedule.scales(t)
    return per_sample(a, x), per_sample(s, x)


# --------------------------------------------------------------------------- conversions


def eps_to_x0(eps: torch.Tensor, x_t: torch.Tensor, t: TimeLike, schedule: NoiseSchedule) -> torch.Tensor:
    """x̂_0 = (x_t - s_t ε̂) / a_t (Ho et al. 2020, eq. 15). Chapter 4."""
    a, s = _scales_like(x_t, t, schedule)
    return (x_t - s * eps) / a


def x0_to_eps(x0: torch.Tensor, x_t: torch.Tensor, t: TimeLike, schedule: NoiseSchedule) -> torch.Tensor:
    """ε̂ = (x_t - a_t x̂_0) / s_t. Chapter 6."""
    a, s = _scales_like(x_t, t, schedule)
    return (x_t - a * x0) / s


def v_to_x0(v: torch.Tensor, x_t: torch.Tensor, t: TimeLike, schedule: NoiseSchedule) -> torch.Tensor:
    """x̂_0 = (a_t x_t - s_t v̂) / (a_t² + s_t²); for VP a_t x_t - s_t v̂ (Salimans & Ho 2022). Chapter 6."""
    a, s = _scales_like(x_t, t, schedule)
    return (a * x_t - s * v) / (a**2 + s**2)


def v_to_eps(v: torch.Tensor, x_t: torch.Tensor, t: TimeLike, schedule: NoiseSchedule) -> torch.Tensor:
    """ε̂ = (s_t x_t + a_t v̂) / (a_t² + s_t²); for VP s_t x_t + a_t v̂. Chapter 6."""
    a, s = _scales_like(x_t, t, schedule)
    return (s * x_t + a * v) / (a**2 + s**2)


def x0_to_v(x0: torch.Tensor, x_t: torch.Tensor, t: TimeLike, schedule: NoiseSchedule) -> torch.Tensor:
    """v̂ = a_t ε̂ - s_t x̂_0 with ε̂ from x̂_0 and x_t: (a_t x_t - (a_t² + s_t²) x̂_0) / s_t. Chapter 6."""
    a, s = _scales_like(x_t, t, schedule)
    return (a * x_t - (a**2 + s**2) * x0) / s


def eps_to_v(eps: torch.Tensor, x_t: torch.Tensor, t: TimeLike, schedule: NoiseSchedule) -> torch.Tensor:
    """v̂ = a_t ε̂ - s_t x̂_0 with x̂_0 from ε̂ and x_t: ((a_t² + s_t²) ε̂ - s_t x_t) / a_t. Chapter 6."""
    a, s = _scales_like(x_t, t, schedule)
    return ((a**2 + s**2) * eps - s * x_t) / a


def x0_eps_to_v(x0: torch.Tensor, eps: torch.Tensor, t: TimeLike, schedule: NoiseSchedule) -> torch.Tensor:
    """v = a_t ε - s_t x_0 (Salimans & Ho 2022, sec. 4): the v target. Chapter 6."""
    a, s = _scales_like(x0, t, schedule)
    return a * eps - s * x0


def eps_to_score(eps: torch.Tensor, t: TimeLike, schedule: NoiseSchedule) -> torch.Tensor:
    """∇_x log q(x_t) ≈ -ε̂ / s_t: the score of the noised data (Song et al. 2021, sec. 3.4). Chapter 4."""
    _, s = _scales_like(eps, t, schedule)
    return -eps / s


def score_to_eps(score: torch.Tensor, t: TimeLike, schedule: NoiseSchedule) -> torch.Tensor:
    """ε̂ = -s_t ∇_x log q(x_t), the inverse of ``eps_to_score``. Chapter 4."""
    _, s = _scales_like(score, t, schedule)
    return -s * score


# --------------------------------------------------------------------------- EDM (Karras et al. 2022)


def edm_preconditioning(
    sigma: torch.Tensor | float, sigma_data: float = SIGMA_DATA
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_skip, c_out, c_in, c_noise) of Karras et al. 2022, Table 1 (EDM column). Chapter 6.

    c_skip = σ_d² / (σ² + σ_d²), c_out = σ σ_d / √(σ² + σ_d²), c_in = 1 / √(σ² + σ_d²),
    c_noise = ln(σ) / 4. Each is shaped like ``sigma``.
    """
    sigma = torch.as_tensor(sigma)
    total = sigma**2 + sigma_data**2  # σ² + σ_d², the variance of x = x_0 + σ n
    c_skip = sigma_data**2 / total
    c_out = sigma * sigma_data / total.sqrt()
    c_in = 1 / total.sqrt()
    c_noise = sigma.log() / 4
    return c_skip, c_out, c_in, c_noise


def edm_sample_sigmas(
    n: int,
    P_mean: float = -1.2,
    P_std: float = 1.2,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """σ for training: ln σ ~ N(P_mean, P_std²) (Karras et al. 2022, Table 1), shape (n,). Chapter 6.

    Drawn on the generator's device (or ``device``), returned on ``device``.
    """
    draw_on = generator.device if generator is not None else device
    z = torch.randn(n, generator=generator, device=draw_on, dtype=dtype)
    return (P_mean + P_std * z).exp().to(device or z.device)


def edm_loss_weight(sigma: torch.Tensor | float, sigma_data: float = SIGMA_DATA) -> torch.Tensor:
    """λ(σ) = (σ² + σ_d²) / (σ σ_d)² = 1 / c_out², EDM's loss weight on ‖D - x_0‖² (Table 1). Chapter 6."""
    sigma = torch.as_tensor(sigma)
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def edm_target(
    x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor | float, sigma_data: float = SIGMA_DATA
) -> torch.Tensor:
    """F's target (x_0 - c_skip x) / c_out with x = x_0 + σ n (Karras et al. 2022, eq. 8). Chapter 6.

    ‖F - target‖² = λ(σ) ‖D - x_0‖², so an unweighted loss on F is EDM's weighted loss.
    """
    sigma = per_sample(torch.as_tensor(sigma), x0)
    c_skip, c_out, _, _ = edm_preconditioning(sigma, sigma_data)
    return (x0 - c_skip * (x0 + sigma * noise)) / c_out


class EDMDenoiser(nn.Module):
    """D(x; σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x; c_noise(σ)) around any network F (chapter 6).

    ``F`` is called as ``F(x, c_noise)`` (or with ``class_labels``) through
    ``call_model``, so c_noise plays the role of the timestep. ``x`` is the VE
    input x_0 + σ n. Karras et al. 2022, eq. 7 and Table 1.
    """

    def __init__(self, network: nn.Module, sigma_data: float = SIGMA_DATA):
        super().__init__()
        self.network, self.sigma_data = network, sigma_data

    def forward(
        self, x: torch.Tensor, sigma: torch.Tensor | float, class_labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, device=x.device, dtype=x.dtype)
        sigma = sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma  # (B,)
        c_skip, c_out, c_in, c_noise = edm_preconditioning(per_sample(sigma, x), self.sigma_data)
        F_x = call_model(self.network, c_in * x, c_noise.flatten(), class_labels)
        return c_skip * x + c_out * F_x  # D_x, (B, C, H, W)

    def x0_model(self, schedule: NoiseSchedule):
        """A model ``(x_t, t, class_labels=None) -> x̂_0`` on ``schedule``'s timesteps, for
        ``dl.sample(..., prediction="x0")``: x = x_t / a_t, σ = s_t / a_t."""

        def model(x_t: torch.Tensor, t: TimeLike, class_labels: torch.Tensor | None = None) -> torch.Tensor:
            a, s = schedule.scales(t)
            sigma = torch.as_tensor(s / a).to(x_t.device, x_t.dtype)
            return self(x_t / per_sample(a, x_t), sigma, class_labels)

        return model


# --------------------------------------------------------------------------- targets and predictions


def make_target(
    prediction: str,
    x0: torch.Tensor,
    noise: torch.Tensor,
    t: TimeLike,
    schedule: NoiseSchedule,
    sigma_data: float = SIGMA_DATA,
) -> torch.Tensor:
    """What a network trained for ``prediction`` should output at x_t = a_t x_0 + s_t ε (chapter 6).

    "eps": ε; "x0": x_0; "v": a_t ε - s_t x_0; "edm": F's target at σ = s_t / a_t.
    """
    _check_prediction(prediction)
    if prediction == "eps":
        return noise
    if prediction == "x0":
        return x0
    if prediction == "v":
        return x0_eps_to_v(x0, noise, t, schedule)
    a, s = schedule.scales(t)
    return edm_target(x0, noise, s / a, sigma_data)


def split_prediction(
    prediction: str,
    out: torch.Tensor,
    x_t: torch.Tensor,
    t: TimeLike,
    schedule: NoiseSchedule,
    sigma_data: float = SIGMA_DATA,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x̂_0, ε̂) from a network output ``out`` for ``prediction`` at (x_t, t) (chapters 4 and 6).

    For "edm", ``out`` is F evaluated at (c_in x, c_noise) with x = x_t / a_t and
    σ = s_t / a_t (what ``EDMDenoiser`` computes); x̂_0 = c_skip x + c_out F.
    """
    _check_prediction(prediction)
    if prediction == "eps":
        return eps_to_x0(out, x_t, t, schedule), out
    if prediction == "x0":
        return out, x0_to_eps(out, x_t, t, schedule)
    if prediction == "v":
        return v_to_x0(out, x_t, t, schedule), v_to_eps(out, x_t, t, schedule)
    a, s = _scales_like(x_t, t, schedule)
    c_skip, c_out, _, _ = edm_preconditioning(s / a, sigma_data)
    x0 = c_skip * (x_t / a) + c_out * out  # D(x; σ)
    return x0, x0_to_eps(x0, x_t, t, schedule)


# --------------------------------------------------------------------------- loss weightings


def _x0_weight(prediction: str, a: torch.Tensor, s: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """w with ‖out - target‖² = w ‖x̂_0 - x_0‖² at fixed x_t, for a schedule with scales (a, s)."""
    _check_prediction(prediction)
    snr = a**2 / s**2
    if prediction == "eps":  # ε̂ - ε = -(a/s)(x̂_0 - x_0)
        return snr
    if prediction == "x0":
        return torch.ones_like(snr)
    if prediction == "v":  # v̂ - v = -((a² + s²)/s)(x̂_0 - x_0); 1 + SNR for VP
        return (a**2 + s**2) ** 2 / s**2
    return snr + 1 / sigma_data**2  # 1 / c_out² at σ = s / a


def x0_weight_of(prediction: str, snr: torch.Tensor, sigma_data: float = SIGMA_DATA) -> torch.Tensor:
    """The effective weight on ‖x̂_0 - x_0‖² of a plain MSE on ``prediction``, for a VP schedule (chapter 6).

    SNR for "eps", 1 for "x0", 1 + SNR for "v", SNR + 1/σ_data² for "edm"
    (Salimans & Ho 2022, sec. 4; Hang et al. 2023, sec. 3).
    """
    snr = torch.as_tensor(snr)
    a, s = (snr / (1 + snr)).sqrt(), (1 / (1 + snr)).sqrt()  # VP scales with this SNR
    return _x0_weight(prediction, a, s, sigma_data)


def weight_from_scales(
    weighting: str,
    prediction: str,
    a: torch.Tensor,
    s: torch.Tensor,
    gamma: float = 5.0,
    sigma_data: float = SIGMA_DATA,
) -> torch.Tensor:
    """``loss_weight`` given the scales (a_t, s_t) instead of (t, schedule); used by ``diffusion_loss``."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; choose one of {list(WEIGHTINGS)}.")
    w_x0 = _x0_weight(prediction, a, s, sigma_data)
    if weighting == "uniform":
        return torch.ones_like(w_x0)
    snr = a**2 / s**2
    w = torch.minimum(snr, torch.full_like(snr, gamma)) / w_x0  # effective x0 weight min(SNR, γ)
    return torch.where(w_x0 == 0, 1.0, w)  # eps at SNR 0: the limit of min(SNR, γ) / SNR is 1


def loss_weight(
    weighting: str,
    prediction: str,
    t: TimeLike,
    schedule: NoiseSchedule,
    gamma: float = 5.0,
    sigma_data: float = SIGMA_DATA,
) -> torch.Tensor:
    """Per-sample weight of the loss on ``prediction`` at timestep t, shaped like t (chapter 6).

    "uniform": 1 (Ho et al.'s simple loss). "min_snr": min(SNR, γ) / w_x0 so that
    the effective x0 weight is min(SNR, γ) (Hang et al. 2023, eq. 9): min(SNR, γ)/SNR
    for eps, min(SNR, γ) for x0, min(SNR, γ)/(SNR + 1) for v (VP).
    """
    a, s = schedule.scales(t)
    return weight_from_scales(weighting, prediction, a, s, gamma, sigma_data)
