"""The notebooks run top to bottom with the quick settings, draw pictures, and are committed clean.

All notebooks run once (module fixture) through notebooks.run_all, in order, as `make notebooks`
does; 03 exports the run that 02 trained.
"""

import ast
import re
import sys

import nbformat
import pytest

from notebooks import run_all

NOTEBOOKS = run_all.notebook_paths()
EXPECTED = ["01_explore_data.ipynb", "02_train_and_evaluate.ipynb", "03_export_and_deploy.ipynb",
            "04_compare_losses.ipynb"]


# Scripts are thin wrappers that nothing imports (house style 14), and the loose root modules moved into segkit/.
NOT_IMPORTABLE = {"train", "evaluate", "predict", "export", "cli", "config", "inference", "run_folder", "runtime",
                  "visualize", "tflite_infer", "train_unet_tf"}


def code_cells(nb):
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def imported_modules(source):
    """Top-level names of the modules a cell imports (IPython magics and shell lines left out)."""
    python = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
    names = set()
    for node in ast.walk(ast.parse(python)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_the_notebooks_are_found_in_order():
    assert [p.name for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_is_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    cells = code_cells(nb)
    assert [(c.outputs, c.execution_count) for c in cells] == [([], None)] * len(cells)
    # A markdown introduction, then the parameters a reader changes, which shrink under the tests.
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert nb.cells[1] is cells[0] and "parameters" in cells[0].metadata.get("tags", [])
    assert 'QUICK = os.environ.get("SEGKIT_NOTEBOOK_QUICK") == "1"' in cells[0].source
    # House style 13: notebooks use the packages; they define no model, layer or loss of their own.
    for cell in cells:
        assert not re.search(r"^\s*class\s", cell.source, re.M) and "keras.layers." not in cell.source, cell.source
    # House style 14: they call the library (segkit, data, models, losses, metrics), never a script or a removed module.
    for cell in cells:
        assert not imported_modules(cell.source) & NOT_IMPORTABLE, cell.source


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    committed = {path: path.read_bytes() for path in NOTEBOOKS}
    runs = tmp_path_factory.mktemp("notebook-runs")
    notebooks = run_all.run_all(quick=True, runs_dir=runs, log=lambda message: None)
    return notebooks, committed, runs


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_draws(executed, path):
    notebooks, _, _ = executed
    nb = notebooks[path.name]
    outputs = [output for cell in code_cells(nb) for output in cell.outputs]
    assert [o for o in outputs if o.output_type == "error"] == []
    assert all(cell.execution_count is not None for cell in code_cells(nb))
    pictures = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
    assert len(pictures) >= 1


def test_running_leaves_committed_notebooks_alone(executed):
    _, committed, runs = executed
    for path, content in committed.items():
        assert path.read_bytes() == content, f"{path.name} was rewritten"
    # The run folders went where they were sent, one per training of 02 and a group for 04.
    assert sorted({p.name.split("-")[0] for p in runs.iterdir()}) == ["02", "04"]


def test_a_failing_cell_is_named_and_the_file_kept(tmp_path, capsys):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# broken"),
                nbformat.v4.new_code_cell('import os, sys\nprint(sys.executable, os.environ["SEGKIT_NOTEBOOK_QUICK"])'),
                nbformat.v4.new_code_cell("\nraise ValueError('boom')"),
                nbformat.v4.new_code_cell("never = True")]
    path = tmp_path / "99_broken.ipynb"
    nbformat.write(nb, path)
    content = path.read_bytes()

    assert run_all.main([str(path), "--out", str(tmp_path / "executed")]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: 99_broken.ipynb: cell 2 (\"raise ValueError('boom')\") raised ValueError: boom")
    assert path.read_bytes() == content
    # The executed copy holds the cells up to the failure; the kernel was this Python, not quick.
    ran = nbformat.read(tmp_path / "executed" / "99_broken.ipynb", as_version=4)
    assert ran.cells[1].outputs[0].text == f"{sys.executable} 0\n"
    assert ran.cells[2].outputs[0].ename == "ValueError"
    assert ran.cells[3].outputs == [] and ran.cells[3].execution_count is None
