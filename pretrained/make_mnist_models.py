"""Train, check and document the two shipped MNIST diffusion models with the library's presets.

    .venv/bin/python pretrained/make_mnist_models.py train ddpm-mnist [MINUTES]   # the CLI command below
    .venv/bin/python pretrained/make_mnist_models.py finish ddpm-mnist            # copy, check, write README.md
    (the same for ddpm-mnist-cond)

``train`` runs exactly the ``python -m ddpm_lib train --preset ...`` command of
``command()`` (checkpoints go to ``runs/<name>``; running it again resumes, and a
longer budget continues the run). ``finish`` copies the exported pipeline into
``pretrained/<name>/``, draws samples with ``dl.load_pretrained`` and the sampler the
export records (``pre.sampling``), checks them with the shipped MNIST classifier
(``pretrained/mnist-classifier``) and writes ``samples.png``, ``loss.png``,
``training_config.json``, ``check.json`` and ``README.md``.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
PRESETS = {"ddpm-mnist": "mnist", "ddpm-mnist-cond": "mnist-cond"}
DEFAULT_MINUTES = 30
DESCRIPTIONS = {
    "ddpm-mnist": "A small **unconditional** diffusion model for 28 x 28 MNIST digits: a diffusers `UNet2DModel` "
    "in a diffusers `DDPMPipeline` folder, so `diffusers.DDPMPipeline.from_pretrained` loads it as it "
    "is (chapter 1 uses it offline).",
    "ddpm-mnist-cond": "A small **class-conditional** diffusion model for 28 x 28 MNIST digits, for classifier-free "
    "guidance (chapter 8): a diffusers `UNet2DModel` with a class embedding (labels 0-9; label 10 "
    "is the null class, used for 10 % of the training images).",
}
NUM_CHECK = 500  # generated digits checked with the classifier (per guidance scale for the conditional model)
GUIDANCE_SCALES = (1.0, 3.0)  # 1: no guidance; 3: chapter 8's grids and chapter 9's samples


def command(name: str, minutes: float) -> list[str]:
    return [
        "python",
        "-m",
        "ddpm_lib",
        "train",
        "--preset",
        PRESETS[name],
        "--max-minutes",
        f"{minutes:g}",
        "--out",
        f"runs/{name}",
        "--seed",
        "0",
    ]


def train(name: str, minutes: float = DEFAULT_MINUTES) -> None:
    cmd = command(name, minutes)
    print("$", shlex.join(cmd), flush=True)
    (ROOT / "runs" / name).mkdir(parents=True, exist_ok=True)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = min(cpus, int(os.environ.get("OMP_NUM_THREADS", cpus)))  # what torch will use
    (ROOT / "runs" / name / "command.json").write_text(json.dumps({"command": cmd, "threads": threads}) + "\n")
    subprocess.run([sys.executable, *cmd[1:]], cwd=ROOT, check=True)


def _cpu() -> str:
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def speckle(x: torch.Tensor) -> torch.Tensor:
    """Per image: the share of inked pixels (> 0) with no inked 4-neighbour: ~0 for a pen stroke, high for noise."""
    ink = (x > 0).float()  # (N, 1, H, W)
    padded = torch.nn.functional.pad(ink, (1, 1, 1, 1))
    neighbours = (
        padded[..., :-2, 1:-1] + padded[..., 2:, 1:-1] + padded[..., 1:-1, :-2] + padded[..., 1:-1, 2:]
    )
    lonely = (ink * (neighbours == 0).float()).flatten(1).sum(1)
    return lonely / ink.flatten(1).sum(1).clamp(min=1)


@torch.no_grad()
def check(folder: Path, name: str) -> dict:
    """Sample digits the way the export recommends and score them with the shipped MNIST classifier."""
    import ddpm_lib as dl

    pre = dl.load_pretrained(folder, device="cpu")
    g = torch.Generator().manual_seed(1234)
    shape = (NUM_CHECK, *pre.image_shape)
    result: dict = {**pre.sampling, "num_images": NUM_CHECK, "classifier": "mnist-classifier"}
    real = dl.load_images("mnist-5k", split="test", image_size=pre.image_shape[-1]).images
    real_features = dl.classifier_features(real)
    noisy_limit = float(speckle(real).max())  # the most speckled real digit
    result["real_test_digits"] = {**_scores(dl.classify(real)), "fd": 0.0, "noisy_samples": 0}
    result["noisy_threshold"] = round(noisy_limit, 4)

    def scores(x: torch.Tensor) -> dict:
        return {
            **_scores(dl.classify(x)),
            "fd": round(dl.frechet_distance_from_features(real_features, dl.classifier_features(x)), 2),
            "noisy_samples": int((speckle(x) > noisy_limit).sum()),
        }

    if pre.num_classes is not None:  # dl.sample guides only where sigma <= 2 by default for w > 1
        result["guidance_interval"] = list(dl.DEFAULT_GUIDANCE_INTERVAL)
    if pre.num_classes is None:
        x = dl.sample(pre.model, shape, pre.schedule, prediction=pre.prediction, generator=g, **pre.sampling)
        result["unconditional"] = scores(x)
        grid, nrow = x[:64], 8
    else:
        labels = torch.arange(NUM_CHECK) % pre.num_classes
        for w in GUIDANCE_SCALES:
            x = dl.sample(
                pre.model,
                shape,
                pre.schedule,
                prediction=pre.prediction,
                generator=g,
                class_labels=labels,
                guidance_scale=w,
                **pre.sampling,
            )
            p = dl.classify(x)
            result[f"guidance_{w:g}"] = {
                **scores(x),
                "accuracy": (p.argmax(-1) == labels).float().mean().item(),
            }
            if w == GUIDANCE_SCALES[-1]:
                order = torch.argsort(labels[:80], stable=True)  # 8 per class, one class per column
                grid = x[:80][order].reshape(10, 8, *x.shape[1:]).transpose(0, 1).reshape(80, *x.shape[1:])
        nrow = 10
    side = pre.image_shape[-1] + 2
    dl.make_grid_image(grid.clamp(-1, 1), nrow=nrow, value_range=(-1, 1)).resize(
        (nrow * side * 2, -(-len(grid) // nrow) * side * 2), resample=0
    ).save(folder / "samples.png")
    return result


def _scores(p: torch.Tensor) -> dict:
    import ddpm_lib as dl

    b = dl.class_balance(p)
    return {
        "recognised_p_ge_0.9": round(b.confident_fraction, 4),
        "mean_top_probability": round(b.mean_max_prob, 4),
        "class_counts": list(b.counts),
        "class_balance": round(b.balance, 4),
    }


def finish(name: str) -> None:
    import ddpm_lib as dl

    run, folder = ROOT / "runs" / name, ROOT / "pretrained" / name
    recorded = json.loads((run / "command.json").read_text())  # {"command": [...], "threads": n}
    ckpt = dl.latest_checkpoint(run)
    if ckpt is None:
        sys.exit(f"no checkpoint in {run}: run `train {name}` first")
    state = ckpt[1]
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(run / "pipeline", folder)
    shutil.copy(run / "loss.csv", folder / "loss.csv")
    (folder / "training_config.json").write_text(
        json.dumps(json.loads((run / "config.json").read_text()), indent=2) + "\n"
    )
    import matplotlib

    matplotlib.use("Agg")
    fig = dl.plot_loss(folder / "loss.csv", title=f"Training loss ({name})")
    fig.savefig(folder / "loss.png", dpi=120)
    began = time.time()
    result = check(folder, name)
    result["check_seconds"] = round(time.time() - began, 1)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    pre = dl.load_pretrained(folder)
    result.update(
        {
            "parameters": dl.count_parameters(pre.model),
            "folder_bytes": size,
            "command": recorded["command"],
            "threads": recorded["threads"],
            "training_steps": state["step"],
            "training_seconds": round(state["budget"]["elapsed_seconds"], 1),
            "machine": _cpu(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
        }
    )
    (folder / "check.json").write_text(json.dumps(result, indent=2) + "\n")
    (folder / "README.md").write_text(readme(name, result))
    print(json.dumps(result, indent=2))


def readme(name: str, r: dict) -> str:
    rows = []
    if "unconditional" in r:
        rows.append(("generated digits", r["unconditional"], None))
    else:
        rows += [
            (
                f"generated, guidance w = {w:g}" + (" (none)" if w == 1 else f" at σ <= {r['guidance_interval'][1]:g}"
                                                     if r.get("guidance_interval") else ""),
                r[f"guidance_{w:g}"],
                r[f"guidance_{w:g}"]["accuracy"],
            )
            for w in GUIDANCE_SCALES
        ]
    rows.append(("real held-out digits (reference)", r["real_test_digits"], None))
    table = "\n".join(
        f"| {label} | {100 * s['recognised_p_ge_0.9']:.1f} % | {s['mean_top_probability']:.3f} | "
        f"{'' if acc is None else f'{100 * acc:.1f} %'} | {s['class_balance']:.3f} | {s['fd']:.1f} | "
        f"{s['noisy_samples']} | {s['class_counts']} |"
        for label, s, acc in rows
    )
    sampler = f"{r['sampler']} with {r['steps']} steps" + (
        f", x0 clipped to ±{r['clip_x0']:g}" if r["clip_x0"] else ""
    )
    load = (
        'from diffusers import DDPMPipeline\npipe = DDPMPipeline.from_pretrained("pretrained/ddpm-mnist")\n'
        "images = pipe(batch_size=16, num_inference_steps=1000).images\n\n"
        if name == "ddpm-mnist"
        else ""
    )
    cond = (
        ",\n              class_labels=torch.arange(16) % 10, guidance_scale=3.0"
        if name == "ddpm-mnist-cond"
        else ""
    )
    guided = (
        "; with guidance `dl.sample` guides only the noise levels with σ <= "
        f"{r['guidance_interval'][1]:g} by default (`guidance_interval`, chapter 8)"
        if r.get("guidance_interval")
        else ""
    )
    return f"""# {name}

