"""Architectures on MNIST, same number of steps: chapter 5's ladder, skips, a DiT, L1 vs L2.

    python benchmarks/architecture.py                       # 400 steps x 3 seeds per network
    python benchmarks/architecture.py --steps 800 --seeds 5 --jobs 2
    python benchmarks/architecture.py --quick               # a smoke test of the script (not a measurement)

Every network is trained on the task of the ``mnist`` preset (``dl.PRESETS["mnist"]``:
the 4,000 training digits of ``mnist-5k`` at 28 px, cosine schedule, v-prediction,
AdamW at 2e-3 with warm-up and cosine decay, EMA 0.995) for the same number of
optimiser steps of the same batch size, once per seed; seed ``s`` gives every network
the same data order and noise, so differences between rows are paired. The budget is
steps, not wall clock: seconds per step are recorded too, but they were measured on a
shared machine and are only indicative.

The rows (chapter 5):

* the ladder: ``dl.BasicUNet`` (16, 32, 32 channels) from the minimal UNet, each row
  switching on exactly one more thing than the row above (see ``LADDER``);
* side branches, each one change from the ladder row it names (no skips, BatchNorm,
  dropout);
* the preset's own network (a diffusers ``UNet2DModel``), trained with the squared
  error and, once more, with the absolute error (L1; seed 002's ``loss_type``);
* a tiny DiT of about the preset network's size (7 x 7 patches of 4 px).

Each run is measured on held-out digits (the 1,000 ``test`` digits of mnist-5k):

* held-out loss: the v-MSE at fixed noise levels ``EVAL_T`` with fixed noise (the
  L1-trained network is graded with the same squared error);
* samples: ``--samples`` digits with the preset's sampler (dpmpp_2m, 20 steps) from the
  same starting noise, scored as ``benchmarks/quality.py`` scores them (``Scorer``):
  recognised share, class balance, FD on the classifier's features.

Writes ``architecture.json`` (every run, then mean and std over seeds per row) after
every finished run, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

import ddpm_lib as dl

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from quality import Scorer, machine

PRESET = dl.PRESETS["mnist"]
CHANNELS = (16, 32, 32)  # the ladder's widths (the "more parameters" row doubles them)
EVAL_T = (25, 100, 250, 500, 750, 900, 975)  # fixed noise levels of the held-out loss (0-based t)
EVAL_IMAGES = 500  # held-out digits per noise level

# (name, change from the row above). Every row keeps everything above it.
LADDER = [
    ("minimal UNet", {}),
    ("+ timestep conditioning", {"time_embedding": True}),
    ("+ GroupNorm", {"norm": "group"}),
    ("+ residual connections", {"residual": True}),
    ("+ attention at 7 px", {"attention": True}),
    ("concatenated skips", {"skips": "concat"}),
    ("FiLM scale and shift", {"scale_shift": True}),
    ("+ more parameters", {"channels": tuple(2 * c for c in CHANNELS)}),
    ("+ class conditioning", {"num_classes": 10}),
]
# (name, ladder row it starts from, the one change)
SIDE = [
    ("minimal UNet without skips", "minimal UNet", {"skips": "none"}),
    ("BatchNorm instead of GroupNorm", "+ GroupNorm", {"norm": "batch"}),
    ("+ dropout 0.1", "FiLM scale and shift", {"dropout": 0.1}),
]
PRESET_NET = "UNet2DModel (mnist preset)"


def dit_config() -> dict:
    return {"image_size": 28, "in_channels": 1, "patch_size": 4, "dim": 96, "depth": 4, "heads": 4}


def runs_table() -> list[dict]:
    """Every network to train: name, kind, constructor keywords, the change, and extra TrainConfig fields."""
    rows, config = [], {"channels": CHANNELS}
    for name, change in LADDER:
        config = {**config, **change}
        rows.append(
            {
                "name": name,
                "group": "ladder",
                "net": "BasicUNet",
                "kwargs": dict(config),
                "change": change,
                "train": {},
            }
        )
    by_name = {r["name"]: r for r in rows}
    for name, base, change in SIDE:
        rows.append(
            {
                "name": name,
                "group": "side",
                "base": base,
                "net": "BasicUNet",
                "kwargs": {**by_name[base]["kwargs"], **change},
                "change": change,
                "train": {},
            }
        )
    rows.append(
        {
            "name": PRESET_NET,
            "group": "preset",
            "net": "UNet2DModel",
            "kwargs": dict(PRESET.model),
            "change": {},
            "train": {},
        }
    )
    rows.append(
        {
            "name": PRESET_NET + ", L1 loss",
            "group": "loss",
            "base": PRESET_NET,
            "net": "UNet2DModel",
            "kwargs": dict(PRESET.model),
            "change": {"loss_type": "l1"},
            "train": {"loss_type": "l1"},
        }
    )
    rows.append(
        {"name": "tiny DiT", "group": "dit", "net": "DiT", "kwargs": dit_config(), "change": {}, "train": {}}
    )
    return rows


def build(row: dict) -> torch.nn.Module:
    if row["net"] == "UNet2DModel":
        return dl.diffusers_unet(**row["kwargs"])
    return dl.MODELS[row["net"]](**row["kwargs"])


def held_out(n: int):
    """Held-out digits at 28 px with labels, fixed noise per level (seeded)."""
    test = dl.load_images(**{**PRESET.data, "split": "test"})
    x, y = test.images[:n], test.labels[:n]
    g = torch.Generator().manual_seed(1234)
    return x, y, torch.randn((len(EVAL_T), *x.shape), generator=g)


@torch.no_grad()
def eval_loss(model, schedule, x, y, noise, conditional: bool) -> list[float]:
    model.eval()
    out = []
    for i, t in enumerate(EVAL_T):
        tt = torch.full((len(x),), t, dtype=torch.long)
        loss = dl.diffusion_loss(
            model,
            x,
            schedule,
            prediction=PRESET.train["prediction"],
            t=tt,
            noise=noise[i],
            class_labels=y if conditional else None,
        )
        out.append(round(loss.item(), 5))
    return out


def run_one(
    row: dict, seed: int, steps: int, batch: int, samples: int, work: str, eval_images: int = EVAL_IMAGES
) -> dict:
    """Train one network for ``steps`` steps with ``seed``; return its measurements."""
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", UserWarning)
    data = dl.load_images(**PRESET.data)
    torch.manual_seed(seed)
    model = build(row)
    conditional = bool(row["kwargs"].get("num_classes"))
    cfg = dl.TrainConfig(
        **{
            **PRESET.train,
            **row["train"],
            "max_steps": steps,
            "batch_size": batch,
            "warmup_steps": max(1, min(50, steps // 10)),
            "out_dir": str(Path(work) / f"{row['name']}-{seed}"),
            "resume": False,
            "progress": False,
            "num_sample_images": 0,
            "checkpoint_every": steps,
            "log_every": max(1, steps // 10),
            "seed": seed,
        }
    )
    trainer = dl.Trainer(model, data, cfg)
    began = time.perf_counter()
    trainer.fit()
    sec = (time.perf_counter() - began) / steps
    ema = trainer.ema_model
    x, y, noise = held_out(eval_images)
    losses = eval_loss(ema, trainer.schedule, x, y, noise, conditional)
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(samples, 1, 28, 28, generator=g)
    labels = torch.arange(samples) % 10 if conditional else None
    with torch.no_grad():
        fake = dl.sample(
            ema,
            x_T.shape,
            trainer.schedule,
            prediction=cfg.prediction,
            x_T=x_T,
            generator=g,
            class_labels=labels,
            **PRESET.sampling,
        ).clamp(-1, 1)
    return {
        "name": row["name"],
        "seed": seed,
        "params": dl.count_parameters(ema, trainable_only=False),  # the EMA copy is frozen
        "flops": dl.forward_flops(
            ema, x[:1], torch.tensor([500]), **({"class_labels": y[:1]} if conditional else {})
        ),
        "sec_per_step": round(sec, 4),
        "final_train_loss": round(trainer.history.losses[-1], 5),
        "heldout_by_t": losses,
        "heldout": round(sum(losses) / len(losses), 5),
        "_samples": fake,
    }


def summarise(rows: list[dict], runs: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        mine = [r for r in runs if r["name"] == row["name"]]
        if not mine:
            continue
        summary = {k: v for k, v in row.items() if k not in ("train",)}
        summary["kwargs"] = {k: list(v) if isinstance(v, tuple) else v for k, v in row["kwargs"].items()}
        summary["change"] = {k: list(v) if isinstance(v, tuple) else v for k, v in row["change"].items()}
        summary["seeds"] = len(mine)
        summary["params"] = dl.count_parameters(build(row))  # from the architecture
        summary["flops"] = mine[0]["flops"]
        for key in ("heldout", "recognised", "class_balance", "fd", "sec_per_step"):
            vals = torch.tensor([float(r[key]) for r in mine])
            summary[key] = round(vals.mean().item(), 5)
            summary[key + "_std"] = round(vals.std().item(), 5) if len(vals) > 1 else 0.0
        summary["heldout_by_t"] = [
            round(sum(r["heldout_by_t"][i] for r in mine) / len(mine), 5) for i in range(len(EVAL_T))
        ]
        out.append(summary)
    return out


def merge(paths: list[Path], rows: list[dict], out: Path) -> int:
    """The union of the runs of several result files (the first file's header; a (name, seed) once)."""
    files = [json.loads(p.read_text()) for p in paths]
    keys = ("steps", "batch_size", "eval_t", "eval_images", "num_samples", "task")
    for p, f in zip(paths[1:], files[1:]):
        if any(f[k] != files[0][k] for k in keys):
            raise SystemExit(f"{p} was measured with other settings than {paths[0]}; not merging.")
    merged, seen = dict(files[0]), set()
    merged["runs"] = []
    for f in files:
        for r in f["runs"]:
            if (r["name"], r["seed"]) not in seen:
                seen.add((r["name"], r["seed"]))
                merged["runs"].append(r)
    merged["rows"] = summarise(rows, merged["runs"])
    merged["seeds"] = len({r["seed"] for r in merged["runs"]})
    merged["merged_from"] = [f"{f['date']} ({len(f['runs'])} runs; {f['machine']})" for f in files]
    out.mkdir(parents=True, exist_ok=True)
    (out / "architecture.json").write_text(json.dumps(merged, indent=1) + "\n")
    print(f"merged {len(merged['runs'])} runs into {out / 'architecture.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="optimiser steps per run (default 400)")
    parser.add_argument("--batch", type=int, default=32, help="images per step (default 32)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per network (default 3)")
    parser.add_argument("--samples", type=int, default=250, help="digits sampled per run (default 250)")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel, one thread each (default 1)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 3 steps, 1 seed, 20 samples, 50 held-out digits, 4 rows",
    )
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1"
    )
    parser.add_argument(
        "--rows", default="", help="only these networks (names separated by ';'; default: all)"
    )
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        help="merge these architecture.json files (runs of the same settings) into --out; trains nothing",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "results", help="folder for architecture.json")
    args = parser.parse_args(argv)
    for name in ("steps", "batch", "seeds", "samples", "jobs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1; got {getattr(args, name)}")
    if args.quick:
        args.steps, args.seeds, args.samples = 3, 1, 20
    eval_images = 50 if args.quick else EVAL_IMAGES
    rows = runs_table()
    if args.merge:
        return merge(args.merge, rows, args.out)
    if args.rows:
        wanted = [n.strip() for n in args.rows.split(";")]
        unknown = sorted(set(wanted) - {r["name"] for r in rows})
        if unknown:
            parser.error(f"--rows: unknown networks {unknown}; known: {[r['name'] for r in rows]}")
        rows = [r for r in rows if r["name"] in wanted]
    if args.quick:  # one ladder row, one side branch, the preset network with L1, the DiT
        rows = [
            r
            for r in rows
            if r["name"]
            in ("+ timestep conditioning", "minimal UNet without skips", PRESET_NET + ", L1 loss", "tiny DiT")
        ]
    scorer = Scorer(args.samples)
    results = {
        "machine": machine() + f"; {args.jobs} run(s) at a time, 1 torch thread each, machine shared",
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "budget": f"same steps: {args.steps} optimiser steps x {args.batch} images per run",
        "steps": args.steps,
        "batch_size": args.batch,
        "seeds": args.seeds,
        "task": "mnist preset: 28 px mnist-5k, cosine schedule, v-prediction, lr 2e-3, EMA 0.995",
        "eval_t": list(EVAL_T),
        "eval_images": eval_images,
        "num_samples": args.samples,
        "sampler": PRESET.sampling,
        "real_digits": scorer.floor,
        "rows": [],
        "runs": [],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "architecture.json"
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    tasks = [(row, seed) for seed in seeds for row in rows]  # seed-major: whole seeds first
    began = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="architecture-") as work,
        cf.ProcessPoolExecutor(args.jobs) as pool,
    ):
        futures = {
            pool.submit(run_one, row, seed, args.steps, args.batch, args.samples, work, eval_images): (
                row,
                seed,
            )
            for row, seed in tasks
        }
        for fut in cf.as_completed(futures):
            r = fut.result()
            r.update(scorer.score_images(r.pop("_samples")))
            results["runs"].append(r)
            results["rows"] = summarise(rows, results["runs"])
            results["wall_minutes"] = round((time.perf_counter() - began) / 60, 1)
            path.write_text(json.dumps(results, indent=1) + "\n")
            print(
                f"{r['name']:<36s} seed {r['seed']}: held-out {r['heldout']:.4f}, "
                f"{100 * r['recognised']:5.1f} % recognised, FD {r['fd']:6.1f}, "
                f"{1e3 * r['sec_per_step']:.0f} ms/step",
                flush=True,
            )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
