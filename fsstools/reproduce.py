"""The main job: run every numbered notebook with papermill and collect one summary.

Each notebook gets its parameters from ``configs/reproduce/<notebook stem>.yaml`` (full
embedded-benchmark settings), then from ``--set key=value`` overrides, and writes its
figures, CSVs and a ``summary.md`` fragment into its own output folder. A failing notebook
is reported with its cell and does not stop the others.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from fsstools import paths
from fsstools.artifacts import atomic_write_text
from fsstools.report import SUMMARY_NAME


@dataclass
class NotebookRun:
    notebook: str
    seconds: float
    output_dir: Path
    error: str | None = None


def list_notebooks(only: list[str] | None = None) -> list[Path]:
    """Numbered notebooks, optionally those whose stem starts with one of ``only`` (e.g. "02")."""
    folder = paths.notebooks_dir()
    books = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if only:
        books = [p for p in books if any(p.stem.startswith(o) for o in only)]
        if not books:
            raise ValueError(f"no notebook in {folder} matches --only {only}")
    return books


def notebook_params(notebook: Path, out: Path, overrides: dict) -> dict:
    path = paths.configs_dir() / "reproduce" / f"{notebook.stem}.yaml"
    params = yaml.safe_load(path.read_text()) if path.is_file() else {}
    params = dict(params or {})
    params.update(overrides)
    params["output_dir"] = str(out / notebook.stem)
    return params


def _describe_failure(exc: Exception) -> str:
    # papermill's PapermillExecutionError carries the failing cell's position and error.
    cell = getattr(exc, "exec_count", None) or getattr(exc, "cell_index", "?")
    ename = getattr(exc, "ename", type(exc).__name__)
    evalue = getattr(exc, "evalue", str(exc))
    return f"cell {cell}: {ename}: {evalue}"


def run_notebook(
    notebook: Path, out: Path, overrides: dict, kernel: str = "python3"
) -> NotebookRun:
    import papermill as pm

    params = notebook_params(notebook, out, overrides)
    out_dir = Path(params["output_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    error = None
    try:
        pm.execute_notebook(
            str(notebook),
            str(out_dir / notebook.name),
            parameters=params,
            kernel_name=kernel,
            cwd=str(out_dir),
            progress_bar=False,
            log_output=True,
        )
    except Exception as exc:  # any failure is reported per notebook; the others still run
        error = _describe_failure(exc)
    return NotebookRun(notebook.stem, time.perf_counter() - start, out_dir, error)


def write_summary(runs: list[NotebookRun], out: Path) -> Path:
    """Concatenate each notebook's summary fragment into ``out/summary.md``."""
    lines = ["# fsstools main job: summary", ""]
    lines += ["| notebook | status | wall time (s) |", "|---|---|---|"]
    for r in runs:
        status = "ok" if r.error is None else f"FAILED ({r.error})"
        lines.append(f"| {r.notebook} | {status} | {r.seconds:.0f} |")
    lines.append("")
    for r in runs:
        fragment = r.output_dir / SUMMARY_NAME
        if fragment.is_file():
            lines += [fragment.read_text().rstrip(), ""]
    return atomic_write_text(out / SUMMARY_NAME, "\n".join(lines) + "\n")


def reproduce(
    only: list[str] | None = None, overrides: dict | None = None, out: Path | None = None
) -> list[NotebookRun]:
    """Run the notebooks (``only``: those whose name starts with one of these prefixes) with
    their full parameters and ``overrides``; write ``<out>/summary.md``."""
    out = out or paths.outputs_dir()
    books = list_notebooks(only)
    runs = []
    total = time.perf_counter()
    for i, nb in enumerate(books, 1):
        print(f"[{i}/{len(books)}] {nb.name} ...", flush=True)
        run = run_notebook(nb, out, overrides or {})
        state = "ok" if run.error is None else f"FAILED in {nb.name}, {run.error}"
        print(f"[{i}/{len(books)}] {nb.name} {state} ({run.seconds:.0f} s)", flush=True)
        runs.append(run)
    path = write_summary(runs, out)
    print(f"summary: {path} (total {time.perf_counter() - total:.0f} s)")
    return runs
