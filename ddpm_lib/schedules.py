"""Noise schedules: how much signal and how much noise each timestep holds (chapter 3).

Every schedule describes a forward process x_t = a_t x_0 + s_t ε with ε ~ N(0, I).
How a_t and s_t split the signal-to-noise ratio depends on the schedule's ``kind``:

=====================  ======================  ==============================================
kind                   (a_t, s_t)              schedules
=====================  ======================  ==============================================
``"vp"``               (√ᾱ_t, √(1 - ᾱ_t))      linear, scaled_linear, cosine, sigmoid,
                       variance preserving     geodiff_sigmoid (Ho et al. 2020, eq. 4)
``"ve"``               (1, σ_t)                ve: geometric σ (Song et al. 2021, Karras
                       variance exploding      et al. 2022)
``"interpolation"``    (1 - u_t, u_t)          simple: chapter 3's ``corrupt`` with amount
                       neither: a_t + s_t = 1  u_t = (t+1)/T (not variance preserving)
=====================  ======================  ==============================================

Notation (the paper's symbols; ``t`` here is the 0-based index, the paper's t = 1 is index 0)

=========================  =========================================================
``betas``  (T,)            β_t, the variance added by step t
``alphas`` (T,)            α_t = 1 - β_t
``alphas_cumprod`` (T,)    ᾱ_t = Π_{s<=t} α_s
``snr(t)``                 SNR(t) = a_t² / s_t² (= ᾱ_t / (1 - ᾱ_t) for every kind)
``log_snr(t)``             λ_t = log SNR(t)
``sigma(t)``               σ_t = s_t / a_t = √((1 - ᾱ_t) / ᾱ_t), the VE / EDM noise level
=========================  =========================================================

Every kind has the same SNR curve as a variance-preserving process, so every
schedule also holds the ᾱ_t = SNR / (1 + SNR) and β_t of that equivalent VP
process; the kinds differ only by a per-timestep factor c_t (x_t^kind = c_t x_t^VP,
Kingma et al. 2021; Karras et al. 2022's s(t)).

Precision. ``betas``, ``alphas`` and ``alphas_cumprod`` are computed in the
schedule's dtype (float32 by default) exactly as diffusers computes them, so they
equal diffusers' arrays bit for bit for the same configuration. For a VP schedule
these arrays are the truth: at integer t, ``alpha_bar``, ``signal_scale`` and
``noise_scale`` read them as diffusers does (so ``add_noise`` equals
``DDPMScheduler.add_noise``), and λ_t is computed from them. The VE and "simple"
schedules are defined by their σ_t or amounts instead, kept in float64, since
float32 ᾱ_t = 1 / (1 + σ_t²) cannot hold a small σ_t (it rounds to 1).

Float timesteps: ``alpha_bar(t)`` and friends accept float t in [0, T-1] and
interpolate linearly in log-SNR between the neighbouring integer steps (exact for
the geometric VE sigmas). On the last interval of a schedule whose final SNR is 0
(zero-terminal-SNR, "simple") log-SNR is -inf, so there ᾱ is interpolated linearly
instead.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = [
    "SCHEDULES",
    "NoiseSchedule",
    "make_schedule",
    "rescale_zero_terminal_snr",
    "resolution_shift",
    "scale_input",
    "schedule_from_diffusers",
    "shift_log_snr",
]

TimeLike = int | float | torch.Tensor


# --------------------------------------------------------------------------- how each kind splits the SNR


def _vp_scales(lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(√ᾱ, √(1 - ᾱ)) with ᾱ = sigmoid(λ): a² + s² = 1."""
    return torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()


def _ve_scales(lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, σ) with σ = exp(-λ / 2): the signal is never shrunk."""
    return torch.ones_like(lam), torch.exp(-0.5 * lam)


def _interpolation_scales(lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(1 - u, u) with u / (1 - u) = σ, i.e. u = sigmoid(-λ / 2): a + s = 1."""
    return torch.sigmoid(0.5 * lam), torch.sigmoid(-0.5 * lam)


KINDS: dict[str, Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]] = {
    "vp": _vp_scales,
    "ve": _ve_scales,
    "interpolation": _interpolation_scales,
}


# --------------------------------------------------------------------------- checks


