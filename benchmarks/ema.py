"""Raw weights against their EMA over a longer run of chapter 2's training.

    python benchmarks/ema.py            # 1,000 steps: about 10 minutes of one idle CPU core
    python benchmarks/ema.py --quick    # a smoke test of the script (not a measurement)

Chapter 2's reader's run is short (200 steps on the cpu profile): there the loss is
still falling and the EMA lags behind the raw weights. This script trains the same
network (chapter 2's cpu profile: ``dl.book.SIZES[2]["cpu"]``) with ``dl.Trainer`` and
the chapter's settings (constant learning rate, no warm-up, gradient clipping at 1,
EMA decay 0.999 with the Trainer's warm-up of the decay, the linear schedule
0.001 -> 0.02) on the 4,000 training digits for ``--steps`` steps, in fp32
(``mixed_precision="no"``; the chapter's run uses "auto", bf16 on CPUs that have it).

Every ``--every`` steps it scores the raw weights and the EMA on the same questions:
the 256 first held-out test digits, ten timesteps 0, 111, ..., 999, one fixed noise
draw per (image, timestep). The loss per image is averaged over the ten timesteps;
the JSON gives the mean over images of raw, EMA and raw - EMA, with the standard error
of that paired difference. At the end it also draws ``--samples`` images from each
with DPM-Solver++ (25 steps, the same seed) and scores them with the book's MNIST
classifier (``dl.confident_fraction``: the share it recognises with probability >= 0.9).
One seed per run (``--seed``; the shipped results: seeds 0, 1 and 2, 600 steps each). Writes
benchmarks/results/ema.json for seed 0 and ema_seed<N>.json for seed N (``--out DIR``: into DIR)
after every evaluation, with ``"complete": false`` until the run has ended.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from train import machine  # benchmarks/train.py (this folder is on the path when the script runs)

import ddpm_lib as dl

ROOT = Path(__file__).resolve().parent
SIZES = dl.book.SIZES[2]["cpu"]
BETAS = (0.001, 0.02)
EMA_DECAY = 0.999


def held_out_loss(net, x0, schedule, ts, eps) -> torch.Tensor:
    """Loss per image (N,), averaged over the fixed (timestep, noise) pairs."""
    was_training = net.training
    net.eval()
    with torch.no_grad():
        per_t = [dl.diffusion_loss(net, x0, schedule, t=t.repeat(len(x0)), noise=e, reduction="none")
                 for t, e in zip(ts, eps)]
    net.train(was_training)
    return torch.stack(per_t).mean(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--every", type=int, default=100, help="steps between evaluations")
    parser.add_argument("--samples", type=int, default=100, help="images drawn from each network at the end")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--note", default="", help="conditions of the run, recorded in the JSON")
    parser.add_argument("--quick", action="store_true", help="tiny run to check that the script works")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the JSON (default: benchmarks/results; a --quick run: a temporary folder)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.every, args.samples = 4, 2, 4
    if not 0 < args.every <= args.steps:
        parser.error(f"need 0 < --every <= --steps; got every={args.every}, steps={args.steps}")
    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="bench-ema-")) if args.quick else ROOT / "results")
    out_name = "ema.json" if args.seed == 0 else f"ema_seed{args.seed}.json"
    began = time.perf_counter()
    info = machine()

    from diffusers import DDPMScheduler

    schedule = dl.schedule_from_diffusers(
        DDPMScheduler(num_train_timesteps=1000, beta_start=BETAS[0], beta_end=BETAS[1]))
    train = dl.load_images("mnist-5k", image_size=32, split="train")
    test = dl.load_images("mnist-5k", image_size=32, split="test").images[:256]
    ts = torch.linspace(0, 999, 10).long()
    eps = torch.randn((len(ts), *test.shape), generator=torch.Generator().manual_seed(1))

    torch.manual_seed(args.seed)
    model = dl.diffusers_unet(image_size=32, in_channels=1, block_out_channels=tuple(SIZES["unet_channels"]),
                              layers_per_block=SIZES["layers_per_block"],
                              attention_blocks=SIZES["attention_blocks"])
    batch_size = 8 if args.quick else SIZES["batch_size"]
    points: list[dict] = []

    def write(complete: bool, history=None, quality=None) -> None:
        """Write the JSON: after every evaluation (complete=False), and at the end."""
        result = {
            "what": "held-out loss of the raw weights and of their EMA along chapter 2's training, longer than "
                    "the chapter's run; and the share of samples the MNIST classifier recognises at the end",
            "complete": complete,  # False: the run was still going (or was stopped) when this was written
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "conditions": args.note,
            "machine": {**info, "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None},
            "model": {"block_out_channels": list(SIZES["unet_channels"]), "parameters": dl.count_parameters(model)},
            "settings": {"batch_size": batch_size, "lr": SIZES["lr"], "lr_schedule": "constant", "grad_clip": 1.0,
                         "ema_decay": EMA_DECAY, "ema_warmup": True, "betas": BETAS, "mixed_precision": "no",
                         "seed": args.seed, "train_images": len(train), "planned_steps": args.steps},
            "evaluation": f"{len(test)} held-out test digits x {len(ts)} timesteps, fixed noise; loss per image "
                          "averaged over the timesteps; standard error of the paired difference over images",
            "points": points,
            "final_training_loss": None if history is None else round(history.losses[-1], 5),
            "samples": None if quality is None else {"n": args.samples, "sampler": "dpmpp_2m", "steps": 25,
                                                     "recognised": quality},
            "quick": args.quick,
            "seconds": round(time.perf_counter() - began, 1),
        }
        out_dir.mkdir(parents=True, exist_ok=True)
        dl.paths.write_json(out_dir / out_name, result)

    with tempfile.TemporaryDirectory() as out:
        cfg = dl.TrainConfig(batch_size=batch_size, max_steps=args.steps, lr=SIZES["lr"], warmup_steps=0,
                             lr_schedule="constant", grad_clip=1.0, ema_decay=EMA_DECAY, mixed_precision="no",
                             log_every=max(1, args.every // 4), checkpoint_every=args.steps, sample_every=0,
                             num_sample_images=0, progress=False, resume=False, out_dir=out, cpu=True,
                             seed=args.seed)
        trainer = dl.Trainer(model, train, cfg, schedule=schedule)

        def on_step(tr):
            if tr.step % args.every and tr.step != args.steps:
                return
            raw = held_out_loss(tr.unwrapped_model, test, schedule, ts, eps)
            ema = held_out_loss(tr.ema_model, test, schedule, ts, eps)
            gain = raw - ema
            points.append({"step": tr.step, "raw": round(raw.mean().item(), 5), "ema": round(ema.mean().item(), 5),
                           "raw_minus_ema": round(gain.mean().item(), 5),
                           "standard_error": round(gain.std().item() / len(gain) ** 0.5, 5),
                           "ema_decay_now": round(tr.ema.current_decay(), 4)})
            print(points[-1], file=sys.stderr, flush=True)
            write(complete=False)

        history = trainer.fit(on_step=on_step)
        shape = (args.samples, 1, 32, 32)
        quality = {}
        for name, net in (("raw", trainer.unwrapped_model.eval()), ("ema", trainer.ema_model)):
            with torch.no_grad():
                x = dl.sample(net, shape, schedule, sampler="dpmpp_2m", steps=25,
                              generator=torch.Generator().manual_seed(0))
            quality[name] = round(dl.confident_fraction(x), 4)
    write(complete=True, history=history, quality=quality)

    print(json.dumps({"points": points, "recognised": quality}, indent=1))
    print(f"wrote {out_dir / out_name}", file=sys.stderr)


if __name__ == "__main__":
    main()
