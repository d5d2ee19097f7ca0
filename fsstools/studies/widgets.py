"""Notebook display: the ipywidgets episode explorer, and figures shown as PNG.

Widgets only render with a live kernel and a frontend; papermill and nbval just record
them. So notebooks always show a static figure as well (the explorer's first view).

The explorer redraws when a control is released (sliders have ``continuous_update=False``:
a drag is one redraw, not one per tick). A redraw runs the chosen method on one task with
its traces and shows the result in an image widget as a PNG. The task's images are decoded
once and kept, and the figure is built once per layout (a change of shots rebuilds it):
a redraw updates its artists in place and draws only what changed
(:class:`fsstools.plots.ExplorerPanel`), so changing a loss weight costs one small
inference, one partial draw and one quick PNG encoding (measured and shown under the
figure; ``bench/explorer.py`` compares it with building the figure anew).

Example (in a notebook):
    >>> explorer = EpisodeExplorer({"A": study_a, "B": study_b})  # doctest: +SKIP
    >>> display(explorer.widget)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import ipywidgets as w
import numpy as np
import PIL.Image
from IPython.display import Image, display
from matplotlib.figure import Figure

from fsstools import plots
from fsstools.data.episodes import EpisodeList
from fsstools.data.splits import class_name
from fsstools.evaluation.views import EpisodeView, display_image, episode_view, episodes_of_class
from fsstools.features import FeatureStore
from fsstools.inference import METHODS, MethodConfig
from fsstools.studies.report import save_figure

PAPER = METHODS["repri"]
"""The method whose defaults the controls start from (and return to when shots change)."""
MAX_WEIGHT = 3.0
MAX_ITERATIONS = 100
WEIGHT_STEP = 0.05
EXPLORER_DPI = 72
"""Resolution of the explorer's figure: enough for a notebook, and cheap to encode."""
PNG_COMPRESSION = 1
"""zlib level of the explorer's PNGs: a figure is mostly flat colour, so level 1 is about 5%
larger than the default 6 and encodes in half the time (~12 ms at 1-shot)."""
CACHED_TASKS = 64
"""Tasks whose decoded images the explorer keeps."""
CSS_CLASS = "fsstools-explorer"
"""CSS class of the explorer's box; its parts carry ``<CSS_CLASS>-<name>`` (browser tests)."""


class Episodes(Protocol):
    """What the explorer browses: a feature store and episode lists by (shots, seed), e.g. a
    :class:`fsstools.evaluation.pipeline.Study`."""

    store: FeatureStore
    episode_lists: Mapping[tuple[int, int], EpisodeList]


