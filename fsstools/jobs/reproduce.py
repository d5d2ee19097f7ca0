"""The main job: run every numbered notebook with papermill and collect one summary.

Each notebook gets its parameters from ``configs/reproduce/<notebook stem>.yaml`` (full
embedded-benchmark settings), then from ``--set key=value`` overrides, and an absolute
``output_dir`` of its own, where it writes its figures, CSVs, ``parameters.json`` and a
``summary.md`` fragment. The kernel runs in the folder ``fsstools reproduce`` was started
from, so a relative path among the overrides means what it means on the command line.

While a notebook runs, its progress streams to the terminal: one line per cell as it
starts, and what the cell prints (a base model's training epochs, reused caches). Kernels
talk to papermill over local IPC sockets (in a temporary folder per kernel), not TCP, so
ipykernel has nothing to warn about.
A failing notebook is reported with its cell and does not stop the others.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import yaml

from fsstools import paths
from fsstools.cache import atomic_write_text
from fsstools.errors import ConfigError
from fsstools.studies.parameters import notebook_declarations
from fsstools.studies.report import SUMMARY_NAME

CELL_START = re.compile(r"^Executing Cell (\d+)")
"""What papermill logs (with log_output) when a cell starts; the number counts from 1."""
INJECTED = "(parameters injected by papermill)"
KERNEL_START_TIMEOUT_S = 300
"""How long a kernel may take to start: papermill's 60 s are too few on a loaded machine
(several notebooks of a sweep starting at once)."""
FIGURE_SUFFIX = ".png"


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
            names = ", ".join(p.stem for p in sorted(folder.glob("[0-9][0-9]_*.ipynb")))
            raise ConfigError(f"no notebook in {folder} matches --only {' '.join(only)}; "
                              f"the notebooks are {names}")
    return books


def notebook_params(notebook: Path, out: Path, overrides: dict) -> dict:
    """The reproduce config's parameters of ``notebook``, the ``overrides`` it declares (a
    notebook rejects any other), and its output folder ``<out>/<notebook stem>``."""
    path = paths.configs_dir() / "reproduce" / f"{notebook.stem}.yaml"
    params = yaml.safe_load(path.read_text()) if path.is_file() else {}
    params = dict(params or {})
    declared = notebook_declarations(notebook)
    params.update({k: v for k, v in overrides.items() if k in declared})
    params["output_dir"] = str(paths.resolve(out) / notebook.stem)
    return params


def cell_titles(notebook: Path) -> list[str]:
    """One short title per cell of ``notebook`` as papermill runs it (its injected
    parameters cell included): the first line of code, or the heading of markdown."""
    import nbformat

    titles = []
    for cell in nbformat.read(notebook, as_version=4).cells:
        lines = [ln.strip() for ln in cell.source.splitlines() if ln.strip()]
        first = lines[0] if lines else "(empty)"
        titles.append(first if cell.cell_type == "code" else f"[{cell.cell_type}] {first}")
        if "parameters" in cell.metadata.get("tags", []):
            titles.append(INJECTED)
    return titles


class CellProgress(logging.Handler):
    """Turns papermill's "Executing Cell N" log records into one line per started cell;
    every other record (cell outputs, which arrive through :class:`StreamLines`) is dropped."""

    def __init__(self, name: str, titles: list[str], write: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self.name, self.titles, self.write = name, titles, write

    def emit(self, record: logging.LogRecord) -> None:
        match = CELL_START.match(record.getMessage())
        if match:
            n = int(match.group(1))
            title = self.titles[n - 1] if n <= len(self.titles) else ""
            self.write(f"[{self.name}] cell {n}/{len(self.titles)}: {title[:80]}")


class StreamLines:
    """A file-like sink for a kernel's stdout or stderr: complete lines, indented, to
    ``target``; a line rewritten in place (``\\r``, progress bars) shows its last state."""

    def __init__(self, target: TextIO, indent: str = "    ") -> None:
        self.target, self.indent, self.pending = target, indent, ""

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            line = line.rsplit("\r", 1)[-1]
            if line.strip():
                self.target.write(f"{self.indent}{line}\n")
        self.target.flush()
        return len(text)

    def flush(self) -> None:
        if self.pending.rsplit("\r", 1)[-1].strip():
            self.write("\n")


def _describe_failure(exc: Exception) -> str:
    # papermill's PapermillExecutionError carries the failing cell's position and error.
    cell = getattr(exc, "exec_count", None) or getattr(exc, "cell_index", "?")
    ename = getattr(exc, "ename", type(exc).__name__)
    evalue = getattr(exc, "evalue", str(exc))
    return f"cell {cell}: {ename}: {evalue}"


def run_notebook(
    notebook: Path, out: Path, overrides: dict, kernel: str = "python3",
    stream: TextIO | None = None,
) -> NotebookRun:
    """Run one notebook with its reproduce parameters and ``overrides``.

    Args:
        notebook: the notebook file.
        out: the main job's folder; the notebook writes into ``out/<notebook stem>``.
        overrides: parameter values over the reproduce config's.
        kernel: Jupyter kernel name.
        stream: where progress lines and the cells' printed output go (default stdout;
            None in tests that want silence: pass ``io.StringIO()``).
    """
    params = notebook_params(notebook, out, overrides)
    return execute(notebook, Path(params["output_dir"]), params, kernel, stream)


def execute(
    notebook: Path, out_dir: Path, params: dict, kernel: str = "python3",
    stream: TextIO | None = None,
) -> NotebookRun:
    """Run ``notebook`` with exactly ``params`` (``output_dir`` included when it should be
    set), saving the executed copy as ``out_dir/<notebook name>``; its cells' progress and
    printed output go to ``stream`` (default stdout). A failure is returned, not raised."""
    import papermill as pm
    from traitlets.config import Config

    stream = sys.stdout if stream is None else stream
    out_dir.mkdir(parents=True, exist_ok=True)
    kernel_config = Config()
    kernel_config.KernelManager.transport = "ipc"  # local sockets: no unencrypted TCP
    # Each kernel's sockets in a folder of its own: jupyter's default names them after the
    # working folder, where kernels started at once (a sweep's points) would take the same.
    sockets = tempfile.mkdtemp(prefix="fsstools-kernel-")
    kernel_config.KernelManager.ip = os.path.join(sockets, "kernel-ipc")
    logger = logging.getLogger("papermill")
    progress = CellProgress(notebook.stem, cell_titles(notebook),
                            lambda line: print(line, file=stream, flush=True))
    previous = logger.level
    logger.addHandler(progress)
    logger.setLevel(logging.INFO)
    sink = StreamLines(stream)
    start = time.perf_counter()
    error = None
    try:
        pm.execute_notebook(
            str(notebook),
            str(out_dir / notebook.name),
            parameters=params,
            kernel_name=kernel,
            cwd=os.getcwd(),
            progress_bar=False,
            log_output=True,
            stdout_file=sink,
            stderr_file=sink,
            config=kernel_config,
            start_timeout=KERNEL_START_TIMEOUT_S,
        )
    except Exception as exc:  # any failure is reported per notebook; the others still run
        error = _describe_failure(exc)
    finally:
        sink.flush()
        shutil.rmtree(sockets, ignore_errors=True)
        logger.removeHandler(progress)
        logger.setLevel(previous)
    return NotebookRun(notebook.stem, time.perf_counter() - start, out_dir, error)


def figures(folder: Path) -> list[Path]:
    """The PNG figures a notebook wrote into ``folder``, in the order it wrote them."""
    return sorted(folder.glob(f"*{FIGURE_SUFFIX}"), key=lambda p: (p.stat().st_mtime, p.name))


def write_summary(runs: list[NotebookRun], out: Path) -> Path:
    """Concatenate each notebook's summary fragment into ``out/summary.md``, each followed
    by links to that notebook's figures (relative to ``out``)."""
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
        pictures = figures(r.output_dir) if r.output_dir.is_dir() else []
        if pictures:
            lines += [f"Figures of {r.notebook}:", ""]
            for png in pictures:
                rel = Path(os.path.relpath(png, out)).as_posix()
                lines += [f"![{r.notebook}: {png.stem}]({rel})", ""]
    return atomic_write_text(out / SUMMARY_NAME, "\n".join(lines) + "\n")


