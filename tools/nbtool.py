"""Keep the chapter notebooks clean: no outputs, and the same Colab header everywhere.

    python tools/nbtool.py check   # exit 1 and list problems (the tests call this)
    python tools/nbtool.py fix     # strip outputs, refresh the badge and install cells
    python tools/nbtool.py fix notebooks/05_unets.ipynb   # the same, for the named notebooks only

The repository address is read from ``_config.yml`` (``repository: url:``), the one
place it is written; the badge and install cell of every notebook follow it.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
BADGE_TAG, INSTALL_TAG = "colab-badge", "colab-install"
# A cell that displays a live ipywidget sometimes never returns to the notebook client
# (jupyter/nbclient#312), which hangs `make book`. Such cells carry myst-nb's / nbclient's
# `skip-execution` tag: the book build skips them (the site shows a static stand-in),
# while nbval (`make test`), Jupyter and Colab still run them.
SKIP_TAG = "skip-execution"
LIVE_WIDGET = re.compile(
    r"\b(?:schedule_explorer|ScheduleExplorer|interactive|interact|interact_manual)\s*\("
    r"|\bimport\s+ipywidgets|\bfrom\s+ipywidgets\s+import|\bwidgets\.(?:[A-Z]\w*)\s*\("
)


def repo_url() -> str:
    text = (ROOT / "_config.yml").read_text()
    match = re.search(r"^repository:\s*\n(?:\s+#.*\n)*(?:\s+\w+:.*\n)*?\s+url:\s*(\S+)", text, re.M)
    if not match:
        raise SystemExit("_config.yml has no 'repository: url:' entry")
    return match.group(1).rstrip("/")


def header_cells(path: Path) -> list:
    url = repo_url()
    owner_repo = url.split("github.com/")[1]
    colab = f"https://colab.research.google.com/github/{owner_repo}/blob/main/notebooks/{path.name}"
    badge = nbformat.v4.new_markdown_cell(
        f"[![Open In Colab](../book/_static/open-in-colab.svg)]({colab})",
        metadata={"tags": [BADGE_TAG]},
    )
    install = nbformat.v4.new_code_cell(
        "# On Colab: fetch the book's repository (library and small pretrained models) and\n"
        "# install it. Everywhere else this cell does nothing: run `make book` or `make test`.\n"
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        "    import subprocess\n"
        "\n"
        f'    repo = "{url}"\n'
        '    subprocess.run(["git", "clone", "--depth", "1", repo, "/content/book"], check=False)\n'
        '    pip = [sys.executable, "-m", "pip", "install", "-q", "-e", "/content/book"]\n'
        '    subprocess.run(pip, check=True)\n'
        '    sys.path.insert(0, "/content/book")',
        metadata={"tags": [INSTALL_TAG, "hide-cell"]},
    )
    return [badge, install]


def problems(path: Path) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            found.append(f"{path.name}: cell {i} has outputs or an execution count")
        if cell.cell_type == "code" and creates_live_widget(cell.source) and \
                SKIP_TAG not in cell.metadata.get("tags", []):
            found.append(f"{path.name}: cell {i} shows a live widget but lacks the '{SKIP_TAG}' tag "
                         "(the book build would hang on it; tag it and show a static stand-in)")
    expected = header_cells(path)
    for i, want in enumerate(expected):
        if len(nb.cells) <= i or nb.cells[i].source != want.source:
            found.append(f"{path.name}: cell {i} is not the standard Colab header cell")
    return found


def creates_live_widget(source: str) -> bool:
    """Whether a code cell builds a live ipywidget (comments do not count)."""
    code = "\n".join(line.split("#", 1)[0] for line in source.splitlines())
    return bool(LIVE_WIDGET.search(code))


def fix(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if not {BADGE_TAG, INSTALL_TAG} & set(c.metadata.get("tags", []))]
    for cell in cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("execution", None)
        cell.metadata.pop("collapsed", None)
        cell.metadata.pop("scrolled", None)
    nb.cells = header_cells(path) + cells
    # Stable cell ids (position and content), so that `fix` twice changes nothing.
    for i, cell in enumerate(nb.cells):
        cell.id = hashlib.sha1(f"{i}:{cell.source}".encode()).hexdigest()[:8]
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    nbformat.validator.normalize(nb)
    nbformat.write(nb, path)


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "check"
    if command == "fix":
        paths = [Path(a).resolve() for a in argv[2:]] or NOTEBOOKS
        for path in paths:
            fix(path)
        print(f"fixed {len(paths)} notebooks")
        return 0
    if command == "check":
        found = [p for path in NOTEBOOKS for p in problems(path)]
        print("\n".join(found) or f"{len(NOTEBOOKS)} notebooks are clean")
        if found:
            print("run `make strip` (python tools/nbtool.py fix) to clean them")
        return 1 if found else 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
