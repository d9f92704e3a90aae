"""Chapter 2's benchmarks: the timing rule of benchmarks/train.py and the shipped results it and ema.py wrote."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def _load_train_script():
    spec = importlib.util.spec_from_file_location("bench_train", ROOT / "benchmarks" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_median_step_leaves_out_the_warmup_steps():
    median_step = _load_train_script()._median_step
    stamps = [0.0, 10.0, 11.0, 12.0, 13.5]  # the first step (ending at 0) and the second (10 s) are slow
    assert median_step(stamps, warmup=2) == pytest.approx(1.0)  # intervals 1.0, 1.0, 1.5
    assert median_step(stamps, warmup=1) == pytest.approx(1.25)  # intervals 10, 1, 1, 1.5


def test_shipped_train_results_are_like_for_like_and_consistent():
    run = json.loads((RESULTS / "train.json").read_text())
    assert not run["quick"], "the shipped train.json is a --quick run, not a measurement"
    assert set(run["images_per_sec"]) == {"plain", "trainer_fp32", "trainer"}
    assert run["precision"]["plain"] == ["no"] and run["precision"]["trainer_fp32"] == ["no"]
    assert run["machine"]["cpu"] and run["conditions"], "the JSON must name the machine and the conditions"
    for name, rate in run["images_per_sec"].items():
        assert rate == pytest.approx(1e3 * run["batch_size"] / run["ms_per_step"][name], rel=1e-3)
        if name != "plain":
            assert run["speedup_vs_plain"][name] == pytest.approx(rate / run["images_per_sec"]["plain"], abs=2e-3)


def test_shipped_ema_results():
    paths = sorted(RESULTS.glob("ema*.json"))
    runs = [json.loads(path.read_text()) for path in paths]
    seeds = [run["settings"]["seed"] for run in runs]
    assert len(set(seeds)) == len(runs) >= 3, f"expected three different seeds, got {seeds}"
    for path, run in zip(paths, runs):
        seed = run["settings"]["seed"]
        assert path.name == ("ema.json" if seed == 0 else f"ema_seed{seed}.json"), path.name
        assert not run["quick"], f"the shipped {path.name} is a --quick run, not a measurement"
        others = {k: v for k, v in run["settings"].items() if k != "seed"}
        assert others == {k: v for k, v in runs[0]["settings"].items() if k != "seed"}, (
            f"{path.name} was run with other settings than {paths[0].name}")
        steps = [p["step"] for p in run["points"]]
        assert steps == sorted(steps) and len(steps) >= 2
        for p in run["points"]:
            assert p["raw_minus_ema"] == pytest.approx(p["raw"] - p["ema"], abs=2e-5)
            assert p["standard_error"] > 0
