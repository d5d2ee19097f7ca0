"""Redraw time of notebook 00's episode explorer on the quick profile.

Builds the explorer as the notebook does (fold 0, the quick profile's base model, data and
episodes, trained or generated on first use and cached), then times redraws as a user
triggers them: a change of a loss weight or of the iterations on the current task (one
inference with traces, one figure, one PNG). Prints the median and the spread per shot
count, and the load average, since the machine may be shared. The last line is
``redraw_ms_1shot=<median>``.

    FSSTOOLS_OUTPUTS=outputs/tests python bench/explorer.py
    python bench/explorer.py --repeats 20 --shots 1 5
"""

from __future__ import annotations

import argparse
import os
import statistics

from fsstools import study

KL_VALUES = (0.5, 1.0)
"""The explorer's KL weight alternates between these, so every redraw is a real change."""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--n-episodes", type=int, default=60, help="tasks per list (notebook 00: 60)")
    args = p.parse_args()
    prof = study.get_profile("quick")
    explorer = study.explorer(prof, 0, args.shots, args.n_episodes)
    medians = {}
    for k in args.shots:
        explorer.shots.value = k  # a task change: decodes the task's images once
        times = []
        for i in range(args.repeats):
            explorer.kl.value = KL_VALUES[i % 2]
            times.append(1000 * explorer.last_redraw_s)
        medians[k] = statistics.median(times)
        print(f"{k}-shot: redraw median {medians[k]:.0f} ms, min {min(times):.0f}, max "
              f"{max(times):.0f} over {len(times)} redraws ({explorer.view.method.steps} steps)")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"redraw_ms_1shot={medians.get(1, float('nan')):.0f}")


if __name__ == "__main__":
    main()