def _check_betas(betas: torch.Tensor) -> None:
    """0 < β_t < 1 for every step; only the last may be exactly 1 (zero terminal SNR)."""
    if betas.ndim != 1 or betas.numel() == 0:
        raise ValueError(f"betas must be a non-empty 1-D sequence; got shape {tuple(betas.shape)}.")
    inner_ok = bool(((betas[:-1] > 0) & (betas[:-1] < 1)).all())
    last_ok = bool((betas[-1] > 0) & (betas[-1] <= 1))
    if not (inner_ok and last_ok):
        bad = betas[~((betas > 0) & (betas < 1))]
        raise ValueError(
            f"betas must lie in (0, 1) (only the last may equal 1, for zero terminal SNR); got values like "
            f"{bad[:3].tolist()} (min {betas.min().item():.3g}, max {betas.max().item():.3g}). Use e.g. "
            "make_schedule('linear', beta_start=1e-4, beta_end=0.02)."
        )


def _check_beta_range(beta_start: float, beta_end: float) -> None:
    if not 0 < beta_start < 1 or not 0 < beta_end < 1:
        raise ValueError(
            f"beta_start and beta_end must lie in (0, 1); got beta_start={beta_start}, beta_end={beta_end}. "
            "DDPM uses beta_start=1e-4, beta_end=0.02."
        )
    if beta_end <= beta_start:
        raise ValueError(
            f"beta_end must be greater than beta_start (noise grows with t); got beta_start={beta_start}, "
            f"beta_end={beta_end}. Swap them, e.g. beta_start=1e-4, beta_end=0.02."
        )


def _check_num_timesteps(num_timesteps: Any) -> int:
    if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, int) or num_timesteps < 1:
        raise ValueError(f"num_timesteps must be an integer >= 1; got {num_timesteps!r}. DDPM uses 1000.")
    return num_timesteps


# ------------------------------------------------------------------- λ and β from each other (float64)


def _log_snr_from_betas(betas: torch.Tensor) -> torch.Tensor:
    """λ_t = log ᾱ_t - log(1 - ᾱ_t) with log ᾱ_t = Σ_{s<=t} log(1 - β_s), in float64."""
    log_alpha_bar = torch.cumsum(torch.log1p(-betas.double()), 0)
    return log_alpha_bar - torch.log(-torch.expm1(log_alpha_bar))


def _betas_from_log_snr(log_snr: torch.Tensor) -> torch.Tensor:
    """β_t = 1 - ᾱ_t / ᾱ_{t-1} (ᾱ_{-1} = 1) of the VP process with log-SNR λ_t, in float64."""
    log_alpha_bar = torch.nn.functional.logsigmoid(log_snr.double())
    previous = torch.cat([log_alpha_bar.new_zeros(1), log_alpha_bar[:-1]])
    return -torch.expm1(log_alpha_bar - previous)


# --------------------------------------------------------------------------- the schedule


