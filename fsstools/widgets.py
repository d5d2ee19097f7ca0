"""Notebook display: the ipywidgets episode explorer, and figures shown as PNG.

Widgets only render with a live kernel and a frontend; papermill and nbval just record
them. So notebooks always show a static figure as well, and building the explorer costs
one small inference (one task) and one figure.

Example (in a notebook):
    >>> explorer = EpisodeExplorer(study)  # doctest: +SKIP
    >>> display(explorer.widget)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import ipywidgets as w
from IPython.display import Image, display
from matplotlib.figure import Figure

from fsstools import plots
from fsstools.data.episodes import EpisodeList
from fsstools.data.splits import class_name
from fsstools.features import FeatureStore
from fsstools.inference import METHODS, MethodConfig
from fsstools.inspect import EpisodeView, episode_view, episodes_of_class
from fsstools.report import save_figure

PAPER = METHODS["repri"]
"""The method whose defaults the controls start from (and return to when shots change)."""


class Episodes(Protocol):
    """What the explorer browses: a feature store and episode lists by (shots, seed), e.g. a
    :class:`fsstools.evaluate.Study`."""

    store: FeatureStore
    episode_lists: Mapping[tuple[int, int], EpisodeList]

MAX_WEIGHT = 3.0
MAX_ITERATIONS = 100


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """PNG bytes of a Figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def show(fig: Figure) -> None:
    """Display a Figure as a PNG, whatever matplotlib backend the kernel uses."""
    display(Image(data=figure_png(fig)))


def save_and_show(fig: Figure, output_dir: str | Path, name: str) -> Path:
    """Save ``fig`` as ``<output_dir>/<name>.png``, display that file and return its path."""
    path = save_figure(fig, output_dir, name)
    display(Image(filename=str(path)))
    return path


class EpisodeExplorer:
    """Pick a class, shots, an episode, loss weights and iterations; see the prediction.

    Args:
        study: episodes and features (a Study from ``fsstools.study.synth_study``).
        seed: which seeded episode lists to browse.
        draw: compute and draw the first view now.
        images: load images from disk (False: black images, masks only; for tests).

    Attributes:
        widget: the ipywidgets box to display.
        view: the last computed :class:`~fsstools.study.EpisodeView` (None before a draw).
    """

    def __init__(self, study: Episodes, seed: int = 0, draw: bool = True, images: bool = True
                 ) -> None:
        self.study, self.seed, self.images = study, seed, images
        shots = sorted({k for k, s in study.episode_lists if s == seed})
        # classes with an episode at every shot count, so switching shots keeps the class
        per_list = [
            {ep.class_id for ep in el.episodes}
            for (_, s), el in study.episode_lists.items()
            if s == seed
        ]
        classes = sorted(set.intersection(*per_list))
        if not classes:
            raise ValueError("no class has an episode at every shot count; sample more episodes")
        dataset = next(iter(study.episode_lists.values())).dataset
        style = {"description_width": "110px"}
        self.class_id = w.Dropdown(
            options=[(f"{c}: {class_name(dataset, c)}", c) for c in classes],
            description="class",
            style=style,
        )
        self.shots = w.ToggleButtons(options=shots, description="shots", style=style)
        self.episode = w.IntSlider(0, 0, 0, description="episode", style=style)
        self.ce = w.FloatSlider(
            1.0, min=0, max=MAX_WEIGHT, step=0.05, description="CE weight", style=style
        )
        ce, ent, kl = PAPER.loss_weights(shots[0])
        self.ce.value = ce
        self.entropy = w.FloatSlider(
            ent, min=0, max=MAX_WEIGHT, step=0.05, description="entropy weight", style=style
        )
        self.kl = w.FloatSlider(
            kl, min=0, max=MAX_WEIGHT, step=0.05, description="KL weight", style=style
        )
        self.prior = w.Dropdown(options=["estimate", "oracle"], description="prior", style=style)
        self.iterations = w.IntSlider(
            PAPER.iterations, 0, MAX_ITERATIONS, description="iterations", style=style
        )
        self.output = w.Output()
        self.view: EpisodeView | None = None
        self._busy = False
        self._sync_episodes()
        for control in (self.class_id, self.shots):
            control.observe(self._on_task, names="value")
        for control in (self.episode, self.ce, self.entropy, self.kl, self.prior, self.iterations):
            control.observe(self._on_setting, names="value")
        left = w.VBox([self.class_id, self.shots, self.episode, self.prior])
        right = w.VBox([self.ce, self.entropy, self.kl, self.iterations])
        self.widget = w.VBox([w.HBox([left, right]), self.output])
        if draw:
            self.redraw()

    def method(self) -> MethodConfig:
        """The method the controls describe (RePRI with the chosen weights and steps)."""
        return dataclasses.replace(
            PAPER,
            name="explorer",
            iterations=self.iterations.value,
            ce_weight=self.ce.value,
            ent_weight=self.entropy.value,
            kl_weight=self.kl.value,
            prior=self.prior.value,
            t_pi=() if self.prior.value == "oracle" else PAPER.t_pi,
        )

    def current_view(self) -> EpisodeView:
        """Run the chosen method on the chosen task."""
        episodes = self.study.episode_lists[self.shots.value, self.seed]
        index = self._indices()[self.episode.value]
        return episode_view(self.study.store, episodes, index, self.method(), images=self.images)

    def redraw(self) -> None:
        """Recompute the prediction and replace the figure."""
        self.view = self.current_view()
        with self.output:
            self.output.clear_output(wait=True)
            show(plots.episode_panel(self.view))

    def _indices(self) -> list[int]:
        episodes = self.study.episode_lists[self.shots.value, self.seed]
        return episodes_of_class(episodes, self.class_id.value)

    def _sync_episodes(self) -> None:
        n = len(self._indices())
        self.episode.max = max(n - 1, 0)
        self.episode.value = min(self.episode.value, self.episode.max)
        self.episode.disabled = n <= 1

    def _on_task(self, change: dict) -> None:
        self._busy = True
        try:
            self._sync_episodes()
            if change["owner"] is self.shots:  # the paper's weights depend on the shots
                _, ent, kl = PAPER.loss_weights(self.shots.value)
                self.entropy.value, self.kl.value = round(ent, 2), round(kl, 2)
        finally:
            self._busy = False
        self.redraw()

    def _on_setting(self, change: dict) -> None:
        if not self._busy:
            self.redraw()
