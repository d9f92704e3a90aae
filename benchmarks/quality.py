"""Time to quality on MNIST: chapter 2's plain recipe against ddpm_lib's ``mnist`` preset, same wall clock.

    python benchmarks/quality.py                 # 15 minutes per recipe, then scoring (about 35 minutes)
    python benchmarks/quality.py --minutes 5     # a shorter budget
    python benchmarks/quality.py --levers 4      # also: each lever changed alone, 4 minutes each
    python benchmarks/quality.py --levers 5 --levers-only --only "batch size" preset
                                                 # only these levers and the preset itself, 5 minutes
                                                 # each; the recipe comparison in the file is kept
    python benchmarks/quality.py --threads 1     # one torch thread (recorded in the results)
    python benchmarks/quality.py --quick         # a smoke test of the script (seconds; not a measurement)

Both recipes train on the 4,000 training digits of ``mnist-5k`` with ``dl.Trainer``
for the same wall-clock budget on this machine, one after the other (nothing else
should run meanwhile: the budget is real time). Snapshots of the EMA network are
kept at a quarter, half, three quarters and the end of the budget; each snapshot
draws 500 digits with the recipe's own sampler (from the same starting noise), and
they are scored with the shipped MNIST classifier (``pretrained/mnist-classifier``):

* recognised: share of samples whose top class probability is >= 0.9;
* class balance: entropy of the predicted-class histogram / log 10 (1 = uniform);
* FD: Frechet distance between the classifier's 128-d features of the samples and of
  the 1,000 held-out digits (lower is better; two sets of real digits give the floor).

(a) ``plain``: the loop of chapter 2 scaled to the budget: a diffusers ``UNet2DModel``
    (32, 64, 64 channels, one block per level, attention at the lowest level, as the
    previously shipped ``ddpm-mnist``) on the digits padded to 32 px; DDPM's linear
    betas as chapter 2 sets them (0.001 to 0.02), ε-prediction, AdamW at a constant
    1e-3, batch 64, fp32, EMA 0.999; sampled as chapter 2 scores its Trainer run
    (``trainer.sample``: dpmpp_2m, 25 steps).
(b) ``mnist``: ``dl.PRESETS["mnist"]`` (see ``ddpm_lib/presets.py``): what the levers
    below showed to help, sampled with the preset's recommended sampler.

``--levers M`` trains the preset again with one setting changed at a time, M minutes
each, and scores the end of each run; the sampler levers re-score the final preset
snapshot (no training). Lever rows measured earlier stay in the file unless the same
lever, setting and recipe is measured again (each row records its recipe, minutes,
steps, threads and date). Writes benchmarks/results/quality.json and quality.png.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

import ddpm_lib as dl

ROOT = Path(__file__).resolve().parent
NUM_SAMPLES, SEED = 500, 1234
FRACTIONS = (0.25, 0.5, 0.75, 1.0)  # of the budget, where snapshots are scored

PLAIN = dl.Preset(
    description="chapter 2's plain recipe: 32 px padded, linear betas 0.001-0.02, eps, AdamW 1e-3 constant, "
    "batch 64, fp32, EMA 0.999; sampled as chapter 2 scores it (dpmpp_2m, 25 steps)",
    data={"name_or_path": "mnist-5k", "split": "train", "image_size": 32},
    model={
        "image_size": 32,
        "in_channels": 1,
        "block_out_channels": (32, 64, 64),
        "layers_per_block": 1,
        "attention_blocks": 1,
    },
    train={
        "image_size": 32,
        "batch_size": 64,
        "max_steps": 1_000_000,
        "lr": 1e-3,
        "warmup_steps": 0,
        "lr_schedule": "constant",
        "schedule": "linear",
        "prediction": "eps",
        "ema_decay": 0.999,
        "mixed_precision": "no",
        "channels_last": False,
        "grad_clip": None,
        "checkpoint_every": 1_000_000,
        "sample_every": 0,
        "log_every": 25,
        "sampler": "dpmpp_2m",
        "sample_steps": 25,
        "clip_x0": None,
    },
)
# chapter 2 builds its scheduler with DDPMScheduler(beta_start=0.001, beta_end=0.02)
PLAIN_SCHEDULE = {"name": "linear", "beta_start": 0.001, "beta_end": 0.02}

# One change at a time from the preset: (lever, setting, what changes in the Preset). Each row of the
# results also records the whole recipe it trained ("recipe"), as the preset changed along the way.
LEVERS = [
    (
        "image size",
        "32 px (padded)",
        {"data": {"image_size": 32}, "model": {"image_size": 32}, "train": {"image_size": 32}},
    ),
    ("precision", "fp32 (no bf16 autocast)", {"train": {"mixed_precision": "no"}}),
    ("learning rate", "1e-3", {"train": {"lr": 1e-3}}),
    ("learning rate", "4e-3", {"train": {"lr": 4e-3}}),
    ("EMA decay", "0.999", {"train": {"ema_decay": 0.999}}),
    ("target", "eps, linear schedule", {"train": {"prediction": "eps", "schedule": "linear"}}),
    ("target", "eps, cosine schedule", {"train": {"prediction": "eps"}}),
    ("target", "EDM preconditioning, log-normal sigma", {"train": {"prediction": "edm"}}),
    ("loss weighting", "min-SNR-5", {"train": {"weighting": "min_snr"}}),
    ("attention", "at the lowest level (the earlier preset)", {"model": {"attention_blocks": 1}}),
    ("network", "2 layers per block", {"model": {"layers_per_block": 2}}),
    ("network", "channels 32, 64, 64", {"model": {"block_out_channels": (32, 64, 64)}}),
    ("network", "channels 32, 64, 128", {"model": {"block_out_channels": (32, 64, 128)}}),
    ("dropout", "0.1", {"model": {"dropout": 0.1}}),
    ("batch size", "32", {"train": {"batch_size": 32}}),
    ("batch size", "128", {"train": {"batch_size": 128}}),
]
SAMPLER_LEVERS = [  # re-scoring the final preset snapshot
    ("sampler", "dpmpp_2m, 50 steps", {"steps": 50}),
    ("sampler", "dpmpp_2m, 20 steps, x0 clipped to [-1, 1]", {"clip_x0": 1.0}),
    ("sampler", "ddpm (ancestral), 100 steps", {"sampler": "ddpm", "steps": 100}),
    ("sampler", "pc (Langevin corrector), 25 steps", {"sampler": "pc", "steps": 25}),
]


def machine() -> str:
    cpu = platform.processor()
    if Path("/proc/cpuinfo").exists():
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            cpu,
        )
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads{gpu}"


def changed(preset: dl.Preset, change: dict) -> dl.Preset:
    """``preset`` with the dict fields of ``change`` updated (one level deep)."""
    fields = {k: {**getattr(preset, k), **v} for k, v in change.items()}
    return dl.Preset(**{**preset.__dict__, **fields})


class Scorer:
    """Samples a network with a recipe's sampler and scores the digits against held-out ones."""

    def __init__(self, num_samples: int):
        self.n = num_samples
        self.real = dl.load_images("mnist-5k", split="test").images  # (1000, 1, 32, 32)
        self.real_features = dl.classifier_features(self.real)
        train = dl.load_images("mnist-5k", split="train").images[: self.n]
        self.floor = self.score_images(train)  # real training digits: the best a model can do

    def score_images(self, x: torch.Tensor) -> dict:
        b = dl.class_balance(dl.classify(x))
        fd = dl.frechet_distance_from_features(self.real_features, dl.classifier_features(x))
        return {
            "recognised": round(b.confident_fraction, 4),
            "class_balance": round(b.balance, 4),
            "fd": round(fd, 2),
        }

    @torch.no_grad()
    def score(self, model, schedule, preset: dl.Preset, sampling: dict | None = None) -> dict:
        sampling = {**preset.sampling, **(sampling or {})}
        size = preset.model["image_size"]
        g = torch.Generator().manual_seed(SEED)
        x_T = torch.randn(self.n, 1, size, size, generator=g)
        x = dl.sample(
            model,
            x_T.shape,
            schedule,
            prediction=preset.train["prediction"],
            generator=g,
            x_T=x_T,
            **sampling,
        ).clamp(-1, 1)
        nfe = dl.nfe(sampling["sampler"], sampling["steps"])
        return {**self.score_images(x), "nfe": nfe, "sampler": sampling}


