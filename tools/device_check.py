"""What only an accelerator can show about ddpm_lib, checked and measured in one short run (issue 19, item 15).

    tools/device_check.sh                                   # on a GPU machine: every stage, at most 8 minutes
    python tools/device_check.py --device cpu --quick --out DIR   # the smoke test (tests/test_device_check.py)

Stages, in order, the most informative first (each one's result and seconds go to OUT/device_check.json,
written after every stage):

=============  ===========================================================================
env            device name, compute capability, torch / CUDA versions, native bf16, and
               the precision that mixed_precision="auto" picks
no_sync        CUDA: steps between two log steps run under torch.cuda.set_sync_debug_mode
               ("warn"); unconditional and class-conditional networks in bf16 and fp32 must
               cause no host sync at all (fp16 loss scaling syncs by design: counted only)
device_asserts CUDA: an out-of-range timestep and an out-of-range class label on the GPU
               still stop the program (asynchronous checks, no host sync)
resume         a run with random flips, interrupted and resumed, against one that never was:
               bit for bit with deterministic algorithms (CUBLAS_WORKSPACE_CONFIG is set)
precision      Trainer steps with mixed_precision auto / bf16 / fp16 (CUDA) / no: finite
               losses, the precision used, steps per second
samplers       dl.sample on the device with every sampler: finite, on the device, seconds
benchmark      benchmarks/train.py --device DEVICE: plain loop vs Trainer fp32 vs Trainer
               defaults vs Trainer with bf16 + channels_last + torch.compile (its compile
               seconds apart; its JSON lands in OUT/benchmark/train.json, rewritten after
               every run, so a run stopped at the limit leaves what it measured). Before the
               unit tests: it gives the GPU speed-up that issue 19 sets a target for
unit_tests     the unit tests (tests/) with DDPM_TEST_DEVICE=cuda (tests/conftest.py): the
               Trainer, the CLI, dl.book and the tests that take the ``device`` fixture run
               on the GPU; counts, failures, and how many tests allocated GPU memory
notebooks      every chapter and the benchmarks page in the smoke profile (what make test
               runs), on the GPU (dl.book.setup picks CUDA when there is one)
layout         channels_last on and off: steps per second
data           data_on_device on and off (a DataLoader): steps per second
chapter2_gpu   notebooks/02_training.ipynb in the gpu profile (the sizes a reader with a GPU
               gets), given the time that is left: per-cell pass/fail and seconds
=============  ===========================================================================

Time: ``--budget`` seconds in all (the shell script passes what is left of its 8 minutes). The
stages that run another program (unit_tests, notebooks, benchmark, chapter2_gpu) are each boxed:
at most their own limit and never so long that the later stages lose their minimum; a boxed run
that runs out of time is interrupted (SIGINT, so pytest still writes what it finished) and
recorded with ``"timed_out": true``. A stage that cannot run here (no CUDA, a package missing,
no time left) is "skipped" with the reason. A stage that fails is recorded with ``"ok": false``
(its output's tail in the JSON, the whole output in OUT/stages.log) and the others still run;
the script then exits with status 1. Steps per second are measured after warm-up steps, with
``torch.cuda.synchronize()`` before each clock reading that ends a measurement; they are numbers
of this device only (say which when you quote them). ``--quick`` shrinks everything: the unit
tests to one of them, the notebooks to collecting their cells without running them.
Files written under OUT: device_check.json, stages.log, benchmark/train.json (and, from the shell
script, device_check.log): within the device tool's 8 files that come back.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, before CUDA starts

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import ddpm_lib as dl
from ddpm_lib.data import DataReport, ImageDataset

SIZES = {  # full: a GPU-sized step; quick: a smoke test of the script
    "full": {"image_size": 32, "channels": (64, 128, 256), "layers": 2, "attention": (8,), "batch": 128,
             "images": 4096, "steps": 40, "warmup": 10, "sample_steps": 10, "sample_n": 64},
    "quick": {"image_size": 16, "channels": (8, 16), "layers": 1, "attention": (), "batch": 8,
              "images": 64, "steps": 5, "warmup": 1, "sample_steps": 3, "sample_n": 2},
}


GRACE_S = 25  # seconds from SIGINT to SIGKILL for a boxed stage out of time (device_check.sh allows for it)


class Skip(Exception):
    """A check that cannot run on this machine (the reason is recorded)."""


class Checks:
    def __init__(self, device: torch.device, size: dict, out: Path, quick: bool = False):
        self.device, self.size, self.out, self.quick = device, size, out, quick
        self.work = Path(tempfile.mkdtemp(prefix="device-check-"))
        self.results: dict = {"device": str(device), "sizes": size, "checks": {}}
        self.timeout = 60.0  # seconds the running boxed stage may take (main() sets it per stage)

    # ------------------------------------------------------------------ helpers

    def model(self, num_classes=None, seed=0):
        s = self.size
        torch.manual_seed(seed)
        return dl.UNet(image_size=s["image_size"], channels=s["channels"], layers_per_level=s["layers"],
                       attention_resolutions=s["attention"], num_classes=num_classes)

    def data(self, labels=False):
        """Random uint8 images as a dl.load_images dataset with random flips."""
        s = self.size
        g = torch.Generator().manual_seed(1)
        pixels = torch.randint(0, 256, (s["images"], 1, s["image_size"], s["image_size"]), generator=g,
                               dtype=torch.uint8)
        y = torch.arange(s["images"]) % 10 if labels else torch.full((s["images"],), -1)
        report = DataReport(source="random", kind="saved", image_size=s["image_size"], channels=1, resize="crop",
                            found=s["images"], used=s["images"], num_classes=10 if labels else 0)
        return ImageDataset(pixels, y, report, flip=True, seed=0)

    def config(self, name: str, **kw) -> dl.TrainConfig:
        s = self.size
        base = {"image_size": s["image_size"], "batch_size": s["batch"], "max_steps": s["steps"], "lr": 1e-4,
                "warmup_steps": 2, "log_every": 10**6, "checkpoint_every": 10**6, "num_sample_images": 0,
                "progress": False, "out_dir": str(self.work / name), "resume": False, "num_timesteps": 1000,
                "cpu": self.device.type == "cpu"}
        return dl.TrainConfig(**{**base, **kw})

    def sync(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def timed_fit(self, trainer, on_step=None) -> dict:
        """Train; steps per second between the end of the warm-up and the end of the next-to-last step."""
        w, n = self.size["warmup"], trainer.cfg.max_steps
        marks = {}

        def step(tr):
            if tr.step in (w, n - 1):
                if self.device.type == "cuda":
                    torch.cuda.set_sync_debug_mode("default")  # this sync is the clock's, not the loop's
                marks[tr.step] = self.sync()
            if on_step is not None:
                on_step(tr)  # may set the sync debug mode for the next step

        history = trainer.fit(step)
        losses = history.losses
        if not losses or not all(math.isfinite(v) for v in losses):
            raise AssertionError(f"non-finite or no losses: {losses}")
        timed = n - 1 - w
        return {"steps_per_sec": timed / (marks[n - 1] - marks[w]) if timed > 0 else None,
                "images_per_sec": timed * trainer.cfg.batch_size / (marks[n - 1] - marks[w]) if timed > 0 else None,
                "final_loss": losses[-1], "precision": str(trainer.accelerator.mixed_precision),
                "channels_last": trainer.channels_last, "data_on_device": trainer.data_on_device,
                "trained_on": str(trainer.device)}

    def train(self, name: str, model=None, on_step=None, labels=False, **kw) -> dict:
        trainer = dl.Trainer(model or self.model(), self.data(labels), self.config(name, **kw))
        if trainer.device.type != self.device.type:
            raise AssertionError(f"the Trainer chose {trainer.device}, this check runs on {self.device}")
        return self.timed_fit(trainer, on_step)

    # ------------------------------------------------------------------ checks

    def env(self) -> dict:
        from ddpm_lib.train import _resolve_mixed_precision

        info = {"torch": torch.__version__, "python": platform.python_version(), "cuda_available":
                torch.cuda.is_available(), "auto_precision": _resolve_mixed_precision(self.config("env"))}
        if self.device.type == "cuda":
            info.update(name=torch.cuda.get_device_name(), capability=list(torch.cuda.get_device_capability()),
                        cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                        bf16_native=torch.cuda.is_bf16_supported(including_emulation=False))
        else:
            info.update(name=platform.processor() or platform.machine(), cores=os.cpu_count())
        return info

    def precision(self) -> dict:
        modes = ["auto", "bf16", "no"] + (["fp16"] if self.device.type == "cuda" else [])
        out = {mode: self.train(f"precision-{mode}", mixed_precision=mode) for mode in modes}
        for mode in ("bf16", "fp16", "no"):
            if mode in out and out[mode]["precision"] != mode:
                raise AssertionError(f"mixed_precision={mode!r} trained in {out[mode]['precision']!r}")
        return out

    def layout(self) -> dict:
        return {f"channels_last={v}": self.train(f"layout-{v}", channels_last=v) for v in (True, False)}

    def data_placement(self) -> dict:
        out = {f"data_on_device={v}": self.train(f"data-{v}", data_on_device=v) for v in (True, False)}
        if out["data_on_device=True"]["data_on_device"] is not True:
            raise AssertionError("data_on_device=True did not keep the data on the device")
        return out

    def no_sync(self) -> dict:
        if self.device.type != "cuda":
            raise Skip("needs CUDA (torch.cuda.set_sync_debug_mode)")
        n = self.size["steps"]
        out = {}
        for name, kw in [("unconditional_bf16", {"mixed_precision": "bf16"}),
                         ("unconditional_fp32", {"mixed_precision": "no"}),
                         ("class_conditional_bf16", {"mixed_precision": "bf16", "labels": True}),
                         ("class_conditional_fp32", {"mixed_precision": "no", "labels": True}),
                         ("unconditional_fp16", {"mixed_precision": "fp16"})]:
            labels = kw.pop("labels", False)

            def watch(tr):  # watch the steps 2 .. n-1 (the last one logs the loss: a sync by design)
                torch.cuda.set_sync_debug_mode("warn" if 1 <= tr.step < n - 1 else "default")

            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                try:
                    result = self.train(f"sync-{name}", model=self.model(10 if labels else None), on_step=watch,
                                        labels=labels, **kw)
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            syncs = [str(w.message).splitlines()[0] for w in seen if "synchroniz" in str(w.message)]
            result.update(syncs_per_step=len(syncs) / (n - 2), first_sync=syncs[:1])
            out[name] = result
        for name in ("unconditional_bf16", "unconditional_fp32", "class_conditional_bf16", "class_conditional_fp32"):
            if out[name]["syncs_per_step"]:
                raise AssertionError(f"{name}: {out[name]['syncs_per_step']} host syncs per step: "
                                     f"{out[name]['first_sync']}")
        return out

    def device_asserts(self) -> dict:
        if self.device.type != "cuda":
            raise Skip("needs CUDA (the asynchronous range checks of GPU tensors)")
        codes = {
            "timestep": "s = dl.make_schedule('linear', num_timesteps=10).to('cuda')\n"
                        "s.alpha_bar(torch.tensor([3, 10], device='cuda'))\n",
            "class_label": "m = dl.UNet(image_size=8, channels=(8, 16), layers_per_level=1, "
                           "attention_resolutions=(), num_classes=3).cuda()\n"
                           "m(torch.zeros(2, 1, 8, 8, device='cuda'), torch.zeros(2, device='cuda'), "
                           "class_labels=torch.tensor([0, 4], device='cuda'))\n",
        }
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        out = {}
        for what, code in codes.items():
            run = subprocess.run([sys.executable, "-c", f"import torch, ddpm_lib as dl\n{code}torch.cuda.synchronize()\n"],
                                 capture_output=True, text=True, timeout=180, env=env, check=False)
            if run.returncode == 0:
                raise AssertionError(f"an out-of-range {what} on the GPU went unnoticed")
            out[what] = {"returncode": run.returncode, "stderr_tail": run.stderr.strip().splitlines()[-3:]}
        return out

    def resume(self) -> dict:
        n = self.size["steps"]
        half = max(1, n // 2)
        torch.use_deterministic_algorithms(True, warn_only=True)
        was = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
        try:
            def trainer(name):
                return dl.Trainer(self.model(), self.data(), self.config(name, resume=True, checkpoint_every=half,
                                                                         mixed_precision="no", log_every=1))

            straight = trainer("resume-straight")
            straight.fit()

            class Stop(Exception):
                pass

            def stop(tr):
                if tr.step == half:
                    raise Stop

            try:
                trainer("resume-interrupted").fit(stop)
            except Stop:
                pass
            resumed = trainer("resume-interrupted")
            resumed.fit()
        finally:
            torch.use_deterministic_algorithms(False)
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = was
        a = {**straight.unwrapped_model.state_dict(), **{f"ema.{k}": v for k, v in straight.ema_model.state_dict()
                                                         .items()}}
        b = {**resumed.unwrapped_model.state_dict(), **{f"ema.{k}": v for k, v in resumed.ema_model.state_dict()
                                                        .items()}}
        diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
        result = {"steps": n, "interrupted_at": half, "max_abs_weight_difference": diff,
                  "bit_identical": diff == 0.0, "losses_equal": straight.history.losses == resumed.history.losses}
        if diff != 0.0:
            raise AssertionError(f"resumed run differs from the uninterrupted one: {result}")
        return result

    def samplers(self) -> dict:
        s = self.size
        model = self.model().to(self.device).eval()
        schedule = dl.make_schedule("linear", num_timesteps=1000)
        shape = (s["sample_n"], 1, s["image_size"], s["image_size"])
        out = {}
        for name in sorted(dl.SAMPLERS):
            extra = {"n_steps_each": 1} if name == "langevin" else {}
            out[name] = {"nfe": dl.nfe(name, s["sample_steps"], **extra)}
            # the schedule on the CPU (as dl.make_schedule makes it) and on the device (as the Trainer keeps it)
            for where, sched in (("cpu_schedule", schedule), ("device_schedule", schedule.to(self.device))):
                began = self.sync()
                x = dl.sample(model, shape, sched, name, steps=s["sample_steps"], prediction="eps",
                              generator=torch.Generator(self.device).manual_seed(0), **extra)
                seconds = self.sync() - began
                if x.device.type != self.device.type or not bool(torch.isfinite(x).all()):
                    raise AssertionError(f"{name}, {where}: {x.device}, finite={bool(torch.isfinite(x).all())}")
                out[name][f"seconds_{where}"] = seconds
        return out

    def benchmark(self) -> dict:
        if importlib.util.find_spec("diffusers") is None:
            raise Skip("benchmarks/train.py needs diffusers; carry its wheel (tools/device_check.sh --fetch-wheels)")
        folder = self.out / "benchmark"
        args = ["--quick"] if self.quick else ["--steps", "20", "--warmup", "5", "--rounds", "2"]
        result = self.boxed("benchmark", [sys.executable, str(ROOT / "benchmarks" / "train.py"), "--device",
                                          self.device.type, *args, "--out", str(folder), "--note",
                                          "tools/device_check.py"], junit=False)
        if (folder / "train.json").is_file():  # also when stopped at the limit: what it measured so far
            measured = json.loads((folder / "train.json").read_text())
            result.update({k: measured[k] for k in (
                "device", "device_name", "synchronized", "variants", "failed", "complete", "ran_on", "precision",
                "requested_precision", "channels_last", "compiled", "ms_per_step", "images_per_sec",
                "speedup_vs_plain", "first_step_s", "compile_s", "recompiled_in_timed_steps", "target",
                "target_met", "trainer_fast_target_met") if k in measured})
        return result

    # ------------------------------------------------------------------ stages that run another program

    def boxed(self, name: str, cmd: list[str], env: dict | None = None, junit: bool = True) -> dict:
        """Run ``cmd`` (pytest when ``junit``) for at most ``self.timeout`` seconds; what it did.

        Its output goes to OUT/stages.log (and its tail into the result when it fails). At the time
        limit the program's whole process group gets SIGINT (pytest then still writes its junit
        report and summary), and SIGKILL GRACE_S seconds later if it is still there.
        """
        report = self.work / f"{name}.xml"
        if junit:
            cmd = [*cmd, f"--junitxml={report}"]
        settings = {"MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **settings}
        timeout = max(1.0, self.timeout)
        log = self.work / f"{name}.log"
        began = time.perf_counter()
        with open(log, "w") as f:
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                    start_new_session=True)
            timed_out = False
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                _signal_group(proc.pid, signal.SIGINT)
                try:
                    rc = proc.wait(timeout=GRACE_S)
                except subprocess.TimeoutExpired:
                    _signal_group(proc.pid, signal.SIGKILL)
                    rc = proc.wait()
            _signal_group(proc.pid, signal.SIGKILL)  # what it left behind (a notebook kernel, a worker)
        text = log.read_text(errors="replace")
        with open(self.out / "stages.log", "a") as f:
            f.write(f"\n===== {name}: {' '.join(settings_line(settings))} {' '.join(cmd)}\n"
                    f"===== limit {timeout:.0f} s, returncode {rc}"
                    f"{', TIMED OUT' if timed_out else ''}\n{text}")
        result = {"ok": rc == 0 and not timed_out, "returncode": rc, "timed_out": timed_out,
                  "limit_s": round(timeout, 1), "run_s": round(time.perf_counter() - began, 2),
                  "command": " ".join(str(c) for c in cmd), "env": settings}
        if junit:
            result.update(read_junit(report))
            collected = re.findall(r"(\d+) tests? collected", text)
            if collected:
                result["collected"] = int(collected[-1])
        if not result["ok"]:
            result["output_tail"] = text.splitlines()[-40:]
        return result

    def pytest_cmd(self, *args: str, workers: int = 1) -> list[str]:
        cmd = [sys.executable, "-m", "pytest", *args, "-o", "addopts=", "-p", "no:cacheprovider", "-q", "-rfE"]
        if workers > 1 and importlib.util.find_spec("xdist") is not None:
            cmd += ["-n", str(workers), "--dist", "loadfile"]  # a file's tests (a notebook's cells) on one worker
        return cmd

    def threads(self, workers: int) -> str:
        return str(max(1, (os.cpu_count() or 1) // max(1, workers)))

    def unit_tests(self) -> dict:
        env = {"DDPM_TEST_DEVICE": self.device.type, "DDPM_BOOK_PROFILE": "smoke"}
        if self.quick:  # one test: the stage's own machinery, not the suite (the suite runs this script)
            cmd = self.pytest_cmd("tests/test_models.py", "-k", "waits_for_nothing")
            return self.boxed("unit_tests", cmd, {**env, "OMP_NUM_THREADS": "1"})
        workers = max(1, min(14, (os.cpu_count() or 2) - 2))
        return self.boxed("unit_tests", self.pytest_cmd("tests", workers=workers),
                          {**env, "OMP_NUM_THREADS": self.threads(workers)})

    def notebooks(self) -> dict:
        pages = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "notebooks").glob("[0-9]*.ipynb"))
        pages.append("book/benchmarks.ipynb")
        nbval = ["--nbval-lax", "--nbval-current-env", "--nbval-cell-timeout=300"]
        if self.quick:
            return self.boxed("notebooks", self.pytest_cmd(*pages, *nbval, "--collect-only"),
                              {"DDPM_BOOK_PROFILE": "smoke"})
        workers = max(1, min(len(pages), (os.cpu_count() or 2) - 2))
        result = self.boxed("notebooks", self.pytest_cmd(*pages, *nbval, workers=workers),
                            {"DDPM_BOOK_PROFILE": "smoke", "OMP_NUM_THREADS": self.threads(workers)})
        result["not_run"] = [p for p in pages if not any(Path(p).stem in f for f in result.get("files", {}))]
        if result["not_run"]:
            result["ok"] = False
        return result

    def chapter2_gpu(self) -> dict:
        nb = "notebooks/02_training.ipynb"
        nbval = ["--nbval-lax", "--nbval-current-env", f"--nbval-cell-timeout={int(self.timeout)}"]
        if self.quick:
            return self.boxed("chapter2_gpu", self.pytest_cmd(nb, *nbval, "--collect-only"),
                              {"DDPM_BOOK_PROFILE": "gpu"})
        result = self.boxed("chapter2_gpu", self.pytest_cmd(nb, *nbval), {"DDPM_BOOK_PROFILE": "gpu"})
        g = dl.book.SIZES[2]["gpu"]
        result["note"] = (f"no Hub there: {g['dataset']} cannot load, so the chapter falls back (and prints so) to "
                          f"the embedded MNIST digits at the gpu profile's sizes ({g['image_size']} px, "
                          f"{g['channels']} channels, {g['train_steps']} steps per training loop)")
        return result


def settings_line(settings: dict) -> list[str]:
    return [f"{k}={v}" for k, v in settings.items()]


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _short(message: str) -> str:
    """A failure message without colour codes, its start and its end (where a traceback says what failed)."""
    text = " ".join(re.sub(r"(#x1B|\x1b)\[[0-9;]*m", "", message).split())
    return text if len(text) <= 700 else f"{text[:200]} ... {text[-480:]}"


def _file_of(classname: str) -> str:
    """The test file of a junit classname: tests.test_x(.TestClass) -> tests/test_x.py; a notebook's stays."""
    parts = classname.split(".")
    for n in range(len(parts), 0, -1):
        if not all(parts[:n]):
            continue
        for candidate in (Path(*parts[:n]).with_suffix(".py"), Path(".".join(parts[:n]).replace(".", "/", max(0, n - 2)))):
            if (ROOT / candidate).is_file():
                return str(candidate)
    return classname


