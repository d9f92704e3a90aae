"""Where the book's files are, and writing JSON files safely (used by several modules).

``ddpm_lib`` is used from a clone of the book's repository (``pip install -e .``):
the small trained models it ships live next to the package, in ``pretrained/``.
This module is the one place that knows that path; ``pipelines`` (``load_pretrained``)
and ``evaluate`` (the MNIST classifier) ask it, and ``dl.book`` re-exports it for
the notebooks. A ``pip install`` of the package alone has no ``pretrained/``, and
asking for a shipped model then says so instead of failing somewhere deeper.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["PRETRAINED_DIR", "REPO_ROOT", "pretrained_dir", "write_json"]

REPO_ROOT = Path(__file__).resolve().parent.parent  # the clone of the book: ddpm_lib/ sits in it
PRETRAINED_DIR = REPO_ROOT / "pretrained"  # the models that ship with the book


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
