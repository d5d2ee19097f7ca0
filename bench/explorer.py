"""Redraw time of notebook 00's episode explorer on the quick profile.

Builds the explorer as the notebook does (fold 0, the quick profile's base model, data and
episodes, trained or generated on first use and cached), then times redraws as a user
triggers them: a change of the KL weight on the current task (one inference with traces,
the figure updated in place and partly redrawn, one PNG). Right after each, in the same
process and on the same state, it times the figure built from scratch (inference, a new
``plots.explorer_panel`` figure, ``savefig``: how the explorer redrew before) and the
inference alone, so the numbers compare even on a loaded machine. Prints the medians per
shot count (wall clock, and CPU time of the process) and the load average. The last line is
``redraw_ms_1shot=<median>``: the wall-clock median of the in-place redraw.

    FSSTOOLS_OUTPUTS=outputs/tests python bench/explorer.py
    python bench/explorer.py --repeats 20 --shots 1 5
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from functools import partial

import torch

from fsstools import plots
from fsstools.studies import recipes, widgets

try:
    from bench import timing
except ModuleNotFoundError:  # run as bench/explorer.py: bench/ itself is sys.path[0]
    import timing

CPU = torch.device("cpu")
KL_VALUES = (0.5, 1.0)
"""The explorer's KL weight alternates between these, so every redraw is a real change."""


def timed(step: Callable[[], object]) -> tuple[float, float]:
    """Milliseconds of ``step``: wall clock, and CPU time of this process (which a busy
    machine inflates far less)."""
    (wall,), (cpu,), _, _ = timing.timed(step, 1, CPU, warmup=0)
    return 1000 * wall, 1000 * cpu


def release_kl(explorer: widgets.EpisodeExplorer, value: float) -> None:
    """What a user does: release the KL weight slider at another value (one redraw)."""
    before = explorer.view
    explorer.kl.value = value
    if explorer.view is before:
        raise RuntimeError(f"the KL weight was {value} already: nothing was redrawn")


def from_scratch(explorer: widgets.EpisodeExplorer) -> None:
    """One redraw with a new figure, as the explorer did before: inference, figure, savefig."""
    view = explorer.current_view()
    widgets.figure_png(plots.explorer_panel(view), widgets.EXPLORER_DPI, tight=False)


def summary(times: list[tuple[float, float]]) -> str:
    wall, cpu = zip(*times, strict=True)
    return (f"{statistics.median(wall):.0f} ms (min {min(wall):.0f}, max {max(wall):.0f}; "
            f"CPU {statistics.median(cpu):.0f})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--n-episodes", type=int, default=60, help="tasks per list (notebook 00: 60)")
    args = p.parse_args()
    print(timing.machine(CPU))
    prof = recipes.get_profile("quick")
    explorer = recipes.explorer(prof, 0, args.shots, args.n_episodes)
    medians = {}
    for k in args.shots:
        explorer.shots.value = k  # a task change: decodes the task's images, new layout
        in_place, scratch, inference = [], [], []
        for i in range(args.repeats):
            in_place.append(timed(partial(release_kl, explorer, KL_VALUES[i % 2])))
            scratch.append(timed(partial(from_scratch, explorer)))
            inference.append(timed(explorer.current_view))  # what no figure code can save
        medians[k] = statistics.median(wall for wall, _ in in_place)
        print(f"{k}-shot ({explorer.view.method.steps} steps, {args.repeats} redraws each): "
              f"in place {summary(in_place)}; from scratch {summary(scratch)}; inference "
              f"alone {summary(inference)}; PNG {len(explorer.figure.value) / 1024:.0f} KiB")
    print(timing.load())
    print(f"redraw_ms_1shot={medians.get(1, float('nan')):.0f}")


if __name__ == "__main__":
    main()