def read_junit(path: Path) -> dict:
    """Counts, failures, slowest tests, tests per file and GPU use from a pytest junit report."""
    if not path.is_file():
        return {"junit": "no report written"}
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        return {"junit": f"unreadable report: {e}"}
    counts = {"tests": 0, "passed": 0, "failed": 0, "errors": 0, "skipped": 0, "interrupted": 0}
    failures, times, files, cuda = [], [], {}, 0
    for case in root.iter("testcase"):
        if not case.get("name"):  # the test running when the time limit stopped pytest
            counts["interrupted"] += 1
            continue
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        seconds = float(case.get("time") or 0)
        counts["tests"] += 1
        outcome = "passed"
        for tag, key in (("failure", "failed"), ("error", "errors"), ("skipped", "skipped")):
            found = case.find(tag)
            if found is not None:
                outcome = key
                if key != "skipped":
                    failures.append({"test": name, "message": _short(found.get("message") or found.text or "")})
                break
        counts[outcome] += 1
        times.append((seconds, name))
        file = _file_of(case.get("classname", ""))
        entry = files.setdefault(file, {"tests": 0, "not_passed": 0, "seconds": 0.0})
        entry["tests"] += 1
        entry["not_passed"] += outcome in ("failed", "errors")
        entry["seconds"] = round(entry["seconds"] + seconds, 2)
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        cuda += int(float(props.get("cuda_bytes") or 0) > 0)
    times.sort(reverse=True)
    return {**counts, "tests_that_used_the_gpu": cuda, "failures": failures[:40],
            "slowest": [{"test": n, "seconds": round(s, 2)} for s, n in times[:8]], "files": files}