def train(
    preset: dl.Preset, minutes: float, out: Path, schedule=None, fractions=FRACTIONS, seed: int = 0
) -> tuple[dl.Trainer, list[dict]]:
    """Train ``preset`` for ``minutes``; return the trainer and EMA snapshots at ``fractions`` of it."""
    data = dl.load_images(**preset.data)
    torch.manual_seed(seed)
    model = dl.diffusers_unet(**preset.model)
    cfg = dl.TrainConfig(
        **{
            **preset.train,
            "max_minutes": minutes,
            "out_dir": str(out),
            "resume": False,
            "progress": False,
            "num_sample_images": 0,
            "seed": seed,
        }
    )
    trainer = dl.Trainer(model, data, cfg, schedule=schedule)
    marks, snapshots = [60 * minutes * f for f in fractions], []

    def snapshot(tr: dl.Trainer) -> None:
        if marks and (tr.elapsed_seconds >= marks[0] or tr.budget_spent):
            marks.pop(0)
            snapshots.append(
                {
                    "minutes": round(tr.elapsed_seconds / 60, 2),
                    "steps": tr.step,
                    "images_seen": tr.step * cfg.batch_size,
                    "ema": copy.deepcopy(tr.ema_model),
                }
            )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # e.g. the warm-up note of a --quick budget
        trainer.fit(on_step=snapshot)
    return trainer, snapshots


