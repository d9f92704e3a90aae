"""Checkpoints and resuming (issue 19, item 4): random flips, custom schedules, config checks, the run lock."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from unittest import mock

import pytest
import torch

import ddpm_lib as dl
from ddpm_lib import checkpoint
from ddpm_lib.__main__ import main as cli_main
from ddpm_lib.data import DataReport, ImageDataset
from ddpm_lib.train import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_unet(dropout=0.0):
    torch.manual_seed(0)
    return dl.UNet(image_size=16, channels=(8, 16), layers_per_level=1, attention_resolutions=(), dropout=dropout)


def flipping_data(n=32):
    """An ``ImageDataset`` (what ``dl.load_images`` returns) with random left-right flips."""
    g = torch.Generator().manual_seed(1)
    pixels = torch.randint(0, 256, (n, 1, 16, 16), generator=g, dtype=torch.uint8)
    report = DataReport(source="test", kind="saved", image_size=16, channels=1, resize="crop", found=n, used=n)
    return ImageDataset(pixels, torch.full((n,), -1), report, flip=True, seed=0)


def config(out_dir, **kw):
    base = {"image_size": 16, "batch_size": 8, "max_steps": 6, "lr": 1e-3, "warmup_steps": 2, "log_every": 1,
            "checkpoint_every": 3, "num_sample_images": 0, "progress": False, "out_dir": str(out_dir),
            "schedule": "linear", "num_timesteps": 100, "channels_last": False}
    return TrainConfig(**{**base, **kw})


def weights(trainer):
    return {**trainer.unwrapped_model.state_dict(), **{f"ema.{k}": v for k, v in trainer.ema_model.state_dict().items()}}


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert different == [], f"resumed run differs in {len(different)} tensors, e.g. {different[:3]}"


# ----------------------------------------------------------------------------- random flips


class SessionEnded(Exception):
    """Stands in for a lost session (a closed laptop, a Colab disconnect)."""


def end_at(step):
    def on_step(trainer):
        if trainer.step == step:
            raise SessionEnded(step)
    return on_step



@pytest.mark.parametrize("on_device", [False, True])
def test_resume_with_random_flips_is_bit_identical(tmp_path, on_device):
    """Flips come from the step's generator, so a resumed run flips the same images (also via a DataLoader)."""
    straight = Trainer(tiny_unet(), flipping_data(), config(tmp_path / "a", data_on_device=on_device))
    straight.fit()
    # the interrupted run: a session that ends after the checkpoint of step 3, then a new one (new dataset
    # object, new network) resumes
    with pytest.raises(SessionEnded):
        Trainer(tiny_unet(), flipping_data(), config(tmp_path / "b", data_on_device=on_device)).fit(end_at(3))
    resumed = Trainer(tiny_unet(), flipping_data(), config(tmp_path / "b", data_on_device=on_device))
    assert resumed.data_on_device is on_device
    resumed.fit()
    assert resumed.history.steps == straight.history.steps
    assert_same_weights(straight, resumed)


def test_flips_are_the_same_through_a_dataloader_and_on_the_device(tmp_path):
    fast = Trainer(tiny_unet(), flipping_data(), config(tmp_path / "a", data_on_device=True, max_steps=3))
    slow = Trainer(tiny_unet(), flipping_data(), config(tmp_path / "b", data_on_device=False, max_steps=3))
    assert fast.fit().losses == pytest.approx(slow.fit().losses, rel=1e-6, abs=0)
    assert slow.dataset.flip, "the caller's dataset keeps its flip setting"


# ----------------------------------------------------------------------------- another micro-batch


def images_per_step(trainer_factory, monkeypatch):
    """Train with ``trainer_factory()``; the images (before flips) of every optimizer step, in order."""
    seen, real_loss = {}, Trainer._loss

    def recording_loss(self, x0, y):
        seen.setdefault(self.step + 1, []).append(x0.detach().clone())
        return real_loss(self, x0, y)

    monkeypatch.setattr(Trainer, "_loss", recording_loss)
    trainer = trainer_factory()
    trainer.fit()
    monkeypatch.setattr(Trainer, "_loss", real_loss)
    return trainer, {step: torch.cat(xs) for step, xs in seen.items()}


