"""Samplers: from pure noise to data with a trained denoiser (chapters 4 and 7).

``sample(model, shape, schedule, sampler="unipc", steps=20)`` is the one call the
chapters use. Underneath, every sampler is a small function with the same signature::

    sampler(denoise, x_T, levels, generator=None, callback=None, **options) -> x_0

where ``denoise(x_t, i)`` returns the network's guess (x0_hat, eps_hat) at the i-th
noise level, ``levels`` is the grid of noise levels (``NoiseLevels``) and ``x_T`` is
standard-normal noise. The registry ``SAMPLERS`` is a plain dict.

Notation (t is a 0-based timestep index in [0, T-1], as in diffusers; the
paper's t = 1 is index 0; float t interpolates the schedule):

==================  ==========================================================
a_t, s_t            signal and noise scales: x_t = a_t x_0 + s_t ε
                    (variance preserving: a_t = √ᾱ_t, s_t = √(1 - ᾱ_t))
σ_t = s_t / a_t     the noise level of Karras et al. (2022): x_t / a_t = x_0 + σ_t ε
λ_t = log(a_t/s_t)  half the log-SNR (Lu et al. 2022 write λ_t for it)
x0_hat, eps_hat     the network's estimates of x_0 and ε at (x_t, t)
NFE                 number of network evaluations (``nfe(sampler, steps)``)
==================  ==========================================================

Every sampler walks the grid t_0 > t_1 > ... > t_{N-1} and then one last step to
clean data (a = 1, s = 0), so ``steps`` = N grid points. Samplers that work in
σ-space (euler, heun, euler_ancestral) or in λ (dpmpp_2m, unipc) compute with x_t / a_t or λ and hand
the network x_t and the (float) timestep whose σ it is, so any model trained on
integer timesteps, including a diffusers ``UNet2DModel``, is used as it is.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .modelcall import call_model, null_class_of
from .schedules import KINDS
from .targets import PREDICTIONS, EDMDenoiser

__all__ = [
    "DEFAULT_CLIP_X0",
    "DEFAULT_GUIDANCE_INTERVAL",
    "DEFAULT_SPACING",
    "GUIDED_DEFAULTS",
    "SAMPLERS",
    "SPACINGS",
    "NoiseLevels",
    "focused_sigmas",
    "guided_levels",
    "guided_nfe",
    "karras_sigmas",
    "log_snr_sigmas",
    "make_denoiser",
    "nfe",
    "noise_levels",
    "sample",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "sample_euler",
    "sample_euler_ancestral",
    "sample_heun",
    "sample_langevin",
    "sample_pc",
    "sample_unipc",
    "sigma_to_t",
    "timesteps",
]

TIMESTEP_SPACINGS = ("trailing", "leading", "linspace")
SIGMA_SPACINGS = ("karras", "edm", "log_snr", "focused", "angle")
# EDM's grid (Karras et al. 2022, section 5 and table 1): ρ = 7 between σ = 0.002 and 80, for data in [-1, 1]
EDM_SIGMA_MIN, EDM_SIGMA_MAX, EDM_RHO = 0.002, 80.0, 7.0
SPACINGS = TIMESTEP_SPACINGS + SIGMA_SPACINGS
DYNAMIC_THRESHOLD_QUANTILE = 0.995  # Saharia et al. 2022 (Imagen), section 2.3
# The one default of ``clip_x0`` for dl.sample, make_denoiser, Trainer.sample and the CLI's
# ``sample``: None, no clipping, since dl.sample also serves data that is not in [-1, 1]
# (the toys of chapters 4 and 7). Pass clip_x0=1.0 for images in [-1, 1] (diffusers' clip_sample).
DEFAULT_CLIP_X0: float | str | None = None
# ᾱ that stands in for ᾱ = 0 at a zero-terminal-SNR step, so that σ stays finite: 2^-24, as
# diffusers' EulerDiscreteScheduler does with rescale_betas_zero_snr (see ``noise_levels``).
ZERO_SNR_ALPHA_BAR = 2.0**-24

Denoiser = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]
Callback = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]


# ------------------------------------------------------------------ the grid
def timesteps(num_train: int, steps: int, spacing: str = "trailing", steps_offset: int = 0) -> torch.Tensor:
    """Integer timesteps for ``steps`` sampling steps out of ``num_train``, descending.

    The same numbers as diffusers' ``DDIMScheduler.set_timesteps`` for the same
    settings (Lin et al. 2024, table 2): "linspace" spreads them evenly over
    [0, T-1]; "leading" is 0, k, 2k, ... (k = T // steps) plus ``steps_offset``, so
    it never reaches T-1; "trailing" counts back from T-1 in steps of T / steps, so it
    starts where the noise is pure. Chapter 7.
    """
    _check_steps(steps)
    if steps > num_train:
        raise ValueError(f"steps={steps} is more than the {num_train} training timesteps; use at most {num_train}.")
    if spacing == "linspace":
        t = torch.linspace(0, num_train - 1, steps, dtype=torch.float64).round().flip(0)
    elif spacing == "leading":
        t = (torch.arange(steps, dtype=torch.float64) * (num_train // steps)).round().flip(0) + steps_offset
    elif spacing == "trailing":
        t = torch.arange(num_train, 0, -num_train / steps, dtype=torch.float64).round() - 1
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}; use one of {TIMESTEP_SPACINGS}.")
    return t.long()


def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float = 7.0) -> torch.Tensor:
    """σ_i = (σ_max^(1/ρ) + i/(n-1) (σ_min^(1/ρ) - σ_max^(1/ρ)))^ρ, i = 0..n-1 (Karras et al. 2022, eq. 5).

    Descending, float64, without the final σ = 0. Chapter 7.
    """
    _check_steps(n)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    inv_min, inv_max = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (inv_max + ramp * (inv_min - inv_max)) ** rho


def log_snr_sigmas(sigma_min: float, sigma_max: float, n: int) -> torch.Tensor:
    """σ spaced uniformly in log σ, i.e. uniformly in log-SNR = -2 log σ (Lu et al. 2022). Chapter 7."""
    _check_steps(n)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    return torch.exp(math.log(sigma_max) + ramp * (math.log(sigma_min) - math.log(sigma_max)))


def angle_sigmas(sigma_min: float, sigma_max: float, n: int) -> torch.Tensor:
    """σ_i = tan φ_i with φ uniform between arctan σ_max and arctan σ_min: uniform in the angle φ of
    x_t = cos φ · x_0 + sin φ · ε (variance preserving). Chapter 7.

    On the cosine schedule (Nichol & Dhariwal 2021) this is, up to the schedule's offset, the
    "linspace" grid of timesteps, so any schedule gets its spacing: most levels near σ ≈ 1,
    where the samples take shape, few at the extremes, and the ends σ_min and σ_max included.
    """
    _check_steps(n)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    hi, lo = math.atan(sigma_max), math.atan(sigma_min)
    return torch.tan(hi + ramp * (lo - hi))


# The "focused" spacing's range rule, fitted once on the 2-D and 64-D toys of
# benchmarks/samplers.py and checked there on held-out toys (data of std ≈ 0.5).
FOCUS_HIGH = (0.4, 0.75)  # σ_hi = 0.4 N^0.75
FOCUS_LOW = (0.15, 0.6)  # σ_lo = 0.15 N^-0.6


def focused_sigmas(sigma_min: float, sigma_max: float, n: int) -> torch.Tensor:
    """σ_max, then n-1 levels uniform in log σ between σ_lo = 0.15 N^-0.6 and σ_hi = 0.4 N^0.75.

    The range widens with the number of steps N = n (clamped to [σ_min, σ_max]), so
    the grid still fills the schedule's whole range as N grows: few steps go where
    the noise is so high that x0_hat is just the data mean, or so low that the last
    step is a small correction, and the rest go to σ ~ 0.02-5 where the samples take
    shape. Like Align Your Steps (Sabour et al. 2024), but a fixed rule; its constants
    assume data scaled like images in [-1, 1] (std about 0.5). Chapter 7.
    """
    _check_steps(n)
    if n == 1:
        return torch.tensor([sigma_max], dtype=torch.float64)
    hi = min(FOCUS_HIGH[0] * n ** FOCUS_HIGH[1], sigma_max)
    lo = min(max(FOCUS_LOW[0] * n ** -FOCUS_LOW[1], sigma_min), hi)
    return torch.cat([torch.tensor([sigma_max], dtype=torch.float64), log_snr_sigmas(lo, hi, n - 1)])


def _sigma_of_t(schedule, t: torch.Tensor) -> torch.Tensor:
    a, s = schedule.scales(t)  # float64, since t is
    return s / a


def sigma_to_t(sigma: torch.Tensor, schedule) -> torch.Tensor:
    """The float timestep t whose σ_t = s_t / a_t equals ``sigma`` (float64).

    Inverts the schedule's own interpolation of ᾱ(t) by bisection, so the network
    sees exactly the noise level the sampler computes with. σ outside the
    schedule's range is clamped to t = 0 or t = T-1. Chapter 7.
    """
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    T = len(schedule.alphas_cumprod)
    lo = torch.zeros_like(sigma)
    hi = torch.full_like(sigma, float(T - 1))
    for _ in range(60):  # 2^-60 of 1000 steps: far below float64 resolution of t
        mid = 0.5 * (lo + hi)
        above = _sigma_of_t(schedule, mid) > sigma
        hi = torch.where(above, mid, hi)
        lo = torch.where(above, lo, mid)
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class NoiseLevels:
    """The sampling grid: timesteps t_0 > ... > t_{N-1}, then clean data.

    ``a`` and ``s`` have N + 1 entries: the last is the clean end point (a = 1, s = 0).
    Chapter 7.
    """

    t: torch.Tensor  # (N,) float64 timesteps handed to the network
    a: torch.Tensor  # (N+1,) float64 signal scales a_t
    s: torch.Tensor  # (N+1,) float64 noise scales s_t

    def __len__(self) -> int:
        return len(self.t)

    @property
    def sigma(self) -> torch.Tensor:
        """σ_t = s_t / a_t, (N+1,), ending with 0."""
        return self.s / self.a

    @property
    def lam(self) -> torch.Tensor:
        """λ_t = log(a_t / s_t), (N+1,), ending with +inf."""
        return torch.log(self.a) - torch.log(self.s)

    def prior_scale(self) -> float:
        """Scale of x_T at t_0: √(a² + s²), so x_{t_0} ~ N(0, (a² + s²) I) (= N(0, I) if variance preserving)."""
        return math.sqrt(float(self.a[0] ** 2 + self.s[0] ** 2))


def noise_levels(
    schedule,
    steps: int,
    spacing: str | Sequence[int] = "trailing",
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    rho: float = 7.0,
) -> NoiseLevels:
    """The grid of ``steps`` noise levels for a named ``spacing`` or an explicit list of timesteps.

    Timestep spacings ("trailing", "leading", "linspace") give integer timesteps;
    σ spacings ("karras", "log_snr", "focused", "angle") give float timesteps between σ_min and
    σ_max (by default the schedule's own range, σ at t = 0 and at t = T-1; see
    ``karras_sigmas``, ``log_snr_sigmas``, ``focused_sigmas``, ``angle_sigmas``); "edm" is
    "karras" on EDM's range σ in [0.002, 80] clipped to the schedule's (so on the cosine
    schedule, whose σ at t = T-1 is about 2e4, it starts at σ = 80). Chapter 7.

    Zero terminal SNR (``rescale_zero_terminal_snr``, the "simple" schedule): at
    t = T-1 a_t = 0 and σ = ∞, where no sampler can step and eps-prediction would
    divide by a_t = 0. A level at t = T-1 therefore keeps t = T-1 for the network
    (which was trained there) but computes with ᾱ = 2^-24 (``ZERO_SNR_ALPHA_BAR``, as
    diffusers' EulerDiscreteScheduler), σ ≈ 4096, or with half the SNR of step T-2 when
    that is lower still, so σ keeps growing with t; the σ spacings start from that σ.
    Every grid is checked: finite, σ strictly decreasing, t within [0, T-1].
    """
    T = len(schedule.alphas_cumprod)
    if isinstance(spacing, str):
        if spacing in TIMESTEP_SPACINGS:
            t = timesteps(T, steps, spacing).to(torch.float64)
        elif spacing in SIGMA_SPACINGS:
            a_ends, s_ends = _grid_scales(schedule, torch.tensor([0.0, T - 1.0], dtype=torch.float64))
            ends = s_ends / a_ends  # σ at t = 0 and t = T-1 (finite: see above)
            lo = float(ends[0]) if sigma_min is None else sigma_min
            hi = float(ends[1]) if sigma_max is None else sigma_max
            if spacing == "karras":
                sig = karras_sigmas(lo, hi, steps, rho)
            elif spacing == "edm":  # EDM's range, clipped to the schedule's
                lo = max(lo, EDM_SIGMA_MIN) if sigma_min is None else lo
                hi = min(hi, EDM_SIGMA_MAX) if sigma_max is None else hi
                sig = karras_sigmas(lo, hi, steps, rho)
            elif spacing == "log_snr":
                sig = log_snr_sigmas(lo, hi, steps)
            elif spacing == "angle":
                sig = angle_sigmas(lo, hi, steps)
            else:
                sig = focused_sigmas(lo, hi, steps)
            t = sigma_to_t(sig, schedule)
            if spacing == "focused" and sigma_max is None:
                t[0] = T - 1.0  # start exactly where x_T lives
        else:
            raise ValueError(f"unknown spacing {spacing!r}; use one of {SPACINGS} or a list of timesteps.")
    else:
        t = torch.as_tensor(list(spacing), dtype=torch.float64)
        if t.ndim != 1 or len(t) < 1 or (t[1:] >= t[:-1]).any() or t.min() < 0 or t.max() > T - 1:
            raise ValueError(f"explicit timesteps must be strictly decreasing values in [0, {T - 1}]; got {t.tolist()}.")
    a, s = _grid_scales(schedule, t)
    one, zero = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    levels = NoiseLevels(t=t, a=torch.cat([a, one]), s=torch.cat([s, zero]))
    _check_grid(levels, spacing, T)
    return levels


def _zero_snr_scales(schedule) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, s) that stand in for the step at SNR 0: λ = log(ᾱ / (1 - ᾱ)) with ᾱ = 2^-24, or λ_{T-2} - log 2
    when that is lower (half the SNR of the last step that has signal), split by the schedule's kind."""
    lam = math.log(ZERO_SNR_ALPHA_BAR) - math.log1p(-ZERO_SNR_ALPHA_BAR)
    T = len(schedule.alphas_cumprod)
    if T > 1:
        a, s = (float(v) for v in schedule.scales(torch.tensor(T - 2.0, dtype=torch.float64)))
        if a > 0:
            lam = min(lam, 2 * (math.log(a) - math.log(s)) - math.log(2))
    return KINDS[getattr(schedule, "kind", "vp")](torch.tensor(lam, dtype=torch.float64))


def _grid_scales(schedule, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a_t, s_t) in float64 at the timesteps t, the step at SNR 0 (a_t = 0) replaced by ``_zero_snr_scales``."""
    a, s = schedule.scales(t)  # float64, since t is
    at_zero_snr = a <= 0
    if bool(at_zero_snr.any()):  # t and the schedule's tables live on the CPU here
        a_zero, s_zero = _zero_snr_scales(schedule)
        a, s = torch.where(at_zero_snr, a_zero, a), torch.where(at_zero_snr, s_zero, s)
    return a, s


def _check_grid(levels: NoiseLevels, spacing, T: int) -> None:
    """Raise unless every level is finite, t lies in [0, T-1] and σ decreases strictly down to 0."""
    sigma = levels.sigma  # (N+1,), ends with 0
    finite = bool(torch.isfinite(levels.t).all() and torch.isfinite(levels.a).all() and torch.isfinite(sigma).all())
    in_range = bool((levels.t >= 0).all() and (levels.t <= T - 1).all())
    if finite and in_range and bool((sigma[1:] < sigma[:-1]).all()):
        return
    where = spacing if isinstance(spacing, str) else "the explicit timesteps"
    raise ValueError(
        f"the sampling grid of {where} is not usable: it needs finite levels with σ strictly decreasing to 0 "
        f"and t in [0, {T - 1}]; got t = {[round(v, 3) for v in levels.t.tolist()]}, "
        f"σ = {[float(f'{v:.4g}') for v in sigma.tolist()]}. Use fewer steps, another spacing, or "
        "sigma_min < sigma_max inside the schedule's range."
    )


# ----------------------------------------------------------- the denoiser
def _split(prediction: str, out: torch.Tensor, x_t: torch.Tensor, a: float, s: float):
    """(x0_hat, eps_hat) from a network output (chapter 6's conversions; v = a ε - s x_0)."""
    if prediction == "eps":
        return (x_t - s * out) / a, out
    if prediction == "x0":
        return out, (x_t - a * out) / s
    # v-prediction, Salimans & Ho 2022: x_0 = a x_t - s v, ε = s x_t + a v (when a² + s² = 1)
    norm = a * a + s * s
    return (a * x_t - s * out) / norm, (s * x_t + a * out) / norm


def _clip(x0: torch.Tensor, clip_x0: float | str | None) -> torch.Tensor:
    """Clip x0_hat to [-c, c], or dynamic thresholding (Saharia et al. 2022) for "dynamic"."""
    if clip_x0 is None:
        return x0
    if clip_x0 == "dynamic":
        flat = x0.reshape(x0.shape[0], -1).abs()
        q = torch.quantile(flat.float(), DYNAMIC_THRESHOLD_QUANTILE, dim=1).to(x0.dtype).clamp(min=1.0)
        q = q.reshape(-1, *([1] * (x0.ndim - 1)))
        return x0.clamp(-q, q) / q
    return x0.clamp(-float(clip_x0), float(clip_x0))


def make_denoiser(
    model,
    levels: NoiseLevels,
    prediction: str = "eps",
    class_labels: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    null_class: int | None = None,
    clip_x0: float | str | None = DEFAULT_CLIP_X0,
    guidance_interval: tuple[float, float] | None = None,
) -> Denoiser:
    """Wrap a network as ``denoise(x_t, i) -> (x0_hat, eps_hat)`` at the i-th noise level.

    ``prediction="edm"``: the network is EDM's raw F, evaluated through
    ``targets.EDMDenoiser`` exactly as it was trained (Karras et al. 2022, eq. 7):
    x = x_t / a_t and σ = s_t / a_t, then x0_hat = D(x; σ) = c_skip x + c_out F(c_in x; ln(σ)/4).

    Classifier-free guidance (Ho & Salimans 2022): with ``null_class`` given, the
    conditional and unconditional passes run as one batch and
    eps = eps_u + w (eps_c - eps_u) (the same combination of x0_hat). With
    ``guidance_scale`` != 1 and no ``null_class``, the model's own null class is used
    (``modelcall.null_class_of``: K for a network built with ``num_classes=K``). ``clip_x0``
    (a number c or "dynamic") clips x0_hat and recomputes eps_hat from it
    (chapter 6's pitfall where ᾱ ≈ 0); its default is ``DEFAULT_CLIP_X0``. Chapters 7 and 8.

    ``guidance_interval=(σ_lo, σ_hi)`` guides only the levels with σ_lo <= σ <= σ_hi
    (Kynkäänniemi et al. 2024, "Applying guidance in a limited interval"); at the other
    levels the conditional network alone is evaluated (w = 1, one evaluation instead of
    two). ``guided_levels`` says which levels these are.

    The grid goes to the device once, cast on the CPU first (MPS has no float64), and
    the loop reads no value back from the device.
    """
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; use one of {list(PREDICTIONS)}.")
    if null_class is None and guidance_scale != 1.0:
        null_class = null_class_of(model)
        if null_class is None:
            raise ValueError(
                f"guidance_scale={guidance_scale} needs an unconditional model: pass null_class "
                "(the class index the model was trained with as 'no label') and class_labels."
            )
    if null_class is not None and class_labels is None:
        raise ValueError("classifier-free guidance needs class_labels as well as null_class.")
    guided = guided_levels(levels, guidance_interval)
    a_list, s_list = levels.a.tolist(), levels.s.tolist()  # Python floats: no device reads in the loop
    edm = EDMDenoiser(model) if prediction == "edm" else None
    # what the network is told at each level: σ for EDM, else the timestep (an integer when it is one)
    grid = levels.sigma[:-1] if edm is not None else levels.t
    integer_grid = edm is None and bool(torch.all(levels.t == levels.t.round()))
    on_device: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor | None]] = {}

    def grid_and_labels(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The grid (N,) and the labels (with the null class appended for guidance) on x's device, made once."""
        key = (x.device, x.dtype)
        if key not in on_device:
            dtype = torch.long if integer_grid else torch.promote_types(x.dtype, torch.float32)
            labels = None if class_labels is None else torch.as_tensor(class_labels).to(x.device)
            if labels is not None and null_class is not None:
                labels = labels.long()
                labels = torch.cat([labels, torch.full_like(labels, null_class)])  # (2B,): conditional, then null
            on_device[key] = (grid.to(dtype).to(x.device), labels)  # cast on the CPU, then move
        return on_device[key]

    def evaluate(x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return call_model(model, x, t, labels) if edm is None else edm(x, t, labels)

    def network(x: torch.Tensor, i: int) -> torch.Tensor:
        ts, labels = grid_and_labels(x)
        t = ts[i].expand(x.shape[0])  # (B,)
        if null_class is None:
            return evaluate(x, t, labels)
        if not guided[i]:  # outside the guidance interval: the conditional network alone
            return evaluate(x, t, labels[: x.shape[0]])
        out_c, out_u = evaluate(torch.cat([x, x]), t.repeat(2), labels).chunk(2)
        return out_u + guidance_scale * (out_c - out_u)  # linear, so the same for eps, x0, v and EDM's D

    def denoise(x_t: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        a, s = a_list[i], s_list[i]
        if edm is None:
            x0, eps = _split(prediction, network(x_t, i), x_t, a, s)
        else:
            x0, eps = _split("x0", network(x_t / a, i), x_t, a, s)  # D(x; σ) with x = x_t / a_t
        if clip_x0 is not None:
            x0 = _clip(x0, clip_x0)
            eps = (x_t - a * x0) / s
        return x0, eps

    return denoise


def guided_levels(levels: NoiseLevels, interval: tuple[float, float] | None = None) -> list[bool]:
    """For each level of ``levels``, whether guidance applies there: always without an
    ``interval``, else where σ_lo <= σ <= σ_hi. Chapter 8."""
    sigmas = levels.sigma.tolist()
    if interval is None:
        return [True] * len(sigmas)
    lo, hi = (float(v) for v in interval)
    if not 0 <= lo < hi:
        raise ValueError(f"guidance_interval must be (sigma_lo, sigma_hi) with 0 <= sigma_lo < sigma_hi; got {interval!r}.")
    return [lo <= s <= hi for s in sigmas]


def guided_nfe(levels: NoiseLevels, interval: tuple[float, float] | None = None) -> int:
    """Network evaluations per image of a guided sample on ``levels`` by a sampler that evaluates
    once at every level but the last (ddim, euler, dpmpp_2m, unipc): two at each guided level (the
    conditional and the unconditional pass), one elsewhere. Chapter 8."""
    return sum(2 if g else 1 for g in guided_levels(levels, interval)[:-1])


@torch.no_grad()
def denoising_error(
    model,
    schedule,
    x0: torch.Tensor,
    t: Sequence[float] | torch.Tensor,
    prediction: str = "eps",
    class_labels: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
) -> dict[str, torch.Tensor]:
    """How well the network denoises at each noise level: per-level mean squared errors on ``x0``.

    For every timestep in ``t`` the clean images ``x0`` are noised to x_t = a_t x0 + s_t ε
    (fresh ε from ``generator``) and the network's x0_hat and eps_hat are compared with
    the truth. Returns float64 tensors over the levels: ``t``, ``log_snr`` (2 λ_t),
    ``x0_mse`` and ``eps_mse`` (mean over pixels and images). Chapter 7 draws it against
    where each sampling grid spends its evaluations.
    """
    levels = noise_levels(schedule, len(t), sorted((float(v) for v in t), reverse=True))
    device, _ = _model_device_dtype(model, schedule)
    x0 = x0.to(device or x0.device)
    sums = torch.zeros(2, len(levels), dtype=torch.float64)  # squared errors of x0_hat, eps_hat
    for start in range(0, len(x0), batch_size):
        clean = x0[start : start + batch_size]
        labels = None if class_labels is None else class_labels[start : start + batch_size]
        denoise = make_denoiser(model, levels, prediction, class_labels=labels)
        for i in range(len(levels)):
            eps = _randn_like(clean, generator)
            x0_hat, eps_hat = denoise(float(levels.a[i]) * clean + float(levels.s[i]) * eps, i)
            sums[0, i] += float((x0_hat - clean).pow(2).sum())
            sums[1, i] += float((eps_hat - eps).pow(2).sum())
    x0_mse, eps_mse = sums / x0.numel()
    return {"t": levels.t, "log_snr": 2 * levels.lam[:-1], "x0_mse": x0_mse, "eps_mse": eps_mse}


# ----------------------------------------------------------- the samplers
def _notify(callback: Callback | None, i: int, levels: NoiseLevels, x: torch.Tensor, x0: torch.Tensor) -> None:
    if callback is not None:
        callback(i, levels.t[i], x, x0)


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise like x, drawn on the generator's device (as diffusers' randn_tensor)."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def _ddim_step(x0, eps, a_next, s_next, sigma_noise, generator):
    """x_next = a' x0 + √(s'² - σ²) eps + σ z (Song et al. 2021a, eq. 12, in scales a, s)."""
    x = a_next * x0 + math.sqrt(max(s_next**2 - sigma_noise**2, 0.0)) * eps
    if sigma_noise > 0:
        x = x + sigma_noise * _randn_like(x, generator)
    return x


def _posterior_std(levels: NoiseLevels, i: int) -> float:
    """Std of q(x_{t'} | x_t, x_0): √(s'² (s_t² - (a_t/a')² s'²)) / s_t, i.e. √β̃ (Ho et al. 2020, eq. 7)."""
    a, s, a1, s1 = (float(v) for v in (levels.a[i], levels.s[i], levels.a[i + 1], levels.s[i + 1]))
    s2_step = s**2 - (a / a1) ** 2 * s1**2  # s²_{t|t'}, β_t when the step is one timestep
    return math.sqrt(max(s2_step * s1**2 / s**2, 0.0))


def _ancestral_step(x, x0, levels: NoiseLevels, i: int, variance: str, generator) -> torch.Tensor:
    """x_{t'} = μ̃(x_t, x0_hat) + σ z with σ² = β̃ or β (Ho et al. 2020, eqs. 6-7, in scales a, s).

    μ̃ = a' s²_{t|t'} / s² · x0 + (a/a') s'² / s² · x_t, where s²_{t|t'} = s² - (a/a')² s'² is the
    variance of q(x_t | x_{t'}) (β_t when the step is one timestep). No noise on the last step.
    """
    if variance not in ("beta_tilde", "beta"):
        raise ValueError(f"unknown variance {variance!r}; use 'beta_tilde' or 'beta'.")
    a, s, a1, s1 = (float(v) for v in (levels.a[i], levels.s[i], levels.a[i + 1], levels.s[i + 1]))
    s2_step = max(s**2 - (a / a1) ** 2 * s1**2, 0.0)
    x_mean = (a1 * s2_step / s**2) * x0 + ((a / a1) * s1**2 / s**2) * x
    if i == len(levels) - 1:
        return x_mean
    std = _posterior_std(levels, i) if variance == "beta_tilde" else math.sqrt(s2_step)
    return x_mean + std * _randn_like(x, generator)


def sample_ddpm(denoise, x_T, levels, generator=None, callback=None, variance: str = "beta_tilde"):
    """Ancestral sampling, x_{t'} = μ̃(x_t, x0_hat) + σ z (Ho et al. 2020, Algorithm 2).

    ``variance`` "beta_tilde" is the posterior variance β̃ (eq. 7), "beta" is β_t;
    Ho et al. find both work. Chapter 4.
    """
    x = x_T * levels.prior_scale()
    for i in range(len(levels)):
        x0, _ = denoise(x, i)
        _notify(callback, i, levels, x, x0)
        x = _ancestral_step(x, x0, levels, i, variance, generator)
    return x


def sample_ddim(denoise, x_T, levels, generator=None, callback=None, eta: float = 0.0):
    """DDIM (Song et al. 2021a, eq. 12): deterministic for eta = 0, DDPM-like for eta = 1. Chapter 4."""
    x = x_T * levels.prior_scale()
    for i in range(len(levels)):
        x0, eps = denoise(x, i)
        _notify(callback, i, levels, x, x0)
        sigma_noise = eta * _posterior_std(levels, i)  # eq. 16
        x = _ddim_step(x0, eps, float(levels.a[i + 1]), float(levels.s[i + 1]), sigma_noise, generator)
    return x


def _denoise_sigma(denoise, x: torch.Tensor, levels: NoiseLevels, i: int, callback=None) -> torch.Tensor:
    """x0_hat at level i for x_σ = x_t / a_t (the network sees x_t = a_t x_σ); tells the callback when given."""
    x_t = x * float(levels.a[i])
    x0, _ = denoise(x_t, i)
    _notify(callback, i, levels, x_t, x0)
    return x0


def sample_euler(denoise, x_T, levels, generator=None, callback=None):
    """Euler's method for the probability-flow ODE dx/dσ = (x - D(x; σ)) / σ (Karras et al. 2022, eq. 3). Chapter 7."""
    sigma = levels.sigma
    x = x_T * levels.prior_scale() / float(levels.a[0])  # x_σ = x_t / a_t
    for i in range(len(levels)):
        x0 = _denoise_sigma(denoise, x, levels, i, callback)
        d = (x - x0) / float(sigma[i])  # dx/dσ
        x = x + (float(sigma[i + 1]) - float(sigma[i])) * d
    return x


def sample_heun(denoise, x_T, levels, generator=None, callback=None):
    """Heun's 2nd-order method (Karras et al. 2022, Algorithm 1, deterministic); Euler for the last step to σ = 0.

    NFE = 2 steps - 1. Chapter 7.
    """
    sigma = levels.sigma
    x = x_T * levels.prior_scale() / float(levels.a[0])
    for i in range(len(levels)):
        x0 = _denoise_sigma(denoise, x, levels, i, callback)
        d = (x - x0) / float(sigma[i])
        dt = float(sigma[i + 1]) - float(sigma[i])
        x_euler = x + dt * d  # Euler step
        if i == len(levels) - 1:
            x = x_euler
            break
        x0_next = _denoise_sigma(denoise, x_euler, levels, i + 1)  # apply 2nd-order correction
        d_next = (x_euler - x0_next) / float(sigma[i + 1])
        x = x + dt * 0.5 * (d + d_next)
    return x


def sample_dpmpp_2m(denoise, x_T, levels, generator=None, callback=None):
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), first order on the first and last step.

    x_{t'} = (s'/s) x_t - a' (e^{-h} - 1) D, h = λ' - λ, with D = x0_hat on the first step and
    D = (1 + 1/(2r)) x0_hat - 1/(2r) x0_hat_prev (r = h_prev / h) afterwards. Chapter 7.
    """
    a, s, lam = levels.a, levels.s, levels.lam
    x = x_T * levels.prior_scale()
    x0_prev = None
    for i in range(len(levels)):
        x0, _ = denoise(x, i)
        _notify(callback, i, levels, x, x0)
        last = i == len(levels) - 1
        if last:  # first order to σ = 0: x = x0_hat
            x = x0
            break
        h = float(lam[i + 1] - lam[i])
        if x0_prev is None:
            D = x0
        else:
            r = float(lam[i] - lam[i - 1]) / h
            D = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        x = (float(s[i + 1]) / float(s[i])) * x - float(a[i + 1]) * math.expm1(-h) * D
        x0_prev = x0
    return x


def _unipc_rhos(r: list[float], h: float, order: int, corrector: bool) -> list[float]:
    """The weights ρ of UniPC's B(h) = e^h - 1 variant ("bh2"), data prediction (Zhao et al. 2023, Algorithms 2-3).

    ``r`` holds r_k = (λ_{i-k} - λ_i) / h of the earlier points, then 1 (the new point).
    """
    hh = -h
    h_phi_k = math.expm1(hh) / hh - 1  # φ_2-type coefficients, built up recursively
    factorial = 1
    B_h = math.expm1(hh)
    R, b = [], []
    for k in range(1, order + 1):
        R.append([rk ** (k - 1) for rk in r])
        b.append(h_phi_k * factorial / B_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    if corrector and order == 1:
        return [0.5]
    if not corrector and order <= 2:
        return [0.5] * (order - 1)
    n = order if corrector else order - 1
    A = torch.tensor(R, dtype=torch.float64)[:n, :n]
    return torch.linalg.solve(A, torch.tensor(b[:n], dtype=torch.float64)).tolist()


def _unipc_update(x, x0_list, lam_list, a_next, s_next, s_now, lam_next, order, corrector, x0_new=None):
    """One UniPC predictor (or, with ``x0_new``, corrector) update from the last point of the history."""
    h = lam_next - lam_list[-1]
    r = [(lam_list[-1 - k] - lam_list[-1]) / h for k in range(1, order)] + [1.0]
    D1 = [(x0_list[-1 - k] - x0_list[-1]) / r[k - 1] for k in range(1, order)]  # divided differences
    rho = _unipc_rhos(r, h, order, corrector)
    B_h = math.expm1(-h)
    x_next = (s_next / s_now) * x - a_next * B_h * x0_list[-1]  # the DPM-Solver++ first-order step
    correction = sum((rk * d for rk, d in zip(rho, D1)), torch.zeros_like(x))
    if corrector:
        correction = correction + rho[-1] * (x0_new - x0_list[-1])
    return x_next - a_next * B_h * correction


def sample_unipc(denoise, x_T, levels, generator=None, callback=None, order: int = 2, final_order: int = 2):
    """UniPC (Zhao et al. 2023): a multistep predictor plus a corrector that reuses the next evaluation.

    After each step the network's x0_hat at the new point corrects that step (UniC),
    so the order rises by one at no extra NFE. ``order`` 1-3 (lowered on the first
    and last steps, like diffusers). ``final_order`` = 2 integrates the last step to
    σ = 0 with eps_hat linear in σ through the last two levels (x_0 = x_σ - σ ε +
    σ²/2 · Δε/Δσ) instead of jumping to x0_hat (``final_order`` = 1, as diffusers).
    NFE = steps. Chapter 7.
    """
    if order not in (1, 2, 3) or final_order not in (1, 2):
        raise ValueError(f"order must be 1, 2 or 3 and final_order 1 or 2; got {order}, {final_order}.")
    a, s, lam, sigma = levels.a.tolist(), levels.s.tolist(), levels.lam.tolist(), levels.sigma.tolist()
    N = len(levels)
    x = x_T * levels.prior_scale()
    x0s, lams, eps_prev, x_prev, this_order = [], [], None, None, 1
    for i in range(N):
        x0, eps = denoise(x, i)
        _notify(callback, i, levels, x, x0)
        if i > 0:  # corrector: redo the last step with the new x0_hat
            x = _unipc_update(x_prev, x0s, lams, a[i], s[i], s[i - 1], lam[i], this_order, True, x0)
        x0s, lams = (x0s + [x0])[-order:], (lams + [lam[i]])[-order:]
        if i == N - 1:
            if final_order == 1 or eps_prev is None:
                return x0
            slope = (eps_prev - eps) / (sigma[i - 1] - sigma[i])  # dε/dσ
            return x / a[i] - sigma[i] * eps + 0.5 * sigma[i] ** 2 * slope
        this_order = min(order, i + 1, N - i)
        x_prev, eps_prev = x, eps
        x = _unipc_update(x, x0s, lams, a[i + 1], s[i + 1], s[i], lam[i + 1], this_order, False)
    return x


def sample_euler_ancestral(denoise, x_T, levels, generator=None, callback=None, eta: float = 1.0):
    """Euler steps down to σ_down, then fresh noise of std σ_up (k-diffusion's ancestral Euler; Karras et al. 2022).

    σ_up = min(σ', eta √(σ'² (σ² - σ'²) / σ²)), σ_down = √(σ'² - σ_up²). Chapter 7.
    """
    sigma = levels.sigma
    x = x_T * levels.prior_scale() / float(levels.a[0])
    for i in range(len(levels)):
        x0 = _denoise_sigma(denoise, x, levels, i, callback)
        sig, sig_next = float(sigma[i]), float(sigma[i + 1])
        sigma_up = min(sig_next, eta * math.sqrt(max(sig_next**2 * (sig**2 - sig_next**2) / sig**2, 0.0)))
        sigma_down = math.sqrt(max(sig_next**2 - sigma_up**2, 0.0))
        x = x + (sigma_down - sig) * (x - x0) / sig
        if sigma_up > 0:
            x = x + sigma_up * _randn_like(x, generator)
    return x


def _langevin_step(x: torch.Tensor, score: torch.Tensor, step: float | torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """x <- x + δ ∇log p(x) + √(2δ) z: one step of Langevin dynamics (Song & Ermon 2019, eq. 4).

    δ is a number or a 0-d tensor on x's device (then nothing is read back to the host)."""
    return x + step * score + (2 * step) ** 0.5 * z


def _norms(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).norm(dim=1)  # (B,)


def sample_pc(
    denoise, x_T, levels, generator=None, callback=None, snr: float = 0.16, n_corrector: int = 1, variance: str = "beta"
):
    """Predictor-corrector sampling (Song et al. 2021b, Algorithms 4-5): at each level ``n_corrector``
    Langevin corrector steps with step size 2 α (snr ‖z‖ / ‖∇log p‖)² (norms averaged over the
    batch, as in their code), then an ancestral predictor step with variance β (their reverse-diffusion
    predictor; "beta_tilde" also works). NFE = steps (1 + n_corrector). Chapter 7.
    """
    x = x_T * levels.prior_scale()
    for i in range(len(levels)):
        s, alpha = float(levels.s[i]), float(levels.a[i] / levels.a[i + 1]) ** 2  # α_i = 1 - β_i for one timestep
        for _ in range(n_corrector):  # corrector
            _, eps = denoise(x, i)
            score = -eps / s  # ∇log p_t = -ε / s_t
            z = _randn_like(x, generator)
            step = 2 * alpha * (snr * _norms(z).mean() / _norms(score).mean()) ** 2  # batch means, as Song et al.
            x = _langevin_step(x, score, step, z)
        x0, _ = denoise(x, i)  # predictor
        _notify(callback, i, levels, x, x0)
        x = _ancestral_step(x, x0, levels, i, variance, generator)
    return x


def sample_langevin(
    denoise, x_T, levels, generator=None, callback=None, step_size: float = 1.0, n_steps_each: int = 10
):
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1), then one denoising step.

    At each noise level ``n_steps_each`` steps x <- x + (α/2) ∇log p_t + √α z with α = step_size · s_t²
    (their ε σ_i² / σ_L²; they use 0.2 and 100 steps per level, the defaults here are tuned on the
    toys for fewer evaluations); the final x0_hat = E[x_0 | x] (Tweedie; Song & Ermon 2020) costs
    one more evaluation. NFE = steps · n_steps_each + 1. Chapters 4 and 7.
    """
    x = x_T * levels.prior_scale()
    for i in range(len(levels)):
        s = float(levels.s[i])
        alpha = step_size * s**2
        for _ in range(n_steps_each):
            x0, eps = denoise(x, i)
            x = _langevin_step(x, -eps / s, alpha / 2, _randn_like(x, generator))  # ∇log p_t = -ε / s_t
        _notify(callback, i, levels, x, x0)
    x0, _ = denoise(x, len(levels) - 1)
    return x0


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "euler": sample_euler,
    "heun": sample_heun,
    "dpmpp_2m": sample_dpmpp_2m,
    "unipc": sample_unipc,
    "euler_ancestral": sample_euler_ancestral,
    "pc": sample_pc,
    "langevin": sample_langevin,
}

# The spacing each sampler uses unless told otherwise, chosen with benchmarks/samplers.py (issue 23).
# ODE samplers: "edm" for unipc (dl.sample's default sampler), euler and heun: on the shipped MNIST
# models (cosine schedule, σ at t = T-1 about 2e4) it beat every grid whose σ_max is the schedule's
# ("karras", "log_snr": their first steps see only the mean digit) and every grid that stops before
# t = 0 ("trailing", "focused"), while the exact toys prefer "focused" (they reward accurate
# integration, not where a trained network is useful; chapter 7). dpmpp_2m keeps "log_snr", the grid
# the shipped models' recorded sampler (ddpm_lib.json) and their model cards were measured with.
# euler_ancestral: "edm" as well; on the schedule's own range ("karras") its first steps are spent at
# σ ~ 2e4-100 on the cosine schedule (FD at 10 NFE, 1 seed: 87 against 309 unguided, 13 against 177
# with guidance w = 3).
DEFAULT_SPACING: dict[str, str] = {
    "ddpm": "trailing",
    "ddim": "trailing",
    "euler": "edm",
    "heun": "edm",
    "dpmpp_2m": "log_snr",
    "unipc": "edm",
    "euler_ancestral": "edm",
    "pc": "trailing",
    "langevin": "log_snr",
}


# With classifier-free guidance (guidance_scale != 1) these settings replace a sampler's defaults (its
# spacing, and each option the caller does not give), chosen on pretrained/ddpm-mnist-cond at w = 3 with
# benchmarks/samplers.py (issue 23). Guidance costs two evaluations a step, so 5 NFE are 2 steps: a grid
# that ends at t = 0 ("edm", "linspace", "log_snr") spends the second at σ ≈ 0.006, where nothing is left
# to decide, and returns the one-step guided x0_hat (FD 236 against 28.6 on "trailing"). The guided
# x0_hat overshoots the data range at high noise (|x0_hat| up to ~3.6 at w = 3), and UniPC's
# second-order last step carries the corrector's shift from the long first step into the sample
# (FD 54 against 28.6 with a first-order last step at 5 NFE; equal at 10). Guiding every level, order
# 1 (DDIM's step with UniPC's corrector) beat order 2 at NFE 10 and 20 on each of 3 seeds (10.7 vs
# 11.0, 11.6 vs 11.7); with the guidance interval below, order 2 is better. Unguided, "edm" and a
# second-order last step stay better.
# Guidance in a limited interval (Kynkäänniemi et al. 2024): with guidance_scale > 1 and
# guidance_interval "auto", ``sample`` guides only the levels with σ <= 2 and evaluates the conditional
# network alone above (one evaluation a step there instead of two). Chosen on pretrained/ddpm-mnist-cond
# at w = 3 (benchmarks/samplers.py, 3 seeds of 256): with UniPC of order 1, FD 8.8 / 4.8 / 3.9 at NFE
# 5/10/20 against 28.6 / 10.7 / 11.6 guiding every level; with the default's order 2 (below) 7.8 / 4.5
# / 3.8 (samplers.json); (0, 1.5] and (0.3, 2] were measured too.
# Guiding at high noise pushes every sample of a class toward the same coarse layout, which costs
# diversity (chapter 8); above σ ≈ 2 (t ≈ 700 of 1000 on the cosine schedule) the image is still
# mostly noise.
DEFAULT_GUIDANCE_INTERVAL: tuple[float, float] = (0.0, 2.0)

# With the interval, UniPC of order 2 beat order 1 (FD 7.8 / 4.5 against 8.8 / 4.8 at NFE 5 / 10, 3
# seeds); it is then the same update as diffusers' UniPCMultistepScheduler on its trailing grid.
GUIDED_DEFAULTS: dict[str, dict] = {
    "unipc": {"spacing": "trailing", "order": 2, "final_order": 1},
}


def default_settings(sampler: str, guidance_scale: float = 1.0) -> tuple[str, dict]:
    """(spacing, options) that ``sample`` uses for ``sampler`` when given neither: ``DEFAULT_SPACING``
    and no options, or with guidance (``guidance_scale`` != 1) ``GUIDED_DEFAULTS`` where it names the
    sampler. Chapter 7."""
    _check_sampler(sampler)
    if guidance_scale != 1.0 and sampler in GUIDED_DEFAULTS:
        options = dict(GUIDED_DEFAULTS[sampler])
        return options.pop("spacing", DEFAULT_SPACING[sampler]), options
    return DEFAULT_SPACING[sampler], {}


def nfe(sampler: str, steps: int, **options) -> int:
    """Network evaluations of one ``sample`` call (a guided batch counts once). Chapter 7."""
    _check_sampler(sampler)
    _check_steps(steps)
    defaults = {k: p.default for k, p in inspect.signature(SAMPLERS[sampler]).parameters.items()}
    if sampler == "heun":
        return 2 * steps - 1
    if sampler == "pc":
        return steps * (1 + options.get("n_corrector", defaults["n_corrector"]))
    if sampler == "langevin":
        return steps * options.get("n_steps_each", defaults["n_steps_each"]) + 1
    return steps


def _check_sampler(sampler: str) -> None:
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; use one of {sorted(SAMPLERS)}.")


def _check_steps(steps: int) -> None:
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a whole number >= 1; got {steps!r}.")


def _model_device_dtype(model, schedule=None) -> tuple[torch.device | None, torch.dtype]:
    """Device and dtype of the model's first parameter; a model without parameters
    (an exact toy model, a function) has no device (None) and follows the schedule's dtype."""
    params = getattr(model, "parameters", None)
    first = next(iter(params()), None) if callable(params) else None
    if first is None:
        alphas = getattr(schedule, "alphas_cumprod", None)
        return None, alphas.dtype if torch.is_tensor(alphas) and alphas.is_floating_point() else torch.float32
    return first.device, first.dtype


@torch.no_grad()
def sample(
    model,
    shape: Sequence[int],
    schedule,
    sampler: str = "unipc",
    steps: int = 20,
    prediction: str = "eps",
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    x_T: torch.Tensor | None = None,
    class_labels: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    spacing: str | Sequence[int] | None = None,
    eta: float | None = None,
    clip_x0: float | str | None = DEFAULT_CLIP_X0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    null_class: int | None = None,
    guidance_interval: tuple[float, float] | str | None = "auto",
    **sampler_kwargs,
) -> torch.Tensor:
    """Draw samples x_0 (shape) from ``model`` with the named ``sampler`` in ``steps`` steps.

    Args:
        model: ``model(x_t, t)`` (or ``model(x_t, t, class_labels=...)``) returning the
            ``prediction`` ("eps", "x0" or "v"); a diffusers ``UNet2DModel`` works as is.
            For "edm" the model is EDM's F, called as ``F(c_in x, c_noise)`` (see ``make_denoiser``).
        spacing: "trailing" | "leading" | "linspace" | "karras" | "edm" | "log_snr" | "focused" |
            "angle", or an explicit decreasing list of timesteps; None picks
            ``DEFAULT_SPACING[sampler]``, or with guidance ``GUIDED_DEFAULTS[sampler]``'s (see
            ``default_settings``: the default unipc uses "trailing", order 2 and a first-order
            last step when ``guidance_scale`` != 1).
        x_T: standard-normal starting noise (shape); drawn with ``generator`` when None.
            It is scaled to the first noise level by the sampler (× √(a² + s²), i.e. unchanged
            for a variance-preserving schedule), so samplers compared from the same x_T
            start from the same point. It is moved to the model's device (or ``device``).
        device, dtype: where and in what dtype to sample; default: the model's first
            parameter (a model without parameters: x_T's device, else the CPU).
        eta: noise of "ddim" (0: deterministic) and "euler_ancestral" (default 1).
        guidance_scale, null_class: classifier-free guidance with weight w; the model's
            unconditional class index is ``null_class`` (default: the model's own, see
            ``modelcall.null_class_of``). With guidance the default sampler's settings change
            (``GUIDED_DEFAULTS``); for images in [-1, 1] also pass ``clip_x0=1.0``: guided x0_hat
            overshoots the data range at high noise, and on the shipped guided model (w = 3)
            clipping it improved the FD at NFE 10 and 20 (UniPC of order 2: 9.3 and 9.0 against
            11.0 and 11.7, 3 seeds) but not at NFE 5 (38 against 29; benchmarks/samplers.py).
        guidance_interval: (σ_lo, σ_hi): guide only where σ_lo <= σ <= σ_hi and evaluate the
            conditional network alone elsewhere (``make_denoiser``; chapter 8); "auto" (the
            default) is ``DEFAULT_GUIDANCE_INTERVAL`` for w > 1 and every level for w <= 1 (w = 0
            stays unconditional); None guides every level (classifier-free guidance as Ho &
            Salimans wrote it).
        clip_x0: None, a number c (clip x0_hat to [-c, c]) or "dynamic" (Saharia et al. 2022);
            the default ``DEFAULT_CLIP_X0`` (None) is the same for ``Trainer.sample`` and the CLI.
        callback: called as ``callback(i, t, x_t, x0_hat)`` once per step.
        sampler_kwargs: options of the sampler (``variance`` for ddpm, ``snr`` and
            ``n_corrector`` for pc, ``step_size`` and ``n_steps_each`` for langevin) and of
            the σ spacings (``sigma_min``, ``sigma_max``, ``rho``).

    Returns the final x_0, shaped ``shape``. Chapters 4 and 7.
    """
    _check_sampler(sampler)
    _check_steps(steps)
    fn = SAMPLERS[sampler]
    grid_options = {k: sampler_kwargs.pop(k) for k in ("sigma_min", "sigma_max", "rho") if k in sampler_kwargs}
    if eta is not None:
        sampler_kwargs["eta"] = eta
    allowed = [p for p in inspect.signature(fn).parameters if p not in ("denoise", "x_T", "levels", "generator", "callback")]
    unknown = sorted(set(sampler_kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"sampler {sampler!r} has no option {unknown}; its options are {allowed}.")
    default_spacing, default_options = default_settings(sampler, guidance_scale)
    sampler_kwargs = {**default_options, **sampler_kwargs}  # the caller's options win
    levels = noise_levels(schedule, steps, default_spacing if spacing is None else spacing, **grid_options)

    model_device, model_dtype = _model_device_dtype(model, schedule)
    given = x_T.device if x_T is not None else None
    device = torch.device(device) if device is not None else model_device or given or torch.device("cpu")
    if x_T is None:
        gen_device = generator.device if generator is not None else device
        x_T = torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=dtype or model_dtype)
    elif tuple(x_T.shape) != tuple(shape):
        raise ValueError(f"x_T has shape {tuple(x_T.shape)} but shape={tuple(shape)}; give matching shapes.")
    x_T = x_T.to(dtype=dtype or x_T.dtype).to(device)  # cast where it is first: MPS has no float64
    if class_labels is not None:
        class_labels = torch.as_tensor(class_labels, device=x_T.device)
    if isinstance(guidance_interval, str):
        if guidance_interval != "auto":
            raise ValueError(f"guidance_interval must be 'auto', None or (sigma_lo, sigma_hi); got {guidance_interval!r}.")
        guidance_interval = DEFAULT_GUIDANCE_INTERVAL if guidance_scale > 1.0 else None  # w < 1 (0: unconditional) everywhere
    denoise = make_denoiser(model, levels, prediction, class_labels, guidance_scale, null_class, clip_x0,
                            guidance_interval)
    return fn(denoise, x_T, levels, generator=generator, callback=callback, **sampler_kwargs)
