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
