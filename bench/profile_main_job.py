"""Where the main job's minutes go: each notebook run by ``fsstools reproduce`` under the
py-spy sampling profiler, its kernel's time split into phases.

    pip install py-spy                      # the sampler (not a dependency of fsstools)
    .venv/bin/python bench/profile_main_job.py --out outputs/bench/profile
    .venv/bin/python bench/profile_main_job.py --only 01 06 --set folds=[0] base_seeds=[0] \\
        --out outputs/bench/profile_fold0  # one fold and one base seed of each notebook

Each notebook runs as ``fsstools reproduce --only NN`` (the main job's own parameters, plus
``--set``), one after the other into one output folder, so later notebooks reuse what earlier
ones trained exactly as in the main job; start from an empty ``--out`` (its ``cache`` is
the job's cache) for a cold profile. py-spy samples every thread of every process
(``--idle``: waiting counts, so the kernel's main thread gives the notebook's wall clock).
Each sample of the kernel's main thread goes to the phase of its stack:

- start-up: imports, and the kernel's time before its first cell;
- data loading: reading, decoding and augmenting images, in the main thread or waiting on
  DataLoader workers;
- benchmark generation: writing the embedded benchmark;
- training step: forward, backward and optimiser of base models and peers;
- feature extraction, inference, statistics (bootstrap and intervals), plotting;
- cache I/O: checkpoints, feature arrays and tables written or read;
- other notebook code; and between cells (papermill's own time).

Writes ``profile.json`` (seconds per notebook and phase, the command, the machine) and
``profile.md`` (the table in minutes) into ``--out`` and prints the table. The script is
for measuring: nothing in fsstools imports it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import cpu_name, load  # noqa: E402

from fsstools.studies.parameters import notebook_declarations  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PHASES = ("start-up", "data loading", "benchmark generation", "training step",
          "feature extraction", "inference", "statistics", "plotting", "cache I/O",
          "other notebook code", "between cells")
# frames that decide a phase, looked for from the innermost frame outwards; the first
# phase whose pattern matches a frame wins, so data loading inside a training step counts
# as data loading
RULES: tuple[tuple[str, re.Pattern], ...] = tuple(
    (phase, re.compile(pattern)) for phase, pattern in (
        ("start-up", r"<frozen importlib\._bootstrap"),
        ("benchmark generation", r"fsstools/data/synth/"),
        ("data loading", r"torch/utils/data/|fsstools/data/|PIL/"),
        ("plotting", r"matplotlib/|fsstools/plots/|seaborn/"),
        ("statistics", r"fsstools/evaluation/(stats|generalized_stats)\.py|fsstools/metrics"),
        ("cache I/O", r"torch/serialization\.py|numpy/lib/(format|npyio)|fsstools/cache\.py"),
        ("inference", r"fsstools/inference/"),
        ("feature extraction", r"fsstools/features\.py"),
        ("training step", r"fsstools/training/"),
    )
)
CELL = re.compile(r"run_cell \(.*IPython/core/interactiveshell\.py")
RECORD = re.compile(r'^process (\d+):"(.*?)";thread \((\d+)\): ([^;]*);(.*) (\d+)$',
                    re.DOTALL)


def records(raw: str):
    """(pid, command, thread id, frames innermost first, count) of py-spy's raw output."""
    for chunk in re.split(r"\n(?=process \d+:)", raw.strip()):
        m = RECORD.match(chunk)
        if m:
            frames = m.group(5).split(";")
            yield int(m.group(1)), m.group(2), int(m.group(3)), frames[::-1], int(m.group(6))


def phase_of(frames: list[str]) -> str:
    """The phase of one main-thread stack (innermost frame first)."""
    if not any(CELL.search(f) for f in frames):
        return "between cells"
    for frame in frames:
        for phase, pattern in RULES:
            if pattern.search(frame):
                return phase
    return "other notebook code"


