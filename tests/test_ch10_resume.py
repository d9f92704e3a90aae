"""Chapter 10, the real thing: kill the Jupyter kernel mid-training, run the notebook again, get the same model.

The notebook's training cells (smoke sizes) run in a real IPython kernel with the runs
folder in a temporary directory (``DDPM_RUNS_DIR``). In the first kernel, right after
the trainer has written its first checkpoint, the step is held up (a patched
``Trainer.save`` sleeps) and this test kills the kernel process from outside (SIGKILL),
as a disconnected Colab runtime would end it. A second kernel runs the same cells again
from the top: it must find the checkpoint, continue from it, and end with weights and
EMA weights bit-identical to those of a third kernel that trained without interruption.
"""

from __future__ import annotations

import os
import queue
import time
from pathlib import Path

import nbformat
import pytest
import torch

jupyter_client = pytest.importorskip("jupyter_client")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "10_project.ipynb"
TIMEOUT = 300  # seconds for one cell on a busy machine


def training_cells() -> tuple[list[str], int]:
    """The code cells from the setup to the end of training, and the index of the session-1 cell."""
    skip = ("data.preview(", "dl.delete_run(earlier")  # a figure and a demonstration: not needed here
    cells = [c.source for c in nbformat.read(NOTEBOOK, 4).cells
             if c.cell_type == "code" and not any(s in c.source for s in skip)]
    start = next(i for i, s in enumerate(cells) if "dl.book.setup(" in s)
    end = next(i for i, s in enumerate(cells) if "session_2.fit()" in s)
    session_1 = next(i for i, s in enumerate(cells) if "fit_until_disconnect(session_1" in s)
    assert start < session_1 < end
    return cells[start: end + 1], session_1 - start


class Kernel:
    """A real IPython kernel running in the notebooks/ folder, with the test's environment."""

    def __init__(self, runs: Path):
        env = {**os.environ, "DDPM_RUNS_DIR": str(runs), "DDPM_BOOK_PROFILE": "smoke", "MPLBACKEND": "Agg",
               "OMP_NUM_THREADS": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
        self.km = jupyter_client.KernelManager(kernel_name="python3")  # ipykernel's: this Python
        self.km.start_kernel(env=env, cwd=str(NOTEBOOK.parent))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)

    def start(self, code: str) -> str:
        return self.kc.execute(code, store_history=False)

    def wait(self, msg_id: str) -> str:
        """Wait for a cell to finish; return its printed output; fail with the traceback on an error."""
        out = []
        deadline = time.monotonic() + TIMEOUT
        while True:
            msg = self.kc.get_iopub_msg(timeout=max(1.0, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind == "error":
                pytest.fail("a notebook cell failed:\n" + "\n".join(content["traceback"]))
            elif kind == "status" and content["execution_state"] == "idle":
                return "".join(out)

    def run(self, code: str) -> str:
        return self.wait(self.start(code))

    def kill(self) -> None:
        self.km.shutdown_kernel(now=True)  # SIGKILL: nothing in the kernel gets to clean up

    def close(self) -> None:
        self.kc.stop_channels()
        if self.km.is_alive():
            self.km.shutdown_kernel(now=True)


SAVE_WEIGHTS = """
torch.save({"model": trainer.unwrapped_model.state_dict(), "ema": trainer.ema_model.state_dict(),
            "step": trainer.step, "found": None if found is None else found[1]["step"]}, PATH)
"""

HOLD_AFTER_FIRST_CHECKPOINT = """
_save = dl.Trainer.save
def _save_then_hang(self):
    path = _save(self)
    if not _hung:  # the first checkpoint is on disk: now hang until the test kills the kernel
        _hung.append(path)
        time.sleep(600)
    return path
_hung = []
dl.Trainer.save = _save_then_hang
"""


def test_kernel_killed_mid_training_resumes_to_identical_weights(tmp_path):
    cells, session_1 = training_cells()
    killed_runs, straight_runs = tmp_path / "killed", tmp_path / "straight"

    def run_from_top(runs, weights_file):
        """Run the training cells in a new kernel, save its weights; what the cells printed."""
        k = Kernel(runs)
        try:
            printed = "".join(k.run(code) for code in cells)
            k.run(SAVE_WEIGHTS.replace("PATH", repr(str(weights_file))))
        finally:
            k.close()
        return printed

    # 1. a session that dies: the kernel is killed while training, after the first checkpoint
    k = Kernel(killed_runs)
    try:
        for code in cells[:session_1]:
            k.run(code)
        k.run(HOLD_AFTER_FIRST_CHECKPOINT)
        k.start(cells[session_1])
        deadline = time.monotonic() + TIMEOUT
        checkpoints = []
        while not checkpoints:
            assert time.monotonic() < deadline, "no checkpoint was written"
            assert k.km.is_alive(), "the kernel died before writing a checkpoint"
            checkpoints = sorted(killed_runs.glob("project-*/checkpoints/step_*.pt"))
            time.sleep(0.2)
        time.sleep(1.0)  # the file appears by an atomic rename: it is complete; let the save return
        k.kill()
        assert not k.km.is_alive()
    finally:
        k.close()
    run_folder = checkpoints[0].parent.parent
    on_disk = sorted(p.name for p in (run_folder / "checkpoints").glob("step_*.pt"))
    assert on_disk == [checkpoints[0].name], f"the kernel died after the first checkpoint only: {on_disk}"
    first_step = int(checkpoints[0].stem.split("_")[1])

    # 2. a new kernel runs the notebook again from the top, unchanged
    printed = run_from_top(killed_runs, tmp_path / "resumed.pt")
    assert f"it holds a checkpoint of step {first_step}: training continues from there" in printed, printed
    assert sorted(killed_runs.iterdir()) == [run_folder], "the same run folder was found again, no new one"

    # 3. the same cells without any interruption
    printed_straight = run_from_top(straight_runs, tmp_path / "straight.pt")
    assert "a new run: training starts at step 0" in printed_straight

    resumed, straight = (torch.load(tmp_path / f, weights_only=True) for f in ("resumed.pt", "straight.pt"))
    assert resumed["found"] == first_step and straight["found"] is None
    assert resumed["step"] == straight["step"] > first_step
    for part in ("model", "ema"):
        a, b = resumed[part], straight[part]
        assert a.keys() == b.keys()
        differ = [name for name in a if not torch.equal(a[name], b[name])]
        assert differ == [], f"{part}: resumed weights differ from the uninterrupted run's in {differ[:5]}"
