"""tools/device_check.sh runs on GPU machines only now and then; its CPU smoke run keeps it from rotting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))


def test_device_check_runs_on_the_cpu_and_writes_its_measurements(tmp_path):
    """The whole script (shell and Python) at tiny sizes; benchmarks/train.py --quick is run by test_benchmarks."""
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(["bash", str(ROOT / "tools" / "device_check.sh"), "--device", "cpu", "--quick",
                          "--skip", "benchmark"], capture_output=True, text=True, timeout=900, env=env,
                         check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads((tmp_path / "device_check.json").read_text())
    checks = result["checks"]
    assert result["device"] == "cpu" and result["quick"] is True and result["budget_s"] > 300
    import device_check

    assert list(checks) == list(device_check.STAGES)  # every stage recorded, in order
    assert {n for n, c in checks.items() if c["ok"] is True} == {
        "env", "precision", "layout", "data", "resume", "samplers", "unit_tests", "notebooks", "chapter2_gpu"}
    assert all(c["seconds"] >= 0 for c in checks.values())
    assert "needs CUDA" in checks["no_sync"]["skipped"] and "needs CUDA" in checks["device_asserts"]["skipped"]
    assert {checks["precision"][m]["precision"] for m in ("bf16", "no")} == {"bf16", "no"}
    assert all(checks["precision"][m]["steps_per_sec"] > 0 for m in ("auto", "bf16", "no"))
    assert checks["layout"]["channels_last=True"]["channels_last"] is True
    assert checks["data"]["data_on_device=False"]["data_on_device"] is False
    assert checks["resume"]["bit_identical"] is True
    import ddpm_lib as dl

    assert set(checks["samplers"]) - {"ok", "seconds"} == set(dl.SAMPLERS)
    # the boxed stages: the quick unit-test stage runs one real test and reads pytest's junit report
    unit = checks["unit_tests"]
    assert (unit["tests"], unit["passed"], unit["timed_out"]) == (1, 1, False), unit
    assert list(unit["files"]) == ["tests/test_models.py"] and unit["tests_that_used_the_gpu"] == 0
    assert unit["env"]["DDPM_TEST_DEVICE"] == "cpu" and "DDPM_TEST_DEVICE=cpu" in (tmp_path / "stages.log").read_text()
    notebooks = len(list((ROOT / "notebooks").glob("[0-9]*.ipynb")))
    assert checks["notebooks"]["collected"] > 10 * notebooks  # every chapter's cells, collected, not run
    assert "book/benchmarks.ipynb" in checks["notebooks"]["command"]
    assert checks["chapter2_gpu"]["collected"] > 10 and "02_training" in checks["chapter2_gpu"]["command"]
    assert "device_check: " in (tmp_path / "device_check.log").read_text()


@pytest.mark.parametrize("how", ["raises", "returns ok False"])
def test_a_failing_check_is_recorded_and_the_others_still_run(tmp_path, monkeypatch, capsys, how):
    import device_check

    def broken(self):
        if how == "raises":
            raise RuntimeError("planted failure")
        return {"ok": False, "output_tail": ["planted failure"]}

    monkeypatch.setitem(device_check.CHECKS, "layout", broken)
    others = [n for n in device_check.CHECKS if n not in ("env", "layout", "data")]
    assert device_check.main(["--device", "cpu", "--quick", "--out", str(tmp_path), "--skip", *others]) == 1
    checks = json.loads((tmp_path / "device_check.json").read_text())["checks"]
    assert checks["env"]["ok"] is True and checks["layout"]["ok"] is False and checks["data"]["ok"] is True
    out = capsys.readouterr()
    assert "planted failure" in out.err + out.out
    if how == "raises":
        assert "planted failure" in checks["layout"]["error"]


def test_a_boxed_stage_is_stopped_at_its_time_limit(tmp_path):
    import device_check
    import torch

    checks = device_check.Checks(torch.device("cpu"), device_check.SIZES["quick"], tmp_path, quick=True)
    checks.timeout = 3
    began = time.perf_counter()
    code = "import time; print('started', flush=True); time.sleep(120)"
    result = checks.boxed("sleeper", [sys.executable, "-c", code], junit=False)
    assert time.perf_counter() - began < 60
    assert result["timed_out"] is True and result["ok"] is False and result["limit_s"] == 3
    assert "started" in result["output_tail"] and "TIMED OUT" in (tmp_path / "stages.log").read_text()


def test_junit_reports_are_summarised(tmp_path):
    import device_check

    report = tmp_path / "r.xml"
    report.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.test_models" name="test_a" time="1.5">'
        '<properties><property name="cuda_bytes" value="4096"/></properties></testcase>'
        '<testcase classname="tests.test_models" name="test_b" time="0.5">'
        '<failure message="#x1B[31mAssertionError#x1B[0m: boom">trace</failure></testcase>'
        '<testcase classname="notebooks/02_training.ipynb" name="Cell 3" time="9.0"><skipped/></testcase>'
        '<testcase time="0.000" />'  # what pytest writes for the test that SIGINT stopped
        "</testsuite></testsuites>")
    r = device_check.read_junit(report)
    assert (r["tests"], r["passed"], r["failed"], r["skipped"], r["interrupted"]) == (3, 1, 1, 1, 1)
    assert r["tests_that_used_the_gpu"] == 1
    assert r["failures"] == [{"test": "tests.test_models::test_b", "message": "AssertionError: boom"}]
    assert r["files"]["tests/test_models.py"] == {"tests": 2, "not_passed": 1, "seconds": 2.0}
    assert r["slowest"][0] == {"test": "notebooks/02_training.ipynb::Cell 3", "seconds": 9.0}
    assert device_check.read_junit(tmp_path / "none.xml") == {"junit": "no report written"}


def test_a_stage_without_time_left_is_skipped_and_says_so(tmp_path):
    import device_check

    others = [n for n in device_check.CHECKS if n != "unit_tests"]
    assert device_check.main(["--device", "cpu", "--quick", "--out", str(tmp_path), "--budget", "30",
                              "--skip", *others]) == 0
    checks = json.loads((tmp_path / "device_check.json").read_text())["checks"]
    assert checks["unit_tests"]["ok"] is None and "out of time" in checks["unit_tests"]["skipped"]


def test_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    import device_check
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit):
        device_check.main(["--device", "cuda", "--out", str(tmp_path)])
