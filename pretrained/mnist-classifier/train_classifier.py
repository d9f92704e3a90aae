"""Train the MNIST classifier shipped in pretrained/mnist-classifier (chapter 9's domain features).

Run from the repository root:

    .venv/bin/python pretrained/mnist-classifier/train_classifier.py

It trains ``ddpm_lib.MNISTClassifier`` on the 4,000-digit train split of "mnist-5k"
(32 px, padded, values in [-1, 1]), measures the accuracy on the 1,000 held-out
digits, and writes model.safetensors, config.json and metrics.json next to this file.
Augmentation: random shifts of up to 2 px (the padding leaves room) and light
Gaussian noise, so that slightly noisy generated digits are still recognised.

Outlier exposure (Hendrycks et al. 2019, "Deep anomaly detection with outlier
exposure"): each step also shows a batch of non-digits (noise, smooth blobs, two
digits blended, digits cut into shuffled tiles) with a uniform target, so that the
classifier's top probability is low on images that are not digits. Without it a
plain CNN calls pure noise an "8" with probability 1, which would make
``confident_fraction`` useless for judging generated samples.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import ddpm_lib as dl

HERE = Path(__file__).resolve().parent


def shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` px (the new border is background, -1)."""
    B, _, H, W = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dx, dy = (torch.randint(0, 2 * max_shift + 1, (2, B), generator=generator)).tolist()
    return torch.stack([padded[i, :, dy[i]: dy[i] + H, dx[i]: dx[i] + W] for i in range(B)])


def outliers(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A batch of non-digits in [-1, 1], as many as ``x``, in four equal kinds."""
    B, C, H, W = x.shape
    kind = torch.arange(B) % 4
    noise = torch.randn(x.shape, generator=generator).clamp(-1, 1)
    blobs = F.interpolate(torch.randn(B, C, 4, 4, generator=generator), size=(H, W), mode="bilinear")
    blobs = torch.tanh(2 * blobs)
    perm = torch.randperm(B, generator=generator)
    blend = 0.5 * (x + x[perm])  # two digits of different classes on top of each other
    blend = torch.where((y == y[perm]).view(-1, 1, 1, 1), noise, blend)
    tiles = x.unfold(2, 8, 8).unfold(3, 8, 8).reshape(B, C, 16, 8, 8)  # (B, C, 16 tiles, 8, 8)
    tiles = tiles[:, :, torch.randperm(16, generator=generator)]
    tiles = tiles.reshape(B, C, 4, 4, 8, 8).permute(0, 1, 2, 4, 3, 5).reshape(B, C, H, W)
    out = torch.stack([noise, blobs, blend, tiles])[kind, torch.arange(B)]  # (B, C, H, W)
    return out


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    pred = torch.cat([model(x[i: i + 500]).argmax(-1) for i in range(0, len(x), 500)])
    return (pred == y).float().mean().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--oe-weight", type=float, default=0.5, help="weight of the outlier-exposure loss")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=HERE)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(args.seed)

    train = dl.load_images("mnist-5k", split="train")  # 4,000 digits, (1, 32, 32), padded
    test = dl.load_images("mnist-5k", split="test")  # 1,000 digits, 100 per class
    x, y = train.as_tensor(), train.labels
    x_test, y_test = test.as_tensor(), test.labels

    model = dl.MNISTClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * (len(x) // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        for i in range(len(x) // args.batch_size):
            idx = perm[i * args.batch_size: (i + 1) * args.batch_size]
            xb = shift(x[idx], 2, g)
            xb = xb + 0.1 * torch.rand(len(xb), 1, 1, 1, generator=g) * torch.randn(xb.shape, generator=g)
            xo = outliers(x[idx], y[idx], g)
            logits = model(torch.cat([xb, xo]))  # (2B, 10)
            loss_digits = F.cross_entropy(logits[: len(xb)], y[idx])
            loss_outliers = -logits[len(xb):].log_softmax(-1).mean()  # cross-entropy to the uniform target
            loss = loss_digits + args.oe_weight * loss_outliers
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch + 1:2d}  loss {loss.item():.3f}  test accuracy {accuracy(model, x_test, y_test):.4f}",
              flush=True)
    seconds = time.time() - start
    acc = accuracy(model, x_test, y_test)

    model.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(args.out / "model.safetensors"))
    config = {
        "architecture": "ddpm_lib.evaluate.MNISTClassifier",
        "init": model.config,
        "input": "(B, 1, 32, 32) in [-1, 1]: mnist-5k digits (28 px) padded to 32 px with -1",
        "classes": [str(c) for c in range(10)],
    }
    (args.out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name")), platform.processor())
    g_eval = torch.Generator().manual_seed(1234)
    noise = torch.randn(1000, 1, 32, 32, generator=g_eval).clamp(-1, 1)
    metrics = {
        "test_accuracy": round(acc, 4),
        "confident_fraction_test_digits": round(dl.confident_fraction(x_test, 0.9, model=model), 4),
        "confident_fraction_gaussian_noise": round(dl.confident_fraction(noise, 0.9, model=model), 4),
        "confident_fraction_outliers": round(dl.confident_fraction(outliers(x_test, y_test, g_eval), 0.9,
                                                                   model=model), 4),
        "test_split": "mnist-5k split='test': the last 100 digits of each class (1,000)",
        "train_split": "mnist-5k split='train': the first 400 digits of each class (4,000)",
        "parameters": sum(p.numel() for p in model.parameters()),
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "oe_weight": args.oe_weight, "seed": args.seed,
        "train_seconds": round(seconds, 1),
        "machine": f"{cpu}, {args.threads} threads, torch {torch.__version__}",
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
