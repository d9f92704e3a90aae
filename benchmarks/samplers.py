"""Samplers against the number of network evaluations (NFE), on toys with an exact model.

    python benchmarks/samplers.py            # about 3 minutes on 2 CPU cores
    python benchmarks/samplers.py --quick    # a smoke test of the script (seconds; not a measurement)

For a 2-D and a 64-D Gaussian mixture (``ddpm_lib.toy``) the Bayes-optimal network
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
reading of their float or rounded timesteps. Writes benchmarks/results/samplers.json
and benchmarks/results/samplers.png (chapter 7 and the issue's target); ``--out DIR``
writes them to DIR instead. ``--quick`` (one toy, few samples, NFE 5 and 10, a
shorter reference solve) writes to a temporary folder unless ``--out`` is given, so
a smoke test never replaces the committed measurement.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
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
SPACINGS = ("trailing", "linspace", "leading", "karras", "log_snr", "focused")
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
        ours_default = out["ours"]["dpmpp_2m[log_snr]"][budget]["dist"]
        summary[budget] = {
            "ours_best": ours,
            "ours_dist": ours_dist,
            "diffusers_best": theirs,
            "diffusers_dist": theirs_dist,
            "ratio": ours_dist / theirs_dist,
            "target_met": ours_dist <= 0.8 * theirs_dist,
            "ratio_dpmpp_2m_log_snr": ours_default / theirs_dist,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one toy, few samples: a smoke test of the script")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for samplers.json / .png (default: benchmarks/results; --quick: a temporary one)")
    args = parser.parse_args()
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="bench-samplers-")) if args.quick else ROOT / "results"
    # Small tensors: one thread avoids the thread-wake-up cost that dominates on a busy 2-core machine.
    torch.set_num_threads(1)
    scale = 10 if args.quick else 1
    if args.quick:  # every code path, a fraction of the work
        global NFES, REFERENCE_STEPS
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
    log = lambda msg: print(f"{time.time() - start:7.1f}s {msg}", flush=True)
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
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "samplers.json").write_text(json.dumps(results, indent=1))
    plot(results, args.out / "samplers.png")
    for name, toy in results["toys"].items():
        for budget, row in toy["summary"].items():
            print(f"{name:20s} NFE {budget:>2s}: ours {row['ours_best']:26s} {row['ours_dist']:.2e}  "
                  f"diffusers {row['diffusers_best']:24s} {row['diffusers_dist']:.2e}  ratio {row['ratio']:.2f}")
    log(f"wrote {args.out / 'samplers.json'} and samplers.png")


if __name__ == "__main__":
    main()