def test_resume_with_another_micro_batch_of_the_same_effective_batch(tmp_path, monkeypatch):
    """A reconnect to a smaller GPU: 16 x 2 images per step before, 8 x 4 after. The run continues."""
    data = flipping_data(n=72)  # 2 steps of 32 images an epoch; 8 left over, not used (a whole step is not)
    run = tmp_path / "run"
    with pytest.raises(SessionEnded):
        Trainer(tiny_unet(), data, config(run, batch_size=16, grad_accum_steps=2)).fit(end_at(3))
    with pytest.warns(UserWarning) as caught:
        resumed, seen = images_per_step(
            lambda: Trainer(tiny_unet(), data, config(run, batch_size=8, grad_accum_steps=4)), monkeypatch)
    note = " ".join(str(w.message) for w in caught)
    for needle in ("8 images x 4 accumulation steps", "written with 16 x 2", "effective batch (32 images)",
                   "same images", "not end bit for bit"):
        assert needle in note, note
    assert resumed.step == 6 and resumed.micro_batch == 6 * 4 and resumed.epoch == 3
    assert resumed.history.steps == [1, 2, 3, 4, 5, 6], "the first session's rows are kept"
    assert sorted(seen) == [4, 5, 6], "resumed after step 3"
    # the same images in every step as an uninterrupted 16 x 2 run (and in the same order)
    _, straight = images_per_step(
        lambda: Trainer(tiny_unet(), data, config(tmp_path / "straight", batch_size=16, grad_accum_steps=2)),
        monkeypatch)
    for step in (4, 5, 6):
        assert seen[step].shape[0] == 32 and torch.equal(seen[step], straight[step]), step


def test_resume_with_another_effective_batch_is_refused(tmp_path):
    data = flipping_data(n=72)
    run = tmp_path / "run"
    Trainer(tiny_unet(), data, config(run, batch_size=16, grad_accum_steps=2, max_steps=3)).fit()
    with pytest.raises(dl.CheckpointError) as e:
        Trainer(tiny_unet(), data, config(run, batch_size=8, grad_accum_steps=2)).fit()
    message = str(e.value)
    assert "effective batch (batch_size x grad_accum_steps): 32 (16 x 2) in the checkpoint, 16 (8 x 2) now" \
        in message, message
    assert [p.name for p in dl.find_checkpoints(run)] == ["step_000003.pt"], "nothing was overwritten"


def test_an_epoch_holds_whole_optimizer_steps():
    from ddpm_lib.train import _BatchOrder

    split_a, split_b = _BatchOrder(72, 16, 1, 0, seed=0, accum=2), _BatchOrder(72, 8, 1, 0, seed=0, accum=4)
    assert (split_a.per_epoch, split_b.per_epoch) == (4, 8)  # 2 steps of 32 images; 8 images left over
    for step in range(5):  # across epoch boundaries too
        a = torch.cat([split_a.indices(m) for m in range(2 * step, 2 * step + 2)])
        b = torch.cat([split_b.indices(m) for m in range(4 * step, 4 * step + 4)])
        assert torch.equal(a, b), step
    with pytest.raises(ValueError, match="fewer than one optimizer step of 16 x 4"):
        _BatchOrder(40, 16, 1, 0, seed=0, accum=4)


# ----------------------------------------------------------------------------- custom schedule


def custom_schedule(shift=1.5):
    return dl.shift_log_snr(dl.make_schedule("cosine", num_timesteps=100), shift)


def test_a_custom_schedule_is_saved_and_restored(tmp_path):
    schedule = custom_schedule()
    data = flipping_data()
    Trainer(tiny_unet(), data, config(tmp_path, max_steps=3), schedule=schedule).fit()
    state = checkpoint.load_checkpoint(dl.find_checkpoints(tmp_path)[-1])
    saved = checkpoint.schedule_from_state(state)
    assert saved.name == schedule.name and saved.kind == schedule.kind
    assert torch.equal(saved.alphas_cumprod, schedule.alphas_cumprod) and torch.equal(saved.log_snrs,
                                                                                      schedule.log_snrs)

    # a new session that does not pass the schedule continues with the checkpoint's, not with cfg.schedule
    resumed = Trainer(tiny_unet(), data, config(tmp_path, max_steps=4))
    resumed.fit()
    assert resumed.schedule.name == schedule.name
    assert torch.equal(resumed.schedule.alphas_cumprod, schedule.alphas_cumprod)
    exported = dl.load_pretrained(resumed.export(tmp_path / "export"))
    assert torch.allclose(exported.schedule.alphas_cumprod, schedule.alphas_cumprod, rtol=1e-6, atol=0)
    # so does the command line's export of the training folder
    assert cli_main(["export", str(tmp_path), "--out", str(tmp_path / "cli_export")]) == 0
    exported = dl.load_pretrained(tmp_path / "cli_export")
    assert torch.allclose(exported.schedule.alphas_cumprod, schedule.alphas_cumprod, rtol=1e-6, atol=0)

    # passing another schedule is an error naming it
    with pytest.raises(dl.CheckpointError, match="noise schedule"):
        Trainer(tiny_unet(), data, config(tmp_path, max_steps=5), schedule=custom_schedule(0.5)).fit()


