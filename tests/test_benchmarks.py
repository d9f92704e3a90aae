"""Every benchmark script still runs: ``python benchmarks/X.py --quick --out DIR`` writes its JSON.

The scripts are found by glob, so a new one is tested as soon as it exists. ``--out``
keeps the committed results in benchmarks/results/ untouched. Each quick run is a
smoke test of the script (well under a minute on two CPU cores), not a measurement.
"""

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


def _check_samplers_real_part(data: dict) -> None:
    """The real-model part: both shipped models, NFE counted per sample (Heun 2 per step but the last,
    guidance 2 per step), never above the budget, and dl.sample's default among the configurations."""
    real = data["real"]
    assert set(real["models"]) == {"ddpm-mnist", "ddpm-mnist-cond"}
    for name, res in real["models"].items():
        guided = res["guidance_scale"] not in (None, 1.0)
        assert real["default"] in res["ours"], f"{name}: dl.sample's default was not measured"
        for source in ("ours", "diffusers"):
            for key, rows in res[source].items():
                for budget, row in rows.items():
                    assert row["nfe"] <= int(budget), f"{name} {key}: {row['nfe']} NFE over the budget {budget}"
                    per_step = 2 if guided else 1
                    heun = key.lower().startswith("heun")
                    expected = per_step * (2 * row["steps"] - 1 if heun else row["steps"])
                    assert row["nfe"] == expected, f"{name} {key} at {budget}: {row['nfe']} NFE, expected {expected}"
                    assert row["seeds"] >= 2 and row["fd"] >= 0
        assert "5" in res["summary"] and "diffusers_best" in res["summary"]["5"]
