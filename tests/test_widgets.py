"""fsstools.studies.widgets without a frontend: building, controls and redraws of the explorer."""

from __future__ import annotations

import io

import numpy as np
import PIL.Image
import pytest

from fsstools import plots
from fsstools.studies import widgets
from tests.tiny import tiny_study

PNG = b"\x89PNG\r\n\x1a\n"


def test_figure_png_bytes():
    png = widgets.figure_png(plots.new_figure(1, 1))
    assert png[:8] == PNG
    assert widgets.figure_png(plots.new_figure(1, 1), tight=False)[:8] == PNG


def decoded(png: bytes) -> np.ndarray:
    return np.asarray(PIL.Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def test_rgba_png_keeps_the_colours_and_drops_alpha():
    rgba = np.random.default_rng(0).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    png = widgets.rgba_png(rgba)
    assert png[:8] == PNG
    assert (decoded(png) == rgba[..., :3]).all()


def test_explorer_builds_without_drawing():
    explorer = widgets.EpisodeExplorer(tiny_study(), draw=False, images=False)
    assert explorer.view is None and explorer.figure.value == b""  # cheap: nothing computed
    assert [v for _, v in explorer.class_id.options] == [1, 2]
    assert list(explorer.shots.options) == [1, 2]
    assert explorer.episode.max == 3  # 4 episodes of class 1 per list
    m = explorer.method()
    assert (m.ent_weight, m.kl_weight, m.iterations, m.prior) == (1.0, 1.0, 50, "estimate")
    assert explorer.style.layout.display == "none"  # one test style: no choice to show
    # a drag is one redraw, on release
    sliders = [explorer.episode, explorer.ce, explorer.entropy, explorer.kl, explorer.iterations]
    assert not any(s.continuous_update for s in sliders)
    assert "fsstools-explorer" in explorer.widget._dom_classes
    assert "fsstools-explorer-iterations" in explorer.iterations._dom_classes


def test_explorer_redraws_on_changes():
    explorer = widgets.EpisodeExplorer(tiny_study(), draw=True, images=False)
    assert explorer.view.shots == 1 and explorer.view.class_id == 1
    first = explorer.figure.value
    assert first[:8] == PNG and "redrawn in" in explorer.status.value
    assert explorer.last_redraw_s > 0
    explorer.shots.value = 2
    assert explorer.view.shots == 2 and len(explorer.view.support_images) == 2
    assert explorer.entropy.value == explorer.kl.value == pytest.approx(0.5)  # 1 / shots
    explorer.iterations.value = 0
    assert explorer.view.method.steps == 0
    assert len(explorer.view.traces["loss"]) == 1
    assert explorer.figure.value != first
    explorer.class_id.value = 2
    assert explorer.view.class_id == 2
    explorer.prior.value = "oracle"
    assert explorer.method().t_pi == ()


def test_explorer_switches_test_style():
    studies = {"A": tiny_study(), "B": tiny_study(n_images=10)}
    explorer = widgets.EpisodeExplorer(studies, draw=True, images=False)
    assert explorer.style.layout.display is None and list(explorer.style.options) == ["A", "B"]
    assert explorer.episode.max == 3  # A: 4 tasks of class 1
    explorer.style.value = "B"
    assert explorer.episode.max == 4  # B: 5 tasks of class 1
    assert explorer.view.class_id == 1 and explorer.view.shots == 1


def test_explorer_updates_its_figure_in_place_and_rebuilds_for_other_shots():
    explorer = widgets.EpisodeExplorer(tiny_study(), draw=True, images=False)
    panel, first = explorer.panel, explorer.figure.value
    assert panel is not None and panel.supports == 1
    explorer.kl.value = 0.3
    explorer.iterations.value = 5  # shorter traces: new limits, same layout
    assert explorer.panel is panel and explorer.figure.value != first
    # what the widget shows is what a figure built from scratch and saved shows
    fresh = decoded(widgets.figure_png(plots.explorer_panel(explorer.view),
                                       widgets.EXPLORER_DPI, tight=False))
    shown = decoded(explorer.figure.value)
    assert shown.shape == fresh.shape
    assert (np.abs(shown - fresh).max(axis=-1) > 8).mean() < 0.002
    explorer.episode.value = 2  # another task, same shots: same figure
    assert explorer.panel is panel and explorer.view.index != 0
    explorer.shots.value = 2  # two supports: another layout
    assert explorer.panel is not panel and explorer.panel.supports == 2
    assert decoded(explorer.figure.value).shape[1] == shown.shape[1]  # 5 columns either way
