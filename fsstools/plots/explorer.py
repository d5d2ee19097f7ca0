"""The explorer's figure of one task, built once per layout and redrawn in place.

Building a matplotlib Figure costs more than drawing it, and most of a drawing is text.
So :class:`ExplorerPanel` keeps its artists and changes their data (:meth:`ExplorerPanel.update`),
and :meth:`ExplorerPanel.render` redraws only what a change of the method's settings can
change (prediction, p(foreground), traces with their axes, title) over a saved picture of the
rest: matplotlib's blitting on the Agg canvas. A change of task redraws everything.

Example:
    >>> panel = ExplorerPanel(view, dpi=72)  # doctest: +SKIP
    >>> rgba = panel.render()  # (H, W, 4) uint8  # doctest: +SKIP
    >>> panel.update(other_view)  # same shots: same figure, new content  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from matplotlib.text import Text
from matplotlib.ticker import MaxNLocator

from fsstools.evaluation.views import EpisodeView
from fsstools.plots.images import outlined
from fsstools.plots.style import PROB_CMAP, TERM_LABELS, new_figure, themed

if TYPE_CHECKING:
    from matplotlib.backends._backend_agg import BufferRegion

EXPLORER_TRACES = ("ce", "entropy", "kl", "loss")
TRACE_COLOURS = ("#1f77b4", "#17becf", "#9467bd", "black")
PRIOR_COLOUR = "#d62728"
SHARE_COLOUR = "#ff7f0e"
EXPLORER_MAX_SUPPORTS = 5
"""Supports drawn by the explorer (the others are named in the title)."""
SHORT_TRACE = 3
"""Traces shorter than this are drawn with point markers: one point makes no line."""
TITLE_Y = 1.0
"""Panel titles sit at a fixed height: given explicitly, matplotlib skips measuring the
axes' tick labels at every draw to place them (no panel has tick labels on top)."""


def _task_row(view: EpisodeView, shown: int) -> list[tuple[np.ndarray, str]]:
    """Pictures and titles of the top row but the prediction: supports, query + truth."""
    s = len(view.support_images)
    row = [(outlined(view.support_images[i], view.support_masks[i]),
            f"support {i + 1}" + (f" of {s}" if s > shown else "")) for i in range(shown)]
    row.append((outlined(view.query_image, view.query_mask), "query + ground truth"))
    return row


def _task_inputs(view: EpisodeView, shown: int) -> list[np.ndarray]:
    """What the task's pictures are made of (copies: a caller may reuse its arrays)."""
    return [np.array(a) for a in (view.support_images[:shown], view.support_masks[:shown],
                                  view.query_image, view.query_mask)]


def _prediction(view: EpisodeView) -> tuple[np.ndarray, str]:
    return (outlined(view.query_image, view.prediction),
            f"prediction, IoU {100 * view.final_iou:.0f}%")


def _title(view: EpisodeView) -> str:
    return (f"class {view.class_id} ({view.class_name}), {view.shots}-shot, task {view.index}: "
            f"{view.method.steps} steps, initial IoU {100 * view.initial_iou:.0f}% -> "
            f"{100 * view.final_iou:.0f}%")


def _share_top(view: EpisodeView) -> float:
    """Upper y limit of the prior panel: the curves and the true share, with some room."""
    tr = view.traces
    top = max(float(np.max(tr["pi"])), float(np.max(tr["fg_share"])), view.true_share)
    return min(1.0, 1.2 * top + 0.02)


def _marker(n: int) -> str:
    return "." if n < SHORT_TRACE else "None"


