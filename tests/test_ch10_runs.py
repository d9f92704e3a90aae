"""Where chapter 10's runs live (Drive on Colab, else a local folder), and that starting over is explicit."""

import json
import sys
import types
from pathlib import Path

import pytest

import ddpm_lib as dl
from ddpm_lib import paths


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(paths.RUNS_ENV, raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)


def fake_colab(monkeypatch, tmp_path, mount_works=True):
    """A stand-in google.colab whose drive.mount creates MyDrive under tmp_path (as Colab does under /content)."""
    drive_root = tmp_path / "content" / "drive"
    calls = []

    def mount(where):
        calls.append(where)
        if not mount_works:
            raise RuntimeError("mount failed: the user did not allow access")
        (drive_root / "MyDrive").mkdir(parents=True)

    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=mount)
    google = sys.modules.get("google") or types.ModuleType("google")
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setattr(google, "colab", colab, raising=False)
    monkeypatch.setattr(paths, "COLAB_DRIVE", drive_root)
    monkeypatch.setattr(paths, "COLAB_RUNS_DIR", drive_root / "MyDrive" / "diffusion-book" / "runs")
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path / "content" / "book")
    return calls, drive_root


def test_local_default_is_the_repository_runs_folder(no_env):
    assert dl.runs_dir() == paths.REPO_ROOT / "runs" and dl.runs_dir().is_dir()


def test_environment_variable_wins(no_env, monkeypatch, tmp_path):
    monkeypatch.setenv(paths.RUNS_ENV, str(tmp_path / "elsewhere"))
    assert dl.runs_dir() == tmp_path / "elsewhere" and (tmp_path / "elsewhere").is_dir()


def test_colab_mounts_drive_and_puts_runs_there(no_env, monkeypatch, tmp_path):
    calls, drive_root = fake_colab(monkeypatch, tmp_path)
    root = dl.runs_dir()
    assert calls == [str(drive_root)], "Drive is mounted at /content/drive"
    assert root == drive_root / "MyDrive" / "diffusion-book" / "runs" and root.is_dir()
    assert dl.runs_dir() == root and len(calls) == 1, "an already mounted Drive is not mounted again"
    assert paths.COLAB_RUNS_DIR.relative_to(paths.COLAB_DRIVE) == Path("MyDrive/diffusion-book/runs")


def test_colab_without_drive_warns_that_a_disconnect_wipes_the_runs(no_env, monkeypatch, tmp_path):
    fake_colab(monkeypatch, tmp_path, mount_works=False)
    with pytest.warns(UserWarning, match="disconnect wipes"):
        root = dl.runs_dir()
    assert root == tmp_path / "content" / "book" / "runs"


def test_real_colab_paths():
    assert str(paths.COLAB_RUNS_DIR) == "/content/drive/MyDrive/diffusion-book/runs"


def test_same_config_same_run_other_config_new_run(tmp_path):
    cfg = {"lr": 1e-3, "steps": 10, "unet": {"widths": [8, 16]}}
    a = dl.run_dir("project", cfg, root=tmp_path)
    (a / "checkpoints").mkdir()
    (a / "checkpoints" / "step_000008.pt").write_bytes(b"x")
    again = dl.run_dir("project", json.loads(json.dumps(cfg)), root=tmp_path)  # a new session, same settings
    assert again == a and (a / "checkpoints" / "step_000008.pt").read_bytes() == b"x", "nothing was deleted"
    assert json.loads((a / "run.json").read_text()) == cfg
    other = dl.run_dir("project", {**cfg, "lr": 2e-3}, root=tmp_path)
    assert other != a and other.name.startswith("project-") and a.is_dir()
    assert dl.run_dir("plain", root=tmp_path) == tmp_path / "plain"


def test_delete_run_refuses_a_run_this_session_did_not_create(tmp_path, monkeypatch):
    earlier = tmp_path / "earlier-run"
    (earlier / "checkpoints").mkdir(parents=True)  # made by an earlier session
    assert dl.run_dir("earlier-run", root=tmp_path) == earlier
    with pytest.raises(dl.RunNotOursError, match="did not create.*confirm=True"):
        dl.delete_run(earlier)
    assert (earlier / "checkpoints").is_dir(), "a refused delete touches nothing"
    assert dl.delete_run(earlier, confirm=True) and not earlier.exists()
    mine = dl.run_dir("mine", {"a": 1}, root=tmp_path)  # created now
    assert dl.delete_run(mine) and not mine.exists()
    assert dl.delete_run(mine) is False, "a missing run is not an error"
    monkeypatch.setattr(paths, "_created_this_session", set())  # a new Python session
    again = dl.run_dir("mine", {"a": 1}, root=tmp_path)
    monkeypatch.setattr(paths, "_created_this_session", set())
    with pytest.raises(dl.RunNotOursError):
        dl.delete_run(again)


@pytest.mark.parametrize("name", ["", "a/b", "c:d", 3])
def test_bad_run_names(tmp_path, name):
    with pytest.raises(ValueError, match="run name"):
        dl.run_dir(name, root=tmp_path)


def test_notebook_never_deletes_a_run():
    """Chapter 10 resumes when run again: no FRESH_START switch, no rmtree of a run folder."""
    import nbformat

    nb = nbformat.read(Path(__file__).resolve().parent.parent / "notebooks" / "10_project.ipynb", 4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "FRESH_START" not in code
    for line in code.splitlines():
        if "rmtree" in line:
            assert "OUT" not in line and "RUNS" not in line, line
    assert "dl.run_dir(" in code and "dl.runs_dir()" in code