def run_recipe(
    name: str, preset: dl.Preset, minutes: float, scorer: Scorer, work: Path, schedule=None, fractions=FRACTIONS
) -> tuple[dict, tuple]:
    """The recipe's results record, and its final (EMA network, schedule) for re-sampling."""
    began = time.perf_counter()
    trainer, snapshots = train(preset, minutes, work / name, schedule=schedule, fractions=fractions)
    points = []
    for snap in snapshots:
        ema = snap.pop("ema")
        points.append({**snap, **scorer.score(ema, trainer.schedule, preset)})
        print(
            f"{name:6s} {points[-1]['minutes']:5.1f} min, {snap['steps']:5d} steps: "
            f"{100 * points[-1]['recognised']:5.1f} % recognised, balance {points[-1]['class_balance']:.3f}, "
            f"FD {points[-1]['fd']:.1f}",
            flush=True,
        )
    record = {
        "description": preset.description,
        "parameters": dl.count_parameters(trainer.ema_model),
        "points": points,
        "wall_seconds": round(time.perf_counter() - began, 1),
    }
    return record, (trainer.ema_model, trainer.schedule)


RECIPE_FIELDS = ("batch_size", "lr", "warmup_steps", "schedule", "prediction", "weighting", "ema_decay")


def recipe_of(preset: dl.Preset) -> str:
    """What a lever row trained, in one line (the network and the main training fields)."""
    m = preset.model
    net = "-".join(str(c) for c in m["block_out_channels"])
    net += f", {m['layers_per_block']} per level, attention at {m['attention_blocks']} level(s)"
    if m.get("dropout"):
        net += f", dropout {m['dropout']}"
    train = ", ".join(f"{k} {preset.train[k]}" for k in RECIPE_FIELDS if k in preset.train)
    return f"{m['image_size']} px; {net}; {train}"


