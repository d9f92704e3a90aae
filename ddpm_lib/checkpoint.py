"""Checkpoints of a training run: files, checksums, the run lock, random state and resume checks (chapter 10).

The ``Trainer`` (``dl.train``) decides *what* goes into a checkpoint; this module
writes and reads the files and checks that a run may continue from one:

==========================  ==================================================
``save_checkpoint``          atomic write: temporary file, fsync, ``os.replace``
``load_checkpoint``          ``torch.load(weights_only=True)``, format and SHA-256
                             checked; a bad file is a ``CheckpointError`` naming it
``find_checkpoints``         ``out_dir/checkpoints/step_XXXXXX.pt``, oldest first
``latest_checkpoint``        the newest readable one (an unreadable newer file is
                             reported and left in place)
``check_resume``             the config, network and noise schedule of the run
                             that continues must be those of the checkpoint
``RunLock``                  ``out_dir/.lock``: one training run per folder
``rng_state``                the global generators (torch, CUDA, numpy, Python)
==========================  ==================================================

Which settings may change when a run is resumed (``RESUMABLE_FIELDS``): the length
and budget of the run (``max_steps``, ``max_minutes``), bookkeeping (out_dir, log,
checkpoint and sample intervals, sample grids, progress bar) and how fast the
steps run (device, mixed precision, compile, channels_last, where the data lives,
DataLoader workers). Every other field changes what the run learns (the data
seen, the optimiser, the diffusion target, the EMA, the seed), so resuming with a
different value is an error naming the fields. The batch is checked as the
effective batch ``batch_size x grad_accum_steps`` (``BATCH_SPLIT_FIELDS``): a run may
continue with another split of the same effective batch (8 x 4 after 16 x 2, when a
reconnect brings a GPU with less memory), with a note saying what differs; another
effective batch is an error. Resuming is bit for bit only when the speed settings and
the split are unchanged too (other arithmetic, other rounding, other draws). A longer
``max_steps`` stretches the cosine decay of the learning rate from the resumed
step on (the run continues; it is not the run that a longer max_steps would have
been from the start).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .schedules import NoiseSchedule

__all__ = ["CheckpointError", "find_checkpoints", "latest_checkpoint", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_FORMAT = "ddpm_lib-checkpoint-1"
_CHECKPOINT_NAME = re.compile(r"^step_(\d+)\.pt$")

# TrainConfig fields that may differ between a checkpoint and the run that continues from it.
RESUMABLE_FIELDS = frozenset({
    "max_steps", "max_minutes",  # how long the run goes on
    "out_dir", "log_every", "checkpoint_every", "keep_checkpoints", "sample_every", "num_sample_images",
    "sample_steps", "sampler", "clip_x0", "progress", "resume",  # bookkeeping and sample grids
    "cpu", "mixed_precision", "compile", "channels_last", "data_on_device", "num_workers",  # speed
})


# TrainConfig fields whose product, the effective batch per process, must stay; each alone may change.
BATCH_SPLIT_FIELDS = ("batch_size", "grad_accum_steps")


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read, or that does not fit the model being trained."""


# --------------------------------------------------------------------------- files


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a folder: os.replace is still atomic there
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically: to a temporary file, fsync, then ``os.replace``.

    A crash at any moment leaves either the old file or the complete new one,
    never a partial file under ``path``. Chapter 10.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path


def _first_sentence(e: Exception) -> str:
    """The first sentence of an error, without torch's advice to drop ``weights_only`` (never do that)."""
    lines = str(e).splitlines()
    return lines[0].split(". ")[0][:200] if lines else ""


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by the Trainer (``torch.load(weights_only=True)``: no code runs).

    Raises ``CheckpointError`` naming the file when it is missing, truncated,
    corrupt or not a ddpm_lib checkpoint. Chapter 10.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file {path}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, flipped bytes, not a torch file ...
        raise CheckpointError(
            f"cannot read checkpoint {path} ({type(e).__name__}: {_first_sentence(e)}); "
            "the file is truncated or corrupt. Delete it to resume from an earlier checkpoint."
        ) from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a ddpm_lib training checkpoint (no format {CHECKPOINT_FORMAT!r}).")
    digest = state.pop("sha256", None)
    if digest != state_digest(state):
        raise CheckpointError(f"checkpoint {path} is corrupt: its weights do not match the stored checksum.")
    return state