# ----------------------------------------------------------------------------- config checks


def test_resuming_with_settings_that_change_the_run_is_an_error_naming_them(tmp_path):
    data = flipping_data()
    Trainer(tiny_unet(), data, config(tmp_path, max_steps=3)).fit()
    with pytest.raises(dl.CheckpointError) as e:
        Trainer(tiny_unet(), data, config(tmp_path, lr=2e-3, batch_size=4, prediction="v")).fit()
    message = str(e.value)
    for needle in ("lr: 0.001 in the checkpoint, 0.002 now",
                   "effective batch (batch_size x grad_accum_steps): 8 (8 x 1) in the checkpoint, 4 (4 x 1) now",
                   "prediction: 'eps'",
                   "resume=False", "another out_dir"):
        assert needle in message, message
    assert "max_steps" not in message.split("\n  ")[1:], "max_steps may change on resume"
    with pytest.raises(dl.CheckpointError, match="schedule: 'linear' in the checkpoint, 'cosine' now"):
        Trainer(tiny_unet(), data, config(tmp_path, schedule="cosine")).fit()
    with pytest.raises(dl.CheckpointError, match="network config.dropout: 0.0 in the checkpoint, 0.3 now"):
        Trainer(tiny_unet(dropout=0.3), data, config(tmp_path)).fit()
    assert [p.name for p in dl.find_checkpoints(tmp_path)] == ["step_000003.pt"], "nothing was overwritten"

    # what may change: the length of the run, logging, checkpoints, sample grids, speed settings
    allowed = config(tmp_path, max_steps=5, log_every=2, checkpoint_every=5, keep_checkpoints=3,
                     num_sample_images=2, sample_steps=2, sample_every=5, data_on_device=False, mixed_precision="no")
    assert Trainer(tiny_unet(), data, allowed).fit().steps[-1] == 5


def test_check_resume_names_every_field_that_changes_the_run():
    saved = config("runs/x").to_dict()
    state = {"config": saved, "model_config": {"class": "UNet", "image_size": 16}}
    for field, value in [("image_size", 32), ("seed", 1), ("ema_decay", 0.99), ("weighting", "min_snr"),
                         ("num_timesteps", 1000), ("class_dropout", 0.2)]:
        with pytest.raises(dl.CheckpointError, match=rf"{field}: .* in the checkpoint"):
            checkpoint.check_resume(Path("c.pt"), state, {**saved, field: value}, state["model_config"])
    for field, value in [("grad_accum_steps", 2), ("batch_size", 4)]:  # each alone changes the effective batch
        with pytest.raises(dl.CheckpointError, match=r"effective batch \(batch_size x grad_accum_steps\): 8 "):
            checkpoint.check_resume(Path("c.pt"), state, {**saved, field: value}, state["model_config"])
    for field in sorted(checkpoint.RESUMABLE_FIELDS):  # every resumable field is a real TrainConfig field
        assert field in saved, field
    assert checkpoint.check_resume(Path("c.pt"), state, {**saved, "max_steps": 10**6, "out_dir": "elsewhere"},
                                   {"class": "UNet", "image_size": 16}) is None, "no note: the same batch split"
    note = checkpoint.check_resume(Path("c.pt"), state, {**saved, "batch_size": 2, "grad_accum_steps": 4}, None)
    assert "2 images x 4 accumulation steps" in note and "8 x 1" in note and "not end bit for bit" in note
    older = {"config": {k: v for k, v in saved.items() if k != "clip_x0"}}  # a field added since: its default
    checkpoint.check_resume(Path("c.pt"), older, {**saved, "weighting": "uniform"}, None)


# ----------------------------------------------------------------------------- the run lock


