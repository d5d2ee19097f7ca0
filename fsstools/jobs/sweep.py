"""Sweeps on submitit: every point of a grid as one job, locally or on SLURM, gathered.

:func:`run_sweep` checks every point (:func:`fsstools.jobs.sweep_plan.plan`) before anything is
written, then submits the points that have no finished run through submitit's own
executors:

- ``local``: one process per point on this machine, ``jobs`` at a time (default 1); the
  jobs see the GPUs this process sees;
- ``slurm``: one job array (``sbatch`` file written by submitit) with the partition, GPUs,
  CPUs and time limit given, at most ``jobs`` running at once;
- ``debug``: one point after another in this process (submitit's debug executor).

It streams progress (a line per submitted and finished point, and the counts of done,
failed and running points whenever they change), records each point's job id and state in
``sweep.json``, and ends by gathering the table and figure (:mod:`fsstools.jobs.gather`).
Everything lands in ``<outputs>/sweeps/<name>/``::

    sweep.json           target, fixed values, grid, and each point's job id and state
    <point>/             point.json (values, parameters, state), log.txt (what the job
                         printed), the executed notebook and what it wrote, or the
                         evaluation's CSVs and config.yaml
    jobs/                submitit's pickles and logs
    table.csv, table.md, <metric>_by_<key>.png

Run again, a sweep reuses each point whose folder holds a finished run of the same
parameters (and says so) and submits the failed and missing ones; a folder holding a sweep
of another notebook, config or fixed values is refused. Jobs use this process's outputs
folder, so the same content-keyed caches: points that need one base model or one set of
features build it once, the others wait on its lock and reuse it. Ctrl-C cancels the
running jobs; the same command continues the sweep.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from fsstools import cache, paths
from fsstools.cache import atomic_write_text
from fsstools.errors import ConfigError, ConflictError
from fsstools.jobs.gather import Gathered, gather, read_point
from fsstools.jobs.sweep_plan import (
    LOG_NAME,
    POINT_NAME,
    SWEEP_NAME,
    Point,
    Target,
    plan,
    run_point,
)

EXECUTORS = ("local", "slurm", "debug")
JOBS_DIR = "jobs"
LOCAL_TIMEOUT_MIN = 7 * 24 * 60
"""Local jobs have no practical time limit (submitit's own default is two minutes)."""
POLL_S = {"local": 1.0, "slurm": 15.0, "debug": 0.0}
STATES = ("reused", "done", "failed", "running", "pending", "queued", "cancelled")
_NAME = re.compile(r"\w[\w.+-]*")


@dataclass(frozen=True)
class Resources:
    """Where and how the points run.

    Attributes:
        executor: "local", "slurm" or "debug".
        jobs: points running at once (None: 1 locally, all of them on SLURM).
        partition, gpus, cpus, time_min: each SLURM job's partition (None: the cluster's
            default), GPUs, CPUs (None: the cluster's default) and time limit in minutes.
    """

    executor: str = "local"
    jobs: int | None = None
    partition: str | None = None
    gpus: int = 0
    cpus: int | None = None
    time_min: int = 240

    @property
    def at_once(self) -> int | None:
        """Points running at once (None: all)."""
        if self.executor == "debug":
            return 1
        return self.jobs or (None if self.executor == "slurm" else 1)


def sweeps_dir() -> Path:
    return paths.outputs_dir() / "sweeps"


def sweep_folder(name: str | None, target: Target, grid: dict[str, list]) -> Path:
    """``<outputs>/sweeps/<name>``; default name: the notebook or config's name and the grid
    keys."""
    if name is None:
        name = re.sub(r"[^\w.+-]", "", f"{target.path.stem}-{'-'.join(grid)}")
    if not _NAME.fullmatch(name):
        raise ConfigError(f"--name {name!r}: use letters, digits, '.', '_', '+' and '-' (it "
                          f"names a folder of {sweeps_dir()})", key="name")
    return sweeps_dir() / name


# ----------------------------------------------------------------------------- executors


def _local_gpus() -> dict[str, Any]:
    """Local jobs see the GPUs this process sees (submitit shows them none unless told)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [int(v) for v in visible.split(",") if v.strip().isdigit()]
    else:
        import torch

        ids = list(range(torch.cuda.device_count()))
    return {"gpus_per_node": len(ids), "visible_gpus": ids} if ids else {}


def check_executor(res: Resources) -> None:
    """Raise :class:`ConfigError` when ``res`` cannot run here (SLURM without ``srun``)."""
    import submitit

    if res.executor not in EXECUTORS:
        raise ConfigError(f"--executor {res.executor}: choose one of {', '.join(EXECUTORS)}")
    if res.executor == "slurm" and submitit.SlurmExecutor.affinity() <= 0:
        raise ConfigError("--executor slurm: srun is not on this machine's PATH; submit from "
                          "a login node of the cluster, or use --executor local")


def make_executor(res: Resources, folder: Path, name: str) -> Any:
    """submitit's executor for ``res``, keeping its files in ``folder``."""
    import submitit

    if res.executor == "debug":
        return submitit.DebugExecutor(folder)
    if res.executor == "local":
        executor = submitit.LocalExecutor(folder)
        executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, **_local_gpus())
        return executor
    executor = submitit.SlurmExecutor(folder)
    wanted = {"job_name": f"fsstools-{name}", "time": res.time_min, "partition": res.partition,
              "gpus_per_node": res.gpus or None, "cpus_per_task": res.cpus,
              "array_parallelism": res.jobs}
    executor.update_parameters(**{k: v for k, v in wanted.items() if v is not None})
    return executor


