"""``python -m ddpm_lib train | sample | export`` on tiny sizes, and its errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from ddpm_lib.__main__ import COMMANDS, main
from ddpm_lib.train import find_checkpoints

TINY = ["--max-images", "64", "--channels", "8,16", "--layers-per-block", "1", "--batch-size", "16",
        "--checkpoint-every", "2", "--num-sample-images", "2", "--sample-steps", "2", "--no-progress",
        "--schedule", "linear", "--num-timesteps", "100", "--warmup-steps", "1", "--log-every", "1"]


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "ddpm_lib", *map(str, args)], capture_output=True, text=True,
                          timeout=120, check=False, **kw)


def test_help_of_every_command(capsys):
    for command in COMMANDS:
        with pytest.raises(SystemExit) as e:
            main([command, "--help"])
        assert e.value.code == 0
        assert "--out" in capsys.readouterr().out
    run = cli("--help")
    assert run.returncode == 0 and all(c in run.stdout for c in ("train", "sample", "export"))


def test_train_export_sample_a_diffusers_model(tmp_path):
    out = tmp_path / "run"
    run = cli("train", "--data", "mnist-5k", "--out", out, "--model", "diffusers", "--attention", "0",
              "--steps", "3", *TINY)
    assert run.returncode == 0, run.stderr[-2000:]
    assert [p.name for p in find_checkpoints(out)] == ["step_000002.pt", "step_000003.pt"]
    for name in ("loss.csv", "loss.png", "config.json", "samples/step_000003.png", "pipeline/model_index.json",
                 "pipeline/unet/diffusion_pytorch_model.safetensors"):
        assert (out / name).is_file(), name
    assert json.loads((out / "config.json").read_text())["train_config"]["max_steps"] == 3

    # export a checkpoint folder again, then sample the exported pipeline
    assert main(["export", str(out), "--out", str(tmp_path / "pipe")]) == 0
    assert (tmp_path / "pipe" / "model_index.json").is_file()
    grid = tmp_path / "grid.png"
    assert main(["sample", str(tmp_path / "pipe"), "--out", str(grid), "--num-images", "3", "--nrow", "3",
                 "--steps", "2", "--sampler", "ddim"]) == 0
    assert Image.open(grid).size == (3 * 32 + 4 * 2, 32 + 2 * 2)  # 3 images of 32 px with 2 px padding


def test_conditional_unet_trains_resumes_and_samples_with_guidance(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", "mnist-5k", "--out", str(out), "--model", "unet", "--attention", "16",
            "--conditional", "--steps", "2", *TINY]
    assert main(args) == 0
    assert main([a if a != "2" else "4" for a in args]) == 0  # --steps 4: continues from step 2
    rows = (out / "loss.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["1", "2", "3", "4"]
    cfg = json.loads((out / "pipeline" / "model_config.json").read_text())
    assert cfg["config"]["num_classes"] == 10
    grid = tmp_path / "grid.png"
    assert main(["sample", str(out / "pipeline"), "--out", str(grid), "--num-images", "4", "--steps", "2",
                 "--labels", "3,7", "--guidance-scale", "2"]) == 0
    assert grid.is_file()


def test_clear_errors_without_traceback(tmp_path, capsys):
    run = cli("train", "--data", tmp_path / "no_such_folder", "--out", tmp_path / "run", "--steps", "2")
    assert run.returncode == 2
    assert "error:" in run.stderr and "no_such_folder" in run.stderr and "Traceback" not in run.stderr

    blocker = tmp_path / "file"
    blocker.write_text("x")
    cases = [
        (["train", "--data", "mnist-5k", "--out", str(blocker / "run")], "cannot write"),
        (["train", "--data", "mnist-5k", "--out", str(tmp_path / "r"), "--steps", "0"], "max_steps"),
        (["train", "--data", "mnist-5k", "--out", str(tmp_path / "r"), "--image-size", "30",
          "--channels", "8,16,32"], "multiple"),
        (["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "p")], "does not exist"),
        (["sample", str(tmp_path / "nothing"), "--out", str(tmp_path / "g.png")], "nothing"),
        (["sample", "x", "--out", str(blocker / "g.png")], "cannot write"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error:") and needle in err, (argv, err)
