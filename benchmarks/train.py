"""Training speed: the plain loop of chapter 2 against ``dl.Trainer`` with its defaults.

    python benchmarks/train.py                  # about 3 minutes on 2 CPU cores
    python benchmarks/train.py --device cuda    # on a GPU (the default when CUDA is there)
    python benchmarks/train.py --quick          # a smoke test of the script (not a measurement)

(a) ``plain``: the loop a reader writes in chapter 2 (the diffusers tutorial): a
    ``datasets.Dataset`` of PIL images with a per-batch ``set_transform`` (Resize,
    ToTensor, Normalize), a shuffling ``DataLoader``, diffusers ``DDPMScheduler.add_noise``,
    ``UNet2DModel`` in fp32 and eager mode, MSE on ε, AdamW, gradient clipping, a
    warm-up + cosine learning rate.
(b) ``trainer``: ``dl.Trainer(model, dl.load_images("mnist-5k"), TrainConfig(batch_size=B))``
    with every other setting at its default (mixed_precision="auto", channels_last,
    data_on_device="auto", fused AdamW, EMA, loss checks, checkpoints and sample grids
    at their default intervals, which these short runs do not reach).
(c) ``trainer_bf16``: (b) with ``mixed_precision="bf16"``, which "auto" picks only on
    CPUs with AMX / AVX-512 BF16 (that run it natively): (b) and (c) are the same there.

Same network (a diffusers ``UNet2DModel``, 32 px, 1 channel, same initial weights),
same batch size, same data (the 5,000 MNIST digits). The variants run in turns
(a, b, c, a, b, c, ...) so that a neighbour's load on a shared machine hits them
alike; each turn trains ``--steps`` steps and its first ``--warmup`` steps are not
timed. Images per second = timed steps x batch size / timed seconds; the median
over turns is reported. Writes benchmarks/results/train.json (``--out DIR``: DIR/train.json;
a ``--quick`` run never writes over the committed results unless ``--out`` says so).

Every variant runs on the same device (``--device``): the plain loop moves its
network, batches, noise and timesteps there as a reader's GPU loop does, and the
Trainer is told the same (``TrainConfig(cpu=True)`` for the CPU). On CUDA the clock
is read only after ``torch.cuda.synchronize()``, so queued GPU work is counted. The
JSON records the device each variant actually trained on.
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
MODEL = {"image_size": 32, "in_channels": 1, "block_out_channels": (32, 64, 64), "layers_per_block": 1,
         "attention_blocks": 1}


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else \
        platform.processor()
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "amx_bf16": "amx_bf16" in flags, "torch": torch.__version__, "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None}


# ----------------------------------------------------------------------------- (a) the plain loop


def _clock(device: torch.device) -> float:
    """perf_counter after the device has finished its queued work (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def plain_loop(model, digits, batch_size: int, steps: int, warmup: int, device: torch.device) -> tuple[float, str]:
    """Chapter 2's loop, written as a reader writes it, on ``device``.

    Returns (images/s over the timed steps, the device the network trained on).
    """
    import datasets
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from PIL import Image
    from torchvision import transforms

    pixels = ((digits + 1) * 127.5).round().to(torch.uint8)[:, 0].numpy()  # back to 8-bit 32x32 digits
    features = datasets.Features({"image": datasets.Image()})
    dataset = datasets.Dataset.from_dict({"image": [Image.fromarray(p) for p in pixels]}, features=features)
    preprocess = transforms.Compose([
        transforms.Resize((32, 32)), transforms.ToTensor(), transforms.Normalize([0.5], [0.5]),
    ])

    def transform(examples):
        return {"images": [preprocess(image.convert("L")) for image in examples["image"]]}

    dataset.set_transform(transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True)
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4)
    lr_scheduler = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=100, num_training_steps=2000)

    model.to(device).train()
    step, start = 0, None
    while step < steps:
        for batch in loader:
            if step == warmup:
                start = _clock(device)
            clean = batch["images"].to(device)
            noise = torch.randn(clean.shape, device=device)
            timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (clean.shape[0],),
                                      device=device).long()
            noisy = scheduler.add_noise(clean, noise, timesteps)
            noise_pred = model(noisy, timesteps, return_dict=False)[0]
            loss = F.mse_loss(noise_pred, noise)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
            step += 1
            if step == steps:
                break
    seconds = _clock(device) - start
    return (steps - warmup) * batch_size / seconds, str(next(model.parameters()).device)


# ----------------------------------------------------------------------------- (b), (c) the Trainer