def reproduce(
    only: list[str] | None = None, overrides: dict | None = None, out: Path | None = None
) -> list[NotebookRun]:
    """Run the notebooks (``only``: those whose name starts with one of these prefixes) with
    their full parameters and ``overrides``; write ``<out>/summary.md``."""
    out = paths.resolve(out or paths.outputs_dir())
    books = list_notebooks(only)
    runs = []
    total = time.perf_counter()
    whole = only is None  # the whole main job: its time and machine go into run.json
    if whole:
        from fsstools.jobs import publish

        clock = publish.RunClock(out)
        if clock.state["invocations"] > 1:
            print(f"resuming the main job in {out} (invocation {clock.state['invocations']}; "
                  f"time so far kept in {clock.path.name})", flush=True)
    for i, nb in enumerate(books, 1):
        print(f"[{i}/{len(books)}] {nb.name} ...", flush=True)
        if whole:
            clock.start(nb.stem)
        run = run_notebook(nb, out, overrides or {})
        if whole:
            clock.stop()
        state = "ok" if run.error is None else f"FAILED in {nb.name}, {run.error}"
        print(f"[{i}/{len(books)}] {nb.name} {state} ({run.seconds:.0f} s)", flush=True)
        runs.append(run)
    path = write_summary(runs, out)
    if whole:
        timed = clock.finish()
        publish.write_run_record(out, timed["seconds"], timed["started"],
                                 timed["invocations"], timed["untimed_earlier"])
    print(f"summary: {path} (total {time.perf_counter() - total:.0f} s)")
    return runs
