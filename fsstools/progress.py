"""Progress bars that stay light on a notebook kernel's output channel.

In a Jupyter kernel every refresh of a bar is a handful of messages on the kernel's IOPub
channel (a widget per bar, then its value and two labels per refresh). That channel is a
ZMQ socket pair whose queues hold about a thousand messages each way (ZMQ's high-water
mark) and drop what arrives past it. A client that reads the channel while the cell runs
(JupyterLab, papermill) never lets the queues fill; one that reads it only after the cell
has replied (nbval) finds them full after a long cell and misses whatever was dropped, the
cell's closing "idle" status among them, so it gives up on the cell. tqdm's defaults
(a refresh every 0.1 s, and a fresh bar per training epoch) reach the mark after a couple
of minutes of training.

So every bar of fsstools refreshes at most :data:`MAX_REFRESHES` times over its length
(and at most every :data:`MIN_INTERVAL_S` seconds), and a training run draws one bar over
all its epochs: a bar costs a bounded number of messages however long it runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

MAX_REFRESHES = 40
"""Refreshes of a bar over its whole length (fewer when it runs for under 20 s)."""
MIN_INTERVAL_S = 0.5
"""Shortest time between two refreshes of a bar."""


def bar(iterable: Iterable | None = None, total: int | None = None, desc: str | None = None,
        unit: str = "it", disable: bool = False, leave: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar (a widget in a notebook, text elsewhere) with a bounded refresh count.

    Args:
        iterable: what to iterate over; None to call ``update`` by hand.
        total: the bar's length; default ``len(iterable)`` where it has one.
        kwargs: passed on to tqdm (``postfix``, ``position``...).

    Example:
        >>> with bar(total=1000, desc="work", disable=True) as b:
        ...     for _ in range(1000):
        ...         b.update()
    """
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    miniters = max(1, math.ceil(total / MAX_REFRESHES)) if total else 1
    # maxinterval=inf: tqdm's monitor thread would otherwise reset miniters to 1 whenever a
    # bar waits more than 10 s between refreshes, and the bound would be gone.
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave,
                miniters=miniters, mininterval=MIN_INTERVAL_S, maxinterval=math.inf,
                **kwargs)
