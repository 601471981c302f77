"""Mouth-track metrics on hand-made landmark tracks with known answers, and on real frames."""

import numpy as np
import pytest

from splat_portrait.metrics import build_metric
from splat_portrait.metrics.mouth import compare_mouths, compare_tracks, landmark_distance, mouth_opening, normalise_faces

from conftest import DATA


def face(opening: float) -> np.ndarray:
    """68 points of a schematic face: eyes 1 apart, face height 2, inner lips ``opening`` apart."""
    points = np.zeros((68, 2))
    points[36:42] = [-0.5, 0.0]
    points[42:48] = [0.5, 0.0]
    points[27], points[8] = [0.0, 0.0], [0.0, 2.0]
    points[48:68] = np.stack([np.linspace(-0.3, 0.3, 20), np.full(20, 1.2)], -1)
    points[62], points[66] = [0.0, 1.2 - opening / 2], [0.0, 1.2 + opening / 2]
    return points


def track(openings) -> np.ndarray:
    return np.stack([face(o) for o in openings])


OPENINGS = 0.1 + 0.05 * np.sin(np.linspace(0, 6, 40))


def test_identical_tracks_score_lmd_0_r_1_amp_1():
    scores = compare_tracks(track(OPENINGS), track(OPENINGS))
    assert scores.lmd == 0 and scores.mouth_r == pytest.approx(1) and scores.mouth_amp == pytest.approx(1)
    assert (scores.pairs, scores.no_face_generated, scores.no_face_real, scores.notes) == (40, 0, 0, {})


def test_a_scaled_track_has_amplitude_equal_to_the_scale():
    real = track(OPENINGS)
    half = track(0.1 + 0.5 * (OPENINGS - 0.1))
    scores = compare_tracks(half, real)
    assert scores.mouth_amp == pytest.approx(0.5) and scores.mouth_r == pytest.approx(1)
    np.testing.assert_allclose(mouth_opening(real), OPENINGS / 2)  # gap over a face height of 2


def test_a_constant_track_has_an_undefined_correlation_said_so():
    scores = compare_tracks(track(np.full(40, 0.1)), track(OPENINGS))
    assert scores.mouth_r is None and scores.mouth_amp == 0
    assert scores.notes == {"mouth_r": "undefined: the generated mouth opening does not change"}
    still_real = compare_tracks(track(OPENINGS), track(np.full(40, 0.1)))
    assert still_real.mouth_r is None and still_real.mouth_amp is None
    assert still_real.notes["mouth_amp"] == "undefined: the real mouth opening does not change"


def test_lmd_is_in_inter_ocular_units_and_ignores_position_and_scale():
    real = track(OPENINGS)
    moved = real * 3.0 + np.array([40.0, -7.0])  # the same face, bigger and elsewhere in the picture
    assert landmark_distance(moved, real) == pytest.approx(0, abs=1e-12)
    np.testing.assert_allclose(np.linalg.norm(normalise_faces(moved)[:, 42:48].mean(1) - normalise_faces(moved)[:, 36:42].mean(1), axis=-1), 1)
    shifted = real.copy()
    shifted[:, 48:68, 1] += 0.1  # every mouth point 0.1 inter-ocular distances lower
    assert landmark_distance(shifted, real) == pytest.approx(0.1)


def test_frames_without_a_face_are_counted_not_averaged():
    generated, real = track(OPENINGS), track(OPENINGS)
    generated[:5] = np.nan
    real[10:12] = np.nan
    scores = compare_tracks(generated, real)
    assert (scores.pairs, scores.no_face_generated, scores.no_face_real) == (33, 5, 2)
    assert scores.notes["faces"] == "no face in 5 generated and 2 real of 40 frames; those pairs are left out"
    assert scores.mouth_r == pytest.approx(1) and scores.lmd == 0
    nothing = compare_tracks(np.full((4, 68, 2), np.nan), real[:4])
    assert nothing.lmd is None and nothing.mouth_r is None
    assert nothing.notes["mouth_r"] == "undefined: 0 frame pairs with a face on both sides (at least 3 needed)"


def test_cross_identity_leaves_out_lmd():
    scores = compare_tracks(track(OPENINGS), track(OPENINGS[::-1]), same_identity=False)
    assert scores.lmd is None and scores.mouth_r is not None


@pytest.mark.skipif(not DATA.is_dir(), reason=f"sample data folder {DATA} is absent")
def test_on_a_real_talking_clip_copy_source_does_not_move():
    from splat_portrait.media.video import read_frames

    frames = np.stack([f for _, f in zip(range(40), read_frames(DATA / "videos" / "hdtf_wda_katiehill.mp4"))])
    assert build_metric("mouth").name == "mouth"
    real = compare_mouths(frames, frames)
    assert real.pairs == 40 and real.lmd == 0 and real.mouth_r == pytest.approx(1)
    copy = compare_mouths(np.repeat(frames[:1], 40, axis=0), frames)
    assert copy.mouth_amp == 0 and copy.mouth_r is None and copy.lmd > 0