# name: (method, its own time limit in seconds or None (runs in this process, unboxed), the seconds kept for it
# while earlier stages run). The boxed limits add up to 7 minutes, more than the 440 s budget: a stage that
# finishes early leaves its time to the later ones, and chapter2_gpu gets what is left.
STAGES = {
    "env": (Checks.env, None, 5),
    "no_sync": (Checks.no_sync, None, 20),
    "device_asserts": (Checks.device_asserts, None, 10),
    "resume": (Checks.resume, None, 10),
    "precision": (Checks.precision, None, 15),
    "samplers": (Checks.samplers, None, 10),
    # 4 variants x 2 turns of 20 steps take seconds on a GPU; compiling trainer_fast's network (forward
    # and backward) in its first turn is most of the stage (not measured yet on a GPU: hence the room)
    "benchmark": (Checks.benchmark, 150, 60),
    "unit_tests": (Checks.unit_tests, 150, 60),
    "notebooks": (Checks.notebooks, 120, 60),
    "layout": (Checks.layout, None, 10),
    "data": (Checks.data_placement, None, 10),
    "chapter2_gpu": (Checks.chapter2_gpu, 600, 45),
}
CHECKS = {name: stage[0] for name, stage in STAGES.items()}  # what a test may replace


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that the script works")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "runs" / "device_check")))
    parser.add_argument("--skip", nargs="*", default=[], choices=sorted(CHECKS), help="stages not to run")
    parser.add_argument("--budget", type=float, default=450.0,
                        help="seconds for all stages together (default 450: 8 minutes with the set-up)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device here (run with --device cpu for a smoke test)")
    args.out.mkdir(parents=True, exist_ok=True)
    checks = Checks(device, SIZES["quick" if args.quick else "full"], args.out, quick=args.quick)
    results = checks.results
    results.update(quick=args.quick, budget_s=args.budget,
                   started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    (args.out / "stages.log").write_text("")
    began = time.perf_counter()
    deadline = began + args.budget
    names = list(STAGES)
    for i, name in enumerate(names):
        fn, limit, keep = CHECKS[name], STAGES[name][1], STAGES[name][2]
        t0 = time.perf_counter()
        later = sum(STAGES[n][2] for n in names[i + 1:] if n not in args.skip)
        allowed = deadline - t0 - later  # what this stage may use and leave the later ones their minimum
        if name in args.skip:
            entry = {"ok": None, "skipped": "--skip"}
        elif allowed < keep:
            entry = {"ok": None, "skipped": f"out of time: {max(0.0, allowed):.0f} s left of the {args.budget:.0f} s "
                                            f"budget for it (it needs {keep} s)"}
        else:
            checks.timeout = min(limit, allowed) if limit is not None else allowed
            print(f"[device_check] {name} ..." + (f" (at most {checks.timeout:.0f} s)" if limit else ""),
                  flush=True)
            try:
                entry = {"ok": True, **fn(checks)}
            except Skip as e:
                entry = {"ok": None, "skipped": str(e)}
            except Exception as e:  # noqa: BLE001 (recorded, printed in full, and the exit status says so)
                print(f"[device_check] FAILED {name}: {type(e).__name__}: {e}\n{traceback.format_exc()}",
                      file=sys.stderr, flush=True)
                entry = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            finally:
                if device.type == "cuda":
                    torch.cuda.set_sync_debug_mode("default")
        entry["seconds"] = round(time.perf_counter() - t0, 2)
        results["checks"][name] = entry
        results["seconds"] = round(time.perf_counter() - began, 2)
        (args.out / "device_check.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        state = "ok" if entry["ok"] else "SKIPPED" if entry["ok"] is None else "FAILED"
        numbers = [f"{entry[k]} {k}" for k in ("tests", "passed", "failed", "errors", "skipped", "interrupted")
                   if isinstance(entry.get(k), int) and entry[k]]
        counts = ", ".join(numbers + (["TIMED OUT"] if entry.get("timed_out") else []))
        print(f"[device_check] {name}: {state} ({entry['seconds']} s)" + (f" - {counts}" if counts else "")
              + (f" - {entry.get('skipped')}" if entry["ok"] is None else ""), flush=True)
        if entry["ok"] is False and entry.get("output_tail"):
            print("\n".join(entry["output_tail"][-15:]), flush=True)
    shutil.rmtree(checks.work, ignore_errors=True)
    failed = [n for n, e in results["checks"].items() if e["ok"] is False]
    print(f"[device_check] wrote {args.out / 'device_check.json'}; "
          + (f"FAILED: {', '.join(failed)}" if failed else "no check failed"), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
