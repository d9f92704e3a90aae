"""Where the book's files are, and writing JSON files safely (used by several modules).

``ddpm_lib`` is used from a clone of the book's repository (``pip install -e .``):
the small trained models it ships live next to the package, in ``pretrained/``.
This module is the one place that knows that path; ``pipelines`` (``load_pretrained``)
and ``evaluate`` (the MNIST classifier) ask it, and ``dl.book`` re-exports it for
the notebooks. A ``pip install`` of the package alone has no ``pretrained/``, and
asking for a shipped model then says so instead of failing somewhere deeper.

It also decides where training runs live (chapter 10): ``runs_dir()`` is a folder
that survives the end of a session (on Colab, Google Drive, mounted on first use;
elsewhere the repository's ``runs/``), ``run_dir(name, config)`` is one run's folder
there, named after its configuration so that re-running a notebook resumes the same
run and a changed configuration starts a new one, and ``delete_run`` is the only
way the library removes a run: it refuses to delete a run that this Python session
did not create unless ``confirm=True``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

__all__ = [
    "COLAB_RUNS_DIR", "PRETRAINED_DIR", "REPO_ROOT", "RunNotOursError", "delete_run", "on_colab",
    "pretrained_dir", "run_dir", "runs_dir", "write_json",
]

REPO_ROOT = Path(__file__).resolve().parent.parent  # the clone of the book: ddpm_lib/ sits in it
PRETRAINED_DIR = REPO_ROOT / "pretrained"  # the models that ship with the book
COLAB_DRIVE = Path("/content/drive")  # where Colab mounts Google Drive
COLAB_RUNS_DIR = COLAB_DRIVE / "MyDrive" / "diffusion-book" / "runs"  # runs on Colab: on your Drive
RUNS_ENV = "DDPM_RUNS_DIR"  # set it to put runs anywhere (tests use a temporary folder)
RUN_FILE = "run.json"  # written by run_dir: the configuration a run was made with

_created_this_session: set[Path] = set()  # run folders that run_dir created in this process


def pretrained_dir(name: str | None = None) -> Path:
    """The repository's ``pretrained/`` folder, or its entry ``name``; a clear error when it is missing.

    The folder is read from ``PRETRAINED_DIR`` at call time (tests point it elsewhere).
    Only the folder itself is checked: whether ``name`` exists is the caller's question.
    """
    root = PRETRAINED_DIR
    if not root.is_dir():
        raise FileNotFoundError(
            f"there is no pretrained/ folder at {root}: ddpm_lib looks installed without the book's "
            "repository, and the models that ship with the book live in that folder, not in the package. "
            "Clone the repository and install it with `pip install -e .` from the clone, or pass the path "
            "of a model folder (one that dl.export_pipeline wrote) instead of a bare name."
        )
    return root / name if name else root


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically: a reader sees the old file or the new one, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- training runs (chapter 10)


class RunNotOursError(PermissionError):
    """``delete_run`` was asked to delete a run that this session did not create, without confirm=True."""


def on_colab() -> bool:
    """Whether this Python runs on Google Colab (its ``google.colab`` module is imported there)."""
    return "google.colab" in sys.modules


def _mount_drive() -> bool:
    """Mount Google Drive at /content/drive (Colab asks for permission once); False when it fails."""
    if (COLAB_DRIVE / "MyDrive").is_dir():
        return True
    try:
        from google.colab import drive

        drive.mount(str(COLAB_DRIVE))
    except Exception as e:  # refused, no browser, a changed Colab API ...
        warnings.warn(f"could not mount Google Drive ({type(e).__name__}: {e}).", stacklevel=3)
        return False
    return (COLAB_DRIVE / "MyDrive").is_dir()


def runs_dir(mount: bool = True) -> Path:
    """The folder for training runs, created if needed: one that survives the end of a session.

    In order: the folder named by the environment variable ``DDPM_RUNS_DIR``; on Colab,
    ``/content/drive/MyDrive/diffusion-book/runs`` on your Google Drive (mounted here,
    unless ``mount=False``), because a disconnected Colab runtime loses its own disk;
    elsewhere the repository's ``runs/`` (ignored by git). If Drive cannot be mounted,
    a warning says that the runs then live on the runtime's disk, which a disconnect wipes.
    """
    if os.environ.get(RUNS_ENV):
        root = Path(os.environ[RUNS_ENV]).expanduser()
    elif on_colab():
        if mount and _mount_drive():
            root = COLAB_RUNS_DIR
        else:
            root = REPO_ROOT / "runs"
            warnings.warn(
                f"Google Drive is not mounted: runs go to {root} on the Colab runtime's own disk, which a "
                "disconnect wipes. Mount Drive (from google.colab import drive; drive.mount('/content/drive')) "
                "and run this cell again to keep them.", stacklevel=2)
    else:
        root = REPO_ROOT / "runs"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _fingerprint(config: dict[str, Any]) -> str:
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def run_dir(name: str, config: dict[str, Any] | None = None, root: str | os.PathLike | None = None) -> Path:
    """The folder of the training run ``name`` in ``root`` (default ``runs_dir()``); created when new.

    With ``config`` (a JSON-serialisable dict: the settings that define the run), the folder
    is ``name-<8 hex digits of the config's hash>`` and ``run.json`` in it holds the config:
    running the same notebook again (after a disconnect) finds the same folder, and the
    Trainer resumes from its checkpoints; a changed configuration gets a new folder and
    the earlier run stays as it was. Nothing is ever deleted here (see ``delete_run``).
    """
    if not isinstance(name, str) or not name.strip() or any(c in name for c in "/\\:"):
        raise ValueError(f"a run name must be a non-empty string without '/', '\\' or ':', got {name!r}.")
    root = Path(root).expanduser() if root is not None else runs_dir()
    folder = root / (f"{name}-{_fingerprint(config)}" if config is not None else name)
    if not folder.exists():
        folder.mkdir(parents=True)
        _created_this_session.add(folder.resolve())
    elif not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file; choose another run name.")
    if config is not None:
        recorded = folder / RUN_FILE
        if recorded.is_file():
            old = json.loads(recorded.read_text())
            if _fingerprint(old) != _fingerprint(config):  # cannot happen unless the file was edited
                raise ValueError(f"{recorded} records another configuration than the one given; "
                                 "choose a new run name.")
        else:
            write_json(recorded, json.loads(json.dumps(config, default=str)))
    return folder


def delete_run(folder: str | os.PathLike, confirm: bool = False) -> bool:
    """Delete a run folder; True if something was deleted. The one explicit way to start a run over.

    A run that ``run_dir`` created in this Python session may be deleted freely. Any
    other folder (a run from an earlier session: the one a disconnect interrupted) is
    deleted only with ``confirm=True``; without it a ``RunNotOursError`` says so and
    nothing is touched. A missing folder is not an error (returns False).
    """
    folder = Path(folder).expanduser()
    if not folder.exists():
        return False
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file, not a run folder; delete_run deletes run folders only.")
    if folder.resolve() not in _created_this_session and not confirm:
        raise RunNotOursError(
            f"{folder} holds a run that this session did not create (an earlier session's, perhaps the one a "
            "disconnect interrupted); it was not deleted. To continue it, just train again with the same "
            "configuration. To start over, pick a new run name, or call delete_run(folder, confirm=True)."
        )
    shutil.rmtree(folder)
    _created_this_session.discard(folder.resolve())
    return True
