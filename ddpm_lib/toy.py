"""Toy data with an exact score: Gaussian mixtures in 2-D and in d dimensions.

Chapter 4 draws the score field of a 2-D mixture and samples it with the reverse
SDE, the probability-flow ODE and annealed Langevin dynamics; chapter 7 measures
every sampler against the exact answer. Because a mixture of Gaussians stays a
mixture of Gaussians under the forward process, everything a perfect network would
know is available in closed form: the noised density, its score and the optimal
eps / x0 / v predictions. ``GaussianMixture.as_model`` wraps them as a "network"
``model(x_t, t)`` that the samplers use like any trained model.

Notation:

========================  ====================================================
``means``  (K, d)         μ_k, the component means
``covs``   (K, d, d)      Σ_k = U_k diag(λ_k) U_kᵀ, the component covariances
``weights`` (K,)          π_k, the mixing weights (they sum to 1)
``a``, ``s``              signal and noise scales of x_t = a x_0 + s ε; for a
                          variance-preserving schedule a = √ᾱ_t, s = √(1 - ᾱ_t)
p_t(x)                    Σ_k π_k N(x; a μ_k, a² Σ_k + s² I)  (the noised density)
``t``                     0-based timestep index in [0, T-1], int or float
                          (the paper's t = 1 is index 0)
========================  ====================================================

All the maths runs in float64 (whatever the input dtype) and the results come
back in the input's dtype and device.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .targets import PREDICTIONS

__all__ = [
    "MIXTURES_2D",
    "ExactDenoiser",
    "GaussianMixture",
    "make_2d_mixture",
    "make_mixture",
]

# The exact model predicts what a network would: eps, x0 or v (not EDM's F, which needs EDMDenoiser).
EXACT_PREDICTIONS = tuple(p for p in PREDICTIONS if p != "edm")


def _scales(schedule, t) -> tuple[torch.Tensor, torch.Tensor]:
    """(a_t, s_t) of x_t = a_t x_0 + s_t ε from ``schedule.scales(t)``, in float64 (the toy's maths)."""
    a, s = schedule.scales(t)
    return a.to(torch.float64), s.to(torch.float64)


class GaussianMixture:
    """A mixture Σ_k π_k N(μ_k, Σ_k) in d dimensions, with its exact noised density.

    Give the covariances either as ``covs`` (K, d, d), or as ``stds``: a number
    (one isotropic std for every component), (K,) (one per component) or (K, d)
    (diagonal). ``weights`` default to uniform. Chapter 4.
    """

    def __init__(
        self,
        means: torch.Tensor,
        covs: torch.Tensor | None = None,
        stds: torch.Tensor | float | None = None,
        weights: torch.Tensor | None = None,
    ) -> None:
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, d); got {tuple(means.shape)}.")
        K, d = means.shape
        if (covs is None) == (stds is None):
            raise ValueError("give exactly one of covs (K, d, d) or stds (number, (K,) or (K, d)).")
        if covs is None:
            stds = torch.as_tensor(stds, dtype=torch.float64)
            if stds.ndim == 0 or stds.shape == (K,):
                stds = stds.reshape(-1, 1).expand(K, d)
            if stds.shape != (K, d) or (stds <= 0).any():
                raise ValueError(f"stds must be positive, a number or shaped (K,) or (K, d) = ({K}, {d}).")
            covs = torch.diag_embed(stds**2)
        covs = torch.as_tensor(covs, dtype=torch.float64)
        if covs.shape != (K, d, d):
            raise ValueError(f"covs must have shape (K, d, d) = ({K}, {d}, {d}); got {tuple(covs.shape)}.")
        weights = torch.full((K,), 1.0 / K, dtype=torch.float64) if weights is None else torch.as_tensor(weights)
        weights = weights.to(torch.float64)
        if weights.shape != (K,) or (weights <= 0).any():
            raise ValueError(f"weights must be {K} positive numbers; got {weights.tolist()}.")
        covs = 0.5 * (covs + covs.transpose(1, 2))
        eigvals, eigvecs = torch.linalg.eigh(covs)  # Σ_k = U_k diag(λ_k) U_kᵀ
        if (eigvals <= 0).any():
            raise ValueError("every covariance must be positive definite.")
        self.means = means  # μ_k (K, d)
        self.covs = covs  # Σ_k (K, d, d)
        self.weights = weights / weights.sum()  # π_k (K,)
        self.eigvals = eigvals  # λ_k (K, d)
        self.eigvecs = eigvecs  # U_k (K, d, d), columns are eigenvectors
        self._on_device: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    # ----------------------------------------------------------------- basics
    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    def mean(self) -> torch.Tensor:
        """E[x] = Σ_k π_k μ_k, shape (d,)."""
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        """Cov[x] = Σ_k π_k (Σ_k + μ_k μ_kᵀ) - E[x] E[x]ᵀ, shape (d, d)."""
        m = self.mean()
        second = torch.einsum("k,kij->ij", self.weights, self.covs + self.means[:, :, None] * self.means[:, None, :])
        return second - torch.outer(m, m)

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        return_labels: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` points (n, d): pick k ~ π, then x = μ_k + U_k √λ_k z.

        With ``return_labels`` also returns the component of each point (n,).
        The generator's device decides where the random numbers are drawn.
        """
        gen_device = generator.device if generator is not None else torch.device("cpu")
        labels = torch.multinomial(self.weights.to(gen_device), n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, device=gen_device, dtype=torch.float64)
        means, _, eigvals, eigvecs = self._params(gen_device)
        x = means[labels] + torch.einsum("nij,nj->ni", eigvecs[labels], eigvals[labels].sqrt() * z)
        x = x.to(device=device or gen_device, dtype=dtype)
        return (x, labels.to(x.device)) if return_labels else x

    def _params(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        """(μ, log π, λ, U) on ``device`` in float64, cached per device."""
        device = torch.device(device)
        if device not in self._on_device:
            self._on_device[device] = tuple(
                p.to(device) for p in (self.means, self.weights.log(), self.eigvals, self.eigvecs)
            )
        return self._on_device[device]

    # ----------------------------------------------- the maths at scales (a, s)
    def _components(self, x: torch.Tensor, a: torch.Tensor, s: torch.Tensor, class_labels=None):
        """Per-component quantities of p_t for x (B, d) at scales a, s (B,) or scalars.

        Returns z = U_kᵀ (x - a μ_k) (B, K, d), the per-direction variances
        v = a² λ_k + s² (B, K, d), the log responsibilities log r_k(x) (B, K)
        and log p_t(x) (B,). With ``class_labels`` (B,), rows whose label is a
        component index k are conditioned on that component (r_k = 1); rows whose
        label is K (the null class) stay unconditional.
        """
        means, log_pi, eigvals, eigvecs = self._params(x.device)
        x = x.to(torch.float64)
        a = torch.as_tensor(a, dtype=torch.float64, device=x.device).reshape(-1, 1, 1)
        s = torch.as_tensor(s, dtype=torch.float64, device=x.device).reshape(-1, 1, 1)
        diff = x[None, :, :] - a.transpose(0, 1) * means[:, None, :]  # x - a μ_k, (K, B, d)
        z = torch.bmm(diff, eigvecs).transpose(0, 1)  # U_kᵀ (x - a μ_k), (B, K, d)
        var = a**2 * eigvals[None] + s**2  # (B, K, d)
        log_normal = -0.5 * ((z**2 / var) + var.log() + math.log(2 * math.pi)).sum(-1)  # (B, K)
        logits = log_pi[None] + log_normal  # (B, K)
        log_p = torch.logsumexp(logits, dim=1)  # (B,)
        if class_labels is not None:
            labels = torch.as_tensor(class_labels, device=x.device).long().reshape(-1)
            K = means.shape[0]
            conditional = labels < K
            one_hot = torch.nn.functional.one_hot(labels.clamp(max=K - 1), K).bool()
            mask = conditional[:, None] & ~one_hot
            logits = logits.masked_fill(mask, -math.inf)
            log_p = torch.where(conditional, log_normal.gather(1, labels.clamp(max=K - 1)[:, None])[:, 0], log_p)
        log_r = logits - torch.logsumexp(logits, dim=1, keepdim=True)  # (B, K)
        return z, var, log_r, log_p

    def _from_eigenbasis(self, w: torch.Tensor) -> torch.Tensor:
        """Σ_k U_k w_k for w (B, K, d) given in each component's eigenbasis; returns (B, d)."""
        eigvecs = self._params(w.device)[3]
        return torch.bmm(w.transpose(0, 1), eigvecs.transpose(1, 2)).sum(0)

    def log_prob_at(self, x: torch.Tensor, a, s, class_labels=None) -> torch.Tensor:
        """log p(x_t) for x_t = a x_0 + s ε; x (B, d), a and s numbers or (B,). Returns (B,)."""
        return self._components(x, a, s, class_labels)[3].to(x.dtype)

    def score_at(self, x: torch.Tensor, a, s, class_labels=None) -> torch.Tensor:
        """∇_x log p_t(x) = -Σ_k r_k(x) (a² Σ_k + s² I)⁻¹ (x - a μ_k), shape (B, d)."""
        z, var, log_r, _ = self._components(x, a, s, class_labels)
        return -self._from_eigenbasis(log_r.exp()[:, :, None] * z / var).to(x.dtype)

    def denoise_at(self, x: torch.Tensor, a, s, class_labels=None) -> torch.Tensor:
        """E[x_0 | x_t = x] = Σ_k r_k(x) (μ_k + a Σ_k (a² Σ_k + s² I)⁻¹ (x - a μ_k)), shape (B, d).

        Written per component so that it stays finite where a = 0 (pure noise),
        unlike Tweedie's (x + s² ∇log p_t) / a, which it equals elsewhere.
        """
        means, _, eigvals, _ = self._params(x.device)
        z, var, log_r, _ = self._components(x, a, s, class_labels)
        r = log_r.exp()  # (B, K)
        a = torch.as_tensor(a, dtype=torch.float64, device=x.device).reshape(-1, 1, 1)
        shrunk = a * eigvals[None] / var * z  # a Λ_k (a² Λ_k + s²)⁻¹ z_k, (B, K, d)
        return (r @ means + self._from_eigenbasis(r[:, :, None] * shrunk)).to(x.dtype)

    def predict_eps_at(self, x: torch.Tensor, a, s, class_labels=None) -> torch.Tensor:
        """E[ε | x_t = x] = -s ∇log p_t(x) (Vincent 2011; Song et al. 2021), shape (B, d)."""
        s_ = torch.as_tensor(s, dtype=torch.float64, device=x.device).reshape(-1, 1)
        z, var, log_r, _ = self._components(x, a, s, class_labels)
        return (s_ * self._from_eigenbasis(log_r.exp()[:, :, None] * z / var)).to(x.dtype)

    # ------------------------------------------------- the maths at timestep t
    def noised_log_prob(self, x: torch.Tensor, t, schedule, class_labels=None) -> torch.Tensor:
        """log p_t(x) = log Σ_k π_k N(x; a_t μ_k, a_t² Σ_k + s_t² I); x (B, d), returns (B,)."""
        return self.log_prob_at(x, *_scales(schedule, t), class_labels)

    def log_prob(self, x: torch.Tensor, class_labels=None) -> torch.Tensor:
        """log p(x) of the clean data; x (B, d), returns (B,)."""
        return self.log_prob_at(x, 1.0, 0.0, class_labels)

    def score(self, x: torch.Tensor, t, schedule, class_labels=None) -> torch.Tensor:
        """∇_x log p_t(x), the exact score at timestep t; x (B, d)."""
        return self.score_at(x, *_scales(schedule, t), class_labels)

    def denoise_x0(self, x: torch.Tensor, t, schedule, class_labels=None) -> torch.Tensor:
        """The optimal x0 prediction E[x_0 | x_t] at timestep t; x (B, d)."""
        return self.denoise_at(x, *_scales(schedule, t), class_labels)

    def predict_eps(self, x: torch.Tensor, t, schedule, class_labels=None) -> torch.Tensor:
        """The optimal eps prediction E[ε | x_t] = -s_t ∇log p_t at timestep t; x (B, d)."""
        return self.predict_eps_at(x, *_scales(schedule, t), class_labels)

    def predict_v(self, x: torch.Tensor, t, schedule, class_labels=None) -> torch.Tensor:
        """The optimal v prediction E[v | x_t], v = a_t ε - s_t x_0 (Salimans & Ho 2022); x (B, d)."""
        a, s = _scales(schedule, t)
        a, s = (torch.as_tensor(u, device=x.device).reshape(-1, 1) for u in (a, s))
        eps = self.predict_eps_at(x, a.flatten(), s.flatten(), class_labels).to(torch.float64)
        x0 = self.denoise_at(x, a.flatten(), s.flatten(), class_labels).to(torch.float64)
        return (a * eps - s * x0).to(x.dtype)

    def as_model(self, schedule, prediction: str = "eps") -> ExactDenoiser:
        """The perfect network ``model(x_t, t, class_labels=None)`` for this data and schedule.

        Class label k conditions on component k; label K (``num_components``) is the
        null class (unconditional), as in classifier-free guidance. Chapters 4 and 7.
        """
        return ExactDenoiser(self, schedule, prediction)


class ExactDenoiser(nn.Module):
    """The Bayes-optimal eps / x0 / v predictor of a ``GaussianMixture``, used as a network.

    ``model(x_t, t)`` takes x_t shaped (B, d) or (B, C, H, W) with C·H·W = d, and
    t as a number or a (B,) tensor: integer t indexes the schedule's table,
    float t uses its interpolation. Returns the prediction shaped like x_t.
    """

    def __init__(self, mixture: GaussianMixture, schedule, prediction: str = "eps") -> None:
        super().__init__()
        if prediction not in EXACT_PREDICTIONS:
            raise ValueError(
                f"unknown prediction {prediction!r}: the exact toy model predicts one of {EXACT_PREDICTIONS}"
                + (" (wrap a network in dl.EDMDenoiser for EDM)." if prediction == "edm" else ".")
            )
        self.mixture = mixture
        self.schedule = schedule
        self.prediction = prediction

    def forward(self, x_t: torch.Tensor, t, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        shape = x_t.shape
        x = x_t.reshape(shape[0], -1)  # (B, d)
        if x.shape[1] != self.mixture.dim:
            raise ValueError(
                f"the toy model is {self.mixture.dim}-dimensional but got inputs of shape {tuple(shape)} "
                f"({x.shape[1]} values per item); reshape the data to (B, {self.mixture.dim})."
            )
        t = torch.as_tensor(t)
        t = t.expand(shape[0]) if t.ndim == 0 else t
        a, s = _scales(self.schedule, t.cpu())
        a, s = a.to(x.device), s.to(x.device)
        if self.prediction == "x0":
            out = self.mixture.denoise_at(x, a, s, class_labels)
        elif self.prediction == "eps":
            out = self.mixture.predict_eps_at(x, a, s, class_labels)
        else:
            eps = self.mixture.predict_eps_at(x, a, s, class_labels).to(torch.float64)
            x0 = self.mixture.denoise_at(x, a, s, class_labels).to(torch.float64)
            out = (a[:, None] * eps - s[:, None] * x0).to(x.dtype)
        return out.reshape(shape)


# ------------------------------------------------------------------ named toys
def _circle(n: int, radius: float) -> torch.Tensor:
    angle = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    return radius * torch.stack([angle.cos(), angle.sin()], dim=1)


def _eight_gaussians() -> GaussianMixture:
    """Eight equal Gaussians (std 0.1) on a circle of radius 1."""
    return GaussianMixture(_circle(8, 1.0), stds=0.1)


def _grid() -> GaussianMixture:
    """A 5 x 5 grid of Gaussians (std 0.06) on [-1, 1]²."""
    u = torch.linspace(-1, 1, 5, dtype=torch.float64)
    means = torch.cartesian_prod(u, u)
    return GaussianMixture(means, stds=0.06)


def _two_moons() -> GaussianMixture:
    """Two interleaved half circles, each a chain of 10 small Gaussians (std 0.08)."""
    angle = torch.linspace(0, math.pi, 10, dtype=torch.float64)
    upper = torch.stack([angle.cos() - 0.5, angle.sin() - 0.25], 1)
    lower = torch.stack([0.5 - angle.cos(), 0.25 - angle.sin()], 1)
    return GaussianMixture(0.8 * torch.cat([upper, lower]), stds=0.08)


def _spiral() -> GaussianMixture:
    """A spiral of 16 Gaussians whose std and weight grow outwards."""
    u = torch.linspace(0.15, 1, 16, dtype=torch.float64)
    angle = 3 * math.pi * u
    means = torch.stack([u * angle.cos(), u * angle.sin()], 1)
    return GaussianMixture(means, stds=0.02 + 0.06 * u, weights=u)


def _ellipses() -> GaussianMixture:
    """Three elongated, rotated Gaussians with unequal weights (full covariances)."""
    angle = torch.tensor([0.3, 1.4, 2.6], dtype=torch.float64)
    rot = torch.stack([torch.stack([angle.cos(), -angle.sin()], 1), torch.stack([angle.sin(), angle.cos()], 1)], 1)
    diag = torch.diag_embed(torch.tensor([[0.3, 0.05], [0.25, 0.04], [0.2, 0.06]], dtype=torch.float64) ** 2)
    covs = rot @ diag @ rot.transpose(1, 2)
    means = torch.tensor([[-0.5, -0.4], [0.6, -0.2], [0.0, 0.6]], dtype=torch.float64)
    return GaussianMixture(means, covs=covs, weights=torch.tensor([0.5, 0.3, 0.2]))


def _gaussian() -> GaussianMixture:
    """A single correlated Gaussian: the one case where every sampler's answer is known exactly."""
    cov = torch.tensor([[0.25, 0.15], [0.15, 0.16]], dtype=torch.float64)
    return GaussianMixture(torch.tensor([[0.2, -0.1]], dtype=torch.float64), covs=cov[None])


MIXTURES_2D: dict[str, Callable[[], GaussianMixture]] = {
    "eight_gaussians": _eight_gaussians,
    "grid": _grid,
    "two_moons": _two_moons,
    "spiral": _spiral,
    "ellipses": _ellipses,
    "gaussian": _gaussian,
}


def make_2d_mixture(name: str = "eight_gaussians") -> GaussianMixture:
    """A named 2-D toy distribution (see ``MIXTURES_2D``), all inside about [-1.2, 1.2]². Chapter 4."""
    if name not in MIXTURES_2D:
        raise ValueError(f"unknown 2-D mixture {name!r}; choose one of {sorted(MIXTURES_2D)}.")
    return MIXTURES_2D[name]()


def make_mixture(
    d: int,
    k: int = 8,
    seed: int = 0,
    mean_range: float = 0.7,
    std_range: tuple[float, float] = (0.05, 0.3),
) -> GaussianMixture:
    """A random mixture of ``k`` Gaussians in ``d`` dimensions, reproducible from ``seed``.

    Means uniform in [-mean_range, mean_range]^d (image-like values); each
    covariance is a random rotation of a diagonal whose stds are log-uniform in
    ``std_range``; weights are Dirichlet(1) (unequal). Chapter 7.
    """
    if d < 1 or k < 1:
        raise ValueError(f"d and k must be at least 1; got d={d}, k={k}.")
    g = torch.Generator().manual_seed(seed)
    means = (2 * torch.rand(k, d, generator=g, dtype=torch.float64) - 1) * mean_range
    lo, hi = math.log(std_range[0]), math.log(std_range[1])
    stds = torch.exp(lo + (hi - lo) * torch.rand(k, d, generator=g, dtype=torch.float64))
    rotations, _ = torch.linalg.qr(torch.randn(k, d, d, generator=g, dtype=torch.float64))
    covs = rotations @ torch.diag_embed(stds**2) @ rotations.transpose(1, 2)
    weights = -torch.log(torch.rand(k, generator=g, dtype=torch.float64))  # Dirichlet(1) up to normalisation
    return GaussianMixture(means, covs=covs, weights=weights)