def kernel_phases(raw: str) -> tuple[Counter, int]:
    """Samples per phase of the kernel's main thread (the thread that runs cells), and the
    samples of the kernel's threads before its first cell counted as start-up."""
    threads: dict[tuple[int, int], list[tuple[list[str], int]]] = defaultdict(list)
    for pid, command, tid, frames, n in records(raw):
        if "ipykernel" in command:
            threads[(pid, tid)].append((frames, n))
    # the kernel's main thread is the one that ran cells (DataLoader workers fork the
    # kernel and share its command line, but never run a cell)
    runs = {k: sum(n for f, n in v if any(CELL.search(x) for x in f)) for k, v in threads.items()}
    main = max(runs, key=runs.get, default=None)
    counts: Counter = Counter()
    if main is None or runs[main] == 0:
        return counts, 0
    for frames, n in threads[main]:
        counts[phase_of(frames)] += n
    return counts, sum(n for _, n in threads[main])


def profile_notebook(stem: str, args: argparse.Namespace, out: Path) -> dict:
    raw_path = out / f"{stem}.raw.txt"
    fsstools = Path(sys.executable).parent / "fsstools"
    job = [str(fsstools), "reproduce", "--only", stem[:2], "--out", str(out / "job")]
    # each notebook gets the overrides it declares (reproduce refuses the others)
    declared = notebook_declarations(REPO / "notebooks" / f"{stem}.ipynb")
    overrides = [s for s in args.set if s.partition("=")[0] in declared]
    if overrides:
        job += ["--set", *overrides]
    cmd = [args.py_spy, "record", "--idle", "--threads", "--subprocesses", "--full-filenames",
           "--nonblocking", "-r", str(args.rate), "-f", "raw", "-o", str(raw_path), "--", *job]
    print(f"[{stem}] {' '.join(job)}", flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env={**os.environ, "FSSTOOLS_OUTPUTS": str(out)},
                          check=False)
    wall = time.perf_counter() - start
    counts, total = kernel_phases(raw_path.read_text()) if raw_path.exists() else (Counter(), 0)
    # the kernel's main thread is sampled for as long as the kernel lives; what is left of
    # the notebook's wall clock is papermill and the kernel's start, counted as start-up
    scale = 1.0 / args.rate
    seconds = {p: counts.get(p, 0) * scale for p in PHASES}
    seconds["start-up"] += max(0.0, wall - total * scale)
    return {"notebook": stem, "wall_s": wall, "returncode": done.returncode,
            "samples": total, "seconds": seconds}


def table(rows: list[dict]) -> str:
    head = "| notebook | minutes | " + " | ".join(PHASES) + " |"
    lines = [head, "|---" * (len(PHASES) + 2) + "|"]
    totals: Counter = Counter()
    for r in rows:
        totals.update(r["seconds"])
        totals["wall"] += r["wall_s"]
        lines.append(f"| {r['notebook']} | {r['wall_s'] / 60:.1f} | "
                     + " | ".join(f"{r['seconds'][p] / 60:.1f}" for p in PHASES) + " |")
    lines.append(f"| all | {totals['wall'] / 60:.1f} | "
                 + " | ".join(f"{totals[p] / 60:.1f}" for p in PHASES) + " |")
    share = " | ".join(f"{100 * totals[p] / max(totals['wall'], 1e-9):.0f}%" for p in PHASES)
    lines.append(f"| share | 100% | {share} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=None,
                        help="notebook prefixes (default: every numbered notebook)")
    parser.add_argument("--set", nargs="*", default=[], help="overrides, as for reproduce")
    parser.add_argument("--out", type=Path, required=True, help="output and cache folder")
    parser.add_argument("--rate", type=int, default=20, help="samples per second")
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy",
                        help="the py-spy executable (default: the one on PATH)")
    args = parser.parse_args()
    if shutil.which(args.py_spy) is None and not Path(args.py_spy).is_file():
        print(f"{parser.prog}: py-spy not found ({args.py_spy}); install it with "
              "`pip install py-spy` or give --py-spy PATH", file=sys.stderr)
        return 2
    books = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if args.only:
        books = [b for b in books if any(b.startswith(o) for o in args.only)]
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores  [{load()}]", flush=True)
    rows = []
    for stem in books:
        rows.append(profile_notebook(stem, args, args.out))
        record = {"command": sys.argv, "machine": cpu_name(), "cores": os.cpu_count(),
                  "rate": args.rate, "notebooks": rows}
        (args.out / "profile.json").write_text(json.dumps(record, indent=1))
    text = table(rows)
    (args.out / "profile.md").write_text(text + "\n")
    print(text)
    print(f"[{load()}]")
    return 0 if all(r["returncode"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