def _clean(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _set_picture(image: AxesImage, data: np.ndarray) -> None:
    """Replace an image's pixels; a new shape also resets its extent (and so the limits)."""
    old = image.get_array().shape[:2]
    image.set_data(data)
    if data.shape[:2] != old:
        h, w = data.shape[:2]
        image.set_extent((-0.5, w - 0.5, h - 0.5, -0.5))


def _in_drawing_order(ax: Axes, artists: list[Artist]) -> list[Artist]:
    """``artists`` of ``ax`` in the order ``Axes.draw`` draws them (stable sort by zorder)."""
    chosen = {id(a) for a in artists}
    return sorted((a for a in ax.get_children() if id(a) in chosen), key=Artist.get_zorder)


class ExplorerPanel:
    """The explorer's view of one task, updated in place.

    Top row: the supports (at most :data:`EXPLORER_MAX_SUPPORTS`) with their masks, the
    query with its ground truth, the prediction with its IoU; bottom row: the final
    p(foreground), the loss terms and the foreground prior with the predicted share over
    the iterations. Laid out on a fixed grid (no layout engine, fixed title positions).

    Args:
        view: the task to show first; its number of supports fixes the layout.
        dpi: resolution of :meth:`render` (None: matplotlib's default).

    Attributes:
        fig: the Figure (Agg canvas); also fit to save (it has no animated artists).
        supports: the number of supports of the layout (see :meth:`fits`).
    """

    @themed
    def __init__(self, view: EpisodeView, dpi: float | None = None) -> None:
        self.supports = len(view.support_images)
        self._shown = shown = min(self.supports, EXPLORER_MAX_SUPPORTS)
        cols = max(shown + 2, 5)
        fig = new_figure(1.9 * cols, 4.4, layout=None)
        if dpi is not None:
            fig.set_dpi(dpi)
        grid = fig.add_gridspec(2, cols, left=0.05, right=0.98, top=0.86, bottom=0.1,
                                wspace=0.3, hspace=0.4)
        self._pictures: list[AxesImage] = []
        self._titles: list[Text] = []
        for j, (picture, title) in enumerate([*_task_row(view, shown), _prediction(view)]):
            ax = fig.add_subplot(grid[0, j])
            self._pictures.append(ax.imshow(picture))
            self._titles.append(ax.set_title(title, fontsize=9, y=TITLE_Y))
            _clean(ax)
        # what a change of the method's settings leaves alone (see update and render)
        self._task = _task_inputs(view, shown)

        ax = fig.add_subplot(grid[1, 0])
        self._probs = ax.imshow(view.probs, cmap=PROB_CMAP, vmin=0, vmax=1,
                                interpolation="nearest")
        ax.set_title("final p(foreground)", fontsize=9, y=TITLE_Y)
        _clean(ax)

        tr = view.traces
        t = np.arange(len(tr["loss"]))
        self._marker = _marker(len(t))
        split = 1 + (cols - 1) // 2
        self._loss_ax = ax = fig.add_subplot(grid[1, 1:split])
        terms = [ax.plot(t, tr[term], color=colour, label=TERM_LABELS[term],
                         marker=self._marker)[0]
                 for term, colour in zip(EXPLORER_TRACES, TRACE_COLOURS, strict=True)]
        ax.set_title("loss terms (unweighted), weighted total", fontsize=9, y=TITLE_Y)
        loss_legend = self._finish_traces(ax)

        self._share_ax = ax = fig.add_subplot(grid[1, split:])
        shares = [ax.plot(t, tr[term], color=colour, label=label, marker=self._marker)[0]
                  for term, colour, label in (("pi", PRIOR_COLOUR, "prior pi"),
                                              ("fg_share", SHARE_COLOUR, "p_hat foreground"))]
        self._true = ax.axhline(view.true_share, color=PRIOR_COLOUR, linestyle=":",
                                label="true share")
        ax.set_ylim(0, _share_top(view))
        ax.set_title("foreground prior and predicted share", fontsize=9, y=TITLE_Y)
        share_legend = self._finish_traces(ax)
        self._traces = dict(zip((*EXPLORER_TRACES, "pi", "fg_share"), terms + shares,
                                strict=True))
        # a legend copies its lines' markers when it is made: they change with the trace length
        self._marked: list[Line2D] = [*terms, *shares, *loss_legend.get_lines(),
                                      *share_legend.get_lines()[:2]]
        self._suptitle = fig.suptitle(_title(view), fontsize=10)
        self.fig = fig
        self._legends = (loss_legend, share_legend)
        self._changing = self._changing_artists()
        self._background: BufferRegion | None = None  # the canvas without self._changing
        self._legend_regions: list[BufferRegion] = []
        self._drawn_at: tuple = ()

    @staticmethod
    def _finish_traces(ax: Axes) -> Legend:
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=7)
        # whole iterations; few labels: the panels are small and text is most of a redraw
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4))
        # opaque, so its saved picture can be pasted over the redrawn traces (see render)
        return ax.legend(fontsize=6, loc="upper right", framealpha=1.0)

    def _changing_artists(self) -> list[Artist]:
        """What a change of the method's settings can change, in drawing order: the
        prediction and its title, p(foreground), the traces with their axes, the title.
        Each axes' spines too, since they are drawn over its content."""
        pred = self._pictures[-1]
        parts = [(pred.axes, [pred, self._titles[-1]]), (self._probs.axes, [self._probs])]
        parts += [(ax, [ax.xaxis, ax.yaxis, *ax.lines]) for ax in (self._loss_ax, self._share_ax)]
        out: list[Artist] = []
        for ax, artists in parts:
            out += _in_drawing_order(ax, [*artists, *ax.spines.values()])
        return [*out, self._suptitle]  # figure texts are drawn after the axes

    def fits(self, view: EpisodeView) -> bool:
        """Whether :meth:`update` can show ``view`` (the same number of supports)."""
        return len(view.support_images) == self.supports

    def update(self, view: EpisodeView) -> None:
        """Show ``view`` in the same figure: new pixels, traces, limits and titles.

        Raises:
            ValueError: ``view`` has another number of supports (build a new panel).
        """
        if not self.fits(view):
            raise ValueError(f"the panel shows {self.supports} supports, the view has "
                             f"{len(view.support_images)}: build a new ExplorerPanel")
        task = _task_inputs(view, self._shown)
        if not all(np.array_equal(a, b) for a, b in zip(task, self._task, strict=True)):
            for image, (picture, _) in zip(self._pictures[:-1], _task_row(view, self._shown),
                                           strict=True):  # titles depend on the shots only
                _set_picture(image, picture)
            self._task, self._background = task, None  # another task: everything is redrawn
        marker = _marker(len(view.traces["loss"]))
        if marker != self._marker:
            self._marker, self._background = marker, None  # the legends change
        picture, title = _prediction(view)
        _set_picture(self._pictures[-1], picture)
        self._titles[-1].set_text(title)
        _set_picture(self._probs, view.probs)

        tr = view.traces
        t = np.arange(len(tr["loss"]))
        for term, line in self._traces.items():
            line.set_data(t, tr[term])
        for line in self._marked:
            line.set_marker(marker)
        self._true.set_ydata([view.true_share, view.true_share])
        for ax in (self._loss_ax, self._share_ax):
            ax.relim()
            ax.autoscale_view()  # x only on the prior panel: set_ylim turned its y off
        self._share_ax.set_ylim(0, _share_top(view))
        self._suptitle.set_text(_title(view))

    def render(self) -> np.ndarray:
        """Draw the figure at its dpi with its Agg canvas: (H, W, 4) uint8 RGBA, a copy.

        After a change of the method's settings only the changing artists are drawn, over
        the saved rest; otherwise (first call, another task, dpi or canvas) everything.
        """
        canvas = self.fig.canvas
        if not isinstance(canvas, FigureCanvasAgg):  # e.g. a notebook's backend took it
            canvas = FigureCanvasAgg(self.fig)
        drawn_at = (id(canvas), self.fig.dpi, canvas.get_width_height())
        if self._background is None or drawn_at != self._drawn_at:
            for artist in self._changing:
                artist.set_animated(True)
            try:
                canvas.draw()  # everything but the changing artists
            finally:
                for artist in self._changing:
                    artist.set_animated(False)
            renderer = canvas.get_renderer()
            self._background = canvas.copy_from_bbox(self.fig.bbox)
            self._legend_regions = [canvas.copy_from_bbox(legend.get_window_extent(renderer))
                                    for legend in self._legends]
            self._drawn_at = drawn_at
        else:
            canvas.restore_region(self._background)
        renderer = canvas.get_renderer()
        for artist in self._changing:
            artist.draw(renderer)
        for region in self._legend_regions:  # the legends stay on top of the traces
            canvas.restore_region(region)
        return np.array(canvas.buffer_rgba())


def explorer_panel(view: EpisodeView) -> Figure:
    """The explorer's figure of one task, built from scratch (see :class:`ExplorerPanel`)."""
    return ExplorerPanel(view).fig
