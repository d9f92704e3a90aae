"""Train, check and document the two shipped MNIST diffusion models.

    .venv/bin/python pretrained/make_mnist_models.py train ddpm-mnist       # stage 1: the CLI command below
    .venv/bin/python pretrained/make_mnist_models.py finish ddpm-mnist      # copy, check, write README.md
    .venv/bin/python pretrained/make_mnist_models.py more ddpm-mnist        # stage 2: continue training
    .venv/bin/python pretrained/make_mnist_models.py finish ddpm-mnist      # copy, check, write README.md again
    (the same for ddpm-mnist-cond)

``train`` runs exactly the ``python -m ddpm_lib train`` command in ``COMMANDS``
(checkpoints go to ``runs/<name>``; run it again to resume after an interruption).
``more`` continues from the model in ``pretrained/<name>/`` (stage 1's EMA weights)
with ``MORE`` for another ``MORE["max_steps"]`` steps into ``runs/<name>-more``:
2,500 steps on two CPU cores left the samples of deterministic samplers poor.
``finish`` copies the exported pipeline (stage 2's when it exists) into ``pretrained/<name>/``, draws samples
with ``dl.load_pretrained`` + ``dl.sample``, checks them with the shipped MNIST
classifier (``pretrained/mnist-classifier``) and writes ``samples.png``,
``loss.png``, ``training_config.json``, ``check.json`` and ``README.md``.
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
COMMON = ["--data", "mnist-5k", "--image-size", "32", "--batch-size", "64", "--lr", "1e-3", "--warmup-steps", "200",
          "--schedule", "linear", "--prediction", "eps", "--ema-decay", "0.999", "--checkpoint-every", "250",
          "--sample-every", "500", "--log-every", "25", "--seed", "0"]
COMMANDS = {
    # an unconditional diffusers UNet2DModel, exported as a diffusers DDPMPipeline folder
    "ddpm-mnist": ["--model", "diffusers", "--channels", "32,64,64", "--layers-per-block", "1", "--attention", "1",
                   "--steps", "2500", *COMMON],
    # a class-conditional ddpm_lib UNet (labels 0-9, 10 = null class for guidance), a ddpm_lib folder
    "ddpm-mnist-cond": ["--model", "unet", "--channels", "32,64,128", "--layers-per-block", "1",
                        "--attention", "8", "--conditional", "--class-dropout", "0.1", "--steps", "2500", *COMMON],
}
DESCRIPTIONS = {
    "ddpm-mnist": "A small **unconditional** DDPM for 32 x 32 MNIST digits: a diffusers `UNet2DModel` in a "
                  "diffusers `DDPMPipeline` folder, so `diffusers.DDPMPipeline.from_pretrained` loads it as it is "
                  "(chapter 1 uses it offline).",
    "ddpm-mnist-cond": "A small **class-conditional** DDPM for 32 x 32 MNIST digits, for classifier-free guidance "
                       "(chapter 8): a ddpm_lib `UNet` with `num_classes=10` (labels 0-9; label 10 is the null class, "
                       "used for 10% of the training images), in a ddpm_lib folder (`model_config.json`, "
                       "`model.safetensors`, `schedule.json`).",
}
# stage 2: a fresh AdamW and cosine decay from a lower peak; the EMA starts at stage 1's EMA weights
MORE = dict(max_steps=3000, batch_size=64, lr=4e-4, warmup_steps=100, ema_decay=0.999, ema_warmup=False,
            checkpoint_every=250, sample_every=0, num_sample_images=0, log_every=25, seed=1, progress=False)
NUM_CHECK = 500  # generated digits checked with the classifier (per guidance scale for the conditional model)
SAMPLER, SAMPLE_STEPS = "dpmpp_2m", 25


def command(name: str) -> list[str]:
    return ["python", "-m", "ddpm_lib", "train", "--out", f"runs/{name}", *COMMANDS[name]]


def train(name: str) -> None:
    cmd = command(name)
    print("$", shlex.join(cmd), flush=True)
    began = time.time()
    subprocess.run([sys.executable, *cmd[1:]], cwd=ROOT, check=True)
    _add_time(ROOT / "runs" / name, began)


def _add_time(run: Path, began: float) -> None:
    """Add the seconds since ``began`` to ``run/timing.json`` (a resumed run adds up its parts)."""
    timing = run / "timing.json"
    spent = time.time() - began + (json.loads(timing.read_text())["seconds"] if timing.exists() else 0.0)
    timing.write_text(json.dumps({"seconds": spent, "threads": torch.get_num_threads()}) + "\n")


def more(name: str) -> None:
    import ddpm_lib as dl

    run, folder = ROOT / "runs" / f"{name}-more", ROOT / "pretrained" / name
    stage1 = run / "stage1"
    if not stage1.exists():  # keep stage 1's record before `finish` replaces the folder
        stage1.mkdir(parents=True)
        for f in ("loss.csv", "training_config.json", "check.json"):
            shutil.copy(folder / f, stage1 / f)
    pre = dl.load_pretrained(folder)
    data = dl.load_images("mnist-5k", split="train", image_size=32)
    cfg = dl.TrainConfig(**MORE, out_dir=str(run), prediction=pre.prediction)
    began = time.time()
    trainer = dl.Trainer(pre.model.train(), data, cfg, schedule=pre.schedule)
    trainer.fit()
    trainer.export(run / "pipeline")
    _add_time(run, began)


def _cpu() -> str:
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


@torch.no_grad()
def check(folder: Path, name: str) -> dict:
    """Sample digits and score them with the shipped MNIST classifier."""
    import ddpm_lib as dl

    pre = dl.load_pretrained(folder, device="cpu")
    g = torch.Generator().manual_seed(1234)
    shape = (NUM_CHECK, *pre.image_shape)
    result: dict = {"sampler": SAMPLER, "steps": SAMPLE_STEPS, "num_images": NUM_CHECK, "classifier": "mnist-classifier"}
    real = dl.load_images("mnist-5k", split="test").images
    result["real_test_digits"] = _scores(dl.classify(real))
    if pre.num_classes is None:
        x = dl.sample(pre.model, shape, pre.schedule, sampler=SAMPLER, steps=SAMPLE_STEPS,
                      prediction=pre.prediction, generator=g)
        result["unconditional"] = _scores(dl.classify(x))
        grid = x[:64]
        nrow = 8
    else:
        labels = torch.arange(NUM_CHECK) % pre.num_classes
        for w in (1.0, 3.0):
            x = dl.sample(pre.model, shape, pre.schedule, sampler=SAMPLER, steps=SAMPLE_STEPS,
                          prediction=pre.prediction, generator=g, class_labels=labels, guidance_scale=w,
                          null_class=pre.num_classes if w != 1.0 else None)
            p = dl.classify(x)
            result[f"guidance_{w:g}"] = {**_scores(p), "accuracy": (p.argmax(-1) == labels).float().mean().item()}
            if w == 3.0:
                order = torch.argsort(labels[:80], stable=True)  # 8 per class, one class per column
                grid = x[:80][order].reshape(10, 8, *x.shape[1:]).transpose(0, 1).reshape(80, *x.shape[1:])
        nrow = 10
    dl.make_grid_image(grid.clamp(-1, 1), nrow=nrow, value_range=(-1, 1)).resize(
        (nrow * 34 * 2, -(-len(grid) // nrow) * 34 * 2), resample=0).save(folder / "samples.png")
    return result


def _scores(p: torch.Tensor) -> dict:
    import ddpm_lib as dl

    b = dl.class_balance(p)
    return {"recognised_p_ge_0.9": round(b.confident_fraction, 4), "mean_top_probability": round(b.mean_max_prob, 4),
            "class_counts": list(b.counts), "class_balance": round(b.balance, 4)}


def finish(name: str) -> None:
    import ddpm_lib as dl

    run, folder = ROOT / "runs" / name, ROOT / "pretrained" / name
    more_run = ROOT / "runs" / f"{name}-more"
    two_stages = (more_run / "pipeline").exists()
    stage1 = more_run / "stage1" if two_stages else run
    stage1_seconds = (json.loads((stage1 / "check.json").read_text())["training_seconds"] if two_stages
                      else json.loads((run / "timing.json").read_text())["seconds"] if (run / "timing.json").exists()
                      else float("nan"))
    stage1_config = json.loads((stage1 / ("training_config.json" if two_stages else "config.json")).read_text())
    last = more_run if two_stages else run
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(last / "pipeline", folder)
    config, seconds = stage1_config, stage1_seconds
    loss = (stage1 / "loss.csv").read_text()
    if two_stages:
        config = {"stage1": stage1_config, "stage2": json.loads((more_run / "config.json").read_text())}
        seconds += json.loads((more_run / "timing.json").read_text())["seconds"]
        offset = stage1_config["train_config"]["max_steps"]
        head, *rows = (more_run / "loss.csv").read_text().strip().splitlines()
        loss = loss.rstrip("\n") + "\n" + "".join(
            f"{int(r.split(',', 1)[0]) + offset},{r.split(',', 1)[1]}\n" for r in rows)
    (folder / "loss.csv").write_text(loss)
    (folder / "training_config.json").write_text(json.dumps(config, indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    fig = dl.plot_loss(folder / "loss.csv", title=f"Training loss ({name}{', two stages' if two_stages else ''})")
    if two_stages:
        fig.axes[0].axvline(stage1_config["train_config"]["max_steps"], color="gray", ls="--", lw=1)
    fig.savefig(folder / "loss.png", dpi=120)
    began = time.time()
    result = check(folder, name)
    result["check_seconds"] = round(time.time() - began, 1)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    pre = dl.load_pretrained(folder)
    result.update({"parameters": dl.count_parameters(pre.model), "folder_bytes": size,
                   "training_seconds": round(seconds, 1), "stage2": MORE if two_stages else None,
                   "machine": _cpu(), "cores": os.cpu_count(), "torch": torch.__version__})
    (folder / "check.json").write_text(json.dumps(result, indent=2) + "\n")
    (folder / "README.md").write_text(readme(name, result))
    print(json.dumps(result, indent=2))


def stage2_text(name: str, r: dict) -> str:
    if not r.get("stage2"):
        return ""
    m = r["stage2"]
    return f"""