class NoiseSchedule:
    """A discrete noise schedule with T steps: β_t, α_t, ᾱ_t and the functions of t (chapter 3).

    ``NoiseSchedule(betas)`` builds a variance-preserving schedule from its betas;
    ``NoiseSchedule.from_log_snr(log_snr, kind)`` builds any kind from its log-SNR.
    Timesteps ``t`` are 0-based indices in [0, T-1] (the paper's t = 1 is index 0),
    given as an int, a float or a tensor of either; float t is interpolated linearly
    in log-SNR (see the module docstring). The functions of t return tensors shaped
    like ``t`` on the schedule's device in the schedule's dtype, or in float64 when
    ``t`` is a float64 tensor.
    """

    def __init__(
        self,
        betas: torch.Tensor | Sequence[float],
        name: str = "custom",
        args: dict[str, Any] | None = None,
        *,
        kind: str = "vp",
        log_snr: torch.Tensor | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        betas = torch.as_tensor(betas).detach()
        if not betas.is_floating_point():
            betas = betas.double()
        _check_betas(betas)
        if kind not in KINDS:
            raise ValueError(f"unknown schedule kind {kind!r}; choose one of {list(KINDS)}.")
        dtype = dtype or (torch.float64 if betas.dtype == torch.float64 else torch.float32)
        self.name, self.args, self.kind = name, dict(args or {}), kind
        # float64 masters on the CPU; everything else is computed from them
        self._betas64 = betas.to("cpu", torch.float64)
        self._log_snr64 = (
            _log_snr_from_betas(self._betas64)
            if log_snr is None
            else torch.as_tensor(log_snr).to("cpu", torch.float64)
        )
        # the public arrays, computed like diffusers: β in `dtype`, α = 1 - β, ᾱ = cumprod(α)
        self.betas = self._betas64.to(device=device, dtype=dtype)  # β_t, (T,)
        self.alphas = 1.0 - self.betas  # α_t, (T,)
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)  # ᾱ_t, (T,)
        self._log_snr = self._log_snr_table(dtype)  # λ_t, (T,)
        self._log_snr_f64: torch.Tensor | None = None  # made when a float64 t asks for it

    def _log_snr_table(self, dtype: torch.dtype) -> torch.Tensor:
        """λ_t (T,) in ``dtype`` on the schedule's device; for VP computed from ``alphas_cumprod``."""
        if self.kind == "vp":  # so that every function of t agrees with the arrays
            alpha_bar = self.alphas_cumprod.cpu().to(torch.float64)
            log_snr = alpha_bar.log() - torch.log1p(-alpha_bar)
        else:
            log_snr = self._log_snr64
        return log_snr.to(dtype).to(self.betas.device)

    @classmethod
    def from_log_snr(
        cls,
        log_snr: torch.Tensor | Sequence[float],
        kind: str = "vp",
        name: str = "custom",
        args: dict[str, Any] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> NoiseSchedule:
        """A schedule from its log-SNR λ_t (T,), decreasing in t; ``kind`` splits it into (a_t, s_t)."""
        log_snr = torch.as_tensor(log_snr, dtype=torch.float64).cpu()
        if log_snr.ndim != 1 or log_snr.numel() == 0 or torch.isnan(log_snr).any():
            raise ValueError(
                f"log_snr must be a non-empty 1-D sequence without NaN; got shape {tuple(log_snr.shape)}."
            )
        if (log_snr[1:] > log_snr[:-1]).any():
            raise ValueError("log_snr must not increase with t: a later step cannot hold more signal.")
        return cls(
            _betas_from_log_snr(log_snr), name, args, kind=kind, log_snr=log_snr, device=device, dtype=dtype
        )

    # ------------------------------------------------------------------ basics

    @property
    def num_timesteps(self) -> int:
        """T, the number of steps."""
        return self.betas.shape[0]

    def __len__(self) -> int:
        return self.num_timesteps

    @property
    def device(self) -> torch.device:
        return self.betas.device

    @property
    def dtype(self) -> torch.dtype:
        return self.betas.dtype

    @property
    def variance_preserving(self) -> bool:
        """True for kind "vp": Var(x_t) = 1 when Var(x_0) = 1 (chapter 3)."""
        return self.kind == "vp"

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> NoiseSchedule:
        """A copy on ``device`` in ``dtype`` (computed afresh from the float64 masters)."""
        return NoiseSchedule(
            self._betas64,
            self.name,
            self.args,
            kind=self.kind,
            log_snr=self._log_snr64,
            device=device or self.device,
            dtype=dtype or self.dtype,
        )

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.args.items() if k != "num_timesteps")
        return (
            f"NoiseSchedule({self.name!r}{', ' + args if args else ''}, T={self.num_timesteps}, "
            f"kind={self.kind!r}, dtype={self.dtype}, device={self.device})"
        )

    # ------------------------------------------------------------------ functions of t

    def _as_timesteps(self, t: TimeLike) -> torch.Tensor:
        """``t`` as a tensor on the schedule's device, checked to lie in [0, T-1].

        Never waits for a GPU: a number or a CPU tensor is checked on the host (a ``ValueError``
        naming the values); a tensor already on an accelerator is checked there, asynchronously
        (``torch._assert_async``: on CUDA an out-of-range t stops the program with a device-side
        assertion, without this message; check such t on the CPU to see the values), so that a
        training step does not stop to read t back. Keep the schedule
        on the network's device (``schedule.to(device)``, as the Trainer does): a GPU t given to
        a CPU schedule is copied to the host, which waits for the GPU.
        """
        t = torch.as_tensor(t)  # numbers and lists: a CPU tensor; a tensor stays where it is
        if t.dtype == torch.bool:
            raise ValueError("t must hold integer or float timesteps, not booleans.")
        last = self.num_timesteps - 1
        if t.numel() and t.device.type == "cpu":
            if bool(t.min() < 0) or bool(t.max() > last):
                raise ValueError(
                    f"timesteps must lie in [0, {last}] (0-based indices into a schedule with T="
                    f"{self.num_timesteps}); got values from {t.min().item()} to {t.max().item()}."
                )
        elif t.numel():
            torch._assert_async(((t >= 0) & (t <= last)).all(),
                                f"timesteps must lie in [0, {last}] (0-based indices into a schedule with "
                                f"T={self.num_timesteps}).")
        return t.to(self.device)

    def log_snr(self, t: TimeLike) -> torch.Tensor:
        """λ_t = log(a_t² / s_t²) = log(ᾱ_t / (1 - ᾱ_t)); float t: linear in λ between integer steps."""
        t = self._as_timesteps(t)
        lam = self._log_snr  # (T,)
        if t.dtype == torch.float64 and lam.dtype != torch.float64:  # float64 t: float64 answers
            if self._log_snr_f64 is None:
                self._log_snr_f64 = self._log_snr_table(torch.float64)
            lam = self._log_snr_f64
        if not t.is_floating_point():
            return lam[t]
        lo = t.floor().long()
        hi = (lo + 1).clamp(max=self.num_timesteps - 1)
        w = (t - lo).to(lam.dtype)  # weight of the later step, in [0, 1)
        l0, l1 = lam[lo], lam[hi]
        terminal = torch.isinf(l1)  # zero terminal SNR: interpolate ᾱ linearly towards 0 instead
        out = l0 + w * (torch.where(terminal, l0, l1) - l0)
        alpha_bar = (1.0 - w) * torch.sigmoid(l0)
        out = torch.where(terminal, torch.log(alpha_bar) - torch.log1p(-alpha_bar), out)
        return torch.where(w == 0, l0, out)

    def snr(self, t: TimeLike) -> torch.Tensor:
        """SNR(t) = ᾱ_t / (1 - ᾱ_t) = a_t² / s_t² (Kingma et al. 2021)."""
        return torch.exp(self.log_snr(t))

    def alpha_bar(self, t: TimeLike) -> torch.Tensor:
        """ᾱ_t of the (equivalent) variance-preserving process: sigmoid(λ_t); ``alphas_cumprod[t]`` for VP."""
        t = self._as_timesteps(t)
        if self.kind == "vp" and not t.is_floating_point():
            return self.alphas_cumprod[t]
        return torch.sigmoid(self.log_snr(t))

    def sqrt_alpha_bar(self, t: TimeLike) -> torch.Tensor:
        """√ᾱ_t: the VP signal scale (Ho et al. 2020, eq. 4)."""
        return KINDS["vp"](self.log_snr(t))[0]

    def sqrt_one_minus_alpha_bar(self, t: TimeLike) -> torch.Tensor:
        """√(1 - ᾱ_t): the VP noise scale, computed without cancellation as √sigmoid(-λ_t)."""
        return KINDS["vp"](self.log_snr(t))[1]

    def sigma(self, t: TimeLike) -> torch.Tensor:
        """σ_t = √((1 - ᾱ_t) / ᾱ_t) = exp(-λ_t / 2): the VE / EDM noise level (Karras et al. 2022)."""
        return torch.exp(-0.5 * self.log_snr(t))

    def scales(self, t: TimeLike) -> tuple[torch.Tensor, torch.Tensor]:
        """(a_t, s_t) of x_t = a_t x_0 + s_t ε for this schedule's kind (table in the module docstring)."""
        t = self._as_timesteps(t)
        if self.kind == "vp" and not t.is_floating_point():
            alpha_bar = self.alphas_cumprod[t]
            return alpha_bar**0.5, (1 - alpha_bar) ** 0.5  # exactly as DDPMScheduler.add_noise
        return KINDS[self.kind](self.log_snr(t))

    def signal_scale(self, t: TimeLike) -> torch.Tensor:
        """a_t: √ᾱ_t (vp), 1 (ve), 1 - t/T (simple)."""
        return self.scales(t)[0]

    def noise_scale(self, t: TimeLike) -> torch.Tensor:
        """s_t: √(1 - ᾱ_t) (vp), σ_t (ve), t/T (simple)."""
        return self.scales(t)[1]

    @property
    def sigmas(self) -> torch.Tensor:
        """σ_t at every step, (T,), increasing: the grid a sigma-space sampler starts from."""
        return self.sigma(torch.arange(self.num_timesteps, device=self.device))

    @property
    def log_snrs(self) -> torch.Tensor:
        """λ_t at every step, (T,), decreasing."""
        return self._log_snr.clone()


