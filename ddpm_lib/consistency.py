"""Consistency models and consistency distillation, small enough to read in one go (chapter 7).

The probability-flow ODE of chapter 7, dx/dσ = (x - D(x; σ)) / σ in the variable
x_σ = x_0 + σ ε, carries every point x_σ along one trajectory down to σ_min. A
**consistency function** f(x, σ) jumps straight to the end of that trajectory: it
returns the same x_{σ_min} for every point of one trajectory (Song et al. 2023). One
network evaluation then makes a sample: f(σ_max z, σ_max).

Two ingredients make this learnable:

* **The boundary condition** f(x, σ_min) = x. At σ_min the trajectory has arrived, so
  f must be the identity there. The parameterisation builds it in exactly,
  f(x, σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x, ln(σ)/4), with c_skip(σ_min) = 1 and
  c_out(σ_min) = 0 (``consistency_scalings``). Without it, f ≡ 0 would satisfy every
  consistency condition; with it, the only consistent f is the ODE's flow map.
* **Consistency distillation.** On a grid σ_min = σ_1 < ... < σ_N = σ_max, draw
  x_{σ_{n+1}} = x_0 + σ_{n+1} ε, move it one step of a teacher's ODE solver to σ_n
  (``ode_step``: here with the toy's *exact* denoiser, so the only error of the teacher
  is the solver's one step), and pull f(x_{σ_{n+1}}, σ_{n+1}) towards the target
  network's f⁻(x̂_{σ_n}, σ_n). The target network is an exponential moving average of
  the online one (θ⁻ ← μ θ⁻ + (1 - μ) θ, no gradient through it), which keeps the
  regression target from chasing itself. Because f⁻ is the identity at σ_1, correct
  answers spread from the bottom of the grid upwards, one interval at a time.

Consistency *training* (not implemented here) replaces the teacher's step by the
one-sample estimate the training pair itself gives (x̂_{σ_n} = x_0 + σ_n ε with the same
ε), and needs no pretrained diffusion model.

Sampling (``sample_consistency``): one step is x = f(σ_max z, σ_max). More steps
alternate re-noising to a smaller σ (x + sqrt(σ² - σ_min²) z) and jumping back with f:
each extra step costs one more network evaluation and can correct the previous jump.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .samplers import karras_sigmas
from .train import EMA

__all__ = [
    "ConsistencyConfig",
    "ConsistencyModel",
    "consistency_scalings",
    "distill_consistency",
    "DistillationResult",
    "ode_step",
    "sample_consistency",
]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # D(x, sigma) -> x0_hat, sigma (B,)


def consistency_scalings(
    sigma: torch.Tensor, sigma_min: float, sigma_data: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_skip, c_out, c_in) of Song et al. (2023, Appendix C) at noise levels ``sigma``.

    c_skip = σ_d² / ((σ - σ_min)² + σ_d²),  c_out = σ_d (σ - σ_min) / sqrt(σ² + σ_d²),
    c_in = 1 / sqrt(σ² + σ_d²). At σ = σ_min: c_skip = 1 and c_out = 0, so
    f(x, σ_min) = x exactly, whatever the network F outputs. At large σ, c_skip → 0 and
    f is the network's (scaled) output.
    """
    sigma = torch.as_tensor(sigma)
    if (sigma < sigma_min).any():
        raise ValueError(f"noise levels must be at least sigma_min = {sigma_min}; got min {float(sigma.min())}.")
    c_skip = sigma_data**2 / ((sigma - sigma_min) ** 2 + sigma_data**2)
    c_out = sigma_data * (sigma - sigma_min) / (sigma**2 + sigma_data**2).sqrt()
    c_in = 1 / (sigma**2 + sigma_data**2).sqrt()
    return c_skip, c_out, c_in


