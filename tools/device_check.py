"""What only an accelerator can show about ddpm_lib, checked and measured in one short run (issue 19, item 15).

    tools/device_check.sh                                   # on a GPU machine: every check, a few minutes
    python tools/device_check.py --device cpu --quick --out DIR   # the smoke test (tests/test_device_check.py)

Checks, in order (each one's measurements go to OUT/device_check.json, written after every check):

=============  ===========================================================================
env            device name, compute capability, torch / CUDA versions, native bf16, and
               the precision that mixed_precision="auto" picks
precision      Trainer steps with mixed_precision auto / bf16 / fp16 (CUDA) / no: finite
               losses, the precision used, steps per second
layout         channels_last on and off: steps per second
data           data_on_device on and off (a DataLoader): steps per second
no_sync        CUDA: steps between two log steps run under torch.cuda.set_sync_debug_mode
               ("warn"); an unconditional network must cause no host sync at all, a class-
               conditional one is counted and reported (fp16 loss scaling syncs by design)
bad_timestep   CUDA: an out-of-range timestep on the GPU still stops the program (async check)
resume         a run with random flips, interrupted and resumed, against one that never was:
               bit for bit with deterministic algorithms (CUBLAS_WORKSPACE_CONFIG is set)
samplers       dl.sample on the device with every sampler: finite, on the device, seconds
benchmark      benchmarks/train.py --device DEVICE (needs diffusers; skipped, and said so,
               without it)
=============  ===========================================================================

A check that cannot run here (no CUDA, a package missing) is "skipped" with the reason. A
check that fails is printed with its traceback, recorded as ``"ok": false`` and makes the
script exit with status 1 after the other checks have run. Steps per second are measured
after warm-up steps, with ``torch.cuda.synchronize()`` before each clock reading that ends a
measurement; they are numbers of this device only (say which when you quote them).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
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


class Skip(Exception):
    """A check that cannot run on this machine (the reason is recorded)."""


class Checks:
    def __init__(self, device: torch.device, size: dict, out: Path):
        self.device, self.size, self.out = device, size, out
        self.work = Path(tempfile.mkdtemp(prefix="device-check-"))
        self.results: dict = {"device": str(device), "sizes": size, "checks": {}}

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
        for name in ("unconditional_bf16", "unconditional_fp32"):
            if out[name]["syncs_per_step"]:
                raise AssertionError(f"{name}: {out[name]['syncs_per_step']} host syncs per step: "
                                     f"{out[name]['first_sync']}")
        return out

    def bad_timestep(self) -> dict:
        if self.device.type != "cuda":
            raise Skip("needs CUDA (the asynchronous range check of a GPU tensor)")
        code = ("import torch, ddpm_lib as dl\n"
                "s = dl.make_schedule('linear', num_timesteps=10).to('cuda')\n"
                "s.alpha_bar(torch.tensor([3, 10], device='cuda'))\n"
                "torch.cuda.synchronize()\n")
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env,
                             check=False)
        if run.returncode == 0:
            raise AssertionError("an out-of-range timestep on the GPU went unnoticed")
        return {"returncode": run.returncode, "stderr_tail": run.stderr.strip().splitlines()[-3:]}

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
        try:
            import diffusers  # noqa: F401
        except ImportError as e:
            raise Skip(f"benchmarks/train.py needs diffusers ({e}); carry its wheel (see tools/device_check.sh)")
        folder = self.out / "benchmark"
        args = ["--quick"] if self.size is SIZES["quick"] else ["--steps", "20", "--warmup", "5", "--rounds", "2"]
        cmd = [sys.executable, str(ROOT / "benchmarks" / "train.py"), "--device", self.device.type, *args,
               "--out", str(folder), "--note", "tools/device_check.py"]
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=420, env=env, check=False)
        if run.returncode != 0:
            raise AssertionError(f"benchmarks/train.py failed ({run.returncode}):\n{run.stderr[-3000:]}")
        result = json.loads((folder / "train.json").read_text())
        return {k: result[k] for k in ("device", "precision", "ms_per_step", "images_per_sec") if k in result}


CHECKS = {"env": Checks.env, "precision": Checks.precision, "layout": Checks.layout, "data": Checks.data_placement,
          "no_sync": Checks.no_sync, "bad_timestep": Checks.bad_timestep, "resume": Checks.resume,
          "samplers": Checks.samplers, "benchmark": Checks.benchmark}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that the script works")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "runs" / "device_check")))
    parser.add_argument("--skip", nargs="*", default=[], choices=sorted(CHECKS), help="checks not to run")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device here (run with --device cpu for a smoke test)")
    args.out.mkdir(parents=True, exist_ok=True)
    checks = Checks(device, SIZES["quick" if args.quick else "full"], args.out)
    results = checks.results
    results.update(quick=args.quick, started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    began = time.perf_counter()
    for name, fn in CHECKS.items():
        t0 = time.perf_counter()
        if name in args.skip:
            entry = {"ok": None, "skipped": "--skip"}
        else:
            print(f"[device_check] {name} ...", flush=True)
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
        print(f"[device_check] {name}: {state} ({entry['seconds']} s)"
              + (f" - {entry.get('skipped')}" if entry["ok"] is None else ""), flush=True)
    failed = [n for n, e in results["checks"].items() if e["ok"] is False]
    print(f"[device_check] wrote {args.out / 'device_check.json'}; "
          + (f"FAILED: {', '.join(failed)}" if failed else "no check failed"), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