Stage 2 (`make_mnist_models.py more {name}`): those 2,500 steps left the samples of the
deterministic samplers poor (too many 1s), so training continued from the stage-1 EMA weights
with a fresh AdamW for {m['max_steps']:,} more steps: peak learning rate {m['lr']:g} after
{m['warmup_steps']} warm-up steps, cosine decay, EMA {m['ema_decay']} starting at the stage-1 EMA
weights, seed {m['seed']}. `loss.csv` holds both stages (the dashed line in `loss.png` marks the
change); the training time above is both together.
"""


def readme(name: str, r: dict) -> str:
    rows = []
    if "unconditional" in r:
        rows.append(("generated digits", r["unconditional"], None))
    else:
        rows += [(f"generated, guidance w = {w}", r[f"guidance_{w}"], r[f"guidance_{w}"]["accuracy"]) for w in ("1", "3")]
    rows.append(("real held-out digits (reference)", r["real_test_digits"], None))
    table = "\n".join(
        f"| {label} | {100 * s['recognised_p_ge_0.9']:.1f} % | {s['mean_top_probability']:.3f} | "
        f"{'' if acc is None else f'{100 * acc:.1f} %'} | {s['class_balance']:.3f} | {s['class_counts']} |"
        for label, s, acc in rows
    )
    load = ("from diffusers import DDPMPipeline\npipe = DDPMPipeline.from_pretrained(\"pretrained/ddpm-mnist\")\n"
            "images = pipe(batch_size=16, num_inference_steps=1000).images\n\n"
            if name == "ddpm-mnist" else "")
    cond = (", class_labels=torch.arange(16) % 10,\n                 guidance_scale=3.0, null_class=pre.num_classes"
            if name == "ddpm-mnist-cond" else "")
    minutes = r["training_seconds"] / 60
    return f"""# {name}

