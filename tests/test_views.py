"""fsstools.evaluation.views: one episode as plain data, and the PCA of features."""

from __future__ import annotations

import numpy as np
import pytest

from fsstools.evaluation import views
from fsstools.inference import METHODS
from tests.tiny import FEATURE_GRID, IMAGE_SIZE, tiny_study


def test_episode_view_on_tiny_study():
    st = tiny_study()
    view = views.episode_view(st.store, st.episode_lists[2, 0], index=3, images=False)
    assert view.class_id == 2 and view.class_name == "rectangle-checker"
    assert view.support_images.shape == (2, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert view.support_masks.shape == (2, IMAGE_SIZE, IMAGE_SIZE)
    assert set(np.unique(view.support_masks)) == {0, 1}
    assert view.prediction.shape == view.initial.shape == (IMAGE_SIZE, IMAGE_SIZE)
    assert view.cosine.shape == view.probs.shape == (FEATURE_GRID, FEATURE_GRID)
    assert len(view.traces["loss"]) == METHODS["repri"].steps + 1
    assert view.true_share == pytest.approx(4 / 16)
    assert -1 <= view.cosine.min() and view.cosine.max() <= 1 + 1e-6
    assert view.final_iou == views.mask_iou(view.prediction, view.query_mask)


def test_mask_iou_and_feature_pca():
    mask = np.array([[1, 0], [255, 1]])
    assert views.mask_iou(np.array([[True, True], [True, False]]), mask) == pytest.approx(1 / 3)
    assert np.isnan(views.mask_iou(np.zeros((2, 2), bool), np.zeros((2, 2), int)))
    feats = np.random.default_rng(0).normal(size=(2, 6, 3, 3))
    pca = views.feature_pca(feats)
    assert pca.shape == (2, 3, 3, 3) and pca.min() >= 0 and pca.max() <= 1