def state_digest(state: Any, h: Any = None) -> str:
    """SHA-256 over every tensor and value of a checkpoint: catches corruption that still unpickles."""
    h = h or hashlib.sha256()
    if isinstance(state, dict):
        for key in sorted(state, key=str):
            h.update(repr(key).encode())
            state_digest(state[key], h)
    elif isinstance(state, (list, tuple)):
        for item in state:
            state_digest(item, h)
    elif isinstance(state, torch.Tensor):
        h.update(f"{state.dtype}{tuple(state.shape)}".encode())
        h.update(state.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    else:
        h.update(repr(state).encode())
    return h.hexdigest()


def find_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """Checkpoint files in ``out_dir/checkpoints``, oldest first (by step)."""
    folder = Path(out_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT_NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(out_dir: str | os.PathLike) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable checkpoint ``(path, state)``, or None when there is none.

    An unreadable newer file is left in place and reported with a warning; when
    every checkpoint is unreadable, the ``CheckpointError`` of the newest is raised
    (starting from scratch would silently overwrite them). Chapter 10.
    """
    files = find_checkpoints(out_dir)
    first_error = None
    for path in reversed(files):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as e:
            first_error = first_error or e
            warnings.warn(f"{e} Trying the previous checkpoint; the file is left as it is.", stacklevel=2)
    if first_error is not None:
        raise first_error
    return None


def checkpoint_path(out_dir: str | os.PathLike, step: int) -> Path:
    """Where the checkpoint of ``step`` goes: ``out_dir/checkpoints/step_XXXXXX.pt``."""
    return Path(out_dir) / "checkpoints" / f"step_{step:06d}.pt"


def prune_checkpoints(out_dir: str | os.PathLike, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints."""
    for old in find_checkpoints(out_dir)[:-keep]:
        old.unlink(missing_ok=True)


def remove_partial_writes(out_dir: str | os.PathLike) -> None:
    """Delete the temporary files of checkpoint writes that were killed halfway."""
    for stale in (Path(out_dir) / "checkpoints").glob(".step_*.pt.tmp-*"):
        stale.unlink(missing_ok=True)


# --------------------------------------------------------------------------- noise schedule


def schedule_state(schedule: Any) -> dict[str, Any] | None:
    """What rebuilds a ``NoiseSchedule`` exactly, custom ones included: float64 masters, kind, name, dtype.

    None for other schedule objects (they cannot be stored without running code on load)."""
    if not isinstance(schedule, NoiseSchedule):
        return None
    return {"name": schedule.name, "args": dict(schedule.args), "kind": schedule.kind,
            "dtype": str(schedule.dtype).removeprefix("torch."),
            "betas": schedule._betas64, "log_snr": schedule._log_snr64}


def schedule_from_state(state: dict[str, Any]) -> NoiseSchedule | None:
    """The noise schedule a checkpoint was trained with (None for checkpoints written before it was stored).

    ``state`` is a whole checkpoint or its ``"schedule"`` entry. ``python -m ddpm_lib export``
    should use this rather than rebuilding ``config["schedule"]`` by name, which loses a custom schedule.
    """
    s = state.get("schedule", state) if "format" in state else state
    if not isinstance(s, dict) or "betas" not in s:
        return None
    return NoiseSchedule(s["betas"], s["name"], s["args"], kind=s["kind"], log_snr=s["log_snr"],
                         dtype=getattr(torch, s["dtype"]))


def _same_schedule(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["kind"] == b["kind"] and torch.equal(a["betas"], b["betas"]) and torch.equal(a["log_snr"], b["log_snr"])


# --------------------------------------------------------------------------- resume checks


def _plain(value: Any) -> Any:
    """JSON-like form (tuples become lists) so that saved and current values compare equal."""
    return json.loads(json.dumps(value, default=str))


def _differences(saved: dict[str, Any], current: dict[str, Any], skip: frozenset = frozenset(),
                 prefix: str = "") -> list[str]:
    """"key: old in the checkpoint, new now" for every key whose value differs (nested dicts: "a.b")."""
    out = []
    for key in sorted(set(saved) | set(current), key=str):
        if key in skip or str(key).startswith("_"):
            continue
        if isinstance(saved.get(key), dict) and isinstance(current.get(key), dict):
            out += _differences(saved[key], current[key], prefix=f"{prefix}{key}.")
            continue
        if key in saved and key in current and _plain(saved[key]) == _plain(current[key]):
            continue
        there = repr(saved[key]) if key in saved else "(absent)"
        here = repr(current[key]) if key in current else "(absent)"
        out.append(f"{prefix}{key}: {there} in the checkpoint, {here} now")
    return out


def _batch_split(config: dict[str, Any]) -> tuple[int, int]:
    return tuple(int(config.get(k, 1)) for k in BATCH_SPLIT_FIELDS)


def check_resume(path: Path, state: dict[str, Any], config: dict[str, Any], model_config: dict[str, Any] | None,
                 schedule: Any = None) -> str | None:
    """Raise ``CheckpointError`` when the run continuing from ``state`` is not the run that wrote it.

    Compares the ``TrainConfig`` fields (except ``RESUMABLE_FIELDS``; a field missing from an
    older checkpoint is compared with its current default), the effective batch
    ``batch_size x grad_accum_steps`` rather than its two factors, the network's config and,
    when the caller passed its own ``schedule``, the noise schedule. The message names every
    difference and says what to do.

    Returns None, or, when the effective batch is split into other micro-batches than the
    checkpoint's, a note for the user: the run continues the same optimisation (each optimizer
    step sees the same images, with the same learning rate and optimizer state) but not bit
    for bit, because the random draws are split differently among the images and the
    gradients are summed in another order.
    """
    from .train import TrainConfig

    defaults = TrainConfig().to_dict()
    saved = {**{k: v for k, v in defaults.items() if k in config}, **state.get("config", {})}
    problems = _differences(saved, config, RESUMABLE_FIELDS | set(BATCH_SPLIT_FIELDS))
    (b0, a0), (b1, a1) = _batch_split(saved), _batch_split(config)
    if b0 * a0 != b1 * a1:
        problems.insert(0, f"effective batch (batch_size x grad_accum_steps): {b0 * a0} ({b0} x {a0}) in the "
                           f"checkpoint, {b1 * a1} ({b1} x {a1}) now")
    saved_model = state.get("model_config")
    if saved_model is not None and model_config is not None:
        problems += [f"network {d}" for d in _differences(saved_model, model_config)]
    saved_schedule, current = state.get("schedule"), schedule_state(schedule)
    if current is not None and saved_schedule is not None and not _same_schedule(saved_schedule, current):
        problems.append(f"noise schedule: {saved_schedule['name']!r} in the checkpoint, another one "
                        f"({schedule.name!r}) now")
    if problems:
        raise CheckpointError(
            f"cannot resume from {path}: it was written by a run with other settings, and these change what "
            f"the run learns:\n  " + "\n  ".join(problems) + "\n"
            "Resume with the checkpoint's settings (only max_steps, max_minutes, the logging, checkpoint and "
            "sample settings, the speed settings and the split of the effective batch into batch_size x "
            "grad_accum_steps may change), or start a new run: another out_dir, or "
            "TrainConfig(resume=False) to train from scratch in this one."
        )
    if (b0, a0) == (b1, a1):
        return None
    return (f"resuming {path.name} with micro-batches of {b1} images x {a1} accumulation steps; the checkpoint "
            f"was written with {b0} x {a0}. The effective batch ({b1 * a1} images) and the data order are the "
            "same: every optimizer step sees the same images, with the same learning rate and optimizer state. "
            "The random draws of a step (noise levels, noise, label dropout, flips, dropout in the network) "
            "are split differently among its images, and the gradients are summed in another order, so the "
            "run continues the same optimisation but does not end bit for bit where an uninterrupted "
            f"{b0} x {a0} run would.")


# --------------------------------------------------------------------------- the run lock


# The lock's heartbeat: its holder refreshes the file's time every HEARTBEAT_SECONDS; a lock of
# another host that has not been refreshed for STALE_AFTER_SECONDS belongs to a run that is gone.
HEARTBEAT_SECONDS = 60.0
STALE_AFTER_SECONDS = 600.0


class RunLock:
    """``out_dir/.lock`` holds "host pid" while a run trains there, so that a second run cannot clobber it.

    The file is created atomically (``O_CREAT | O_EXCL``): of two runs starting at once,
    one gets the lock and the other a ``FileExistsError``. While the run lasts, a
    background thread refreshes the file's modification time every ``heartbeat`` seconds.
    A lock is taken over when its run is known to be gone: on this host, when its process
    no longer exists (e.g. after kill -9); written on another host (a shared file system:
    a Colab runtime that disconnected left it on Google Drive, and the new runtime is
    another machine), when it has not been refreshed for ``STALE_AFTER_SECONDS``, since
    that process cannot be seen from here. Until then the error says which host holds it,
    how old it is, and when it will be taken over.
    """

    def __init__(self, out_dir: str | os.PathLike, heartbeat: float = HEARTBEAT_SECONDS):
        self.path = Path(out_dir) / ".lock"
        self.host = socket.gethostname()
        self.owner = f"{self.host} {os.getpid()}"
        for attempt in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if attempt == 0 and self._take_over_stale():
                    continue
                raise FileExistsError(self._busy_message()) from None
            with os.fdopen(fd, "w") as f:
                f.write(self.owner)
            break
        self._stopped = threading.Event()
        self._beat = threading.Thread(target=self._refresh, args=(heartbeat,), daemon=True,
                                      name="ddpm_lib-run-lock")
        self._beat.start()

    def _refresh(self, every: float) -> None:
        while not self._stopped.wait(every):
            with contextlib.suppress(OSError):  # a flaky network file system: try again next time
                os.utime(self.path)

    def _take_over_stale(self) -> bool:
        """Remove a stale lock; False when the lock is not stale (or another run took it over first).

        The lock is renamed away first (atomic) and checked again: when a second run replaced
        it with a live lock in between, that lock is put back and this run does not start.
        """
        holder = self._holder()
        if not self._stale(holder):
            return False
        moved = self.path.with_name(f".lock.stale-{os.getpid()}")
        try:
            os.rename(self.path, moved)
        except FileNotFoundError:  # another run removed it first: try to create ours
            return True
        if self._holder(moved) != holder:  # not the stale lock we judged: put it back
            with contextlib.suppress(FileExistsError):
                os.link(moved, self.path)
            moved.unlink(missing_ok=True)
            return False
        moved.unlink(missing_ok=True)
        return True

    def _text(self, path: Path | None = None) -> str:
        try:
            return (path or self.path).read_text()
        except OSError:  # gone meanwhile, or unreadable
            return ""

    def _holder(self, path: Path | None = None) -> tuple[str, int | None]:
        """(host, pid) written in the lock file ("", None when it cannot be read)."""
        host, _, pid = self._text(path).partition(" ")
        return host, int(pid) if pid.strip().isdigit() else None

    def _age(self) -> float:
        """Seconds since the lock was written or last refreshed (0 when it cannot be read)."""
        try:
            return max(0.0, time.time() - self.path.stat().st_mtime)
        except OSError:
            return 0.0

    def _stale(self, holder: tuple[str, int | None]) -> bool:
        """True for a lock of this host whose process is gone (or is this very process), and for any
        other lock (another host's, or one that does not say whose it is) not refreshed for
        ``STALE_AFTER_SECONDS``."""
        host, pid = holder
        if host == self.host and pid is not None:
            return pid == os.getpid() or not _alive(pid)
        return self._age() > STALE_AFTER_SECONDS

    def _busy_message(self) -> str:
        host, pid = self._holder()
        folder = self.path.parent
        if host == self.host and pid is not None:
            return (f"another training run (process {pid}) is writing to {folder}; wait for it, stop it, "
                    f"or use another out_dir.")
        who = f"a run on host {host!r} (process {pid})" if host and pid is not None else \
            f"a lock that does not say which run holds it ({self._text()[:40]!r})"
        age, limit = self._age() / 60, STALE_AFTER_SECONDS / 60
        return (f"{folder} is locked by {who}, last refreshed {age:.1f} min ago: another training run may be "
                f"writing to it, and from host {self.host!r} its process cannot be checked. A lock not refreshed "
                f"for {limit:.0f} min is taken over by the next run (a disconnected Colab runtime's run is gone: "
                f"wait that long and run again). If that run is known to be over, delete {self.path} and start "
                f"again now; otherwise wait for it or use another out_dir.")

    def release(self) -> None:
        self._stopped.set()
        host, pid = self._holder()
        if f"{host} {pid}" == self.owner:
            self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


# --------------------------------------------------------------------------- random state


def rng_state() -> dict[str, Any]:
    """The global generators: torch (CPU and CUDA), numpy, Python (as tensors, lists and ints)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
