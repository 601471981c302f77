import numpy as np
import pytest

from splat_portrait.metrics.motion import MOUTH_BOX, UPPER_FACE_BOX, region_motion


def test_a_still_region_scores_zero_and_a_flicker_half_its_swing():
    frames = np.zeros((6, 100, 100, 3), np.uint8)
    frames[1::2, 62:82, 36:64] = 40  # the mouth box flickers between 0 and 40
    assert region_motion(frames, MOUTH_BOX) == pytest.approx(20.0)
    assert region_motion(frames, UPPER_FACE_BOX) == 0.0


def test_only_the_pixels_of_the_box_count():
    frames = np.zeros((4, 10, 10), np.float32)
    frames[::2, :5, :5] = 2.0  # the top-left quarter flickers by 2
    assert region_motion(frames, (0.0, 0.0, 0.5, 0.5)) == pytest.approx(1.0)
    assert region_motion(frames, (0.0, 0.0, 1.0, 1.0)) == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("shape", "box", "message"),
    [
        ((1, 8, 8, 3), MOUTH_BOX, r"frames must be \(T, H, W\[, C\]\) with T >= 2, got shape \(1, 8, 8, 3\)"),
        ((4, 8), MOUTH_BOX, r"frames must be \(T, H, W\[, C\]\) with T >= 2, got shape \(4, 8\)"),
        ((4, 8, 8), (0.5, 0.5, 0.5, 0.9), r"box \(0.5, 0.5, 0.5, 0.9\) is empty or outside a 8x8 frame"),
    ],
)
def test_bad_input_is_refused_with_its_shape(shape, box, message):
    with pytest.raises(ValueError, match=message):
        region_motion(np.zeros(shape), box)
