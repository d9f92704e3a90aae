"""Samplers against the number of network evaluations (NFE): exact toys and the shipped MNIST models.

    python benchmarks/samplers.py                # toys (about 3 minutes) and real models (hours on 2 CPU cores)
    python benchmarks/samplers.py --part toy     # the toys only
    python benchmarks/samplers.py --part real --cache runs/x.json   # real models only, resumable
    python benchmarks/samplers.py --quick        # a smoke test of the script (seconds; not a measurement)

**Toys.** For a 2-D and a 64-D Gaussian mixture (``ddpm_lib.toy``) the Bayes-optimal network
is known exactly, so the only error left is the sampler's. Every sampler of ours
and diffusers' DDIM, DPM-Solver++ (2M, 3M, Karras sigmas), UniPC, Euler and Heun
schedulers start from the same noise x_T and are scored by

* ``dist``: the mean over samples of ||x - x_ode||_2, where x_ode is the converged
  solution of the probability-flow ODE from the same x_T (a DPM-Solver++(2M) solve
  with thousands of steps down to σ = 1e-6; its convergence is measured and stored);
* ``loglik``: the mean log-likelihood of the samples under the true density, next
  to that of exact samples and of x_ode.

diffusers' schedulers are driven by a short loop (``scale_model_input``, model,
``step``) and get the exact model evaluated at the noise level the scheduler itself
uses (its ``sigmas[step_index]``, or ᾱ_t for DDIM), which is the most favourable
reading of their float or rounded timesteps.

**Real models.** ``pretrained/ddpm-mnist`` and ``pretrained/ddpm-mnist-cond`` (guidance
w = 3, as its model card samples it), sampled by our samplers on their grids and by
diffusers' schedulers built with ``from_config`` from the model's own scheduler config
(the config as it is, or with one setting changed), at NFE 5, 10, 20 and 50 (network
evaluations per sample, counted by a hook on the network: guidance costs two per step),
from the same x_T per seed. Scores (``benchmarks/quality.py``'s scorer): the Frechet
distance between the shipped classifier's features of the samples and of the 1,000
held-out digits, the recognised share and the class balance; mean and standard
deviation over the seeds. ``why``: the networks' per-level denoising error on held-out
digits (``dl.samplers.denoising_error``) and the log-SNR of each grid's evaluations.
``--only``, ``--seeds``, ``--nfe`` and ``--cache`` split a long run into parts that
share one cache of finished runs; ``--cached-only`` assembles what the cache holds
(each row records its number of seeds).

Writes benchmarks/results/samplers.json, samplers.png (toys), samplers_real.png and
samplers_why.png; ``--out DIR`` writes them to DIR instead. ``--quick`` (one toy, few
samples, NFE 5 and 10, a shorter reference solve; 32 samples and two seeds of the real
models) writes to a temporary folder unless ``--out`` is given, so a smoke test never
replaces the committed measurement.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import math
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

import ddpm_lib as dl
from ddpm_lib.samplers import NoiseLevels, log_snr_sigmas, sample_dpmpp_2m

ROOT = Path(__file__).resolve().parent
NFES = (5, 10, 20, 50)
DTYPE = torch.float64
SEED = 0
# Our samplers as benchmarked: name -> (library sampler, options). The deterministic ones compete for the target.
OUR_DETERMINISTIC = {
    "ddim": ("ddim", {}),
    "euler": ("euler", {}),
    "heun": ("heun", {}),
    "dpmpp_2m": ("dpmpp_2m", {}),
    "unipc": ("unipc", {}),
    "unipc(order=3)": ("unipc", {"order": 3}),
    "unipc(final_order=1)": ("unipc", {"final_order": 1}),  # ablation: diffusers' last step
}
OUR_STOCHASTIC = {
    "ddpm": ("ddpm", {}),
    "ddim(eta=1)": ("ddim", {"eta": 1.0}),
    "euler_ancestral": ("euler_ancestral", {}),
    "pc": ("pc", {}),
    "langevin(n_steps_each=2)": ("langevin", {"n_steps_each": 2}),
}
SPACINGS = ("trailing", "linspace", "leading", "karras", "edm", "log_snr", "focused", "angle")
REFERENCE_STEPS = (2000, 4000)  # the reference solve and its convergence check
REFERENCE_SIGMA_MIN = 1e-6
SCHEDULE = {"num_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02}  # DDPM's linear schedule, diffusers' default


def machine_info() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import diffusers

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


# ------------------------------------------------------------- the reference
def exact_denoiser(mixture, levels: NoiseLevels):
    """denoise(x_t, i) -> (x0, eps) straight from the mixture at the grid's scales (no timestep needed)."""

    def denoise(x, i):
        a, s = levels.a[i], levels.s[i]
        x0 = mixture.denoise_at(x, a, s)
        return x0, (x - a * x0) / s

    return denoise


def ode_solution(mixture, x_T: torch.Tensor, sigma_max: float, steps: int) -> torch.Tensor:
    """The probability-flow ODE from x_{T-1} = x_T (VP) down to σ = 1e-6, then x0_hat there.

    DPM-Solver++(2M) on a grid uniform in log σ; below σ(t=0) the exact mixture
    denoiser stands in for the network (the toy is defined at every σ).
    """
    sigma = log_snr_sigmas(REFERENCE_SIGMA_MIN, sigma_max, steps)
    a = 1 / torch.sqrt(1 + sigma**2)
    levels = NoiseLevels(
        t=torch.zeros(steps, dtype=torch.float64),
        a=torch.cat([a, torch.ones(1, dtype=torch.float64)]),
        s=torch.cat([sigma * a, torch.zeros(1, dtype=torch.float64)]),
    )
    return sample_dpmpp_2m(exact_denoiser(mixture, levels), x_T, levels)


# -------------------------------------------------------- diffusers drivers
def diffusers_configs() -> dict:
    """name -> (scheduler class, config kwargs, nfe(steps)).

    Every documented spacing option of each scheduler (timestep_spacing, Karras,
    exponential and beta sigmas, and DPM-Solver's lu_lambdas), with all other
    settings at their defaults; the best of them at each NFE is the baseline.
    """
    from diffusers import (
        DDIMScheduler,
        DPMSolverMultistepScheduler,
        EulerDiscreteScheduler,
        HeunDiscreteScheduler,
        UniPCMultistepScheduler,
    )

    spacings = {
        "linspace": {"timestep_spacing": "linspace"},
        "leading": {"timestep_spacing": "leading"},
        "trailing": {"timestep_spacing": "trailing"},
        "karras": {"use_karras_sigmas": True},
        "exponential": {"use_exponential_sigmas": True},
        "beta": {"use_beta_sigmas": True},
    }
    families = {
        "DDIM": (DDIMScheduler, {"clip_sample": False}, ("linspace", "leading", "trailing")),
        "DPM++2M": (DPMSolverMultistepScheduler, {"solver_order": 2, "algorithm_type": "dpmsolver++"}, None),
        "DPM++3M": (DPMSolverMultistepScheduler, {"solver_order": 3, "algorithm_type": "dpmsolver++"}, None),
        "UniPC2": (UniPCMultistepScheduler, {"solver_order": 2}, None),
        "UniPC3": (UniPCMultistepScheduler, {"solver_order": 3}, None),
        "Euler": (EulerDiscreteScheduler, {}, None),
        "Heun": (HeunDiscreteScheduler, {}, None),
    }
    configs = {}
    for family, (cls, base, allowed) in families.items():
        nfe = (lambda n: 2 * n - 1) if family == "Heun" else (lambda n: n)
        options = dict(spacings)
        if family.startswith("DPM"):
            options["lu_lambdas"] = {"use_lu_lambdas": True}
        for spacing, extra in options.items():
            if allowed is None or spacing in allowed:
                configs[f"{family}[{spacing}]"] = (cls, {**base, **extra}, nfe)
    return configs


