"""fsstools.widgets without a frontend: building, controls and redraws of the explorer."""

from __future__ import annotations

import pytest

from fsstools import plots, widgets
from tests.tiny import tiny_study

PNG = b"\x89PNG\r\n\x1a\n"


def test_figure_png_bytes():
    png = widgets.figure_png(plots.new_figure(1, 1))
    assert png[:8] == PNG
    assert widgets.figure_png(plots.new_figure(1, 1), tight=False)[:8] == PNG


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
