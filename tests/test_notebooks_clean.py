"""Notebooks are stored without outputs and all start with the same Colab header."""

import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import nbtool  # noqa: E402


def test_there_are_notebooks():
    assert nbtool.NOTEBOOKS, "no notebooks found in notebooks/"


def test_notebooks_are_clean():
    problems = [p for path in nbtool.NOTEBOOKS for p in nbtool.problems(path)]
    assert not problems, "\n".join(problems) + "\nRun `make strip` to fix them."


def test_every_notebook_is_in_the_toc():
    toc = (ROOT / "_toc.yml").read_text()
    missing = [p.stem for p in nbtool.NOTEBOOKS if f"notebooks/{p.stem}" not in toc]
    assert not missing, f"notebooks missing from _toc.yml: {missing}"


def test_header_follows_the_repository_url():
    url = nbtool.repo_url()
    for path in nbtool.NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert url.split("github.com/")[1] in nb.cells[0].source
        assert url in nb.cells[1].source


def test_check_command_reports_a_dirty_notebook(tmp_path, monkeypatch):
    path = tmp_path / "99_dirty.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])
    nb.cells[0].outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "2"}, execution_count=1)]
    nb.cells[0].execution_count = 1
    nbformat.write(nb, path)
    assert any("outputs" in p for p in nbtool.problems(path))
    nbtool.fix(path)
    assert nbtool.problems(path) == []


def test_nbtool_check_runs():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "nbtool.py"), "check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_live_widget_cells_are_skipped_by_the_book_build(tmp_path):
    """A cell that shows a live widget can hang the book build (jupyter/nbclient#312): it must be skipped."""
    live = 'explorer = dl.widgets.schedule_explorer(x, schedule="linear")\nexplorer'
    static = "anim = dl.widgets.schedule_explorer_static(x, vary='beta_end', values=[0.01])"
    assert nbtool.creates_live_widget(live)
    assert nbtool.creates_live_widget("import ipywidgets as w\nw.IntSlider()")
    assert not nbtool.creates_live_widget(static)
    assert not nbtool.creates_live_widget("# dl.widgets.schedule_explorer(x) runs on Colab")
    path = tmp_path / "99_widget.ipynb"
    nb = nbformat.v4.new_notebook(cells=nbtool.header_cells(path) + [nbformat.v4.new_code_cell(live)])
    nbformat.write(nb, path)
    assert any("skip-execution" in p for p in nbtool.problems(path))
    nb.cells[-1].metadata["tags"] = ["remove-output", "skip-execution"]
    nbformat.write(nb, path)
    assert nbtool.problems(path) == []


def test_the_chapter_3_explorer_is_skipped_by_the_book_build():
    """The one live explorer of the book is tagged, and nbval still runs it (nbval ignores the tag)."""
    nb = nbformat.read(ROOT / "notebooks" / "03_noise_schedules.ipynb", as_version=4)
    live = [c for c in nb.cells if c.cell_type == "code" and nbtool.creates_live_widget(c.source)]
    assert live, "chapter 3 should show the live schedule explorer"
    assert all("skip-execution" in c.metadata.get("tags", []) for c in live)