{DESCRIPTIONS[name]}

![samples](samples.png)

`samples.png`: {"64 samples" if "unconditional" in r else "8 samples per class (columns 0-9), guidance w = 3"},
{sampler} (the sampler the export records){guided}. `loss.png` / `loss.csv`: the training loss.
`training_config.json`: the `TrainConfig` and the network's constructor arguments.

| | |
|---|---|
| parameters | {r["parameters"]:,} |
| folder size | {r["folder_bytes"] / 1e6:.1f} MB |
| training | {r["training_seconds"] / 60:.1f} min ({r["training_steps"]:,} steps) with {r["threads"]} thread(s) on a {r["cores"]}-core CPU ({r["machine"]}), torch {r["torch"]} |

## How it was trained

With the project's CLI and the library's `{PRESETS[name]}` preset (`ddpm_lib/presets.py`: 28 px digits,
cosine schedule, v-prediction, AdamW with warm-up and cosine decay planned against the time budget,
bf16 autocast, EMA), on the 4,000 training digits of the embedded MNIST subset (`mnist-5k`), from the
repository root:

    {shlex.join(r["command"])}

(`pretrained/make_mnist_models.py train {name} MINUTES` runs this command, and `finish {name}` copies
`runs/{name}/pipeline` here and writes this page.) `benchmarks/quality.py` measures the same preset
against chapter 2's plain recipe at the same wall-clock budget.

