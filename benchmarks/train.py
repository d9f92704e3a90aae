"""Training speed: chapter 2's plain loop against ``dl.Trainer``, like for like.

    python benchmarks/train.py                  # about 2 minutes on 2 idle CPU cores
    python benchmarks/train.py --device cuda    # on a GPU (the default when CUDA is there)
    python benchmarks/train.py --variants plain,trainer_fast   # some of the variants only
    python benchmarks/train.py --quick          # a smoke test of the script (not a measurement)

Four variants train the same network from the same initial weights on the same
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
    CPUs with AVX-512 BF16 or AMX, fp32 elsewhere (then (b) and (c) are the same), and
    the default ``channels_last="auto"`` (on GPUs only). ``target_met`` is about this
    variant: the Trainer as a user gets it.
(d) ``trainer_fast``: (c) with every speed setting on: ``mixed_precision="bf16"`` where
    the device computes bf16 natively (else what "auto" picks; ``requested_precision``
    and ``precision`` say what it asked for and used), ``channels_last=True`` and
    ``compile=True`` (``torch.compile`` of the network with the inductor backend,
    through accelerate; the loss, the optimizer and the EMA stay eager). On a GPU it
    differs from (c) only in compiling. Compiling happens in the first step of a turn,
    which is never timed (the step times start at the end of step ``--warmup`` >= 1);
    ``compile_s`` is, per turn, the seconds from the call of ``fit`` to the end of the
    first step (``first_step_s`` is the same for every variant, so compiling costs about
    the difference to (c)'s). Each turn compiles a fresh network, the later turns with
    inductor's caches warm (the first may find them warm too, from an earlier run). A
    graph compiled again inside the timed steps is counted in
    ``recompiled_in_timed_steps``. On the CPU inductor compiles C++ (it needs a C++
    compiler; the JSON's machine.cxx): on the 2-core build machine, niced beside other
    jobs (load 5 to 8), compiling took 1,244 s for ``--quick`` (2026-12-08; not a clean
    measurement, but far beyond a benchmark's minutes), so the CPU default leaves (d)
    out; ask for it with ``--variants``.

The network, batch size and learning rate are chapter 2's cpu profile
(``dl.book.SIZES[2]["cpu"]``), so the numbers sit beside the reader's own run.
Set-up (building the DataLoader or the Trainer, copying the data) is outside the
timing: every step's end is time-stamped (the Trainer's through ``fit(on_step=...)``),
the first ``--warmup`` steps and the Trainer's last step (which writes the final
checkpoint) are left out, and a variant's speed is its batch size over its median
step time. The variants run in turns (a, b, c, d, a, b, c, d, ...) so that a
neighbour's load on a shared machine hits them alike; the median over turns is
reported. On CUDA the clock is read after ``torch.cuda.synchronize()`` at every step end.
A variant that fails (say, compiling without a C++ compiler) is recorded in ``failed``
with the first line of its error and not run again; the others go on, the JSON is
written, and the exit status is 1.
Writes benchmarks/results/train.json (``--out DIR``: DIR/train.json; a ``--quick``
run never writes over the committed results unless ``--out`` says so), rewritten after
every run with ``"complete": false`` until the last one, so that a run stopped early
(tools/device_check.py's time limit) leaves what it measured; ``--note`` adds a
sentence about the conditions (e.g. other jobs on the machine).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import shutil
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
VARIANTS = ("plain", "trainer_fp32", "trainer", "trainer_fast")
# The CPU default leaves compiling out: inductor's C++ compile of this network took 1,244 s for
# --quick on the 2-core build machine (niced, load 5 to 8; see the module docstring).
DEFAULT_VARIANTS = {"cuda": VARIANTS, "other": VARIANTS[:3]}  # "other": the CPU (and MPS)


def machine() -> dict:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
               platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "amx_bf16": "amx_bf16" in info, "avx512_bf16": "avx512_bf16" in info, "torch": torch.__version__,
            "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "cxx": shutil.which(os.environ.get("CXX", "g++")),  # torch.compile on the CPU compiles C++ with it
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




def fast_precision(device: torch.device) -> str:
    """"bf16" where ``device`` computes bf16 natively, else "auto" (what the Trainer's default picks).

    Natively: GPUs from Ampere on, CPUs with AVX-512 BF16 or AMX. Emulated bf16 (a T4, older CPUs)
    is slower than what "auto" picks there (fp16 with loss scaling, or fp32).
    """
    from ddpm_lib.train import _cpu_native_bf16, _native_bf16

    native = _native_bf16() if device.type == "cuda" else device.type == "cpu" and _cpu_native_bf16()
    return "bf16" if native else "auto"


def plain_loop(model, dataset, batch_size: int, lr: float, steps: int, warmup: int, device: torch.device) -> dict:
    """Chapter 2's loop on ``device``: the median seconds per step after ``warmup`` and what it ran with."""
    from diffusers import DDPMScheduler

    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=BETAS[0], beta_end=BETAS[1])
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    stamps: list[float] = []
    began = _clock(device)
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
    return {"step_s": _median_step(stamps, warmup), "first_step_s": stamps[0] - began,
            "ran_on": str(next(model.parameters()).device), "precision": "no", "requested_precision": "no",
            "channels_last": False, "compiled": False}