{DESCRIPTIONS[name]}

![samples](samples.png)

`samples.png`: {"64 samples" if "unconditional" in r else "8 samples per class (columns 0-9), guidance w = 3"},
{SAMPLER} with {SAMPLE_STEPS} steps. `loss.png` / `loss.csv`: the training loss.
`training_config.json`: the `TrainConfig` and the network's constructor arguments.

| | |
|---|---|
| parameters | {r['parameters']:,} |
| folder size | {r['folder_bytes'] / 1e6:.1f} MB |
| training | {minutes:.0f} min on {r['cores']} shared CPU cores ({r['machine']}), torch {r['torch']} |

## How it was trained

With the project's CLI, on the embedded MNIST subset (`mnist-5k`, 5,000 digits, 28 px padded to 32 px),
from the repository root:

    {shlex.join(command(name))}

(`pretrained/make_mnist_models.py train {name}` runs this command, and `finish {name}` copies
`runs/{name}/pipeline` here and writes this page.) Everything not on the command line is a
`TrainConfig` default: AdamW with warm-up then cosine decay, gradient clipping at 1, EMA with warm-up
(the exported weights are the EMA weights), fp32 on the CPU, the data kept as one tensor.
{stage2_text(name, r)}
## Are the samples digits?

{r['num_images']} samples ({SAMPLER}, {SAMPLE_STEPS} steps, seed 1234) classified by the shipped MNIST
classifier (`pretrained/mnist-classifier`, 98.6 % accurate on held-out digits):

| images | recognised (top p >= 0.9) | mean top probability | accuracy (label asked for) | class balance (1 = uniform) | predicted class counts |
|---|---|---|---|---|---|
{table}

## Use it

```python
import torch, ddpm_lib as dl
pre = dl.load_pretrained("{name}")          # model, schedule, prediction, folder
x = dl.sample(pre.model, (16, *pre.image_shape), pre.schedule, sampler="dpmpp_2m", steps=25,
              prediction=pre.prediction{cond})
dl.show_images(x)
```
{("" if not load else chr(10) + "or with diffusers alone:" + chr(10) + chr(10) + "```python" + chr(10) + load.rstrip() + chr(10) + "```" + chr(10))}"""


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("train", "more", "finish") or sys.argv[2] not in COMMANDS:
        sys.exit(f"usage: {sys.argv[0]} train|more|finish {'|'.join(COMMANDS)}")
    {"train": train, "more": more, "finish": finish}[sys.argv[1]](sys.argv[2])
