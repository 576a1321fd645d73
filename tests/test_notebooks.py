"""The notebooks in ``notebooks/`` run top to bottom and are committed without outputs.

Each notebook is executed with ``nbclient`` in a fresh ``python3`` kernel of this interpreter,
with ``SQAIR_NOTEBOOK_SMALL=1`` (tiny data, 32 hidden units, a few steps) and a temporary
working directory, so whatever the notebooks write (``runs/notebooks/...``) stays out of the
repository. The executed copy is never written back.
"""

import json
import re
import sys
import time
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
EXPECTED = {
    "01_train_sqair_with_svi.ipynb",
    "02_edit_the_model_and_guide.ipynb",
    "03_conditional_generation.ipynb",
}
#: Seconds one cell may run; the small settings need a few seconds per cell.
CELL_TIMEOUT = 600
#: First cell injected into the executed copy: the kernel reports its interpreter.
WHICH_PYTHON = "import sys\nprint(sys.executable, end='')"


def test_the_notebooks_are_there():
    assert EXPECTED <= {path.name for path in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
    notebook = json.loads(path.read_text())
    assert notebook["nbformat"] == 4
    for number, cell in enumerate(notebook["cells"]):
        where = f"{path.name}, cell {number}"
        assert "id" in cell, f"{where} has no id (nbformat 4.5 needs one per cell)"
        if cell["cell_type"] != "code":
            continue
        assert cell.get("outputs") == [], f"{where} has outputs: clear them before committing"
        assert cell.get("execution_count") is None, f"{where} has an execution count"
    assert "widgets" not in notebook.get("metadata", {}), f"{path.name} holds widget state"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    # The kernel inherits this environment.
    monkeypatch.setenv("SQAIR_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny tensors: threads only cost
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # quiet debugger warning
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.insert(0, nbformat.v4.new_code_cell(WHICH_PYTHON))
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory
    )
    started = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the traceback, if a cell fails
    seconds = time.perf_counter() - started
    print(f"{path.name}: {seconds:.1f} s")

    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert not errors, errors
    # The kernel ran this interpreter (the venv's python), not some other python3.
    reported = "".join(o.get("text", "") for o in notebook.cells[0].outputs).strip()
    assert reported == sys.executable, f"the kernel ran {reported}, not {sys.executable}"
    # The notebook wrote where it was told to, not into the repository.
    assert (tmp_path / "runs" / "notebooks").is_dir()
    # Notebook 01's SVI loop must not make the model worse: the held-out bound (same draws
    # before and after) may not fall by more than 0.5 nats per frame.
    text = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))
    found = re.search(r"held-out bound per frame: (\S+) before, (\S+) after", text)
    if path.name.startswith("01_"):
        assert found, "notebook 01 printed no held-out bound before and after training"
        before, after = float(found.group(1)), float(found.group(2))
        print(f"{path.name}: held-out bound per frame {before} -> {after}")
        assert after >= before - 0.5, (before, after)
