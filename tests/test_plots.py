"""fsstools.plots on tiny DataFrames and arrays: what is drawn, not how it looks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection, QuadMesh
from matplotlib.colors import to_rgb
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from fsstools import plots
from fsstools.evaluation import views
from fsstools.inference import METHODS
from fsstools.plots.style import (
    BACKGROUND_DIM,
    CONTOUR_COLOUR,
    METHOD_COLOURS,
    METHOD_LABELS,
    colours,
)
from fsstools.studies import report


def summary_rows(methods=("ce", "repri"), shots=(1, 5)) -> pd.DataFrame:
    rows = []
    for i, m in enumerate(methods):
        for j, k in enumerate(shots):
            v = 0.5 + 0.1 * i + 0.05 * j
            rows.append(
                {
                    "method": m,
                    "shots": k,
                    "miou": v,
                    "miou_low": v - 0.02,
                    "miou_high": v + 0.03,
                    "fbiou": v + 0.1,
                    "fbiou_low": v + 0.08,
                    "fbiou_high": v + 0.12,
                }
            )
    return pd.DataFrame(rows)


def tiny_view(shots: int = 2) -> views.EpisodeView:
    size, grid = 8, 2
    mask = np.zeros((size, size), dtype=np.int64)
    mask[:4, :4] = 1
    mask[-1] = 255
    traces = {
        k: np.linspace(1, 0, 4) for k in ("loss", "ce", "entropy", "kl", "pi", "fg_share", "iou")
    }
    return views.EpisodeView(
        class_id=3,
        class_name="triangle-dots",
        shots=shots,
        index=0,
        query_image=np.full((size, size, 3), 200, np.uint8),
        query_mask=mask,
        support_images=np.zeros((shots, size, size, 3), np.uint8),
        support_masks=np.stack([mask] * shots),
        cosine=np.eye(grid),
        initial=mask == 1,
        prediction=np.zeros((size, size), bool),
        probs=np.eye(grid),
        traces=traces,
        true_share=0.25,
        method=METHODS["repri"],
    )


def test_every_method_of_a_figure_gets_its_own_colour():
    every = [*METHOD_LABELS, "CE + RePRI", "PANet + RePRI", "some arm"]
    assert len(set(colours(every).values())) == len(every)
    headline = ["panet", "inductive", "ce_support", "ce", "repri", "oracle_repri"]
    assert colours(headline) == {m: METHOD_COLOURS[m] for m in headline}  # stable colours
    # two methods sharing a fixed colour, and more keys than the palette holds
    assert len(set(colours(["inductive", "base_model", "x"]).values())) == 3
    many = [f"arm {i}" for i in range(40)]
    assert len(set(colours(many).values())) == 40
    # the headline figure: one line colour per method
    fig = plots.shot_curves(summary_rows(methods=headline, shots=(1, 5, 10)))
    drawn = [to_rgb(line.get_color()) for line in fig.axes[0].lines]
    assert len(drawn) == len(headline) and len(set(drawn)) == len(headline)


def test_bar_ci_draws_one_bar_per_group_with_intervals():
    fig = plots.bar_ci(summary_rows(), title="t")
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    heights = sorted(p.get_height() for c in bars for p in c)
    assert heights == pytest.approx([50, 55, 60, 65])  # percent
    # the intervals are the precomputed columns: repri 5-shot is 65 [63, 68]
    caps = [seg for c in ax.collections for seg in getattr(c, "get_segments", list)()]
    assert any(np.allclose(sorted(seg[:, 1]), [63, 68]) for seg in caps)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["CE from query-mean bias", "RePRI (paper text)"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["shots=1", "shots=5"]
    assert ax.get_ylabel() == "mIoU (%)"


def test_shot_curves_one_line_and_band_per_method():
    fig = plots.shot_curves(summary_rows(shots=(1, 5, 10)))
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert len(ax.lines) == 2
        assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 2
    assert list(fig.axes[0].lines[1].get_xdata()) == [1, 5, 10]
    assert fig.axes[1].lines[1].get_ydata()[0] == pytest.approx(70)  # FB-IoU of repri 1-shot


def test_trace_curves_grid_and_missing_terms():
    table = pd.DataFrame(
        [
            {
                "method": "repri",
                "shots": k,
                "term": "ce",
                "iteration": t,
                "mean": 1.0 / (t + 1),
                "low": 0.0,
                "high": 1.0,
            }
            for k in (1, 5)
            for t in range(3)
        ]
    )
    fig = plots.trace_curves(table, terms=("ce", "kl"))
    assert len(fig.axes) == 4
    assert len(fig.axes[0].lines) == 1 and len(fig.axes[1].lines) == 0  # no kl rows


def test_prior_error_hist_counts_clipped_errors():
    errors = pd.DataFrame(
        {
            "shots": 1,
            "stage": ["initial (t=0)"] * 3 + ["final (t=T)"] * 2,
            "rel_error": [5.0, 0.1, -0.2, 0.0, 0.3],
        }
    )
    fig = plots.prior_error_hist(errors)
    ax = fig.axes[0]
    assert sum(p.get_height() for p in ax.patches) == 5  # the 5.0 lands in the last bin
    assert "median |err|" in ax.get_legend().get_texts()[0].get_text()


def test_delta_curve_with_reference_line():
    summary = summary_rows(methods=("oracle",), shots=(1,)).loc[[0, 0]].reset_index(drop=True)
    summary["prior_delta"] = [-0.5, 0.5]
    ref = summary_rows(methods=("repri",), shots=(1,))
    fig = plots.delta_curve(summary, reference=ref)
    ax = fig.axes[0]
    dashed = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_ydata()[0] == pytest.approx(50)
    assert list(ax.lines[0].get_xdata()) == [-0.5, 0.5]


def test_difference_plot_marks_zero():
    diff = summary_rows(methods=("ce", "inductive")).assign(miou=[-0.01, 0.0, -0.1, -0.2])
    fig = plots.difference_plot(diff, reference="repri")
    ax = fig.axes[0]
    assert "RePRI" in ax.get_xlabel()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["CE from query-mean bias", "Prototype, support-fit bias (inductive)"]


def test_training_curves_and_class_heatmap():
    history = pd.DataFrame(
        {
            "fold": [0, 0, 1, 1],
            "epoch": [1, 2, 1, 2],
            "train_loss": [1.0, 0.5, 1.1, 0.6],
            "val_miou": [0.1, 0.2, 0.1, 0.3],
            "val_miou_fg": [0.05, 0.1, 0.05, 0.2],
        }
    )
    fig = plots.training_curves(history)
    drawn = [ln for ln in fig.axes[0].lines if len(ln.get_xdata())]
    assert len(fig.axes) == 3 and len(drawn) == 2
    assert list(drawn[1].get_ydata()) == pytest.approx([1.1, 0.6])
    by_variant = plots.training_curves(history.assign(variant=["fp32", "fp32", "bf16", "bf16"]),
                                       by="variant")
    legend = [t.get_text() for t in by_variant.axes[0].get_legend().get_texts()]
    assert legend == ["bf16", "fp32"]  # the column's values, not "fold ..."
    bf16 = [ln for ln in by_variant.axes[0].lines if len(ln.get_xdata())][0]
    assert list(bf16.get_ydata()) == pytest.approx([1.1, 0.6])
    scores = pd.DataFrame({"fold": [0, 0], "class_id": [0, 7], "iou": [0.9, 0.4]})
    heat = plots.class_iou_heatmap(scores)
    (mesh,) = [c for c in heat.axes[0].collections if isinstance(c, QuadMesh)]
    grid = np.ma.filled(mesh.get_array().astype(float), np.nan).reshape(1, 21)
    assert grid[0, 7] == pytest.approx(40) and grid[0, 0] == pytest.approx(90)
    assert np.isnan(grid[0, 1])  # novel class of the fold: blank
    labels = [t.get_text() for t in heat.axes[0].get_xticklabels()]
    assert labels[0] == "bg" and len(labels) == 21


def test_overlay_darkens_background_and_greys_ignored():
    image = np.full((2, 2, 3), 255, np.uint8)
    out = plots.overlay(image, np.array([[1, 0], [255, 1]]))
    assert out[0, 0].tolist() == [1.0, 1.0, 1.0]
    assert out[0, 1, 0] == pytest.approx(BACKGROUND_DIM)
    assert out[1, 0, 0] == pytest.approx(0.5 * BACKGROUND_DIM + 0.25)


def test_episode_figures_and_pca_panel(tmp_path):
    view = tiny_view()
    panel = plots.episode_panel(view)
    assert len(panel.axes) == 2 + 3
    assert "IoU 0%" in panel.axes[-1].get_title()
    walk = plots.episode_walkthrough(view)
    titles = [ax.get_title() for ax in walk.axes]
    assert any("initial prediction" in t and "IoU 100%" in t for t in titles)
    pca = plots.pca_panel(
        np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 8), np.uint8), np.zeros((2, 2, 2, 3))
    )
    assert len(pca.axes) == 6
    path = report.save_figure(walk, tmp_path, "walk")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert isinstance(walk, Figure) and walk.canvas is not None


def test_explorer_panel_shows_the_task_and_its_traces():
    view = tiny_view(shots=2)
    fig = plots.explorer_panel(view)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:4] == ["support 1", "support 2", "query + ground truth", "prediction, IoU 0%"]
    assert "final p(foreground)" in titles
    loss_ax = next(ax for ax in fig.axes if ax.get_title().startswith("loss terms"))
    assert len(loss_ax.lines) == len(plots.explorer.EXPLORER_TRACES)
    prior_ax = next(ax for ax in fig.axes if ax.get_title().startswith("foreground prior"))
    true_line = [ln for ln in prior_ax.lines if ln.get_linestyle() == ":"]
    assert true_line and true_line[0].get_ydata()[0] == pytest.approx(0.25)
    assert fig.get_layout_engine() is None  # a redraw is one draw pass
    many = plots.explorer_panel(tiny_view(shots=7))
    assert "support 1 of 7" in [ax.get_title() for ax in many.axes]


def test_probability_maps_one_panel_per_iteration():
    view = tiny_view()
    maps = {10: np.full((2, 2), 0.9), 0: np.zeros((2, 2))}
    fig = plots.probability_maps(maps, view)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:3] == ["query + ground truth", "t = 0", "t = 10"]  # sorted by iteration
    assert fig.axes[2].images[0].get_array()[0, 0] == pytest.approx(0.9)


def test_outlined_paints_the_inner_boundary_only():
    image = np.full((8, 8, 3), 255, np.uint8)
    mask = np.zeros((8, 8), np.int64)
    mask[2:6, 2:6] = 1
    out = plots.outlined(image, mask)
    yellow = np.all(np.isclose(out, to_rgb(CONTOUR_COLOUR)), axis=-1)
    ring = np.zeros((8, 8), bool)
    ring[2:6, 2:6] = True
    ring[3:5, 3:5] = False
    assert (yellow == ring).all()  # 1 pixel wide at this size, inside the mask
    assert out[3, 3].tolist() == [1.0, 1.0, 1.0]
    full = plots.outlined(image, np.ones((8, 8), np.int64))  # no edge inside the frame
    assert not np.all(np.isclose(full, to_rgb(CONTOUR_COLOUR)), axis=-1).any()
    wide = plots.images.mask_boundary(np.pad(np.ones((8, 8), bool), 4), width=2)
    assert wide.sum() == 8 * 8 - 4 * 4


def varied_view(seed: int, shots: int = 2, steps: int = 20) -> views.EpisodeView:
    """A task with noisy pictures, a shifted prediction and random traces of ``steps + 1``
    values, so that anything left over from another view shows in the drawing."""
    rng = np.random.default_rng(seed)
    size = 32
    mask = np.zeros((size, size), np.int64)
    mask[4 + seed : 20 + seed, 6:26] = 1
    base = tiny_view(shots)
    traces = {k: rng.uniform(0, 1 + 3 * seed, steps + 1) for k in base.traces}
    traces["pi"] = traces["fg_share"] = rng.uniform(0, 0.6, steps + 1)
    return dataclasses.replace(
        base,
        index=seed,
        query_image=rng.integers(0, 255, (size, size, 3), dtype=np.uint8),
        query_mask=mask,
        support_images=rng.integers(0, 255, (shots, size, size, 3), dtype=np.uint8),
        support_masks=np.stack([np.roll(mask, i, axis=1) for i in range(shots)]),
        initial=mask == 1,
        prediction=np.roll(mask == 1, 3 * seed, axis=0),
        probs=rng.uniform(0, 1, (4, 4)),
        traces=traces,
        true_share=0.1 + 0.1 * seed,
    )


def assert_same_picture(a: np.ndarray, b: np.ndarray) -> None:
    """Equal up to antialiasing at the edge of a pasted legend (see ExplorerPanel.render)."""
    assert a.shape == b.shape
    differs = np.abs(a.astype(int) - b.astype(int)).max(axis=-1) > 8
    assert differs.mean() < 0.002, f"{differs.sum()} pixels differ"


def test_explorer_panel_updated_in_place_draws_what_a_new_one_draws():
    panel = plots.ExplorerPanel(varied_view(0, steps=0), dpi=40)  # one point: markers
    first = panel.render()
    fig = panel.fig
    # another task and longer traces: pictures, markers, limits, titles all change
    other = varied_view(1)
    panel.update(other)
    drawn = panel.render()
    assert panel.fig is fig
    assert_same_picture(drawn, plots.ExplorerPanel(other, dpi=40).render())
    assert (np.abs(drawn.astype(int) - first).max(axis=-1) > 8).mean() > 0.05
    # the same task under other settings: drawn over the saved rest of the figure
    tr = other.traces
    setting = dataclasses.replace(other, prediction=~other.prediction, probs=other.probs.T,
                                  true_share=0.5, traces={k: v[::-1] * 2 for k, v in tr.items()})
    panel.update(setting)
    again = panel.render()
    assert_same_picture(again, plots.ExplorerPanel(setting, dpi=40).render())
    assert (np.abs(again.astype(int) - drawn).max(axis=-1) > 8).mean() > 0.02
    # another task with traces as long: the saved rest of the figure is stale
    third = varied_view(2)
    panel.update(third)
    assert_same_picture(panel.render(), plots.ExplorerPanel(third, dpi=40).render())
    # a new figure is saved whole: nothing is left animated by the partial draws
    assert not any(a.get_animated() for a in fig.findobj())
    with pytest.raises(ValueError, match="build a new ExplorerPanel"):
        panel.update(varied_view(0, shots=3))


# ----------------------------------------------------------------------------- generalized


def gfss_summary() -> pd.DataFrame:
    rows = []
    for i, m in enumerate(("base_model", "gfss_prototypes", "diam")):
        for k in (1, 5):
            base, novel = 0.7 - 0.1 * i, 0.1 * i + 0.02 * k
            rows.append({"method": m, "shots": k, "base": base, "base_low": base - 0.02,
                         "base_high": base + 0.02, "novel": novel, "novel_low": novel / 2,
                         "novel_high": novel + 0.05})
    return pd.DataFrame(rows)


def test_base_novel_tradeoff_puts_each_method_at_base_novel():
    fig = plots.base_novel_tradeoff(gfss_summary(), title="t")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "base mIoU (%)" and ax.get_ylabel() == "novel mIoU (%)"
    points = {tuple(np.round(line.get_xydata()[0], 6)) for line in ax.lines
              if line.get_marker() in ("o", "s") and len(line.get_xydata())}
    assert (50.0, 30.0) in points and (70.0, 2.0) in points  # diam 5-shot, base model 1-shot
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[:3] == ["Base model alone (no novel class)",
                          "Base classifier + novel prototypes (no fit)", "DIaM"]
    assert labels[3:] == ["1-shot", "5-shot"]


def test_query_classes_panel_colours_every_class_and_marks_novel_ones():
    target = np.zeros((8, 8), np.int64)
    target[:4], target[0, 0] = 6, 255
    pred = np.full((8, 8), 1)
    view = views.QueryView(np.zeros((8, 8, 3), np.uint8), target, {"base_model": target,
                     "diam": pred}, {0: "background", 6: "bus", 1: "aeroplane"}, (6,), (1,),
                     "JPEGImages/q.jpg", 1, 0)
    fig = plots.query_classes_panel(view)
    assert [ax.get_title() for ax in fig.axes] == ["query", "labels",
                                                   "Base model alone (no novel class)", "DIaM"]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["background", "aeroplane (novel)", "bus"]
    shown = fig.axes[1].images[0].get_array()
    assert tuple(shown[0, 0]) == (1.0, 1.0, 1.0) and tuple(shown[7, 7]) == (0.0, 0.0, 0.0)
