"""Training speed: chapter 2's plain loop against ``dl.Trainer``, like for like.

    python benchmarks/train.py                  # about 2 minutes on 2 idle CPU cores
    python benchmarks/train.py --device cuda    # on a GPU (the default when CUDA is there)
    python benchmarks/train.py --quick          # a smoke test of the script (not a measurement)

Three variants train the same network from the same initial weights on the same
images, with the same batch size, learning rate and gradient clipping:

(a) ``plain``: chapter 2's loop as the reader writes it: a shuffling ``DataLoader``
    over the ``dl.load_images("mnist-5k")`` dataset (the 28 px digits padded to 32 px,
    never stretched), ``DDPMScheduler.add_noise``, ε-prediction, MSE, AdamW (the
    default, unfused implementation), ``clip_grad_norm_(1.0)``, a constant learning
    rate, fp32.
(b) ``trainer_fp32``: ``dl.Trainer`` on the same dataset with ``mixed_precision="no"``,
    a constant learning rate without warm-up and ``grad_clip=1.0``. What still
    differs from (a): the data is one tensor on the device indexed per batch
    (no DataLoader), AdamW is the fused implementation, an EMA of the weights is
    updated after every step, the loss is read back every ``log_every`` steps
    instead of every step, and the batches, timesteps and noise come from the
    Trainer's own seeded generators (the same amount of work, other numbers).
(c) ``trainer``: (b) with ``mixed_precision="auto"`` (the default): bf16 on GPUs and on
    CPUs with AVX-512 BF16 or AMX, fp32 elsewhere (then (b) and (c) are the same).

The network, batch size and learning rate are chapter 2's cpu profile
(``dl.book.SIZES[2]["cpu"]``), so the numbers sit beside the reader's own run.
Set-up (building the DataLoader or the Trainer, copying the data) is outside the
timing: every step's end is time-stamped (the Trainer's through ``fit(on_step=...)``),
the first ``--warmup`` steps and the Trainer's last step (which writes the final
checkpoint) are left out, and a variant's speed is its batch size over its median
step time. The variants run in turns (a, b, c, a, b, c, ...) so that a neighbour's
load on a shared machine hits them alike; the median over turns is reported.
On CUDA the clock is read after ``torch.cuda.synchronize()`` at every step end.
Writes benchmarks/results/train.json (``--out DIR``: DIR/train.json; a ``--quick``
run never writes over the committed results unless ``--out`` says so); ``--note``
adds a sentence about the conditions (e.g. other jobs on the machine).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import ddpm_lib as dl

ROOT = Path(__file__).resolve().parent
SIZES = dl.book.SIZES[2]["cpu"]  # chapter 2's cpu profile
MODEL = {"image_size": 32, "in_channels": 1, "block_out_channels": tuple(SIZES["unet_channels"]),
         "layers_per_block": SIZES["layers_per_block"], "attention_blocks": SIZES["attention_blocks"]}
BETAS = (0.001, 0.02)  # chapter 2's linear schedule (beta_start, beta_end)
GRAD_CLIP = 1.0


def machine() -> dict:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
               platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "amx_bf16": "amx_bf16" in info, "avx512_bf16": "avx512_bf16" in info, "torch": torch.__version__,
            "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "nice": os.nice(0) if hasattr(os, "nice") else None,
            "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None}


def _clock(device: torch.device) -> float:
    """perf_counter after the device has finished its queued work (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _median_step(stamps: list[float], warmup: int) -> float:
    """Median seconds between consecutive step ends, leaving out the first ``warmup`` steps."""
    return statistics.median(b - a for a, b in zip(stamps[warmup - 1:-1], stamps[warmup:]))


def plain_loop(model, dataset, batch_size: int, lr: float, steps: int, warmup: int,
               device: torch.device) -> tuple[float, str]:
    """Chapter 2's loop on ``device``: (median seconds per step after ``warmup``, device)."""
    from diffusers import DDPMScheduler

    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=BETAS[0], beta_end=BETAS[1])
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    stamps: list[float] = []
    while len(stamps) < steps:
        for x0, _ in loader:
            x0 = x0.to(device)
            noise = torch.randn_like(x0)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (len(x0),), device=device)
            loss = F.mse_loss(model(scheduler.add_noise(x0, noise, t), t).sample, noise)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            optimizer.step()
            optimizer.zero_grad()
            loss.item()  # the chapter logs every step's loss
            stamps.append(_clock(device))
            if len(stamps) == steps:
                break
    return _median_step(stamps, warmup), str(next(model.parameters()).device)


