"""A wall-clock budget for training (``TrainConfig.max_minutes``) and the named recipes (``--preset``)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import ddpm_lib as dl
from ddpm_lib.train import TrainConfig, Trainer, find_checkpoints, load_checkpoint

from test_train import tiny_config, tiny_data, tiny_unet


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf"), "15"])
def test_bad_budget_is_a_clear_error(tmp_path, value):
    with pytest.raises(ValueError, match="max_minutes must be a positive number"):
        tiny_config(tmp_path, max_minutes=value)


def test_training_stops_at_the_budget_with_the_lr_planned_against_it(tmp_path):
    budget = 0.05  # 3 seconds
    cfg = tiny_config(tmp_path, max_steps=10**6, max_minutes=budget, warmup_steps=1, checkpoint_every=10**6)
    trainer = Trainer(tiny_unet(), tiny_data(), cfg)
    history = trainer.fit()
    assert 10 < trainer.step < 10**6, f"the budget should end the run after some steps, got {trainer.step}"
    assert 60 * budget <= trainer.elapsed_seconds < 60 * budget + 2.0
    # the cosine decay was planned against the budget: the last learning rate is near 0, not the peak
    assert history.rows[-1]["lr"] < 0.2 * cfg.lr, history.rows[-1]
    assert trainer.planned_steps <= 1.5 * trainer.step
    (last,) = find_checkpoints(tmp_path)[-1:]
    state = load_checkpoint(last)
    assert state["step"] == trainer.step and state["budget"]["elapsed_seconds"] >= 60 * budget


def test_a_spent_budget_resumes_to_nothing_and_a_longer_one_continues(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=10**6, max_minutes=0.02, checkpoint_every=10**6)
    first = Trainer(tiny_unet(), tiny_data(), cfg)
    first.fit()
    again = Trainer(tiny_unet(), tiny_data(), cfg)
    again.fit()
    assert again.step == first.step, "a run whose budget is spent should not train further when resumed"
    longer = Trainer(
        tiny_unet(),
        tiny_data(),
        tiny_config(tmp_path, max_steps=10**6, max_minutes=0.04, checkpoint_every=10**6),
    )
    longer.fit()
    assert longer.step > first.step and longer.elapsed_seconds >= 0.04 * 60


def test_a_budget_too_short_for_the_warmup_shortens_it(tmp_path):
    cfg = tiny_config(
        tmp_path, max_steps=10**6, max_minutes=0.05, warmup_steps=100_000, checkpoint_every=10**6
    )
    trainer = Trainer(tiny_unet(), tiny_data(), cfg)
    with pytest.warns(UserWarning, match="warm-up is shortened"):
        history = trainer.fit()
    assert trainer.warmup_steps < 100_000  # shortened (to a tenth of the steps first planned)
    # with the planned warm-up, the lr would have stayed below step / 100000 of its peak
    assert max(r["lr"] for r in history.rows) > 0.1 * cfg.lr, "the shortened warm-up should reach the peak lr"


def test_on_step_sees_every_step(tmp_path):
    seen = []
    Trainer(tiny_unet(), tiny_data(), tiny_config(tmp_path)).fit(on_step=lambda tr: seen.append(tr.step))
    assert seen == [1, 2, 3, 4, 5, 6]


def test_presets():
    cfg = TrainConfig.preset("mnist", out_dir="runs/x")
    assert cfg.image_size == dl.PRESETS["mnist"].data["image_size"] == 28
    assert cfg.out_dir == "runs/x" and cfg.prediction == dl.PRESETS["mnist"].train["prediction"]
    model = dl.preset_model("mnist-cond")
    assert model.config.num_class_embeds == 11  # 10 digits and the null class
    with pytest.raises(
        ValueError, match=r"unknown preset 'mnist32'; choose one of \['mnist', 'mnist-cond'\]"
    ):
        TrainConfig.preset("mnist32")


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "ddpm_lib", "train", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--preset", "mnist", "--max-minutes", "0"], "positive number of minutes"),
        (["--preset", "mnist", "--max-minutes", "-3"], "positive number of minutes"),
        (["--preset", "mnist", "--max-minutes", "soon"], "expected a number of minutes"),
        (
            ["--preset", "cifar", "--max-minutes", "1"],
            "invalid choice: 'cifar' (choose from 'mnist', 'mnist-cond')",
        ),
    ],
)
def test_cli_rejects_bad_budgets_and_presets(tmp_path, args, needle):
    run = cli(*args, "--out", tmp_path / "run")
    assert run.returncode == 2 and needle in run.stderr, run.stderr[-1500:]
    assert not (tmp_path / "run").exists(), "nothing should be written before the input is checked"


def test_cli_preset_trains_for_its_budget_and_exports_its_sampler(tmp_path):
    out = tmp_path / "run"
    run = cli(
        "--preset",
        "mnist",
        "--max-minutes",
        "0.1",
        "--out",
        out,
        "--max-images",
        "256",
        "--channels",
        "8,16,16",
        "--no-progress",
    )  # a smaller network than the preset's: options win
    assert run.returncode == 0, run.stderr[-3000:]
    assert "0.1 minutes" in run.stderr
    pre = dl.load_pretrained(out / "pipeline")
    assert pre.image_shape == (1, 28, 28)
    assert list(pre.model.config.block_out_channels) == [8, 16, 16]
    sampling = dl.PRESETS["mnist"].sampling
    assert pre.sampling == {**pre.sampling, **sampling}, pre.sampling
    x = dl.sample(
        pre.model,
        (2, *pre.image_shape),
        pre.schedule,
        prediction=pre.prediction,
        generator=torch.Generator().manual_seed(0),
        **pre.sampling,
    )
    assert x.shape == (2, 1, 28, 28) and torch.isfinite(x).all()