# --------------------------------------------------------------------------- named schedules


def linear(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
    """β_t linear from beta_start to beta_end (Ho et al. 2020, sec. 4); diffusers' "linear"."""
    _check_beta_range(beta_start, beta_end)
    return NoiseSchedule(torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float32))


def scaled_linear(num_timesteps: int, beta_start: float = 0.00085, beta_end: float = 0.012) -> NoiseSchedule:
    """√β_t linear from √beta_start to √beta_end; diffusers' "scaled_linear" (latent diffusion).

    The defaults are Stable Diffusion's; diffusers' ``DDPMScheduler`` defaults to
    beta_start=1e-4, beta_end=0.02 for every beta_schedule, so pass them explicitly
    to compare.
    """
    _check_beta_range(beta_start, beta_end)
    root = torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float32)
    return NoiseSchedule(root**2)


def cosine(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
    """ᾱ(u) = cos²((u + s)/(1 + s) · π/2), β_t = min(1 - ᾱ((t+1)/T) / ᾱ(t/T), max_beta).

    Nichol & Dhariwal 2021, eq. 17; identical to diffusers' "squaredcos_cap_v2".
    """
    if not 0 < max_beta < 1:
        raise ValueError(f"max_beta must lie in (0, 1); got {max_beta}. Nichol & Dhariwal use 0.999.")

    def alpha_bar_fn(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    betas = [
        min(1 - alpha_bar_fn((i + 1) / num_timesteps) / alpha_bar_fn(i / num_timesteps), max_beta)
        for i in range(num_timesteps)
    ]
    return NoiseSchedule(torch.tensor(betas, dtype=torch.float32))


def sigmoid(
    num_timesteps: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0, clip_min: float = 1e-9
) -> NoiseSchedule:
    """ᾱ(u) = (v_end - sigmoid((u (end - start) + start)/τ)) / (v_end - v_start), u = (t+1)/T.

    The sigmoid ᾱ schedule of Jabri et al. 2022 / Chen 2023 ("On the importance of
    noise scheduling", Algorithm 1), with v = sigmoid(start/τ), sigmoid(end/τ) and ᾱ
    clipped below at clip_min. Not diffusers' "sigmoid" (that is GeoDiff's sigmoid
    in β: ``geodiff_sigmoid``).
    """
    if not end > start or not tau > 0:
        raise ValueError(
            f"the sigmoid schedule needs end > start and tau > 0; got start={start}, end={end}, "
            f"tau={tau}. Chen 2023 uses start=-3, end=3, tau=1."
        )
    u = torch.arange(1, num_timesteps + 1, dtype=torch.float64) / num_timesteps
    v_start, v_end = (torch.sigmoid(torch.tensor(x / tau, dtype=torch.float64)) for x in (start, end))
    v = torch.sigmoid((u * (end - start) + start) / tau)
    alpha_bar = ((v_end - v) / (v_end - v_start)).clamp(min=clip_min)
    one_minus = ((v - v_start) / (v_end - v_start)).clamp(max=1 - clip_min)  # 1 - ᾱ without cancellation
    return NoiseSchedule.from_log_snr(torch.log(alpha_bar) - torch.log(one_minus))


def geodiff_sigmoid(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
    """β_t = sigmoid(linspace(-6, 6, T)) (beta_end - beta_start) + beta_start (Xu et al. 2022, GeoDiff).

    diffusers calls this beta_schedule "sigmoid".
    """
    _check_beta_range(beta_start, beta_end)
    return NoiseSchedule(
        torch.sigmoid(torch.linspace(-6, 6, num_timesteps)) * (beta_end - beta_start) + beta_start
    )


def simple(num_timesteps: int) -> NoiseSchedule:
    """Chapter 3's ``corrupt(x, noise, amount) = (1 - amount) x + amount noise`` with amount u_t = (t+1)/T.

    Index t = 0 is the paper's t = 1 (amount 1/T); index T-1 is pure noise (SNR 0).
    Not variance preserving: Var(x_t) = (1 - u)² Var(x_0) + u², below 1 in the middle.
    """
    u = torch.arange(1, num_timesteps + 1, dtype=torch.float64) / num_timesteps
    return NoiseSchedule.from_log_snr(2 * (torch.log1p(-u) - torch.log(u)), kind="interpolation")


def ve(num_timesteps: int, sigma_min: float = 0.002, sigma_max: float = 80.0) -> NoiseSchedule:
    """x_t = x_0 + σ_t ε with σ_t geometric from sigma_min to sigma_max (Song et al. 2021, VE SDE).

    The defaults are Karras et al. 2022's (EDM). Variance exploding: the signal is
    never shrunk and Var(x_t) = Var(x_0) + σ_t².
    """
    if not 0 < sigma_min < sigma_max:
        raise ValueError(
            f"the VE schedule needs 0 < sigma_min < sigma_max; got sigma_min={sigma_min}, "
            f"sigma_max={sigma_max}. Karras et al. use 0.002 and 80."
        )
    if num_timesteps == 1:
        log_sigma = torch.tensor([math.log(sigma_max)], dtype=torch.float64)
    else:
        log_sigma = torch.linspace(
            math.log(sigma_min), math.log(sigma_max), num_timesteps, dtype=torch.float64
        )
    return NoiseSchedule.from_log_snr(-2 * log_sigma, kind="ve")


SCHEDULES: dict[str, Callable[..., NoiseSchedule]] = {
    "linear": linear,
    "scaled_linear": scaled_linear,
    "cosine": cosine,
    "sigmoid": sigmoid,
    "geodiff_sigmoid": geodiff_sigmoid,
    "simple": simple,
    "ve": ve,
}


def make_schedule(name: str, num_timesteps: int = 1000, **kwargs: Any) -> NoiseSchedule:
    """The named schedule with T = ``num_timesteps`` steps (chapter 3).

    ``name`` is a key of ``SCHEDULES``: "linear" (beta_start, beta_end), "scaled_linear"
    (beta_start, beta_end), "cosine" (s, max_beta), "sigmoid" (start, end, tau,
    clip_min), "geodiff_sigmoid" (beta_start, beta_end), "simple", "ve" (sigma_min,
    sigma_max). ``make_schedule(s.name, **s.args)`` rebuilds a named schedule ``s``.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {list(SCHEDULES)}.")
    num_timesteps = _check_num_timesteps(num_timesteps)
    builder = SCHEDULES[name]
    try:
        inspect.signature(builder).bind(num_timesteps, **kwargs)
    except TypeError:
        allowed = [p for p in inspect.signature(builder).parameters if p != "num_timesteps"]
        raise ValueError(f"schedule {name!r} takes the arguments {allowed}; got {sorted(kwargs)}.") from None
    schedule = builder(num_timesteps, **kwargs)
    schedule.name, schedule.args = name, {"num_timesteps": num_timesteps, **kwargs}
    return schedule


# --------------------------------------------------------------------------- transformations


def shift_log_snr(schedule: NoiseSchedule, shift: float) -> NoiseSchedule:
    """The same kind of schedule with λ_t + ``shift`` at every step (SNR multiplied by e^shift).

    A negative shift makes every step noisier. Chapter 3.
    """
    return NoiseSchedule.from_log_snr(
        schedule._log_snr64 + shift,
        kind=schedule.kind,
        name=f"{schedule.name}+shift({shift:.4g})",
        device=schedule.device,
        dtype=schedule.dtype,
    )


def resolution_shift(schedule: NoiseSchedule, image_size: int, base_size: int = 64) -> NoiseSchedule:
    """Shift λ_t by 2 log(base_size / image_size) (Hoogeboom et al. 2023, "simple diffusion", sec. 3.1).

    A schedule tuned at ``base_size`` pixels keeps destroying structure as fast at
    ``image_size`` pixels: larger images get a noisier schedule. Chapter 3.
    """
    if image_size <= 0 or base_size <= 0:
        raise ValueError(f"image_size and base_size must be positive; got {image_size} and {base_size}.")
    return shift_log_snr(schedule, 2 * math.log(base_size / image_size))


def scale_input(schedule: NoiseSchedule, b: float) -> NoiseSchedule:
    """The schedule seen when x_0 is multiplied by ``b`` (Chen 2023, sec. 2.2): SNR × b², λ + 2 log b.

    Chen scales x_0 by b and normalises x_t to unit variance before the network;
    neither changes anything but the SNR, so the equivalent schedule of the same
    kind has λ_t + 2 log b (b < 1 makes every step noisier). Chapter 3.
    """
    if b <= 0:
        raise ValueError(f"the input scale b must be positive; got {b}. Chen 2023 uses e.g. b = 0.5.")
    return shift_log_snr(schedule, 2 * math.log(b))


def rescale_zero_terminal_snr(schedule: NoiseSchedule) -> NoiseSchedule:
    """Shift and scale √ᾱ_t so that ᾱ_{T-1} = 0 and ᾱ_0 is unchanged (Lin et al. 2024, Algorithm 1).

    Computed in the schedule's dtype exactly like diffusers' ``rescale_betas_zero_snr``.
    The last step becomes pure noise (β = 1, SNR 0); a model trained with it should
    predict v or x0, since ε carries no information at SNR 0. Chapter 3.
    """
    if schedule.kind != "vp":
        raise ValueError(
            f"rescale_zero_terminal_snr needs a variance-preserving schedule; got kind "
            f"{schedule.kind!r} (the 'simple' schedule already ends at SNR 0)."
        )
    alpha_bar_sqrt = torch.cumprod(1.0 - schedule.betas, 0).sqrt()  # √ᾱ_t, (T,)
    first, last = alpha_bar_sqrt[0].clone(), alpha_bar_sqrt[-1].clone()
    alpha_bar_sqrt = (alpha_bar_sqrt - last) * (first / (first - last))  # now 0 at t = T-1, √ᾱ_0 at t = 0
    alpha_bar = alpha_bar_sqrt**2
    alphas = torch.cat([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    return NoiseSchedule(
        1 - alphas, name=f"{schedule.name}+zero_terminal_snr", device=schedule.device, dtype=schedule.dtype
    )


# --------------------------------------------------------------------------- diffusers


_FROM_DIFFUSERS = {  # diffusers beta_schedule -> (our name, the config keys our builder takes)
    "linear": ("linear", ("beta_start", "beta_end")),
    "scaled_linear": ("scaled_linear", ("beta_start", "beta_end")),
    "squaredcos_cap_v2": ("cosine", ()),
    "sigmoid": ("geodiff_sigmoid", ("beta_start", "beta_end")),
}


def schedule_from_diffusers(scheduler: Any) -> NoiseSchedule:
    """The schedule of a diffusers scheduler (``DDPMScheduler``, ``DDIMScheduler`` ...), same betas.

    The name and arguments come from the scheduler's config where they name one of
    our schedules (so ``make_schedule(s.name, **s.args)`` rebuilds it); trained or
    rescaled betas give a schedule named "custom" / "<name>+zero_terminal_snr".
    Chapters 1 and 3.
    """
    betas = getattr(scheduler, "betas", None)
    if betas is None:
        raise ValueError(
            f"a {type(scheduler).__name__} has no betas; pass a diffusers DDPM-family scheduler "
            "such as DDPMScheduler or DDIMScheduler."
        )
    config = getattr(scheduler, "config", {})
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    name, args = "custom", {}
    if get("trained_betas") is None and get("beta_schedule") in _FROM_DIFFUSERS:
        name, keys = _FROM_DIFFUSERS[get("beta_schedule")]
        args = {"num_timesteps": len(betas), **{k: get(k) for k in keys}}
        if get("rescale_betas_zero_snr", False):
            name, args = f"{name}+zero_terminal_snr", {}
    return NoiseSchedule(torch.as_tensor(betas, dtype=torch.float32), name=name, args=args)