## Are the samples digits?

{r["num_images"]} samples ({sampler}, seed 1234) classified by the shipped MNIST classifier
(`pretrained/mnist-classifier`, 98.6 % accurate on held-out digits). FD: Frechet distance between
the classifier's features of the samples and of the 1,000 held-out digits (lower is better).
Noisy samples: images whose share of isolated inked pixels exceeds that of every held-out digit
({r["noisy_threshold"]:.3f}).

| images | recognised (top p >= 0.9) | mean top probability | accuracy (label asked for) | class balance (1 = uniform) | FD | noisy samples | predicted class counts |
|---|---|---|---|---|---|---|---|
{table}

## Use it

```python
import torch, ddpm_lib as dl
pre = dl.load_pretrained("{name}")          # model, schedule, prediction, folder
x = dl.sample(pre.model, (16, *pre.image_shape), pre.schedule, prediction=pre.prediction,
              **pre.sampling{cond})         # the sampler the export recorded
dl.show_images(x)
```
{("" if not load else chr(10) + "or with diffusers alone:" + chr(10) + chr(10) + "```python" + chr(10) + load.rstrip() + chr(10) + "```" + chr(10))}"""


if __name__ == "__main__":
    usage = f"usage: {sys.argv[0]} train {{{'|'.join(PRESETS)}}} [MINUTES] | finish {{{'|'.join(PRESETS)}}}"
    if len(sys.argv) not in (3, 4) or sys.argv[1] not in ("train", "finish") or sys.argv[2] not in PRESETS:
        sys.exit(usage)
    if sys.argv[1] == "train":
        train(sys.argv[2], float(sys.argv[3]) if len(sys.argv) == 4 else DEFAULT_MINUTES)
    else:
        finish(sys.argv[2])
