"""The notebooks (notebooks/*.ipynb) run top to bottom in their QUICK mode, print no warnings, and are stored clean.

Each notebook has one code cell tagged ``parameters`` (``QUICK = True``, ``OUT``), the papermill
convention; the test runs the notebook as stored, with one cell inserted after that one that points
``OUT`` to a temporary folder.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_the_expected_notebooks_exist():
    names = {p.stem for p in NOTEBOOKS}
    assert {"phase_diagram", "theory_vs_simulation", "fig1", "fig2", "fig5", "fig6"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: clear the outputs"


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory):
    """One persistent XLA compilation cache for all the notebook kernels of this run: they share the
    simulator's tiny shapes, so only the first kernel compiles (a speed-up only; results unchanged)."""
    return str(tmp_path_factory.mktemp("jax_cache"))


# The figure notebooks call the same figure modules that tests/test_figures.py runs at tiny sizes; three of them are
# run only with ``-m slow`` (70 s of the default run's time budget), fig2 stands for them in the default run.
FIGURE_WRAPPERS_RUN_SLOW = {"fig1", "fig5", "fig6"}


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if p.stem in FIGURE_WRAPPERS_RUN_SLOW else p
                                  for p in NOTEBOOKS], ids=lambda p: p.stem)
def test_notebook_runs_in_quick_mode(path, tmp_path, monkeypatch, jax_cache):
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", jax_cache)
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    params = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, f"{path.name}: exactly one cell tagged 'parameters'"
    assert "QUICK = True" in nb.cells[params[0]].source, f"{path.name}: QUICK must default to True"
    nb.cells.insert(params[0] + 1, nbformat.v4.new_code_cell(f"OUT = Path({str(tmp_path / 'out')!r})"))
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    stderr = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                     if o.output_type == "stream" and o.name == "stderr")
    assert "Warning" not in stderr, f"{path.name} printed warnings:\n{stderr[:2000]}"
    assert any((tmp_path / "out").iterdir())  # each notebook writes what it computes under OUT