class _StepClock:
    """Wraps the optimizer's step to read the clock when steps ``marks`` end (nothing else changes).

    Only at those steps, so that on CUDA the synchronisation before each reading does
    not stall the other steps (the plain loop is synchronised at the same two points).
    """

    def __init__(self, optimizer, device: torch.device, marks: set[int]):
        self.times: dict[int, float] = {}
        inner, count = optimizer.step, [0]

        def step(*args, **kwargs):
            out = inner(*args, **kwargs)
            count[0] += 1
            if count[0] in marks:
                self.times[count[0]] = _clock(device)
            return out

        optimizer.step = step


def trainer_run(model, dataset, batch_size: int, steps: int, warmup: int, device: torch.device,
                **overrides) -> tuple[float, str]:
    """dl.Trainer with its defaults (and ``overrides``) on ``device``: (images/s, the device it trained on)."""
    with tempfile.TemporaryDirectory() as out:
        cfg = dl.TrainConfig(batch_size=batch_size, max_steps=steps, out_dir=out, progress=False,
                             cpu=device.type == "cpu", **overrides)
        trainer = dl.Trainer(model, dataset, cfg)
        if trainer.device.type != device.type:
            raise RuntimeError(f"the Trainer chose {trainer.device}, but this benchmark runs on {device}.")
        clock = _StepClock(trainer.optimizer, trainer.device, {warmup, steps})
        trainer.fit()
    seconds = clock.times[steps] - clock.times[warmup]  # from the end of step `warmup` to the end of the last
    return (steps - warmup) * batch_size / seconds, str(trainer.device)


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=14, help="training steps per turn")
    parser.add_argument("--warmup", type=int, default=4, help="untimed steps at the start of each turn")
    parser.add_argument("--rounds", type=int, default=3, help="turns per variant")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where every variant trains (default: cuda when available)")
    parser.add_argument("--quick", action="store_true", help="tiny run to check that the script works")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for train.json (default: benchmarks/results; a --quick run: a temporary folder)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup, args.rounds, args.batch_size = 3, 1, 1, 8
    if not 0 < args.warmup < args.steps:
        parser.error(f"need 0 < --warmup < --steps; got warmup={args.warmup}, steps={args.steps}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device here")
    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="bench-train-")) if args.quick else ROOT / "results")

    began = time.perf_counter()
    info = machine()
    dataset = dl.load_images("mnist-5k", image_size=32)
    torch.manual_seed(0)
    base = dl.diffusers_unet(**MODEL)
    variants = {
        "plain": lambda m: plain_loop(m, dataset.images, args.batch_size, args.steps, args.warmup, device),
        "trainer": lambda m: trainer_run(m, dataset, args.batch_size, args.steps, args.warmup, device),
        "trainer_bf16": lambda m: trainer_run(m, dataset, args.batch_size, args.steps, args.warmup, device,
                                              mixed_precision="bf16"),
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    ran_on: dict[str, set[str]] = {name: set() for name in variants}
    for r in range(args.rounds):
        for name, run in variants.items():
            torch.manual_seed(r)
            rate, where = run(copy.deepcopy(base))
            rates[name].append(rate)
            ran_on[name].add(where)
            print(f"round {r + 1}/{args.rounds} {name:13s} {rate:7.1f} images/s on {where}", file=sys.stderr)

    median = {name: statistics.median(v) for name, v in rates.items()}
    result = {
        "what": "training images per second: chapter 2's plain loop vs dl.Trainer with its defaults",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {**info, "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else info["cpu"],
        "ran_on": {name: sorted(where) for name, where in ran_on.items()},  # as each variant reported it
        "synchronized": device.type == "cuda",  # torch.cuda.synchronize() before every clock reading
        "model": {"class": "diffusers.UNet2DModel", **MODEL, "parameters": dl.count_parameters(base)},
        "batch_size": args.batch_size,
        "steps_per_turn": args.steps, "untimed_warmup_steps": args.warmup, "turns": args.rounds,
        "images_per_sec": {name: round(v, 2) for name, v in median.items()},
        "images_per_sec_per_turn": {name: [round(x, 2) for x in v] for name, v in rates.items()},
        "speedup_trainer_defaults": round(median["trainer"] / median["plain"], 3),
        "speedup_trainer_bf16": round(median["trainer_bf16"] / median["plain"], 3),
        "target": "trainer >= 1.3x plain on CPU, >= 3x on a GPU",
        "quick": args.quick,
        "seconds": round(time.perf_counter() - began, 1),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "train.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("device", "images_per_sec", "speedup_trainer_defaults",
                                            "speedup_trainer_bf16", "seconds")}, indent=2))
    print(f"wrote {out_dir / 'train.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
