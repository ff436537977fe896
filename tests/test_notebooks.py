"""The notebooks are committed with the outputs of a real run on `avmnist`, and run top to bottom with a
real kernel in the small setting (`tiny`, one epoch)."""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

MAX_NOTEBOOK_BYTES = 2_000_000
NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_notebooks_are_committed_with_the_outputs_of_a_real_run():
    # A reader sees the figures without running anything: every code cell ran, none failed, the first
    # printed a setting on the real dataset (not the tests' `tiny`), and the file stays small.
    assert NOTEBOOKS, "no notebooks found"
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        unrun = [i for i, cell in enumerate(code) if cell.get("execution_count") is None]
        assert not unrun, f"{path.name}: code cells {unrun} have no outputs; execute the notebook in its real setting"
        errors = [output for cell in code for output in cell.outputs if output.get("output_type") == "error"]
        assert not errors, f"{path.name}: committed with an error output"
        setting = "".join(output.get("text", "") for output in code[0].outputs)
        assert "setting: avmnist" in setting, f"{path.name}: outputs not from the real avmnist setting: {setting!r}"
        assert path.stat().st_size < MAX_NOTEBOOK_BYTES, f"{path.name}: {path.stat().st_size} bytes"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    monkeypatch.setenv("MMKERAS_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("MMKERAS_NOTEBOOK_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [
        output for cell in notebook.cells for output in cell.get("outputs", []) if output.get("output_type") == "error"
    ]
    assert not errors
    assert os.environ.get("MMKERAS_CACHE_DIR")  # the kernel inherited the session's isolated cache
