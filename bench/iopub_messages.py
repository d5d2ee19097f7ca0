"""Messages a training cell sends on its kernel's IOPub channel, and whether a client that
reads them only after the cell (as nbval does) still gets the cell's closing status.

Starts a kernel (this Python's "python3" kernelspec), makes the embedded benchmark's tiny
set, then runs one cell that trains ``configs/synth/tiny.yaml`` for ``--epochs`` epochs into
a fresh outputs folder. Two readings:

- ``--read during`` (JupyterLab, papermill): the client reads IOPub while the cell runs;
  prints the messages of the cell by type.
- ``--read after`` (nbval): the client waits for the cell's reply first, then reads IOPub
  with nbval's 5 s wait per message; prints how many messages arrived and whether the
  closing "idle" status was among them (ZMQ drops what passes its high-water mark).

    python bench/iopub_messages.py --epochs 12 --read during
    python bench/iopub_messages.py --epochs 12 --read after
    python bench/iopub_messages.py --epochs 6 --set optim.batch_size=2 --read after

The cell only uses ``fsstools.config``, ``fsstools.training`` and the synthetic generator,
so the same script measures any checkout whose kernel this Python starts.
"""

from __future__ import annotations

import argparse
import collections
import queue
import tempfile
import time
from pathlib import Path

from jupyter_client.manager import start_new_kernel

REPO = Path(__file__).resolve().parents[1]
NBVAL_WAIT_S = 5
"""nbval's wait for each output message after a cell's reply."""

CELL = """
import os
os.environ["FSSTOOLS_OUTPUTS"] = {outputs!r}
from fsstools import config
from fsstools.data.synth.benchmark import SynthConfig, ensure_synth
from fsstools.training import TrainConfig, ensure_trained
ensure_synth({data!r}, SynthConfig(n_train=300, n_val=100, size=64, styles=("A",)),
             progress=False)
cfg = config.load(TrainConfig, {config!r}, ["data.root={data}/A", "run.epochs={epochs}", *{sets!r}])
ensure_trained(cfg)
"""


def cell(work: Path, epochs: int, sets: tuple[str, ...] = (), data: Path | None = None) -> str:
    """The training cell: outputs under ``work``, the data under ``data`` (default: under
    ``work`` too; made on first use); ``sets``: more config overrides."""
    return CELL.format(outputs=str(work / "outputs"), data=str(data or work / "synth_tiny"),
                       config=str(REPO / "configs" / "synth" / "tiny.yaml"), epochs=epochs,
                       sets=list(sets))


def run(epochs: int, read: str, sets: tuple[str, ...] = (), data: Path | None = None) -> dict:
    """Run the training cell in a new kernel (fresh outputs; ``data``: an existing or
    wanted data folder to share between runs); returns counts by message type, the seconds
    the cell took and whether its idle status arrived."""
    work = Path(tempfile.mkdtemp(prefix="iopub-"))
    code = cell(work, epochs, sets, data)
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(work))
    counts: collections.Counter = collections.Counter()
    idle = False
    try:
        tic = time.perf_counter()
        msg_id = kc.execute(code)
        if read == "after":
            reply = kc.get_shell_msg(timeout=3600)
            while reply["parent_header"].get("msg_id") != msg_id:
                reply = kc.get_shell_msg(timeout=3600)
        seconds = time.perf_counter() - tic
        wait = NBVAL_WAIT_S if read == "after" else 3600
        while True:
            try:
                msg = kc.get_iopub_msg(timeout=wait)
            except queue.Empty:
                break
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            counts[msg["msg_type"]] += 1
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
                break
        if read == "during":
            seconds = time.perf_counter() - tic
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return {"counts": counts, "seconds": seconds, "idle": idle}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=12, help="epochs of the tiny run")
    parser.add_argument("--read", choices=("during", "after"), default="during",
                        help="read IOPub while the cell runs, or only after its reply (nbval)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="another override of the tiny config, e.g. optim.batch_size=2 "
                             "(more, shorter steps)")
    args = parser.parse_args()
    result = run(args.epochs, args.read, tuple(args.sets))
    total = sum(result["counts"].values())
    print(f"cell: tiny run of {args.epochs} epochs {' '.join(args.sets)}, "
          f"{result['seconds']:.0f} s; IOPub read {args.read} the cell")
    for kind, n in result["counts"].most_common():
        print(f"  {kind:<16} {n:>6}")
    print(f"messages={total} idle_status_received={result['idle']}")


if __name__ == "__main__":
    main()