# ----------------------------------------------------------------------------- the record


def _plain(data: Any) -> Any:
    return json.loads(json.dumps(data, default=str))


class Ledger:
    """The sweep's record, ``sweep.json`` (rewritten on every change), and its progress
    lines."""

    def __init__(self, folder: Path, target: Target, grid: dict[str, list], res: Resources,
                 points: list[Point], stream: TextIO) -> None:
        self.path, self.stream, self.shown = folder / SWEEP_NAME, stream, ""
        self.head = {"name": folder.name, "target": target.record(), "grid": grid,
                     "executor": res.executor, "cwd": os.getcwd(),
                     "outputs": str(paths.outputs_dir())}
        self.points = {p.name: {"name": p.name, "values": p.values, "state": "queued",
                                "job_id": None, "job_log": None, "seconds": None,
                                "error": None} for p in points}

    def update(self, point: Point, **fields: Any) -> None:
        self.points[point.name].update(fields)
        self.save()

    def save(self) -> None:
        data = {**self.head, "points": list(self.points.values()),
                "updated": time.strftime("%Y-%m-%d %H:%M:%S")}
        atomic_write_text(self.path, json.dumps(data, indent=2, default=str) + "\n")

    def say(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def progress(self) -> None:
        """One line with the count of points in each state, when they changed."""
        counts = Counter(e["state"] for e in self.points.values())
        line = f"[{self.head['name']}] " + ", ".join(f"{counts[s]} {s}" for s in STATES
                                                     if counts[s])
        if line != self.shown:
            self.say(line)
            self.shown = line


def _check_previous(folder: Path, target: Target) -> None:
    saved = folder / SWEEP_NAME
    if not saved.is_file():
        return
    before = json.loads(saved.read_text())["target"]
    now = _plain(target.record())
    differ = [k for k in now if before.get(k) != now[k]]
    if differ:
        raise ConflictError(f"{folder} holds a sweep of {before['kind']} {before['path']} with "
                            f"--set {before['fixed']}; this one differs in {', '.join(differ)}: "
                            "choose another --name, or delete that folder to start over")


def _finished(point: Point, target: Target) -> bool:
    record = read_point(point.folder)
    return bool(record) and record.get("state") == "done" and (
        record.get("parameters") == _plain(point.parameters(target)))


# ----------------------------------------------------------------------------- jobs


def _outcome(job: Any) -> dict:
    try:
        return job.result()
    except Exception as err:  # the job itself failed: killed, out of time or memory, ...
        lines = [ln for ln in str(err).splitlines() if ln.strip()]
        return {"state": "failed", "error": lines[-1] if lines else type(err).__name__}


def _finish(ledger: Ledger, point: Point, job: Any) -> None:
    record = _outcome(job)
    ledger.update(point, state=record["state"], error=record.get("error"),
                  seconds=record.get("seconds"))
    if record["state"] == "done":
        ledger.say(f"done: {point.label} ({record.get('seconds')} s)")
    else:
        ledger.say(f"FAILED: {point.label}: {record['error']} (log {point.folder / LOG_NAME})")


def _submitted(ledger: Ledger, point: Point, job: Any) -> None:
    ledger.update(point, state="running", job_id=str(job.job_id), job_log=str(job.paths.stderr))
    ledger.say(f"submitted {point.label} as job {job.job_id} (log {point.folder / LOG_NAME})")


def _phase(job: Any) -> str:
    return "pending" if str(job.state).upper() == "PENDING" else "running"


def submit_all(executor: Any, target: Target, points: list[Point], ledger: Ledger) -> dict:
    """Submit ``points`` as one job array; returns point name -> (point, job)."""
    outputs = str(paths.outputs_dir())
    with executor.batch():
        jobs = [executor.submit(run_point, target, p, outputs) for p in points]
    for point, job in zip(points, jobs, strict=True):
        _submitted(ledger, point, job)
    return {p.name: (p, job) for p, job in zip(points, jobs, strict=True)}


def watch(executor: Any, res: Resources, target: Target, todo: list[Point],
          ledger: Ledger) -> None:
    """Run ``todo``, at most ``res.at_once`` at a time, until every point has ended."""
    queue, running = list(todo), {}
    try:
        if res.executor == "slurm":
            running, queue = submit_all(executor, target, queue, ledger), []
        while queue or running:
            while queue and len(running) < (res.at_once or len(todo)):
                point = queue.pop(0)
                job = executor.submit(run_point, target, point, str(paths.outputs_dir()))
                _submitted(ledger, point, job)
                running[point.name] = (point, job)
            for name, (point, job) in list(running.items()):
                if job.done():
                    del running[name]
                    _finish(ledger, point, job)
                elif res.executor == "slurm" and _phase(job) != ledger.points[name]["state"]:
                    ledger.update(point, state=_phase(job))
            ledger.progress()
            if running:
                time.sleep(POLL_S[res.executor])
    except KeyboardInterrupt:
        for point, job in running.values():
            job.cancel(check=False)
            ledger.update(point, state="cancelled")
        ledger.say("interrupted: the running points were cancelled; the same command "
                   "continues the sweep")
        raise


def run_sweep(target: Target, grid: dict[str, list], name: str | None = None,
              res: Resources = Resources(), force: bool = False, metric: str | None = None,
              stream: TextIO | None = None) -> Gathered:
    """Run every point of ``grid`` over ``target`` as submitit jobs and gather them.

    Args:
        target: the notebook or evaluation config, with its fixed values.
        grid: key -> values (:func:`fsstools.jobs.sweep_plan.parse_grid`).
        name: the sweep's folder under ``<outputs>/sweeps`` (default: from the target and
            the grid keys).
        res: executor and resources.
        force: run finished points again instead of reusing them.
        metric: the column the gathered figure shows (default: miou).
        stream: where progress goes (default stdout).

    Raises:
        ConfigError: a bad key or value (nothing written, nothing submitted).
        ConflictError: the folder holds a sweep of another target or fixed values.
    """
    stream = sys.stdout if stream is None else stream
    folder = sweep_folder(name, target, grid)
    points = plan(target, grid, folder)
    check_executor(res)
    _check_previous(folder, target)
    ledger = Ledger(folder, target, grid, res, points, stream)
    todo = []
    for point in points:
        if not force and _finished(point, target):
            cache.announce_reuse(f"point {point.label}", point.folder / POINT_NAME)
            ledger.points[point.name].update(state="reused")
        else:
            todo.append(point)
            if point.folder.exists():  # a failed or unfinished run of this point
                shutil.rmtree(point.folder)
    folder.mkdir(parents=True, exist_ok=True)
    ledger.save()
    ledger.say(f"sweep {folder.name}: {len(points)} points of {target.path.name}, "
               f"{len(points) - len(todo)} reused, {len(todo)} to run ({res.executor} executor, "
               f"{res.at_once or 'all'} at a time) in {folder}")
    if todo:
        watch(make_executor(res, folder / JOBS_DIR, folder.name), res, target, todo, ledger)
    ledger.progress()
    try:
        gathered = gather(folder, metric)
    except ConfigError as err:  # the jobs' results are there: gather them another way
        warnings.warn(f"{err}; gathered with the default metric", stacklevel=2)
        gathered = gather(folder)
    figure = f", figure {gathered.figure}" if gathered.figure else ""
    ledger.say(f"gathered {len(gathered.table)} rows: {gathered.csv}, {gathered.markdown}{figure}")
    return gathered