def run_diffusers(scheduler, steps: int, mixture, x_T: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The usual diffusers loop with the exact eps model; returns (x_0, network evaluations)."""
    scheduler.set_timesteps(steps)
    x = x_T * scheduler.init_noise_sigma
    calls = 0
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x, t)
        sigmas = getattr(scheduler, "sigmas", None)
        if sigmas is None:  # DDIM: integer timesteps into ᾱ
            alpha_bar = scheduler.alphas_cumprod[int(t)].double()
            a, s = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
        else:  # the σ this scheduler uses at this call
            sigma = sigmas[scheduler.step_index or 0].double()
            a = 1 / torch.sqrt(1 + sigma**2)
            s = sigma * a
        eps = mixture.predict_eps_at(x_in.to(DTYPE), a, s)
        calls += 1
        x = scheduler.step(eps, t, x).prev_sample
    return x.to(DTYPE), calls


# ------------------------------------------------------------------ scoring
def score(x: torch.Tensor, x_ode: torch.Tensor, mixture) -> dict:
    return {
        "dist": float((x - x_ode).norm(dim=1).mean()),
        "loglik": float(mixture.log_prob(x).mean()),
    }


def _steps_for(sampler: str, budget: int, options: dict) -> int:
    """The most steps whose NFE fits in the budget (0 if none does)."""
    return max([k for k in range(1, budget + 1) if dl.nfe(sampler, k, **options) <= budget], default=0)


def _interval_steps_for(sampler: str, budget: int, schedule, spacing: str, options: dict, interval) -> int:
    """With guidance in an interval: the most steps whose evaluations (2 at a guided level, 1 elsewhere)
    fit in the budget. For the samplers that evaluate the network once at every level but the last."""
    if sampler not in ("ddim", "ddpm", "euler", "dpmpp_2m", "unipc"):
        raise ValueError(f"no NFE count with a guidance interval for {sampler!r}")
    grid = {k: v for k, v in options.items() if k in ("sigma_min", "sigma_max", "rho")}
    cost = lambda k: dl.samplers.guided_nfe(dl.noise_levels(schedule, k, spacing, **grid), interval)
    return max([k for k in range(1, budget + 1) if cost(k) <= budget], default=0)


def bench_toy(name: str, mixture, n: int, schedule, log, diffusers_too: bool = True) -> dict:
    x_T = torch.randn(n, mixture.dim, generator=torch.Generator().manual_seed(SEED), dtype=DTYPE)
    truth = mixture.sample(n, torch.Generator().manual_seed(SEED + 1), dtype=DTYPE)
    T = len(schedule.alphas_cumprod)
    ab = schedule.alphas_cumprod[T - 1].double()
    sigma_max = float(((1 - ab) / ab).sqrt())

    t0 = time.time()
    x_half, x_ode = (ode_solution(mixture, x_T, sigma_max, k) for k in REFERENCE_STEPS)
    conv = float((x_ode - x_half).norm(dim=1).mean())
    out = {
        "dim": mixture.dim,
        "components": mixture.num_components,
        "num_samples": n,
        "reference": {
            "method": f"DPM-Solver++(2M) on a log-sigma grid {sigma_max:.4g} -> {REFERENCE_SIGMA_MIN:g}, exact denoiser",
            "steps": REFERENCE_STEPS[1],
            "mean_dist_to_half_as_many_steps": conv,
            "loglik": float(mixture.log_prob(x_ode).mean()),
            "seconds": round(time.time() - t0, 1),
        },
        "loglik_true_samples": float(mixture.log_prob(truth).mean()),
        "ours": {},
        "diffusers": {},
    }
    log(f"[{name}] reference: {conv:.1e} mean distance between {REFERENCE_STEPS[0]} and {REFERENCE_STEPS[1]} steps")

    model = mixture.as_model(schedule, prediction="eps")
    for label, (sampler, options) in {**OUR_DETERMINISTIC, **OUR_STOCHASTIC}.items():
        spacings = SPACINGS if label in OUR_DETERMINISTIC else (dl.DEFAULT_SPACING[sampler],)
        for spacing in spacings:
            rows = {}
            for budget in NFES:
                steps = _steps_for(sampler, budget, options)
                if steps < 1:
                    continue
                g = torch.Generator().manual_seed(SEED + 2)
                x = dl.sample(model, x_T.shape, schedule, sampler, steps, spacing=spacing, x_T=x_T, generator=g,
                              dtype=DTYPE, **options)
                rows[str(budget)] = {"steps": steps, "nfe": dl.nfe(sampler, steps, **options), **score(x, x_ode, mixture)}
            out["ours"][f"{label}[{spacing}]"] = rows
    log(f"[{name}] our samplers done")
    if diffusers_too:
        for cname, (cls, kwargs, nfe_of) in diffusers_configs().items():
            rows = {}
            for budget in NFES:
                steps = max(k for k in range(1, budget + 1) if nfe_of(k) <= budget)
                sched = cls(num_train_timesteps=T, beta_schedule="linear", beta_start=SCHEDULE["beta_start"],
                            beta_end=SCHEDULE["beta_end"], **kwargs)
                x, calls = run_diffusers(sched, steps, mixture, x_T)
                rows[str(budget)] = {"steps": steps, "nfe": calls, **score(x, x_ode, mixture)}
            out["diffusers"][cname] = rows
        log(f"[{name}] diffusers done")
        out["summary"] = summarise(out)
    return out


def _is_deterministic(key: str) -> bool:
    return key.split("[")[0] in OUR_DETERMINISTIC


def _is_stochastic(key: str) -> bool:
    return not _is_deterministic(key)


def _best(rows: dict, budget: str, keep=lambda name: True) -> tuple[str, float]:
    candidates = {k: v[budget]["dist"] for k, v in rows.items() if keep(k) and budget in v}
    best = min(candidates, key=candidates.get)
    return best, candidates[best]


def summarise(out: dict) -> dict:
    """Best deterministic sampler of ours vs the best diffusers scheduler at every NFE, with the ratio."""
    summary = {}
    for budget in map(str, NFES):
        ours, ours_dist = _best(out["ours"], budget, _is_deterministic)
        theirs, theirs_dist = _best(out["diffusers"], budget)
        ours_default = out["ours"][default_label()][budget]["dist"]
        summary[budget] = {
            "ours_best": ours,
            "ours_dist": ours_dist,
            "diffusers_best": theirs,
            "diffusers_dist": theirs_dist,
            "ratio": ours_dist / theirs_dist,
            "target_met": ours_dist <= 0.8 * theirs_dist,
            "default": default_label(),
            "ratio_default": ours_default / theirs_dist,
        }
    return summary


def _family_curves(rows_by_key: dict, keep) -> dict:
    """Each sampler family (the name before "[") at its best option: lowest mean log error over the NFEs."""
    families: dict[str, list] = {}
    for key, rows in rows_by_key.items():
        if keep(key):
            families.setdefault(key.split("[")[0], []).append((key, rows))
    return dict(min(m, key=lambda kr: sum(math.log(r["dist"]) for r in kr[1].values())) for m in families.values())


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    toys = [k for k, v in results["toys"].items() if "summary" in v]
    fig, axes = plt.subplots(len(toys), 2, figsize=(14, 5 * len(toys)), squeeze=False)
    colors = plt.cm.tab20.colors
    for row, name in zip(axes, toys):
        toy = results["toys"][name]
        curves = [("ours", k, r, "-") for k, r in _family_curves(toy["ours"], _is_deterministic).items()]
        curves += [("diffusers", k, r, "--") for k, r in _family_curves(toy["diffusers"], lambda k: True).items()]
        stochastic = [("ours", k, r, ":") for k, r in _family_curves(toy["ours"], _is_stochastic).items()]
        for j, (source, key, rows, style) in enumerate(curves + stochastic):
            nfe = [r["nfe"] for r in rows.values()]
            label = f"{source}: {key}"
            kw = {"color": colors[j % len(colors)], "marker": "o", "ms": 3, "label": label}
            if style != ":":
                row[0].plot(nfe, [r["dist"] for r in rows.values()], style, **kw)
            gap = [abs(r["loglik"] - toy["loglik_true_samples"]) for r in rows.values()]
            row[1].plot(nfe, gap, style, **kw)
        reference_gap = abs(toy["reference"]["loglik"] - toy["loglik_true_samples"])
        row[1].axhline(reference_gap, color="black", lw=1, label="converged ODE solution (sampling noise level)")
        row[0].set(xscale="log", yscale="log", xlabel="network evaluations (NFE)",
                   ylabel="mean distance to the converged ODE solution",
                   title=f"{name}: ODE samplers (solid: ddpm_lib, dashed: diffusers)")
        row[1].set(xscale="log", yscale="log", xlabel="network evaluations (NFE)",
                   ylabel="|mean log-likelihood - that of true samples| (nats)",
                   title=f"{name}: log-likelihood gap (dotted: stochastic samplers)")
        row[0].legend(fontsize=7)
        row[1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ================================================================ real models
# The shipped MNIST models (28 px, v-prediction, cosine schedule), scored like benchmarks/quality.py.
REAL_MODELS = {"ddpm-mnist": 1.0, "ddpm-mnist-cond": 3.0}  # name -> guidance w (the model card's w = 3)
REAL_SEEDS = (0, 1, 2)
REAL_SAMPLES = 256
# label -> (sampler, spacing, options); dl.sample's defaults (unguided and guided) are measured first in any case
REAL_OURS = {
    "ddim[trailing]": ("ddim", "trailing", {}),
    "ddim[log_snr]": ("ddim", "log_snr", {}),
    "euler[karras]": ("euler", "karras", {}),
    "heun[karras]": ("heun", "karras", {}),
    "heun[log_snr]": ("heun", "log_snr", {}),
    "dpmpp_2m[trailing]": ("dpmpp_2m", "trailing", {}),
    "dpmpp_2m[linspace]": ("dpmpp_2m", "linspace", {}),
    "dpmpp_2m[karras]": ("dpmpp_2m", "karras", {}),
    "dpmpp_2m[log_snr]": ("dpmpp_2m", "log_snr", {}),
    "dpmpp_2m[focused]": ("dpmpp_2m", "focused", {}),
    "unipc[trailing]": ("unipc", "trailing", {}),
    "unipc[linspace]": ("unipc", "linspace", {}),
    "unipc[angle]": ("unipc", "angle", {}),
    "unipc[edm]": ("unipc", "edm", {}),
    "dpmpp_2m[edm]": ("dpmpp_2m", "edm", {}),
    "unipc[edm](final_order=1)": ("unipc", "edm", {"final_order": 1}),
    "unipc[edm](clip_x0=1)": ("unipc", "edm", {"clip_x0": 1.0}),
    "ddim[edm]": ("ddim", "edm", {}),
    "heun[edm]": ("heun", "edm", {}),
    "ddim[angle]": ("ddim", "angle", {}),
    "dpmpp_2m[angle]": ("dpmpp_2m", "angle", {}),
    "unipc[linspace](final_order=1)": ("unipc", "linspace", {"final_order": 1}),
    "unipc[linspace](order=3)": ("unipc", "linspace", {"order": 3}),
    "unipc[linspace](clip_x0=1)": ("unipc", "linspace", {"clip_x0": 1.0}),
    "ddim[linspace]": ("ddim", "linspace", {}),
    "heun[linspace]": ("heun", "linspace", {}),
    "unipc[karras]": ("unipc", "karras", {}),
    "unipc[log_snr]": ("unipc", "log_snr", {}),
    "unipc[focused]": ("unipc", "focused", {}),
    "dpmpp_2m[log_snr(sigma_max=80)]": ("dpmpp_2m", "log_snr", {"sigma_max": 80.0}),
    # guided sampling (issue 23): order and final step on the grids that end before t = 0
    "unipc[trailing](final_order=1)": ("unipc", "trailing", {"final_order": 1}),
    "unipc[trailing](order=1)": ("unipc", "trailing", {"order": 1}),
    "unipc[trailing](order=1,final_order=1)": ("unipc", "trailing", {"order": 1, "final_order": 1}),
    "unipc[trailing](final_order=1,clip_x0=1)": ("unipc", "trailing", {"final_order": 1, "clip_x0": 1.0}),
    "ddim[trailing](clip_x0=1)": ("ddim", "trailing", {"clip_x0": 1.0}),
    # diffusers' Euler with Karras sigmas on the shipped config starts at sigma = 3.12 (its leading t = 800)
    "euler[karras(sigma_max=3.12)]": ("euler", "karras", {"sigma_max": 3.1204}),
    "unipc[karras(sigma_max=3.12)](final_order=1)": ("unipc", "karras", {"sigma_max": 3.1204, "final_order": 1}),
    "euler_ancestral[edm]": ("euler_ancestral", "edm", {}),
    "euler_ancestral[karras]": ("euler_ancestral", "karras", {}),
    "unipc[log_snr(sigma_max=80)]": ("unipc", "log_snr", {"sigma_max": 80.0}),
    # guidance in a limited interval (Kynkäänniemi et al. 2024; dl.sample's guidance_interval): rows without
    # "interval=" guide every level
    "unipc[trailing](order=1,final_order=1,interval=0-1.5)":
        ("unipc", "trailing", {"order": 1, "final_order": 1, "guidance_interval": (0.0, 1.5)}),
    "unipc[trailing](order=1,final_order=1,interval=0.3-2)":
        ("unipc", "trailing", {"order": 1, "final_order": 1, "guidance_interval": (0.3, 2.0)}),
    "unipc[trailing](order=1,final_order=1,interval=0-3)":
        ("unipc", "trailing", {"order": 1, "final_order": 1, "guidance_interval": (0.0, 3.0)}),
    "unipc[trailing](order=2,final_order=1,interval=0-2)":
        ("unipc", "trailing", {"order": 2, "final_order": 1, "guidance_interval": (0.0, 2.0)}),
    "unipc[edm](order=2,final_order=2,interval=0-2)":
        ("unipc", "edm", {"order": 2, "final_order": 2, "guidance_interval": (0.0, 2.0)}),
}


def diffusers_real_configs() -> dict:
    """name -> (scheduler class, overrides of the model's own scheduler config, nfe(steps)).

    "config" is what ``cls.from_config(model's scheduler config)`` gives (the shipped config says
    timestep_spacing "leading" and, for DDIM, clip_sample True); the others change one setting.
    """
    from diffusers import (
        DDIMScheduler,
        DPMSolverMultistepScheduler,
        EulerDiscreteScheduler,
        HeunDiscreteScheduler,
        UniPCMultistepScheduler,
    )

    one = lambda n: n
    interval = {"guidance_interval": (0.0, 2.0)}  # not a scheduler setting: run_diffusers_real reads it
    dpm2, dpm3 = {"solver_order": 2, "algorithm_type": "dpmsolver++"}, {"solver_order": 3, "algorithm_type": "dpmsolver++"}
    return {
        "DDIM[config]": (DDIMScheduler, {}, one),
        "DDIM[trailing]": (DDIMScheduler, {"timestep_spacing": "trailing"}, one),
        "DPM++2M[config]": (DPMSolverMultistepScheduler, dpm2, one),
        "DPM++2M[trailing]": (DPMSolverMultistepScheduler, {**dpm2, "timestep_spacing": "trailing"}, one),
        "DPM++2M[karras]": (DPMSolverMultistepScheduler, {**dpm2, "use_karras_sigmas": True}, one),
        "DPM++2M[linspace]": (DPMSolverMultistepScheduler, {**dpm2, "timestep_spacing": "linspace"}, one),
        "DPM++3M[config]": (DPMSolverMultistepScheduler, dpm3, one),
        "DPM++3M[trailing]": (DPMSolverMultistepScheduler, {**dpm3, "timestep_spacing": "trailing"}, one),
        "DPM++3M[karras]": (DPMSolverMultistepScheduler, {**dpm3, "use_karras_sigmas": True}, one),
        "UniPC[config]": (UniPCMultistepScheduler, {}, one),
        "UniPC[trailing]": (UniPCMultistepScheduler, {"timestep_spacing": "trailing"}, one),
        "UniPC[linspace]": (UniPCMultistepScheduler, {"timestep_spacing": "linspace"}, one),
        "UniPC[karras]": (UniPCMultistepScheduler, {"use_karras_sigmas": True}, one),
        "Euler[config]": (EulerDiscreteScheduler, {}, one),
        "Euler[trailing]": (EulerDiscreteScheduler, {"timestep_spacing": "trailing"}, one),
        "Euler[karras]": (EulerDiscreteScheduler, {"use_karras_sigmas": True}, one),
        "Heun[config]": (HeunDiscreteScheduler, {}, lambda n: 2 * n - 1),
        "Heun[karras]": (HeunDiscreteScheduler, {"use_karras_sigmas": True}, lambda n: 2 * n - 1),
        # with guidance in dl.sample's default interval, in the same loop (run_diffusers_real)
        "UniPC[trailing](interval=0-2)": (UniPCMultistepScheduler, {"timestep_spacing": "trailing", **interval}, one),
        "DPM++2M[trailing](interval=0-2)": (DPMSolverMultistepScheduler,
                                            {**dpm2, "timestep_spacing": "trailing", **interval}, one),
        "DPM++3M[config](interval=0-2)": (DPMSolverMultistepScheduler, {**dpm3, **interval}, one),
        "Euler[config](interval=0-2)": (EulerDiscreteScheduler, {**interval}, one),
        "DDIM[trailing](interval=0-2)": (DDIMScheduler, {"timestep_spacing": "trailing", **interval}, one),
    }


def _guided(model, x, t, labels, w):
    """The network's output, with classifier-free guidance (one batch of 2B) when labels are given."""
    from ddpm_lib.modelcall import call_model, null_class_of

    if labels is None:
        return call_model(model, x, t)
    if w == 1.0:
        return call_model(model, x, t, labels)
    null = torch.full_like(labels, null_class_of(model))
    out_c, out_u = call_model(model, torch.cat([x, x]), t, torch.cat([labels, null])).chunk(2)
    return out_u + w * (out_c - out_u)


def _diffusers_guided_steps(scheduler, steps: int, interval) -> list[bool]:
    """For each entry of the scheduler's timesteps at ``steps`` steps: guided there? (every one without
    an interval, else where σ_t = sqrt((1 - ᾱ_t) / ᾱ_t) lies in it)."""
    scheduler.set_timesteps(steps)
    if interval is None:
        return [True] * len(scheduler.timesteps)
    ab = scheduler.alphas_cumprod[scheduler.timesteps.round().long().clamp(0, len(scheduler.alphas_cumprod) - 1)]
    sigma = ((1 - ab.double()) / ab.double()).sqrt().tolist()
    return [interval[0] <= s <= interval[1] for s in sigma]


def _split_interval(overrides: dict) -> tuple[dict, tuple | None]:
    """(scheduler overrides, guidance interval): a diffusers configuration may name a guidance interval."""
    overrides = dict(overrides)
    return overrides, overrides.pop("guidance_interval", None)


@torch.no_grad()
def run_diffusers_real(scheduler, steps: int, model, x_T, labels=None, w: float = 1.0,
                       interval=None) -> tuple[torch.Tensor, int]:
    """The usual diffusers loop on a real model; returns (x_0, network evaluations per sample). With
    guidance and an ``interval`` (σ_lo, σ_hi), steps outside it evaluate the conditional network alone."""
    guided = _diffusers_guided_steps(scheduler, steps, interval)
    x = x_T * scheduler.init_noise_sigma
    calls = 0
    for t, g in zip(scheduler.timesteps, guided):
        out = _guided(model, scheduler.scale_model_input(x, t), t, labels, w if g else 1.0)
        calls += 1 if labels is None or w == 1.0 or not g else 2
        x = scheduler.step(out, t, x).prev_sample
    return x, calls


def _count_images(model) -> list[int]:
    """A one-element list that a forward hook adds the batch size of every network call to."""
    seen = [0]
    model.register_forward_pre_hook(lambda module, args: seen.__setitem__(0, seen[0] + args[0].shape[0]))
    return seen


def real_x_T(seed: int, n: int, shape) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(1000 + seed))


def bench_real(name: str, w: float, scorer, nfes, seeds, n: int, ours: dict, theirs: dict, log, cache: dict,
               cached_only: bool = False) -> dict:
    """Every configuration at every NFE and seed from the same x_T; ``cache`` holds finished runs (resume)."""
    pre = dl.load_pretrained(name)
    config = json.loads((Path(pre.pipeline_dir) / "scheduler" / "scheduler_config.json").read_text())
    shape = pre.image_shape
    conditional = pre.num_classes is not None
    labels = (torch.arange(n) % 10) if conditional else None
    per_image = 2 if conditional and w != 1.0 else 1  # network evaluations per sample per sampler step
    model, seen = pre.model, _count_images(pre.model)
    jobs = [("ours", k, v) for k, v in ours.items()] + [("diffusers", k, v) for k, v in theirs.items()]
    failures = {}  # diffusers configurations that raise on this model
    out = {"guidance_scale": w if conditional else None, "num_samples": n, "seeds": list(seeds),
           "default": default_label(w if conditional else 1.0),
           "scheduler_config": config, "ours": {}, "diffusers": {}}
    for source, label, spec in jobs:
        rows = {}
        if f"__fail__|{name}|{label}" in cache:
            failures[label] = cache[f"__fail__|{name}|{label}"]
            continue
        for budget in nfes:
            per_seed = []
            for seed in seeds:
                key = f"{name}|{source}|{label}|{budget}|{seed}|{n}"
                if key not in cache and cached_only:
                    continue
                if key not in cache:
                    x_T = real_x_T(seed, n, shape)
                    seen[0] = 0
                    t0 = time.time()
                    if source == "ours":
                        sampler, spacing, options = spec
                        options = dict(options)
                        interval = options.pop("guidance_interval", None)  # none named: every level guided
                        if interval is None or per_image == 1:
                            steps = _steps_for(sampler, budget // per_image, options)
                        else:
                            steps = _interval_steps_for(sampler, budget, pre.schedule, spacing, options, interval)
                        x = dl.sample(model, x_T.shape, pre.schedule, sampler, steps, prediction=pre.prediction,
                                      spacing=spacing, x_T=x_T, class_labels=labels, guidance_scale=w,
                                      guidance_interval=interval, generator=torch.Generator().manual_seed(seed),
                                      **options)
                    else:
                        cls, overrides, nfe_of = spec
                        overrides, interval = _split_interval(overrides)
                        if interval is None or per_image == 1:
                            steps = max(k for k in range(1, budget + 1) if per_image * nfe_of(k) <= budget)
                        else:
                            sched = cls.from_config(config, **overrides)
                            steps = max(k for k in range(1, budget + 1)
                                        if sum(2 if g else 1 for g in _diffusers_guided_steps(sched, k, interval))
                                        <= budget)
                        try:
                            x, _ = run_diffusers_real(cls.from_config(config, **overrides), steps, model, x_T,
                                                      labels, w, interval)
                        except Exception as error:  # noqa: BLE001 - a scheduler that fails is a result too
                            failures[label] = f"{type(error).__name__}: {error} (at {steps} steps)"
                            cache[f"__fail__|{name}|{label}"] = failures[label]
                            log(f"[{name}] diffusers {label} fails: {failures[label]}")
                            break
                    row = {"steps": steps, "nfe": seen[0] / n, **scorer.score_images(x.clamp(-1, 1)),
                           "seconds": round(time.time() - t0, 1)}
                    if conditional:
                        row["label_accuracy"] = round(float((dl.classify(x.clamp(-1, 1)).argmax(1) == labels)
                                                            .float().mean()), 4)
                    cache[key] = row
                per_seed.append(cache[key])
            if label in failures:
                break
            if per_seed:
                rows[str(budget)] = _aggregate(per_seed)
        if not rows:
            continue
        out[source][label] = rows
        log(f"[{name}] {source} {label}: " + "  ".join(f"{b}: {r['fd']:.2f}±{r['fd_std']:.2f}"
                                                       for b, r in rows.items()))
        log_cache = cache.get("__path__")
        if log_cache:
            Path(log_cache).write_text(json.dumps(cache))
    out["failures"] = failures
    out["summary"] = summarise_real(out)
    return out


def _aggregate(per_seed: list[dict]) -> dict:
    """Mean and standard deviation over seeds of each score (and the per-seed FD)."""
    agg = {"steps": per_seed[0]["steps"], "nfe": per_seed[0]["nfe"], "seeds": len(per_seed)}
    for key in ("fd", "recognised", "class_balance", "label_accuracy"):
        if key in per_seed[0]:
            vals = torch.tensor([r[key] for r in per_seed], dtype=torch.float64)
            agg[key] = round(float(vals.mean()), 4)
            agg[f"{key}_std"] = round(float(vals.std()) if len(vals) > 1 else 0.0, 4)
    agg["fd_per_seed"] = [r["fd"] for r in per_seed]
    return agg


def default_spec(guidance_scale: float = 1.0) -> tuple[str, str, dict]:
    """(sampler, spacing, options) that ``dl.sample`` uses when given no sampler, spacing or options
    (with guidance: ``dl.samplers.GUIDED_DEFAULTS``)."""
    sampler = inspect.signature(dl.sample).parameters["sampler"].default
    spacing, options = dl.samplers.default_settings(sampler, guidance_scale)
    if guidance_scale > 1.0:  # dl.sample's guidance_interval="auto"
        options = {**options, "guidance_interval": dl.samplers.DEFAULT_GUIDANCE_INTERVAL}
    return sampler, spacing, options


def _option(key: str, value) -> str:
    if key == "guidance_interval":  # no comma inside a label (--only splits at commas)
        return f"interval={value[0]:g}-{value[1]:g}"
    return f"{key}={value}"


def default_label(guidance_scale: float = 1.0) -> str:
    """``default_spec`` named like the keys of ``REAL_OURS``."""
    sampler, spacing, options = default_spec(guidance_scale)
    return f"{sampler}[{spacing}]" + (f"({','.join(_option(k, v) for k, v in options.items())})" if options else "")


def summarise_real(out: dict) -> dict:
    """At every NFE: dl.sample's default, our best and diffusers' best (mean FD over seeds, with std and
    the number of seeds), and the target: default <= diffusers' best at every NFE, and the default at
    NFE 10 <= diffusers' best at NFE 20."""
    summary, default = {}, out["default"]

    def best(rows_by_key: dict, b: str):
        have = {k: r[b] for k, r in rows_by_key.items() if b in r}
        key = min(have, key=lambda k: have[k]["fd"]) if have else None
        return key, have.get(key)

    for b, mine in out["ours"].get(default, {}).items():
        row = {"default": default, "default_fd": mine["fd"], "default_fd_std": mine["fd_std"],
               "default_seeds": mine["seeds"], "default_recognised": mine["recognised"]}
        ours, r = best(out["ours"], b)
        row.update({"ours_best": ours, "ours_best_fd": r["fd"], "ours_best_seeds": r["seeds"]})
        theirs, r = best(out["diffusers"], b)
        if theirs is not None:
            row.update({"diffusers_best": theirs, "diffusers_best_fd": r["fd"], "diffusers_best_fd_std": r["fd_std"],
                        "diffusers_best_seeds": r["seeds"], "diffusers_best_recognised": r["recognised"],
                        "default_at_least_as_good": mine["fd"] <= r["fd"]})
        summary[b] = row
    if "10" in summary and "diffusers_best_fd" in summary.get("20", {}):
        summary["default_nfe10_vs_diffusers_best_nfe20"] = {
            "default_nfe10_fd": summary["10"]["default_fd"],
            "diffusers_best_nfe20_fd": summary["20"]["diffusers_best_fd"],
            "met": summary["10"]["default_fd"] <= summary["20"]["diffusers_best_fd"],
        }
    return summary


def plot_real(real: dict, path: Path) -> None:
    """FD (mean ± std over seeds) against NFE, each family at its best spacing, one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(real["models"])
    fig, axes = plt.subplots(1, len(names), figsize=(8 * len(names), 6), squeeze=False)
    colors = plt.cm.tab20.colors
    for ax, name in zip(axes[0], names):
        res = real["models"][name]
        default = res.get("default", default_label())
        curves = [("ours", k, r, "-") for k, r in _real_family_curves(res["ours"]).items()]
        curves += [("diffusers", k, r, "--") for k, r in _real_family_curves(res["diffusers"]).items()]
        if default in res["ours"] and default not in [k for _, k, _, _ in curves]:
            curves.insert(0, ("ours", default, res["ours"][default], "-"))
        for j, (source, key, rows, style) in enumerate(curves):
            nfe = [r["nfe"] for r in rows.values()]
            lw = 3 if key == default else 1.2
            ax.errorbar(nfe, [r["fd"] for r in rows.values()], yerr=[r["fd_std"] for r in rows.values()],
                        fmt=style, marker="o", ms=3, lw=lw, capsize=2, color=colors[j % len(colors)],
                        label=f"{source}: {key}" + (" (dl.sample default)" if key == default else ""))
        ax.axhline(res["fd_floor"], color="black", lw=1, label="real training digits (floor)")
        w = res["guidance_scale"]
        ax.set(xscale="log", yscale="log", xlabel="network evaluations per sample (NFE)",
               ylabel=f"FD to held-out digits (mean ± std over {len(res['seeds'])} seeds)",
               title=f"{name}" + (f", guidance w = {w:g}" if w else "") + ": solid ddpm_lib, dashed diffusers")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _real_family_curves(rows_by_key: dict) -> dict:
    """Each family (the name before "[") at its best configuration: the lowest mean log FD over the
    budgets that every configuration of the family was measured at (all of its own if none is common)."""
    families: dict[str, list] = {}
    for key, rows in rows_by_key.items():
        families.setdefault(key.split("[")[0], []).append((key, rows))
    best = {}
    for members in families.values():
        common = set.intersection(*(set(rows) for _, rows in members))

        def score(kr, common=common):
            budgets = common or set(kr[1])
            return sum(math.log(max(kr[1][b]["fd"], 1e-9)) for b in budgets) / len(budgets)

        key, rows = min(members, key=score)
        best[key] = rows
    return best


def wiener_x0_mse(train: torch.Tensor, log_snr: torch.Tensor) -> torch.Tensor:
    """Per-pixel x0-MSE of the best *linear* denoiser (the posterior mean if the digits were Gaussian
    with their own mean and covariance): mean over eigenvalues e of e σ² / (e + σ²), σ² = e^-log_snr."""
    flat = train.reshape(len(train), -1).double()
    eig = torch.linalg.eigvalsh(torch.cov(flat.T)).clamp(min=0)
    var = torch.exp(-log_snr.double())[:, None]
    return (eig * var / (eig + var)).sum(1) / flat.shape[1]


def grid_log_snr(name: str, steps: int, spec, schedule, config: dict) -> list[float]:
    """log-SNR (2 λ) of the levels where a configuration evaluates the network in ``steps`` steps."""
    if isinstance(spec[0], str):  # ours: (sampler, spacing, options)
        grid_options = {k: v for k, v in spec[2].items() if k in ("sigma_min", "sigma_max", "rho")}
        levels = dl.noise_levels(schedule, steps, spec[1], **grid_options)
        lam = 2 * levels.lam[:-1]
        if spec[0] == "heun":  # Heun also evaluates at every next level but the last
            lam = torch.cat([lam, lam[1:]]).sort(descending=True).values
        return lam.tolist()
    cls, overrides, _ = spec
    sched = cls.from_config(config, **_split_interval(overrides)[0])
    sched.set_timesteps(steps)
    if cls.__name__ in ("EulerDiscreteScheduler", "HeunDiscreteScheduler"):  # they evaluate at their σ
        sig = sched.sigmas.double()
        return (-2 * torch.log(sig[sig > 0])).tolist()
    ab = sched.alphas_cumprod[sched.timesteps.round().long()].double()  # integer timesteps
    return (torch.log(ab) - torch.log1p(-ab)).tolist()


def why_errors(names, n: int, num_levels: int, log) -> dict:
    """The trained models' per-level denoising error on held-out digits (and the best linear denoiser's)."""
    held_out = dl.load_images("mnist-5k", split="test", image_size=28)
    train = dl.load_images("mnist-5k", split="train", image_size=28).images
    x0, labels = held_out.images[:n], held_out.labels[:n]
    out = {"num_images": n, "models": {}}
    for name in names:
        pre = dl.load_pretrained(name)
        t = torch.linspace(0, len(pre.schedule.alphas_cumprod) - 1, num_levels).round()
        err = dl.samplers.denoising_error(pre.model, pre.schedule, x0, t, pre.prediction,
                                          class_labels=labels if pre.num_classes else None,
                                          generator=torch.Generator().manual_seed(7))
        out["models"][name] = {k: [round(float(v), 8) for v in err[k]] for k in err}
        log(f"[why] {name}: denoising error at {num_levels} levels")
    ls = torch.tensor(out["models"][names[0]]["log_snr"])
    out["wiener_x0_mse"] = [round(float(v), 8) for v in wiener_x0_mse(train, ls)]
    out["data_variance"] = round(float(train.reshape(len(train), -1).double().var(0).mean()), 6)
    return out


@torch.no_grad()
def why_guidance(name: str, w: float, n: int, num_levels: int) -> dict:
    """What classifier-free guidance does to the network's x0_hat at each noise level, on held-out digits
    with their own labels: the mean squared shift (x0_guided - x0_cond)² per pixel and the largest
    |x0_hat| of each guided image (mean over images; the data lie in [-1, 1])."""
    from ddpm_lib.modelcall import call_model, null_class_of

    pre = dl.load_pretrained(name)
    held_out = dl.load_images("mnist-5k", split="test", image_size=28)
    x0, labels = held_out.images[:n], held_out.labels[:n]
    null = torch.full_like(labels, null_class_of(pre.model))
    g = torch.Generator().manual_seed(7)
    t = torch.linspace(0, len(pre.schedule.alphas_cumprod) - 1, num_levels).round()
    levels = dl.noise_levels(pre.schedule, num_levels, sorted(t.tolist(), reverse=True))
    shift, peak = [], []
    for i in range(num_levels):
        a, s_ = float(levels.a[i]), float(levels.s[i])
        x_t = a * x0 + s_ * torch.randn(x0.shape, generator=g)
        out = call_model(pre.model, torch.cat([x_t, x_t]), levels.t[i].long().expand(2 * n),
                         torch.cat([labels, null]))
        x0_c, x0_u = (dl.split_prediction(pre.prediction, o, x_t, levels.t[i], pre.schedule)[0]
                      for o in out.chunk(2))
        guided = x0_u + w * (x0_c - x0_u)
        shift.append(round(float((guided - x0_c).pow(2).mean()), 8))
        peak.append(round(float(guided.reshape(n, -1).abs().amax(1).mean()), 4))
    return {"model": name, "guidance_scale": w, "num_images": n, "log_snr": (2 * levels.lam[:-1]).tolist(),
            "shift_mse": shift, "max_abs_x0": peak}


def why_grids(name: str, grid_steps, ours: dict, theirs: dict) -> dict:
    """The log-SNR of every configuration's evaluations at each number of steps (no network needed)."""
    pre = dl.load_pretrained(name)
    config = json.loads((Path(pre.pipeline_dir) / "scheduler" / "scheduler_config.json").read_text())
    heun = lambda k, steps: (steps + 1) // 2 if k.lower().startswith("heun") else steps
    return {str(steps): {**{f"ours: {k}": grid_log_snr(k, heun(k, steps), v, pre.schedule, config)
                            for k, v in ours.items()},
                         **{f"diffusers: {k}": grid_log_snr(k, heun(k, steps), v, pre.schedule, config)
                            for k, v in theirs.items()}}
            for steps in grid_steps}


def plot_why(why: dict, path: Path) -> None:
    """Denoising error against log-SNR (top) and the log-SNR of each grid's evaluations (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = {"diffusers: DPM++2M[config]", "diffusers: DPM++2M[trailing]", "diffusers: UniPC[config]",
             "diffusers: UniPC[trailing]", "diffusers: DDIM[trailing]", f"ours: {default_label()}",
             f"ours: {default_label(max(REAL_MODELS.values()))}"}
    keep = lambda k: k in shown or (k.startswith("ours: dpmpp_2m[") and k.endswith("]"))
    grids = {steps: {k: v for k, v in rows.items() if keep(k)} for steps, rows in why["grids"].items()}
    fig, axes = plt.subplots(1 + len(grids), 1, figsize=(11, 4 + 0.28 * sum(len(g) for g in grids.values())),
                             sharex=True, gridspec_kw={"height_ratios": [1.6] + [0.1 * len(g) for g in grids.values()]})
    ax = axes[0]
    for name, err in why["models"].items():
        ax.plot(err["log_snr"], err["x0_mse"], "-o", ms=3, label=f"{name}: x0-MSE (held-out digits)")
        ax.plot(err["log_snr"], err["eps_mse"], "--", label=f"{name}: eps-MSE")
    first = next(iter(why["models"].values()))
    ax.plot(first["log_snr"], why["wiener_x0_mse"], ":", color="black", label="best linear denoiser: x0-MSE")
    if "guidance" in why:
        gd = why["guidance"]
        ax.plot(gd["log_snr"], gd["shift_mse"], "-s", ms=3, color="C6",
                label=f"{gd['model']}: guidance's shift of x0_hat, (guided - conditional)², w = {gd['guidance_scale']:g}")
    ax.set(yscale="log", ylabel="mean squared error per pixel",
           title="Where the trained networks are poor: denoising error against noise level")
    ax.legend(fontsize=7)
    for ax, (steps, rows) in zip(axes[1:], grids.items()):
        for j, (label, lam) in enumerate(rows.items()):
            ax.plot(lam, [j] * len(lam), "|", ms=9, mew=2, color="C0" if label.startswith("ours") else "C3")
        ax.set_yticks(range(len(rows)), list(rows), fontsize=7)
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.set_title(f"where each grid evaluates the network at NFE {steps} (Heun: both stages)", fontsize=9)
    axes[-1].set(xlabel="log-SNR = log(a² / s²) (noise left to right: much to little)", xlim=(-20, 12))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_real_part(args, log) -> dict:
    """The real-model benchmark (both shipped models), resumable from ``args.cache``."""
    sys.path.insert(0, str(ROOT))
    from quality import Scorer  # the held-out digits and scores of the time-to-quality benchmark

    quick = args.quick
    nfes, seeds, n = ((5,), (0, 1), 32) if quick else (tuple(args.nfe), tuple(range(args.seeds)), args.samples)
    ours = dict(REAL_OURS)
    theirs = diffusers_real_configs()
    default = default_label()
    defaults = {default_label(w): default_spec(w) for w in sorted(set(REAL_MODELS.values()))}
    ours = {**defaults, **{k: v for k, v in ours.items() if k not in defaults}}  # always measured, first
    if args.only:  # these configurations only, in this order (for partial runs into --cache)
        keep = re.split(r",(?![^()\[\]]*[)\]])", args.only)  # commas inside a label's brackets stay
        ours = {k: ours[k] for k in keep if k in ours}
        theirs = {k: theirs[k] for k in keep if k in theirs}
    if quick:
        ours = {k: ours[k] for k in list(ours)[:2]}
        theirs = {k: theirs[k] for k in ("DPM++2M[config]", "Heun[config]")}
    cache = {}
    if args.cache is not None and args.cache.exists():
        cache = json.loads(args.cache.read_text())
    if args.cache is not None:
        cache["__path__"] = str(args.cache)
    scorer = Scorer(n)
    real = {"machine": machine_info(), "quick": quick, "num_samples": n, "seeds": list(seeds), "nfe": list(nfes),
            "default": default,
            "default_guided": default_label(max(REAL_MODELS.values())),
            "metric": ("fd: Frechet distance between the shipped MNIST classifier's 128-d features of the samples "
                       "(clamped to [-1, 1]) and of the 1,000 held-out digits of mnist-5k (benchmarks/quality.py's "
                       "Scorer); recognised: share with top class probability >= 0.9; mean and std over seeds, "
                       "each seed its own x_T, shared by every sampler"),
            "notes": [
                ("nfe: network evaluations per sample, counted by a hook on the network; with guidance every "
                 "step evaluates the conditional and the unconditional batch (2 per step), so a budget B gets "
                 "B // 2 steps; rows with '(interval=lo-hi)' guide only where lo <= sigma <= hi and evaluate "
                 "the conditional batch alone elsewhere (1 per step), and get the most steps that fit B"),
                ("diffusers: cls.from_config(the model's scheduler config) ('config': timestep_spacing leading, "
                 "DDIM clip_sample True), or with the one change named in brackets"),
                ("ddim and euler on the same grid are the same update (DDIM is Euler in sigma)"),
                ("measured on a 2-core CPU shared with other jobs (niced): the seconds per run are not timings "
                 "of the samplers"),
            ],
            "models": {}}
    real["notes"] += args.note
    names = args.models.split(",")
    if not args.skip_why:
        n_why, levels = (16, 6) if quick else (128, 24)
        why_key = f"__why__|{','.join(names)}|{n_why}|{levels}"
        if why_key not in cache:
            cache[why_key] = why_errors(names, n_why, levels, log)
            if args.cache is not None:
                args.cache.write_text(json.dumps(cache))
        real["why"] = {**cache[why_key], "grids": why_grids(names[0], (5, 10), ours, theirs)}
        guided = [k for k in names if REAL_MODELS[k] != 1.0]
        if guided:
            g_key = f"__why_guidance__|{guided[0]}|{n_why}|{levels}"
            if g_key not in cache:
                cache[g_key] = why_guidance(guided[0], REAL_MODELS[guided[0]], n_why, levels)
            real["why"]["guidance"] = cache[g_key]
    for name in names:
        w = REAL_MODELS[name]
        res = bench_real(name, w, scorer, nfes, seeds, n, ours, theirs, log, cache, args.cached_only)
        res["fd_floor"] = scorer.floor["fd"]
        real["models"][name] = res
    return real


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few samples: a smoke test of the script")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for samplers.json / .png (default: benchmarks/results; --quick: a temporary one)")
    parser.add_argument("--part", choices=("all", "toy", "real"), default="all",
                        help="run only the toys or only the real models (the other part is kept from --out)")
    parser.add_argument("--nfe", type=int, nargs="+", default=list(NFES), help="real models: NFE budgets")
    parser.add_argument("--seeds", type=int, default=len(REAL_SEEDS), help="real models: number of seeds")
    parser.add_argument("--samples", type=int, default=REAL_SAMPLES, help="real models: samples per seed")
    parser.add_argument("--models", default=",".join(REAL_MODELS), help="real models: comma-separated names")
    parser.add_argument("--cached-only", action="store_true",
                        help="real models: only assemble the runs found in --cache (seeds may differ per entry)")
    parser.add_argument("--skip-why", action="store_true", help="real models: no denoising-error analysis")
    parser.add_argument("--only", default="", help="real models: comma-separated configurations to run")
    parser.add_argument("--note", action="append", default=[],
                        help="real models: a note on the conditions of the measurement, stored with the results")
    parser.add_argument("--cache", type=Path, default=None,
                        help="real models: JSON of finished runs, read and extended (resume an interrupted run)")
    args = parser.parse_args()
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="bench-samplers-")) if args.quick else ROOT / "results"
    # Small tensors: one thread avoids the thread-wake-up cost that dominates on a busy 2-core machine.
    torch.set_num_threads(1)
    start = time.time()
    log = lambda msg: print(f"{time.time() - start:7.1f}s {msg}", flush=True)
    previous = {}
    if (args.out / "samplers.json").exists():
        previous = json.loads((args.out / "samplers.json").read_text())
    results = run_toy_part(args, log) if args.part in ("all", "toy") else {
        k: v for k, v in previous.items() if k != "real"}
    results["quick"] = args.quick
    if args.part in ("all", "real"):
        results["real"] = run_real_part(args, log)
        results["real"]["seconds"] = round(time.time() - start, 1)
    elif "real" in previous:
        results["real"] = previous["real"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "samplers.json").write_text(json.dumps(results, indent=1))
    if "toys" in results:
        plot(results, args.out / "samplers.png")
    if "real" in results:
        plot_real(results["real"], args.out / "samplers_real.png")
        if "why" in results["real"]:
            plot_why(results["real"]["why"], args.out / "samplers_why.png")
        for name, res in results["real"]["models"].items():
            for budget, row in res["summary"].items():
                if budget.isdigit():
                    print(f"{name:16s} NFE {budget:>2s}: default {row['default']} {row['default_fd']:.2f}"
                          f"±{row['default_fd_std']:.2f}  ours best {row['ours_best']} {row['ours_best_fd']:.2f}"
                          f"  diffusers best {row.get('diffusers_best')} {row.get('diffusers_best_fd', float('nan')):.2f}")
    log(f"wrote {args.out / 'samplers.json'}")


def run_toy_part(args, log) -> dict:
    """The exact-toy benchmark: every sampler and spacing against diffusers on Gaussian mixtures."""
    global NFES, REFERENCE_STEPS
    scale = 10 if args.quick else 1
    nfes = NFES
    if args.quick:  # every code path, a fraction of the work
        NFES, REFERENCE_STEPS = (5, 10), (100, 200)
    schedule = dl.make_schedule("linear", **SCHEDULE)
    toys = {  # the two toys of the target, then held-out toys (ours only) that checked the "focused" rule
        "2d_eight_gaussians": (dl.make_2d_mixture("eight_gaussians"), 2000 // scale, True),
        "64d_mixture": (dl.make_mixture(64, k=8, seed=0), 500 // scale, True),
        "heldout_2d_grid": (dl.make_2d_mixture("grid"), 500 // scale, True),
        "heldout_16d_mixture": (dl.make_mixture(16, k=6, seed=1), 300 // scale, True),
    }
    if args.quick:
        toys = {"2d_eight_gaussians": toys["2d_eight_gaussians"]}
    start = time.time()
    results = {
        "machine": machine_info(),
        "schedule": "linear, T=1000, beta 1e-4..0.02 (DDPM)",
        "quick": args.quick,
        "metric": "dist: mean over samples of ||x - x_ode||_2; loglik: mean log p(x) under the true mixture",
        "nfe": list(NFES),
        "notes": [
            ("diffusers schedulers: every documented spacing option, other settings at their defaults; the model is "
            "evaluated at each scheduler's own sigma (its most favourable reading of float/rounded timesteps)"),
            "Heun (ours and diffusers) uses 2*steps-1 evaluations: at odd budgets it gets one fewer",
            "the 'focused' spacing's range rule was fitted on the two target toys; the heldout_* toys check it",
        ],
        "toys": {},
    }
    for name, (mixture, n, diffusers_too) in toys.items():
        results["toys"][name] = bench_toy(name, mixture, n, schedule, log, diffusers_too)
    results["seconds"] = round(time.time() - start, 1)
    results["target"] = {
        name: {b: round(row["ratio"], 3) for b, row in toy["summary"].items()}
        for name, toy in results["toys"].items() if not name.startswith("heldout")
    }
    NFES = nfes
    return results


if __name__ == "__main__":
    main()