def figure_png(fig: Figure, dpi: int = 100, tight: bool = True) -> bytes:
    """PNG bytes of a Figure (``tight``: cropped to its content, which costs a second draw)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    return buf.getvalue()


def rgba_png(rgba: np.ndarray, compress_level: int = PNG_COMPRESSION) -> bytes:
    """PNG bytes of a rendered canvas, (H, W, 4) uint8, without its alpha channel (figures
    are drawn on an opaque face: the channel would only make the file bigger)."""
    buf = io.BytesIO()
    PIL.Image.fromarray(rgba[..., :3]).save(buf, format="png", compress_level=compress_level)
    return buf.getvalue()


def show(fig: Figure) -> None:
    """Display a Figure as a PNG, whatever matplotlib backend the kernel uses."""
    display(Image(data=figure_png(fig)))


def save_and_show(fig: Figure, output_dir: str | Path, name: str) -> None:
    """Save ``fig`` as ``<output_dir>/<name>.png`` and display that file.

    Returns nothing, so a cell that ends with it shows the figure and no stray value.
    """
    path = save_figure(fig, output_dir, name)
    display(Image(filename=str(path)))


class EpisodeExplorer:
    """Pick a style, a class, shots, an episode, loss weights and iterations; see the task,
    the prediction, the final p(foreground), the loss terms and the prior over the iterations.

    Args:
        studies: episodes and features per test style, e.g. ``{"A": study_a, "B": study_b}``
            (Studies from ``fsstools.studies.recipes.fold_study``), or one of them.
        seed: which seeded episode lists to browse.
        draw: compute and draw the first view now.
        images: load images from disk (False: black images, masks only; for tests).

    Attributes:
        widget: the ipywidgets box to display.
        view: the last computed :class:`~fsstools.evaluation.views.EpisodeView` (None before a draw).
        panel: the figure of the current layout, updated in place by each redraw (None
            before a draw; a new one when the shots change).
        last_redraw_s: seconds the last redraw took (inference, figure and PNG).
    """

    def __init__(self, studies: Episodes | Mapping[str, Episodes], seed: int = 0,
                 draw: bool = True, images: bool = True) -> None:
        self.studies = {"A": studies} if hasattr(studies, "store") else dict(studies)
        self.seed, self.images = seed, images
        lists = [el for st in self.studies.values()
                 for (_, s), el in st.episode_lists.items() if s == seed]
        shots = sorted({k for st in self.studies.values() for k, s in st.episode_lists
                        if s == seed})
        # classes with an episode in every list, so switching style or shots keeps the class
        classes = sorted(set.intersection(*[{ep.class_id for ep in el.episodes} for el in lists]))
        if not classes:
            raise ValueError("no class has an episode at every shot count and style; sample "
                             "more episodes")
        dataset = lists[0].dataset
        style = {"description_width": "110px"}
        self.style = w.ToggleButtons(options=list(self.studies), description="test style",
                                     style=style)
        self.style.layout.display = None if len(self.studies) > 1 else "none"
        self.class_id = w.Dropdown(options=[(f"{c}: {class_name(dataset, c)}", c)
                                            for c in classes], description="class", style=style)
        self.shots = w.ToggleButtons(options=shots, description="shots", style=style)
        self.episode = w.IntSlider(0, 0, 0, description="episode", style=style,
                                   continuous_update=False)
        ce, ent, kl = PAPER.loss_weights(shots[0])
        self.ce, self.entropy, self.kl = (
            w.FloatSlider(v, min=0, max=MAX_WEIGHT, step=WEIGHT_STEP, description=name,
                          style=style, continuous_update=False)
            for v, name in ((ce, "CE weight"), (ent, "entropy weight"), (kl, "KL weight")))
        self.prior = w.Dropdown(options=["estimate", "oracle"], description="prior", style=style)
        self.iterations = w.IntSlider(PAPER.iterations, 0, MAX_ITERATIONS, description="iterations",
                                      style=style, continuous_update=False)
        self.figure = w.Image(format="png")
        self.status = w.HTML()
        for name in ("style", "class_id", "shots", "episode", "ce", "entropy", "kl", "prior",
                     "iterations", "figure", "status"):
            getattr(self, name).add_class(f"{CSS_CLASS}-{name.replace('_', '-')}")
        self.view: EpisodeView | None = None
        self.panel: plots.ExplorerPanel | None = None
        self.last_redraw_s = float("nan")
        self._pictures: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._busy = False
        self._sync_episodes()
        for control in (self.style, self.class_id, self.shots):
            control.observe(self._on_task, names="value")
        for control in (self.episode, self.ce, self.entropy, self.kl, self.prior, self.iterations):
            control.observe(self._on_setting, names="value")
        left = w.VBox([self.style, self.class_id, self.shots, self.episode, self.prior])
        right = w.VBox([self.ce, self.entropy, self.kl, self.iterations])
        self.widget = w.VBox([w.HBox([left, right]), self.figure, self.status])
        self.widget.add_class(CSS_CLASS)
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

    def _episodes(self) -> EpisodeList:
        return self.studies[self.style.value].episode_lists[self.shots.value, self.seed]

    def current_view(self) -> EpisodeView:
        """Run the chosen method on the chosen task (images from the explorer's cache)."""
        study = self.studies[self.style.value]
        episodes = self._episodes()
        index = self._indices()[self.episode.value]
        view = episode_view(study.store, episodes, index, self.method(), images=False)
        if not self.images:
            return view
        supports, query = self._task_pictures(episodes, index, view.query_image.shape[0])
        return dataclasses.replace(view, support_images=supports, query_image=query)

    def _task_pictures(self, episodes: EpisodeList, index: int, size: int
                       ) -> tuple[np.ndarray, np.ndarray]:
        key = (self.style.value, episodes.hash, index)
        if key not in self._pictures:
            ep = episodes.episodes[index]
            pictures = [display_image(episodes.root, *pair, episodes.dataset, size)
                        for pair in (*ep.supports, ep.query)]
            self._pictures[key] = (np.stack(pictures[:-1]), pictures[-1])
            if len(self._pictures) > CACHED_TASKS:
                self._pictures.popitem(last=False)
        self._pictures.move_to_end(key)
        return self._pictures[key]

    def redraw(self) -> None:
        """Recompute the prediction and its traces and show them: the figure is updated in
        place, or built anew when the number of supports (the layout) changes."""
        tic = time.perf_counter()
        self.view = self.current_view()
        if self.panel is None or not self.panel.fits(self.view):
            self.panel = plots.ExplorerPanel(self.view, dpi=EXPLORER_DPI)
        else:
            self.panel.update(self.view)
        self.figure.value = rgba_png(self.panel.render())
        self.last_redraw_s = time.perf_counter() - tic
        self.status.value = (f"<small>{self.view.method.steps} steps; redrawn in "
                             f"{1000 * self.last_redraw_s:.0f} ms</small>")

    def _indices(self) -> list[int]:
        return episodes_of_class(self._episodes(), self.class_id.value)

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
