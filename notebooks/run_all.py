"""Run the notebooks top to bottom, as a reader would, without rewriting the committed files.

    python -m notebooks.run_all                    # every notebook, with its own parameters (minutes)
    python -m notebooks.run_all --quick            # tiny settings (SEGKIT_NOTEBOOK_QUICK=1), as the tests do
    python -m notebooks.run_all 02 03 --out /tmp/executed   # some notebooks; keep the executed copies

Each notebook is read into memory and executed there, in a fresh kernel of this Python (so
the venv's packages), with the notebooks/ folder as working directory. The .ipynb files are
never written; `--out` saves executed copies elsewhere (also of a notebook that failed, up to
the failing cell). Run folders the notebooks train go to runs/notebooks/ (or --runs-dir).
Exit status 1, with the notebook and cell named, when a cell raises.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat

NOTEBOOKS_DIR = Path(__file__).resolve().parent
KERNEL_NAME = "python3"


class NotebookError(Exception):
    """A cell of a notebook raised; the message names the notebook, the cell and the error."""


def notebook_paths(names=()) -> list:
    """The notebooks in order; `names` picks some by file name or number prefix ("02", "02_train...")."""
    paths = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
    if not names:
        return paths
    chosen = []
    for name in names:
        given = Path(name)
        if given.suffix == ".ipynb" and given.is_file():
            chosen.append(given.resolve())
            continue
        found = [p for p in paths if p.name == name or p.stem == name or p.name.startswith(f"{name}_")]
        if not found:
            raise NotebookError(f"no notebook {name!r}; choose from {[p.name for p in paths]}")
        chosen += found
    return chosen


def _kernel_manager(spec_root: Path):
    """A kernel manager whose "python3" is this interpreter, whatever kernels the user has installed."""
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    spec_dir = spec_root / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python 3 ({sys.executable})", "language": "python"}))
    specs = KernelSpecManager(kernel_dirs=[str(spec_root / "kernels")])
    return AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)


def _failed_cell(nb) -> tuple:
    """(index, first source line, "ename: evalue") of the first cell with an error output."""
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                first = next((line for line in cell.source.splitlines() if line.strip()), "")
                return index, first, f"{output.get('ename')}: {output.get('evalue')}"
    return None, "", ""


def run_notebook(path, *, quick: bool = False, runs_dir=None, out_dir=None, timeout: int | None = None):
    """Execute the notebook at `path` in memory and return the executed copy.

    quick: set SEGKIT_NOTEBOOK_QUICK=1, which the notebooks' parameter cells read to shrink the work.
    runs_dir: where the notebooks put run folders (SEGKIT_NOTEBOOK_RUNS; default runs/notebooks).
    out_dir: also write the executed copy there (never over the committed file).
    timeout: seconds allowed per cell (default 600 quick, 3600 otherwise).
    Raises NotebookError naming the notebook and cell when a cell raises.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    path = Path(path).resolve()
    nb = nbformat.read(path, as_version=4)
    env = {**os.environ, "SEGKIT_NOTEBOOK_QUICK": "1" if quick else "0", "TF_CPP_MIN_LOG_LEVEL": "2",
           "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    if runs_dir is not None:
        env["SEGKIT_NOTEBOOK_RUNS"] = str(Path(runs_dir).resolve())
    problem = None
    with tempfile.TemporaryDirectory(prefix="segkit-kernel-") as scratch:
        client = NotebookClient(nb, km=_kernel_manager(Path(scratch)),
                                timeout=timeout or (600 if quick else 3600), allow_errors=False,
                                resources={"metadata": {"path": str(path.parent)}})
        # What a cell prints reaches the notebook; the kernel's own stderr (TensorFlow's start-up
        # banner, or why the kernel died) goes to a log, shown only when the kernel dies.
        log_path = Path(scratch) / "kernel-stderr.log"
        with open(log_path, "w") as kernel_log:
            try:
                client.execute(cleanup_kc=True, env=env, stderr=kernel_log)
            except CellExecutionError:
                index, first, error = _failed_cell(nb)
                problem = f"{path.name}: cell {index} ({first!r}) raised {error}"
            except (CellTimeoutError, DeadKernelError) as exc:
                problem = f"{path.name}: {type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
                if isinstance(exc, DeadKernelError):
                    tail = log_path.read_text(errors="replace").strip().splitlines()[-15:]
                    problem += "".join(f"\n  kernel: {line}" for line in tail)
    if out_dir is not None:
        out = Path(out_dir).resolve()
        if out == path.parent:
            raise NotebookError(f"--out {out} is the notebooks folder; executed copies must go elsewhere")
        out.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out / path.name)
    if problem:
        raise NotebookError(problem)
    return nb


def run_all(names=(), *, quick: bool = False, runs_dir=None, out_dir=None, timeout=None, log=print) -> dict:
    """Execute the chosen notebooks in order; {file name: executed notebook}. Stops at the first failure."""
    executed = {}
    for path in notebook_paths(names):
        start = time.perf_counter()
        log(f"{path.name}: running{' (quick)' if quick else ''} ...")
        executed[path.name] = run_notebook(path, quick=quick, runs_dir=runs_dir, out_dir=out_dir, timeout=timeout)
        log(f"{path.name}: ok in {time.perf_counter() - start:.0f} s")
    return executed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebooks to run, by number or file name (default: all)")
    parser.add_argument("--quick", action="store_true", help="tiny settings, as in the tests (SEGKIT_NOTEBOOK_QUICK=1)")
    parser.add_argument("--out", help="write the executed notebooks to this folder")
    parser.add_argument("--runs-dir", help="folder for the run folders the notebooks write (default runs/notebooks)")
    parser.add_argument("--timeout", type=int, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    try:
        run_all(args.names, quick=args.quick, runs_dir=args.runs_dir, out_dir=args.out, timeout=args.timeout)
    except NotebookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
