"""The view-consistency scores: face found, CSIM to the source, tearing against the frontal render."""

from pathlib import Path

import numpy as np
import pytest

from splat_portrait.metrics import build_metric
from splat_portrait.metrics.identity import DlibFaceEmbedder
from splat_portrait.metrics.views import BULLET_PITCHES_DEG, BULLET_YAWS_DEG, bullet_angles, score_views
from splat_portrait.runtime.inputs import load_portrait

PORTRAIT = Path(__file__).parents[1] / ".." / "shared" / "data" / "portraits" / "happy_256.png"


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    return load_portrait(PORTRAIT, 128).crop


@pytest.fixture(scope="module")
def embedder():
    return DlibFaceEmbedder()


def test_the_bullet_path_is_the_papers_extreme_views():
    angles = bullet_angles()
    assert len(angles) == 13 * 3 and (0.0, 0.0) in angles
    assert (min(BULLET_YAWS_DEG), max(BULLET_YAWS_DEG)) == (-30.0, 30.0) and BULLET_PITCHES_DEG == (0.0, 12.5, -12.5)


def test_an_unchanged_head_scores_a_face_everywhere_full_identity_and_no_tearing(face, embedder):
    scores = score_views(embedder, {angles: face for angles in bullet_angles()}, face)
    assert scores.views == 39 and scores.face_found == 1.0
    assert scores.csim == pytest.approx(1.0, abs=1e-6)
    assert scores.tearing_mean == pytest.approx(0.0) and scores.tearing_worst == pytest.approx(0.0)


def test_stripes_in_one_view_are_its_tearing_and_the_worst_view(face, embedder):
    striped = face.copy()
    striped[:, ::2] = striped[:, ::2] // 3  # every other column darkened: the torn look of uncovered splats
    views = {angles: face for angles in bullet_angles()}
    views[(30.0, 12.5)] = striped
    scores = score_views(embedder, views, face)
    assert scores.worst_view == "30/12.5"
    assert scores.tearing_worst > 1.0
    assert scores.tearing["30/12.5"] == scores.tearing_worst and scores.tearing["0/0"] == 0.0
    assert scores.tearing_mean == pytest.approx(scores.tearing_worst / 39)


def test_a_frontal_render_without_a_face_has_no_box_and_says_so(face, embedder):
    noise = np.random.default_rng(0).integers(0, 255, face.shape, dtype=np.uint8)
    views = {angles: noise for angles in bullet_angles()}
    scores = score_views(embedder, views, face)
    assert scores.face_found == 0.0 and scores.csim is None and scores.tearing_mean is None
    assert scores.note == "no face in the frontal render: no face box"


def test_the_views_metric_is_built_with_its_implementation_named():
    metric = build_metric("views")
    assert metric.name == "views" and "Laplacian tearing" in metric.implementation
