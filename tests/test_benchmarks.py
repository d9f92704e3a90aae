"""Every benchmark script still runs: ``python benchmarks/X.py --quick --out DIR`` writes its JSON.

The scripts are found by glob, so a new one is tested as soon as it exists. ``--out``
keeps the committed results in benchmarks/results/ untouched. Each quick run is a
smoke test of the script (well under a minute on two CPU cores), not a measurement.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py"))
QUICK_TIMEOUT_S = 600  # generous for a loaded machine; alone, a quick run takes well under a minute


def test_there_are_benchmarks():
    assert {"train.py", "samplers.py"} <= {p.name for p in SCRIPTS}


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_quick_run_writes_json(script, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in (ROOT / "benchmarks" / "results").glob("*")}
    env = {**os.environ, "MPLBACKEND": "Agg", "DDPM_BOOK_PROFILE": "smoke"}
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=QUICK_TIMEOUT_S,
    )
    assert proc.returncode == 0, f"{script.name} --quick failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    written = sorted(tmp_path.glob("*.json"))
    assert written, f"{script.name} --quick --out {tmp_path} wrote no JSON; it wrote {sorted(tmp_path.iterdir())}"
    for path in written:
        data = json.loads(path.read_text())
        assert isinstance(data, dict) and data, f"{path.name} is empty"
        if "quick" in data:
            assert data["quick"] is True, f"{path.name} does not say it is a quick run"
    after = {p: p.stat().st_mtime_ns for p in (ROOT / "benchmarks" / "results").glob("*")}
    assert after == before, f"{script.name} --quick --out DIR changed benchmarks/results/"
    if script.name == "samplers.py":
        _check_samplers_real_part(json.loads((tmp_path / "samplers.json").read_text()))
    if script.name == "train.py":
        _check_train_quick(json.loads((tmp_path / "train.json").read_text()))


def _load_train_script():
    spec = importlib.util.spec_from_file_location("benchmarks_train", ROOT / "benchmarks" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_train_quick(data: dict) -> None:
    """Every default variant of the device measured, none failed, speed-ups and targets for each."""
    defaults = _load_train_script().DEFAULT_VARIANTS["cuda" if data["device"] == "cuda" else "other"]
    assert data["variants"] == list(defaults) and data["failed"] == {} and data["complete"] is True, data
    assert set(data["ms_per_step"]) == set(defaults) and all(v > 0 for v in data["ms_per_step"].values())
    assert set(data["speedup_vs_plain"]) == set(defaults) - {"plain"}
    assert isinstance(data["target_met"], bool)
    assert data["ran_on"] == {name: [data["device"]] for name in defaults}
    if "trainer_fast" in defaults:
        assert data["compiled"]["trainer_fast"] == ["True"] and data["channels_last"]["trainer_fast"] == ["True"]
        assert len(data["compile_s"]) == data["turns"] and isinstance(data["trainer_fast_target_met"], bool)
    else:
        assert data["compile_s"] is None and data["trainer_fast_target_met"] is None


def test_train_variants_must_be_known(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train.py"), "--quick", "--variants",
                           "plain,fastest", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=QUICK_TIMEOUT_S)
    assert proc.returncode == 2 and "unknown: fastest" in proc.stderr and "trainer_fast" in proc.stderr, proc.stderr
    assert not list(tmp_path.iterdir())


def test_train_records_a_failing_variant_and_measures_the_others(tmp_path, monkeypatch):
    """A variant that raises (say, torch.compile without a C++ compiler) is recorded with the first line
    of its error and not run again; the others are measured, the JSON written, the exit status 1.
    The training runs are stand-ins here (the real ones: test_quick_run_writes_json)."""
    train = _load_train_script()
    calls = []

    def fake_run(model, *args, mixed_precision="no", channels_last="auto", compile=False):
        calls.append(compile)
        if compile:
            raise RuntimeError("the C++ compiler failed\n(pages of compiler output)")
        return {"step_s": 0.01, "first_step_s": 0.5, "ran_on": "cpu", "precision": mixed_precision,
                "requested_precision": mixed_precision, "channels_last": channels_last is True,
                "compiled": False, "recompiled_in_timed_steps": 0}

    plain = {"step_s": 0.02, "first_step_s": 0.5, "ran_on": "cpu", "precision": "no", "requested_precision": "no",
             "channels_last": False, "compiled": False}
    monkeypatch.setattr(train, "plain_loop", lambda model, *args: plain)
    monkeypatch.setattr(train, "trainer_run", fake_run)
    monkeypatch.setattr(sys, "argv", ["train.py", "--device", "cpu", "--steps", "6", "--warmup", "2", "--rounds",
                                      "3", "--variants", "trainer_fast,trainer,plain", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as stop:
        train.main()
    assert stop.value.code == 1
    assert calls.count(True) == 1 and calls.count(False) == 3  # not run again after failing
    data = json.loads((tmp_path / "train.json").read_text())
    assert data["variants"] == ["plain", "trainer", "trainer_fast"]  # in the order of VARIANTS
    assert data["failed"] == {"trainer_fast": "RuntimeError: the C++ compiler failed"}
    assert data["speedup_vs_plain"] == {"trainer": 2.0} and data["target_met"] is True
    assert data["trainer_fast_target_met"] is None and data["compile_s"] is None and data["complete"] is True


def _check_samplers_real_part(data: dict) -> None:
    """The real-model part: both shipped models, NFE counted per sample (Heun 2 per step but the last,
    guidance 2 per step, or with a guidance interval 2 inside it and 1 outside), never above the budget,
    and dl.sample's default among the configurations."""
    real = data["real"]
    assert set(real["models"]) == {"ddpm-mnist", "ddpm-mnist-cond"}
    for name, res in real["models"].items():
        guided = res["guidance_scale"] not in (None, 1.0)
        assert real["default"] in res["ours"], f"{name}: dl.sample's default was not measured"
        for source in ("ours", "diffusers"):
            for key, rows in res[source].items():
                for budget, row in rows.items():
                    assert row["nfe"] <= int(budget), f"{name} {key}: {row['nfe']} NFE over the budget {budget}"
                    if guided and "interval=" in key:  # 2 per step inside the guidance interval, 1 outside
                        assert row["steps"] < row["nfe"] < 2 * row["steps"], (
                            f"{name} {key} at {budget}: {row['nfe']} NFE in {row['steps']} steps")
                        continue
                    per_step = 2 if guided else 1
                    heun = key.lower().startswith("heun")
                    expected = per_step * (2 * row["steps"] - 1 if heun else row["steps"])
                    assert row["nfe"] == expected, f"{name} {key} at {budget}: {row['nfe']} NFE, expected {expected}"
                    assert row["seeds"] >= 2 and row["fd"] >= 0
        assert "5" in res["summary"] and "diffusers_best" in res["summary"]["5"]