def trainer_run(model, dataset, batch_size: int, lr: float, steps: int, warmup: int, device: torch.device,
                mixed_precision: str) -> tuple[float, str, str]:
    """dl.Trainer on ``device``: (median seconds per step after ``warmup``, device, precision it used)."""
    from diffusers import DDPMScheduler

    schedule = dl.schedule_from_diffusers(
        DDPMScheduler(num_train_timesteps=1000, beta_start=BETAS[0], beta_end=BETAS[1]))
    with tempfile.TemporaryDirectory() as out:
        cfg = dl.TrainConfig(batch_size=batch_size, max_steps=steps + 1, lr=lr, warmup_steps=0,
                             lr_schedule="constant", grad_clip=GRAD_CLIP, mixed_precision=mixed_precision,
                             log_every=10, checkpoint_every=10**6, sample_every=0, num_sample_images=0,
                             out_dir=out, progress=False, resume=False, cpu=device.type == "cpu")
        trainer = dl.Trainer(model, dataset, cfg, schedule=schedule)
        if trainer.device.type != device.type:
            raise RuntimeError(f"the Trainer chose {trainer.device}, but this benchmark runs on {device}.")
        stamps: list[float] = []
        # one extra step: the last one writes the final checkpoint and is not timed
        trainer.fit(on_step=lambda tr: stamps.append(_clock(tr.device)))
    return _median_step(stamps[:steps], warmup), str(trainer.device), str(trainer.accelerator.mixed_precision)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=SIZES["batch_size"])
    parser.add_argument("--steps", type=int, default=40, help="timed and untimed training steps per turn")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps at the start of each turn")
    parser.add_argument("--rounds", type=int, default=3, help="turns per variant")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where every variant trains (default: cuda when available)")
    parser.add_argument("--note", default="", help="conditions of the measurement, recorded in the JSON")
    parser.add_argument("--quick", action="store_true", help="tiny run to check that the script works")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for train.json (default: benchmarks/results; a --quick run: a temporary folder)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup, args.rounds, args.batch_size = 4, 1, 1, 8
    if not 0 < args.warmup < args.steps - 1:
        parser.error(f"need 0 < --warmup < --steps - 1; got warmup={args.warmup}, steps={args.steps}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device here")
    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="bench-train-")) if args.quick else ROOT / "results")

    began = time.perf_counter()
    info = machine()
    dataset = dl.load_images("mnist-5k", image_size=32)
    torch.manual_seed(0)
    base = dl.diffusers_unet(**MODEL)
    common = (dataset, args.batch_size, SIZES["lr"], args.steps, args.warmup, device)
    variants = {
        "plain": lambda m: (*plain_loop(m, *common), "no"),
        "trainer_fp32": lambda m: trainer_run(m, *common, mixed_precision="no"),
        "trainer": lambda m: trainer_run(m, *common, mixed_precision="auto"),
    }
    step_s: dict[str, list[float]] = {name: [] for name in variants}
    ran_on: dict[str, set[str]] = {name: set() for name in variants}
    precision: dict[str, set[str]] = {name: set() for name in variants}
    for r in range(args.rounds):
        for name, run in variants.items():
            torch.manual_seed(r)
            seconds, where, mp = run(copy.deepcopy(base))
            step_s[name].append(seconds)
            ran_on[name].add(where)
            precision[name].add(mp)
            print(f"round {r + 1}/{args.rounds} {name:13s} {1e3 * seconds:7.1f} ms/step "
                  f"({args.batch_size / seconds:7.1f} images/s) on {where}, precision {mp}", file=sys.stderr)

    median = {name: statistics.median(v) for name, v in step_s.items()}
    rate = {name: args.batch_size / s for name, s in median.items()}
    result = {
        "what": "training images per second, like for like: chapter 2's plain loop vs dl.Trainer "
                "(same network, initial weights, data, batch size, learning rate and gradient clipping)",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "conditions": args.note,
        "machine": {**info, "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else info["cpu"],
        "ran_on": {name: sorted(where) for name, where in ran_on.items()},
        "precision": {name: sorted(p) for name, p in precision.items()},  # as each run reported it
        "synchronized": device.type == "cuda",
        "model": {"class": "diffusers.UNet2DModel", **MODEL, "parameters": dl.count_parameters(base)},
        "batch_size": args.batch_size, "lr": SIZES["lr"], "grad_clip": GRAD_CLIP, "betas": BETAS,
        "steps_per_turn": args.steps, "untimed_warmup_steps": args.warmup, "turns": args.rounds,
        "timing": "median time between consecutive step ends after the untimed steps; set-up, the first "
                  "steps and the Trainer's final checkpoint are outside it",
        "remaining_differences": {
            "trainer_fp32": "data as one tensor indexed per batch (no DataLoader); fused AdamW; EMA update "
                            "after every step; loss read back every 10 steps; its own seeded generators",
            "trainer": "as trainer_fp32, plus mixed precision 'auto' (see precision)",
        },
        "ms_per_step": {name: round(1e3 * s, 2) for name, s in median.items()},
        "ms_per_step_per_turn": {name: [round(1e3 * s, 2) for s in v] for name, v in step_s.items()},
        "images_per_sec": {name: round(v, 2) for name, v in rate.items()},
        "speedup_vs_plain": {name: round(v / rate["plain"], 3) for name, v in rate.items() if name != "plain"},
        "target": "trainer >= 1.3x plain on CPU, >= 3x on a GPU",
        "target_met": rate["trainer"] / rate["plain"] >= (3.0 if device.type == "cuda" else 1.3),
        "quick": args.quick,
        "seconds": round(time.perf_counter() - began, 1),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "train.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("device", "precision", "ms_per_step", "images_per_sec",
                                            "speedup_vs_plain", "seconds")}, indent=2))
    print(f"wrote {out_dir / 'train.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