class ConsistencyModel(nn.Module):
    """f(x, σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x, ln(σ)/4) with a small MLP F, for points (B, d).

    ``sigma`` is a number or a (B,) tensor, each at least ``sigma_min``.
    """

    def __init__(
        self, dim: int = 2, sigma_min: float = 0.002, sigma_data: float = 0.5, hidden: int = 128, depth: int = 3
    ) -> None:
        super().__init__()
        if sigma_min <= 0 or sigma_data <= 0:
            raise ValueError(f"sigma_min and sigma_data must be positive; got {sigma_min}, {sigma_data}.")
        self.dim, self.sigma_min, self.sigma_data = dim, sigma_min, sigma_data
        layers: list[nn.Module] = [nn.Linear(dim + 1, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        self.net = nn.Sequential(*layers, nn.Linear(hidden, dim))  # F

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected points of shape (B, {self.dim}); got {tuple(x.shape)}.")
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
        c_skip, c_out, c_in = (c[:, None] for c in consistency_scalings(sigma, self.sigma_min, self.sigma_data))
        features = torch.cat([c_in * x, sigma.log()[:, None] / 4], dim=1)
        return c_skip * x + c_out * self.net(features)


def ode_step(denoiser: Denoiser, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor,
             solver: str = "heun") -> torch.Tensor:
    """One step of the probability-flow ODE dx/dσ = (x - D(x; σ)) / σ from ``sigma`` to ``sigma_next`` (both (B,)).

    ``solver="euler"`` (one evaluation of D; the same as DDIM) or ``"heun"`` (two, second
    order; Karras et al. 2022, Algorithm 1), the teacher's solver of Song et al. (2023).
    """
    if solver not in ("euler", "heun"):
        raise ValueError(f"unknown solver {solver!r}; use 'euler' or 'heun'.")
    sigma, sigma_next = sigma[:, None], sigma_next[:, None]
    d = (x - denoiser(x, sigma[:, 0])) / sigma
    x_euler = x + (sigma_next - sigma) * d
    if solver == "euler":
        return x_euler
    d_next = (x_euler - denoiser(x_euler, sigma_next[:, 0])) / sigma_next
    return x + (sigma_next - sigma) * (d + d_next) / 2


@dataclass
class ConsistencyConfig:
    """Sizes of a consistency-distillation run (defaults: a 2-D toy in a few seconds of CPU)."""

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    num_scales: int = 18  # N, the grid of the teacher's steps (Song et al. use 18 for CIFAR-10)
    rho: float = 7.0  # Karras spacing of that grid
    sigma_data: float = 0.5
    target_decay: float = 0.95  # μ of the target network
    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3  # Adam's learning rate
    hidden: int = 128
    depth: int = 3
    solver: str = "heun"
    seed: int = 0

    def grid(self) -> torch.Tensor:
        """σ_1 < ... < σ_N (float64), Karras-spaced between sigma_min and sigma_max."""
        return karras_sigmas(self.sigma_min, self.sigma_max, self.num_scales, self.rho).flip(0)


@dataclass
class DistillationResult:
    model: ConsistencyModel  # the online network f_θ
    target: ConsistencyModel  # the EMA target f_θ⁻ (Song et al. sample with an EMA of θ too)
    losses: list[float] = field(default_factory=list)


def distill_consistency(
    denoiser: Denoiser,
    sample_data: Callable[[int, torch.Generator], torch.Tensor],
    config: ConsistencyConfig | None = None,
) -> DistillationResult:
    """Consistency distillation (Song et al. 2023, Algorithm 2) with a teacher's ODE step.

    ``denoiser(x, sigma)`` is the teacher's D(x; σ) for x (B, d) and σ (B,);
    ``sample_data(n, generator)`` draws n clean training points (n, d). Each step: draw x_0,
    an index n and ε; x = x_0 + σ_{n+1} ε; x̂ = ode_step(x, σ_{n+1} → σ_n); loss
    ‖f_θ(x, σ_{n+1}) - f_θ⁻(x̂, σ_n)‖²; Adam step on θ; θ⁻ ← μ θ⁻ + (1 - μ) θ.
    Deterministic for a given ``config.seed`` on the CPU.
    """
    config = config or ConsistencyConfig()
    if config.num_scales < 2 or config.steps < 1 or not 0 <= config.target_decay < 1:
        raise ValueError(
            f"need num_scales >= 2, steps >= 1 and 0 <= target_decay < 1; got {config.num_scales}, "
            f"{config.steps}, {config.target_decay}."
        )
    g = torch.Generator().manual_seed(config.seed)
    probe = sample_data(2, g)
    with torch.random.fork_rng(devices=[]):  # seed the initial weights without touching the global RNG
        torch.manual_seed(config.seed)
        model = ConsistencyModel(probe.shape[1], config.sigma_min, config.sigma_data, config.hidden, config.depth)
    target = EMA(model, decay=config.target_decay, warmup=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    grid = config.grid()
    result = DistillationResult(model, target.model)
    for _ in range(config.steps):
        x0 = sample_data(config.batch_size, g).to(torch.float32)
        n = torch.randint(0, config.num_scales - 1, (config.batch_size,), generator=g)
        sigma, sigma_next = grid[n + 1], grid[n]  # σ_{n+1} > σ_n
        x = x0 + sigma[:, None].float() * torch.randn(x0.shape, generator=g)
        with torch.no_grad():
            x_hat = ode_step(denoiser, x.double(), sigma, sigma_next, config.solver).float()
            y = target.model(x_hat, sigma_next.float())
        loss = (model(x, sigma.float()) - y).pow(2).sum(1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        target.update(model)
        result.losses.append(loss.item())
    return result


@torch.no_grad()
def sample_consistency(
    model: ConsistencyModel,
    noise: torch.Tensor,
    sigmas: Sequence[float],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Multistep consistency sampling (Song et al. 2023, Algorithm 1): len(sigmas) network evaluations.

    ``noise`` (B, d) is standard normal; ``sigmas`` starts with σ_max and decreases. Step 1:
    x = f(σ_max · noise, σ_max). Each later σ: re-noise x + sqrt(σ² - σ_min²) z, then x = f(·, σ).
    """
    sigmas = [float(s) for s in sigmas]
    if not sigmas or any(b >= a for a, b in zip(sigmas, sigmas[1:])) or sigmas[-1] < model.sigma_min:
        raise ValueError(f"sigmas must be decreasing and at least sigma_min = {model.sigma_min}; got {sigmas}.")
    x = model(noise * sigmas[0], sigmas[0])
    for sigma in sigmas[1:]:
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        x = model(x + math.sqrt(sigma**2 - model.sigma_min**2) * z, sigma)
    return x
