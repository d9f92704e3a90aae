"""The Trainer under ``accelerate launch`` with two CPU processes: both end with the same weights.

Accelerate 1.x runs ``accelerate launch --cpu --num_processes 2`` as a single
process unless MPI is installed, so two CPU processes are started the way a
multi-GPU run is (``--multi_gpu``, i.e. torchrun) with ``ACCELERATE_USE_CPU=1``:
the processes then talk over gloo, exactly as on a CPU cluster.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from ddpm_lib.train import load_checkpoint

SCRIPT = textwrap.dedent("""
    import hashlib, os, sys
    import torch
    import ddpm_lib as dl
    from ddpm_lib.train import TrainConfig, Trainer
    out = sys.argv[1]
    torch.manual_seed(0)
    model = dl.UNet(image_size=16, channels=(8, 16), layers_per_level=1, attention_resolutions=(), num_classes=3)
    g = torch.Generator().manual_seed(1)
    data = torch.utils.data.TensorDataset(torch.rand(64, 1, 16, 16, generator=g) * 2 - 1, torch.arange(64) % 3)
    cfg = TrainConfig(image_size=16, batch_size=8, max_steps=4, warmup_steps=1, log_every=1, checkpoint_every=2,
                      num_sample_images=0, progress=False, out_dir=out, schedule="linear", num_timesteps=100)
    trainer = Trainer(model, data, cfg)
    trainer.fit()
    h = hashlib.sha256()
    for name, p in sorted(trainer.unwrapped_model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().numpy().tobytes())
    for name, p in sorted(trainer.ema_model.state_dict().items()):
        h.update(p.detach().cpu().numpy().tobytes())
    with open(os.path.join(out, f"hash_{trainer.rank}_of_{trainer.world_size}.txt"), "w") as f:
        f.write(h.hexdigest())
""")


def _free_port() -> int:
    """A TCP port nobody listens on right now (a fixed one collides with other runs on the machine)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_hold_the_same_weights(tmp_path):
    script, out = tmp_path / "script.py", tmp_path / "run"
    script.write_text(SCRIPT)
    launcher = Path(sys.executable).with_name("accelerate")
    cmd = [str(launcher)] if launcher.exists() else [sys.executable, "-m", "accelerate.commands.launch"]
    cmd += ["launch"] if launcher.exists() else []
    cmd += ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "--main_process_port", str(_free_port()), str(script), str(out)]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-3000:]

    hashes = {p.name: p.read_text() for p in out.glob("hash_*.txt")}
    assert sorted(hashes) == ["hash_0_of_2.txt", "hash_1_of_2.txt"], run.stderr[-3000:]
    assert hashes["hash_0_of_2.txt"] == hashes["hash_1_of_2.txt"]

    rows = (out / "loss.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]  # written once, by the main process
    state = load_checkpoint(out / "checkpoints" / "step_000004.pt")
    assert len(state["rng"]) == 2  # one set of generator states per process
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
