"""tools/device_check.sh runs on GPU machines only now and then; its CPU smoke run keeps it from rotting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))


def test_device_check_runs_on_the_cpu_and_writes_its_measurements(tmp_path):
    """The whole script (shell and Python) at tiny sizes; benchmarks/train.py --quick is run by test_benchmarks."""
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(["bash", str(ROOT / "tools" / "device_check.sh"), "--device", "cpu", "--quick",
                          "--skip", "benchmark"], capture_output=True, text=True, timeout=300, env=env,
                         check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads((tmp_path / "device_check.json").read_text())
    checks = result["checks"]
    assert result["device"] == "cpu" and result["quick"] is True
    assert {n for n, c in checks.items() if c["ok"] is True} == {"env", "precision", "layout", "data", "resume",
                                                                   "samplers"}
    assert "needs CUDA" in checks["no_sync"]["skipped"] and "needs CUDA" in checks["bad_timestep"]["skipped"]
    assert {checks["precision"][m]["precision"] for m in ("bf16", "no")} == {"bf16", "no"}
    assert all(checks["precision"][m]["steps_per_sec"] > 0 for m in ("auto", "bf16", "no"))
    assert checks["layout"]["channels_last=True"]["channels_last"] is True
    assert checks["data"]["data_on_device=False"]["data_on_device"] is False
    assert checks["resume"]["bit_identical"] is True
    import ddpm_lib as dl

    assert set(checks["samplers"]) - {"ok", "seconds"} == set(dl.SAMPLERS)
    assert "device_check: " in (tmp_path / "device_check.log").read_text()


def test_a_failing_check_is_recorded_and_fails_the_run(tmp_path, monkeypatch, capsys):
    import device_check

    def broken(self):
        raise RuntimeError("planted failure")

    monkeypatch.setitem(device_check.CHECKS, "layout", broken)
    others = [n for n in device_check.CHECKS if n not in ("env", "layout")]
    assert device_check.main(["--device", "cpu", "--quick", "--out", str(tmp_path), "--skip", *others]) == 1
    checks = json.loads((tmp_path / "device_check.json").read_text())["checks"]
    assert checks["env"]["ok"] is True and checks["layout"]["ok"] is False
    assert "planted failure" in checks["layout"]["error"] and "planted failure" in capsys.readouterr().err


def test_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    import device_check
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit):
        device_check.main(["--device", "cuda", "--out", str(tmp_path)])
