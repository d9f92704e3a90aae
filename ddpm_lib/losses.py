"""The training loss of a diffusion model (chapters 2 and 6).

One call: draw a timestep per sample, noise the batch, ask the network for its
prediction and compare it with the target of that prediction:

    t ~ U{0, ..., T-1},  ε ~ N(0, I),  x_t = a_t x_0 + s_t ε
    loss = mean_b  w(t_b) · mean_pixels d(model(x_t, t), target)

d is the squared error ("l2", Ho et al. 2020, eq. 14) or the absolute error ("l1");
the target is ε, x_0 or v (``targets.make_target``); w is "uniform" or "min_snr"
(``targets.loss_weight``). With ``prediction="edm"`` the noise level comes from
EDM's log-normal σ instead of the schedule (Karras et al. 2022): x = x_0 + σ n and
the network F is called as F(c_in x, c_noise), so c_noise = ln(σ)/4 is its "t".
"""

from __future__ import annotations

import torch

from .forward import add_noise, per_sample
from .modelcall import call_model
from .schedules import NoiseSchedule
from .targets import (
    PREDICTIONS,
    SIGMA_DATA,
    edm_preconditioning,
    edm_sample_sigmas,
    edm_target,
    make_target,
    weight_from_scales,
)

__all__ = ["diffusion_loss"]

LOSS_TYPES = {
    "l2": lambda err: err.square(),  # squared error (Ho et al. 2020)
    "l1": lambda err: err.abs(),  # absolute error (Chen et al. 2020, WaveGrad; Saharia et al. 2022)
}
REDUCTIONS = ("mean", "none")


def _check_choices(prediction: str, loss_type: str, reduction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; choose one of {list(PREDICTIONS)}.")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; choose one of {list(LOSS_TYPES)}.")
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; choose one of {list(REDUCTIONS)}.")


def _noised_batch(
    model, x0, schedule, prediction, class_labels, t, noise, sigma, generator, sigma_data, P_mean, P_std
):
    """(network output, target, a, s): the forward pass shared by every prediction."""
    B = x0.shape[0]
    draw_on = generator.device if generator is not None else x0.device
    if prediction == "edm":
        if sigma is None:
            sigma = edm_sample_sigmas(B, P_mean, P_std, generator=generator, device=x0.device)
        sigma = torch.as_tensor(sigma, device=x0.device, dtype=x0.dtype).expand(B)  # (B,)
    elif t is None:
        if schedule is None:
            raise ValueError(
                f"prediction={prediction!r} needs a schedule; pass e.g. dl.make_schedule('linear')."
            )
        t = torch.randint(0, schedule.num_timesteps, (B,), generator=generator, device=draw_on).to(x0.device)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=draw_on, dtype=x0.dtype).to(x0.device)
    if noise.shape != x0.shape:
        raise ValueError(
            f"noise has shape {tuple(noise.shape)} but x0 has {tuple(x0.shape)}; they must match."
        )

    if prediction == "edm":
        x = x0 + per_sample(sigma, x0) * noise  # x = x_0 + σ n, (B, C, H, W)
        _, _, c_in, c_noise = edm_preconditioning(sigma, sigma_data)  # (B,)
        out = call_model(model, per_sample(c_in, x0) * x, c_noise, class_labels)
        return out, edm_target(x0, noise, sigma, sigma_data), torch.ones_like(sigma), sigma
    x_t = add_noise(x0, noise, t, schedule)
    out = call_model(model, x_t, t, class_labels)
    a, s = schedule.scales(t)
    return out, make_target(prediction, x0, noise, t, schedule), a, s


def diffusion_loss(
    model,
    x0: torch.Tensor,
    schedule: NoiseSchedule | None,
    prediction: str = "eps",
    weighting: str = "uniform",
    loss_type: str = "l2",
    class_labels: torch.Tensor | None = None,
    t: torch.Tensor | int | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    min_snr_gamma: float = 5.0,
    reduction: str = "mean",
    sigma: torch.Tensor | float | None = None,
    sigma_data: float = SIGMA_DATA,
    P_mean: float = -1.2,
    P_std: float = 1.2,
) -> torch.Tensor:
    """The weighted denoising loss of ``model`` on the batch ``x0`` (B, C, H, W) (chapters 2 and 6).

    ``t`` (0-based, (B,) or one int) and ``noise`` are drawn with ``generator``
    unless given: first t ~ U{0, ..., T-1}, then ε ~ N(0, I). ``prediction`` is
    "eps" | "x0" | "v" | "edm"; ``weighting`` "uniform" | "min_snr" (γ =
    ``min_snr_gamma``); ``loss_type`` "l2" | "l1". For "edm", σ (``sigma``, else
    ln σ ~ N(P_mean, P_std²)) replaces t and "uniform" is EDM's own weighting λ(σ).
    Returns the mean over the batch, or per-sample losses (B,) with
    ``reduction="none"`` (pass ``t`` to know which timestep each one belongs to).
    The loss is computed in float32 whatever the network's output dtype.
    """
    _check_choices(prediction, loss_type, reduction)
    out, target, a, s = _noised_batch(
        model, x0, schedule, prediction, class_labels, t, noise, sigma, generator, sigma_data, P_mean, P_std
    )
    err = LOSS_TYPES[loss_type](out.float() - target.float())  # (B, C, H, W)
    per_sample_loss = err.mean(dim=tuple(range(1, err.ndim)))  # (B,)
    w = weight_from_scales(weighting, prediction, a, s, min_snr_gamma, sigma_data)
    w = torch.as_tensor(w, device=x0.device, dtype=torch.float32).expand(x0.shape[0])  # (B,)
    losses = w * per_sample_loss
    return losses.mean() if reduction == "mean" else losses