def lever_row(
    lever: str, setting: str, score: dict, snap: dict | None, note: str, threads: int, recipe: str
) -> dict:
    row = {"lever": lever, "setting": setting, "recipe": recipe, **score}
    if snap is not None:
        row.update(minutes=snap["minutes"], steps=snap["steps"], images_seen=snap["images_seen"])
    row.update(threads=threads, date=now(), note=note)
    return row


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def merge_levers(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` with each row of the same lever, setting, recipe and kind (trained or re-sampled) replaced."""

    def key(r: dict) -> tuple:
        return r["lever"], r["setting"], r.get("recipe"), "steps" in r

    fresh = {key(r) for r in new}
    return [r for r in old if key(r) not in fresh] + new


def run_levers(
    minutes: float, only: list[str], scorer: Scorer, work: Path, threads: int, write
) -> list[dict]:
    """Train the preset and each chosen lever for ``minutes``; score the end of each run."""
    preset, rows = dl.PRESETS["mnist"], []
    chosen = [
        lv
        for lv in [("(the preset itself)", "", {}), *LEVERS]
        if not only or any(o.lower() in f"{lv[0]}: {lv[1]}".lower() for o in only)
    ]
    for lever, setting, change in chosen:
        p = changed(preset, change)
        tr, snaps = train(p, minutes, work / f"lever-{len(rows)}", fractions=(1.0,))
        snap = snaps[-1]
        score = scorer.score(snap.pop("ema"), tr.schedule, p)
        rows.append(
            lever_row(lever, setting, score, snap, f"{minutes:g} min of training", threads, recipe_of(p))
        )
        print(
            f"lever {lever} = {setting or 'preset'}: {100 * score['recognised']:.1f} % recognised, "
            f"balance {score['class_balance']:.3f}, FD {score['fd']:.1f} ({snap['steps']} steps)",
            flush=True,
        )
        write(rows)  # after each run: a long screen keeps what it has measured
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget per recipe (default 15)")
    parser.add_argument(
        "--levers",
        type=float,
        default=0.0,
        metavar="M",
        help="also train each lever for M minutes (default: 0, no levers)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        default=[],
        metavar="TEXT",
        help="with --levers: only the levers whose 'lever: setting' contains one of these texts "
        "('preset' for the preset itself)",
    )
    parser.add_argument(
        "--levers-only", action="store_true", help="run the levers alone (no recipe comparison)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's own choice); recorded in the results",
    )
    parser.add_argument(
        "--conditions", default="", help="what else ran on the machine meanwhile (recorded in the results)"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke test: 0.1 minute per run, 50 samples")
    parser.add_argument("--out", type=Path, default=ROOT / "results", help="folder for quality.json / .png")
    args = parser.parse_args(argv)
    if not args.minutes > 0:
        parser.error(f"--minutes must be positive; got {args.minutes}")
    if args.levers < 0 or (args.levers_only and not args.levers > 0):
        parser.error(f"--levers must be a positive number of minutes with --levers-only; got {args.levers}")
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be at least 1; got {args.threads}")
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    minutes = 0.1 if args.quick else args.minutes
    lever_minutes = (0.05 if args.levers else 0) if args.quick else args.levers
    n = 50 if args.quick else NUM_SAMPLES
    path = args.out / "quality.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    scorer = Scorer(n)
    results = {
        "machine": machine(),
        "torch": torch.__version__,
        "threads": threads,
        "date": now(),
        "quick": args.quick,
        "minutes": minutes,
        "num_samples": n,
        "real_digits": scorer.floor,
        "recipes": {},
        "levers": [],
    }
    if args.conditions:
        results["conditions"] = args.conditions
    if args.levers_only:  # keep the recipe comparison already in the file; replace the levers run now
        results = {**results, **{k: v for k, v in old.items() if k not in ("levers", "conditions")}}
        results["threads"] = old.get("threads")  # that of the recipe comparison, not of these levers
        if old.get("conditions"):
            results["conditions"] = old["conditions"]
        if args.conditions:
            results["lever_conditions"] = args.conditions
    # trained lever rows measured earlier stay (each row carries its own date, minutes and threads)
    kept = [r for r in old.get("levers", []) if "steps" in r] if not old.get("quick", True) else []
    results["levers"] = kept
    args.out.mkdir(parents=True, exist_ok=True)

    def write(rows: list[dict]) -> None:
        out = {**results, "levers": merge_levers(results["levers"], rows)}
        path.write_text(json.dumps(out, indent=1) + "\n")

    with tempfile.TemporaryDirectory(prefix="quality-") as tmp:
        work = Path(tmp)
        if not args.levers_only:
            plain_schedule = dl.make_schedule(**PLAIN_SCHEDULE)
            fractions = (0.5, 1.0) if args.quick else FRACTIONS
            results["recipes"]["plain"], _ = run_recipe(
                "plain", PLAIN, minutes, scorer, work, schedule=plain_schedule, fractions=fractions
            )
            results["recipes"]["mnist"], (final_model, final_schedule) = run_recipe(
                "mnist", dl.PRESETS["mnist"], minutes, scorer, work, fractions=fractions
            )
            rows = []
            for lever, setting, change in SAMPLER_LEVERS[:1] if args.quick else SAMPLER_LEVERS:
                score = scorer.score(final_model, final_schedule, dl.PRESETS["mnist"], change)
                note = f"the final preset model re-sampled ({minutes:g} min of training)"
                rows.append(lever_row(lever, setting, score, None, note, threads, recipe_of(dl.PRESETS["mnist"])))
            results["levers"] = merge_levers([r for r in results["levers"] if "steps" in r], rows)
            write([])
        if lever_minutes:
            rows = run_levers(lever_minutes, args.only, scorer, work, threads, write)
            results["levers"] = merge_levers(results["levers"], rows)
    write([])
    if results["recipes"]:
        plot(results, args.out / "quality.png")
    print(f"wrote {path}" + (" and quality.png" if results["recipes"] else ""))
    return 0


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, r in results["recipes"].items():
        minutes = [p["minutes"] for p in r["points"]]
        axes[0].plot(minutes, [100 * p["recognised"] for p in r["points"]], marker="o", label=name)
        axes[1].plot(minutes, [p["fd"] for p in r["points"]], marker="o", label=name)
    axes[0].axhline(
        100 * results["real_digits"]["recognised"], color="gray", ls="--", lw=1, label="real digits"
    )
    axes[1].axhline(results["real_digits"]["fd"], color="gray", ls="--", lw=1, label="real digits")
    axes[0].set(xlabel="training time (minutes)", ylabel="recognised (%)", ylim=(0, 100))
    axes[1].set(
        xlabel="training time (minutes)", ylabel="FD to held-out digits (lower is better)", yscale="log"
    )
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Time to quality on {results['machine']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