def test_a_fresh_lock_of_another_host_is_not_taken_over(tmp_path):
    lock = tmp_path / ".lock"
    lock.write_text("another-machine 999999999")  # no such process here, but it is not ours to judge
    with pytest.raises(FileExistsError) as e:
        checkpoint.RunLock(tmp_path)
    assert "another-machine" in str(e.value) and f"delete {lock}" in str(e.value)
    assert "10 min" in str(e.value)  # says when it will be taken over
    assert lock.read_text() == "another-machine 999999999"
    trainer = Trainer(tiny_unet(), flipping_data(), config(tmp_path / "run", max_steps=1))
    (tmp_path / "run" / ".lock").write_text("another-machine 1")
    with pytest.raises(FileExistsError, match="another-machine"):
        trainer.fit()


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_lock_of_another_host_not_refreshed_for_ten_minutes_is_taken_over(tmp_path):
    """A Colab runtime that disconnected left its lock on Drive; the new runtime is another host."""
    trainer = Trainer(tiny_unet(), flipping_data(), config(tmp_path / "run", max_steps=2, checkpoint_every=1))
    lock = tmp_path / "run" / ".lock"
    lock.write_text("old-colab-vm 4242")
    _age(lock, checkpoint.STALE_AFTER_SECONDS - 60)
    with pytest.raises(FileExistsError, match="old-colab-vm"):
        trainer.fit()
    _age(lock, checkpoint.STALE_AFTER_SECONDS + 60)
    trainer.fit()  # takes the lock over and trains
    assert trainer.step == 2 and not lock.exists()


def test_the_lock_holder_refreshes_it(tmp_path):
    held = checkpoint.RunLock(tmp_path, heartbeat=0.05)
    _age(held.path, 3600)
    deadline = time.time() + 10
    while held._age() > 60 and time.time() < deadline:
        time.sleep(0.05)
    assert held._age() < 60, "the heartbeat did not refresh the lock"
    held.release()
    held._beat.join(timeout=5)
    assert not held.path.exists() and not held._beat.is_alive()


def test_the_lock_is_created_atomically(tmp_path):
    """A lock that appears after any look at the folder (a second run starting at the same moment) still wins."""
    lock = tmp_path / ".lock"
    lock.write_text(f"{socket.gethostname()} {os.getppid()}")  # a live process of this host
    real_exists = Path.exists
    with mock.patch.object(Path, "exists", lambda self: False if self == lock else real_exists(self)), \
            pytest.raises(FileExistsError, match="another training run"):
        checkpoint.RunLock(tmp_path)
    assert lock.read_text() == f"{socket.gethostname()} {os.getppid()}"


def test_a_stale_lock_taken_over_by_another_run_first_is_left_to_it(tmp_path):
    """Two runs find the same stale lock; the second to act must not remove the first one's new lock."""
    lock = tmp_path / ".lock"
    lock.write_text(f"{socket.gethostname()} 999999999")  # stale
    live = f"{socket.gethostname()} {os.getppid()}"
    real_rename = os.rename

    def other_run_first(src, dst):  # the other run replaces the stale lock just before we move it
        Path(src).write_text(live)
        return real_rename(src, dst)

    with mock.patch.object(os, "rename", other_run_first), pytest.raises(FileExistsError, match="another training"):
        checkpoint.RunLock(tmp_path)
    assert lock.read_text() == live and sorted(p.name for p in tmp_path.iterdir()) == [".lock"]


def test_a_stale_lock_of_this_host_is_taken_over_and_released(tmp_path):
    (tmp_path / ".lock").write_text(f"{socket.gethostname()} 999999999")  # e.g. left by kill -9
    lock = checkpoint.RunLock(tmp_path)
    assert (tmp_path / ".lock").read_text() == f"{socket.gethostname()} {os.getpid()}"
    lock.release()
    assert not (tmp_path / ".lock").exists()


# ----------------------------------------------------------------------------- the module


def test_checkpointing_lives_in_its_own_module():
    for name in ("CheckpointError", "save_checkpoint", "load_checkpoint", "find_checkpoints", "latest_checkpoint"):
        assert getattr(dl, name) is getattr(checkpoint, name)
        assert getattr(dl, name).__module__ == "ddpm_lib.checkpoint"
    train_source = (Path(dl.__file__).parent / "train.py").read_text()
    for gone in ("class _RunLock", "def _rng_state", "def _state_digest", "def save_checkpoint", "O_EXCL"):
        assert gone not in train_source