def _graphs_compiled() -> int:
    """How many graphs torch.compile has compiled in this process so far (dynamo's own counter)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def trainer_run(model, dataset, batch_size: int, lr: float, steps: int, warmup: int, device: torch.device,
                mixed_precision: str, channels_last: bool | str = "auto", compile: bool = False) -> dict:
    """dl.Trainer on ``device``: the median seconds per step after ``warmup`` and what it ran with."""
    from accelerate.utils import is_compiled_module
    from diffusers import DDPMScheduler

    schedule = dl.schedule_from_diffusers(
        DDPMScheduler(num_train_timesteps=1000, beta_start=BETAS[0], beta_end=BETAS[1]))
    with tempfile.TemporaryDirectory() as out:
        cfg = dl.TrainConfig(batch_size=batch_size, max_steps=steps + 1, lr=lr, warmup_steps=0,
                             lr_schedule="constant", grad_clip=GRAD_CLIP, mixed_precision=mixed_precision,
                             channels_last=channels_last, compile=compile,
                             log_every=10, checkpoint_every=10**6, sample_every=0, num_sample_images=0,
                             out_dir=out, progress=False, resume=False, cpu=device.type == "cpu")
        trainer = dl.Trainer(model, dataset, cfg, schedule=schedule)
        if trainer.device.type != device.type:
            raise RuntimeError(f"the Trainer chose {trainer.device}, but this benchmark runs on {device}.")
        if is_compiled_module(trainer.model) != compile:
            raise RuntimeError(f"compile={compile}, but the Trainer's network is "
                               f"{'' if is_compiled_module(trainer.model) else 'not '}compiled.")
        stamps: list[float] = []
        graphs: list[int] = []

        def on_step(tr) -> None:
            stamps.append(_clock(tr.device))
            graphs.append(_graphs_compiled())

        began = _clock(device)
        # one extra step: the last one writes the final checkpoint and is not timed
        trainer.fit(on_step=on_step)
    return {"step_s": _median_step(stamps[:steps], warmup), "first_step_s": stamps[0] - began,
            "ran_on": str(trainer.device), "precision": str(trainer.accelerator.mixed_precision),
            "requested_precision": mixed_precision, "channels_last": trainer.channels_last,
            "compiled": is_compiled_module(trainer.model),
            "recompiled_in_timed_steps": graphs[steps - 1] - graphs[warmup - 1]}


def parse_variants(text: str | None, device: torch.device, parser: argparse.ArgumentParser) -> list[str]:
    """The variants asked for with --variants (in the order of VARIANTS), or the device's default."""
    if text is None:
        return list(DEFAULT_VARIANTS["cuda" if device.type == "cuda" else "other"])
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        parser.error(f"--variants takes a comma-separated list of {', '.join(VARIANTS)}; got {text!r}"
                     + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    return [n for n in VARIANTS if n in names]


def first_line(error: BaseException) -> str:
    """``Type: the message's first line`` (a compile error's runs to pages), and its second line when
    the first ends with a colon (torch.compile's "backend='inductor' raised:" names the error there)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = " ".join(lines[:2] if lines and lines[0].endswith(":") else lines[:1])
    return f"{type(error).__name__}: {text}".strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=SIZES["batch_size"])
    parser.add_argument("--steps", type=int, default=40, help="timed and untimed training steps per turn")
    parser.add_argument("--warmup", type=int, default=5,
                        help="untimed steps at the start of each turn (compiling happens in the first)")
    parser.add_argument("--rounds", type=int, default=3, help="turns per variant")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where every variant trains (default: cuda when available)")
    parser.add_argument("--variants", default=None,
                        help=f"comma-separated, of {', '.join(VARIANTS)} (default: all on CUDA, "
                             f"{', '.join(DEFAULT_VARIANTS['other'])} on the CPU)")
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
    names = parse_variants(args.variants, device, parser)
    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="bench-train-")) if args.quick else ROOT / "results")
    out_dir.mkdir(parents=True, exist_ok=True)

    began = time.perf_counter()
    info = machine()
    dataset = dl.load_images("mnist-5k", image_size=32)
    torch.manual_seed(0)
    base = dl.diffusers_unet(**MODEL)
    common = (dataset, args.batch_size, SIZES["lr"], args.steps, args.warmup, device)
    fast = fast_precision(device)
    runners = {
        "plain": lambda m: plain_loop(m, *common),
        "trainer_fp32": lambda m: trainer_run(m, *common, mixed_precision="no"),
        "trainer": lambda m: trainer_run(m, *common, mixed_precision="auto"),
        "trainer_fast": lambda m: trainer_run(m, *common, mixed_precision=fast, channels_last=True, compile=True),
    }
    runs: dict[str, list[dict]] = {name: [] for name in names}
    failed: dict[str, str] = {}
    for r in range(args.rounds):
        for name in names:
            if name in failed:
                continue
            torch.manual_seed(r)
            try:
                run = runners[name](copy.deepcopy(base))
            except Exception as e:  # noqa: BLE001 (recorded in the JSON; the exit status says so)
                failed[name] = first_line(e)
                print(f"round {r + 1}/{args.rounds} {name:13s} FAILED: {failed[name]}", file=sys.stderr)
            else:
                runs[name].append(run)
                print(f"round {r + 1}/{args.rounds} {name:13s} {1e3 * run['step_s']:7.1f} ms/step "
                      f"({args.batch_size / run['step_s']:7.1f} images/s) on {run['ran_on']}, precision "
                      f"{run['precision']}, first step {run['first_step_s']:.1f} s"
                      + (" (compiling)" if run["compiled"] else ""), file=sys.stderr)
            write(out_dir, summarize(args, device, info, base, names, runs, failed, began, complete=False))
    result = summarize(args, device, info, base, names, runs, failed, began, complete=True)
    write(out_dir, result)
    print(json.dumps({k: result[k] for k in ("device", "precision", "ms_per_step", "images_per_sec",
                                            "speedup_vs_plain", "compile_s", "failed", "seconds")}, indent=2))
    print(f"wrote {out_dir / 'train.json'}", file=sys.stderr)
    if failed:
        sys.exit(1)


def summarize(args, device: torch.device, info: dict, base, names: list[str], runs: dict[str, list[dict]],
              failed: dict[str, str], began: float, complete: bool) -> dict:
    """The JSON record of what has been measured so far."""
    measured = [name for name in names if runs[name]]
    median = {name: statistics.median(run["step_s"] for run in runs[name]) for name in measured}
    rate = {name: args.batch_size / s for name, s in median.items()}

    def per_variant(key: str) -> dict:
        return {name: sorted({str(run[key]) for run in runs[name]}) for name in measured}

    target = 3.0 if device.type == "cuda" else 1.3
    speedup = ({name: round(v / rate["plain"], 3) for name, v in rate.items() if name != "plain"}
               if "plain" in rate else {})
    return {
        "what": "training images per second, like for like: chapter 2's plain loop vs dl.Trainer "
                "(same network, initial weights, data, batch size, learning rate and gradient clipping)",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "conditions": args.note,
        "machine": {**info, "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else info["cpu"],
        "variants": names,
        "failed": failed,  # variant: the first line of its error (not run again after it)
        "ran_on": per_variant("ran_on"),
        "precision": per_variant("precision"),  # as each run reported it
        "requested_precision": per_variant("requested_precision"),
        "channels_last": per_variant("channels_last"),
        "compiled": per_variant("compiled"),
        "synchronized": device.type == "cuda",
        "model": {"class": "diffusers.UNet2DModel", **MODEL, "parameters": dl.count_parameters(base)},
        "batch_size": args.batch_size, "lr": SIZES["lr"], "grad_clip": GRAD_CLIP, "betas": BETAS,
        "steps_per_turn": args.steps, "untimed_warmup_steps": args.warmup, "turns": args.rounds,
        "timing": "median time between consecutive step ends after the untimed steps; set-up, the first "
                  "steps (compiling, in the first) and the Trainer's final checkpoint are outside it",
        "remaining_differences": {
            "trainer_fp32": "data as one tensor indexed per batch (no DataLoader); fused AdamW; EMA update "
                            "after every step; loss read back every 10 steps; its own seeded generators",
            "trainer": "as trainer_fp32, plus mixed precision 'auto' and channels_last 'auto' (GPUs only); "
                       "see precision and channels_last",
            "trainer_fast": "as trainer, plus bf16 where native (else 'auto'), channels_last=True and "
                            "torch.compile (inductor) of the network; compiled afresh in every turn's "
                            "first, untimed step",
        },
        "ms_per_step": {name: round(1e3 * s, 2) for name, s in median.items()},
        "ms_per_step_per_turn": {name: [round(1e3 * run["step_s"], 2) for run in runs[name]] for name in measured},
        "images_per_sec": {name: round(v, 2) for name, v in rate.items()},
        "first_step_s": {name: [round(run["first_step_s"], 2) for run in runs[name]] for name in measured},
        "compile_s": ([round(run["first_step_s"], 2) for run in runs["trainer_fast"]]
                      if runs.get("trainer_fast") else None),  # fit's call to the end of step 1, per turn
        "recompiled_in_timed_steps": ([run["recompiled_in_timed_steps"] for run in runs["trainer_fast"]]
                                      if runs.get("trainer_fast") else None),
        "speedup_vs_plain": speedup,
        "target": "trainer >= 1.3x plain on CPU, >= 3x on a GPU",
        "target_met": rate["trainer"] / rate["plain"] >= target if "trainer" in speedup else None,
        "trainer_fast_target_met": rate["trainer_fast"] / rate["plain"] >= target if "trainer_fast" in speedup
        else None,
        "quick": args.quick,
        "complete": complete,
        "seconds": round(time.perf_counter() - began, 1),
    }


def write(out_dir: Path, result: dict) -> None:
    """Write train.json whole (a run stopped while writing leaves the previous version)."""
    path = out_dir / "train.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    main()
