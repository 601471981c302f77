from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from splat_portrait.camera import DEFAULT_RADIUS, default_c2w, default_intrinsics, intrinsics_to_K, invert_rigid, orbit_around
from splat_portrait.errors import SplatPortraitError
from splat_portrait.face import pose
from splat_portrait.face.crop import crop_square, fill_gaps, ffhq_box, smooth_boxes, to_crop_coordinates
from splat_portrait.face.detect import detect_landmarks, face_model_path
from splat_portrait.face.track import track_face

SHARED = Path(__file__).parents[1] / ".." / "shared" / "data"


def _yaw_pitch_deg(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the camera sits around the head: yaw to its right, pitch up (orbit_around's angles)."""
    p = c2w[:, :3, 3]
    return np.degrees(np.arctan2(p[:, 0], -p[:, 2])), np.degrees(np.arctan2(-p[:, 1], np.hypot(p[:, 0], p[:, 2])))


def test_ffhq_box_from_eyes_and_mouth():
    lm = np.zeros((68, 2))
    lm[36:42] = (40, 50)
    lm[42:48] = (60, 50)
    lm[48], lm[54] = (45, 70), (55, 70)
    # eye-to-eye 20, eye-to-mouth 20: side = 2 * max(2 * 20, 1.8 * 20); centre 10% towards the mouth.
    np.testing.assert_allclose(ffhq_box(lm), [50, 52, 80])
    np.testing.assert_allclose(ffhq_box(np.stack([lm, lm * 2])), [[50, 52, 80], [100, 104, 160]])


def test_fill_gaps_interpolates_and_holds_ends():
    values = np.array([[np.nan], [1.0], [np.nan], [np.nan], [4.0], [np.nan]])
    np.testing.assert_allclose(fill_gaps(values)[:, 0], [1, 1, 2, 3, 4, 4])
    with pytest.raises(ValueError, match="no known values"):
        fill_gaps(np.full((3, 2), np.nan))


def test_smoothed_boxes_are_stable_under_noisy_detections():
    rng = np.random.default_rng(0)
    t = np.arange(250) / 25
    truth = np.stack([200 + 20 * np.sin(0.5 * t), 180 + 10 * np.sin(0.3 * t), 300 + 5 * np.sin(0.2 * t)], -1)
    noisy = truth + rng.normal(0, 2.0, truth.shape)
    noisy[rng.random(250) < 0.1] = np.nan  # missed detections
    smooth = smooth_boxes(noisy)
    # Jitter: frame-to-frame motion that the true path does not have.
    raw_jitter = np.diff(fill_gaps(noisy) - truth, axis=0).std(0)
    jitter = np.diff(smooth - truth, axis=0).std(0)
    assert (raw_jitter > 2.0).all()
    assert (jitter < 0.2).all(), jitter
    assert np.abs(np.diff(smooth, 2, axis=0)).max() < 0.25
    assert np.abs(smooth - truth).max() < 2.5


def test_crop_square_keeps_sub_pixel_position_and_pads_outside():
    x = np.arange(100, dtype=np.float64)
    image = np.repeat(np.repeat((2 * x)[None, :, None], 100, 0), 3, 2).astype(np.uint8)
    a = crop_square(image, np.array([50.0, 50.0, 40.0]), 40).astype(float)
    b = crop_square(image, np.array([50.5, 50.0, 40.0]), 40).astype(float)
    assert a.shape == (40, 40, 3)
    np.testing.assert_allclose(a[0, :, 0], 2 * (np.arange(40) + 30), atol=1)
    assert (b - a)[:, 2:-2].mean() == pytest.approx(1.0, abs=0.1)  # half a pixel on a slope of 2
    # A box hanging over the left edge reflects the image there.
    c = crop_square(image, np.array([5.0, 50.0, 20.0]), 20).astype(float)
    assert c.shape == (20, 20, 3)
    np.testing.assert_allclose(c[0, :5, 0], 2 * np.array([4.5, 3.5, 2.5, 1.5, 0.5]), atol=1.5)
    small = crop_square(image, np.array([50.0, 50.0, 400.0]), 32)
    assert small.shape == (32, 32, 3)


def test_crop_coordinates():
    box = np.array([50.0, 60.0, 20.0])
    points = np.array([[40.0, 50.0], [60.0, 70.0], [50.0, 60.0]])
    np.testing.assert_allclose(to_crop_coordinates(points, box), [[0, 0], [1, 1], [0.5, 0.5]])


def test_template_frontal_view_fills_the_ffhq_crop():
    template = pose.head_template()
    assert template.shape == (68, 3)
    uv = pose.project(template, np.zeros((1, 3)), np.array([[0, 0, DEFAULT_RADIUS]]))[0]
    cx, cy, side = ffhq_box(uv)
    assert (cx, cy) == pytest.approx((0.5, 0.5), abs=0.005)
    assert side == pytest.approx(1.0, abs=0.01)
    # The fit of that view is the default camera.
    c2w = pose.poses_to_c2w(pose.fit_poses(uv[None]))
    np.testing.assert_allclose(c2w[0], default_c2w().numpy(), atol=1e-4)


def test_projection_matches_the_camera_convention():
    c2w = orbit_around(default_c2w(), torch.tensor(0.3), torch.tensor(-0.2)).double()
    c2w[:3, 3] += torch.tensor([0.05, -0.02, 0.1], dtype=torch.float64)
    w2c = invert_rigid(c2w).numpy()
    params = np.r_[Rotation.from_matrix(w2c[:3, :3]).as_rotvec(), w2c[:3, 3]][None]
    np.testing.assert_allclose(pose.poses_to_c2w(params)[0], c2w.numpy(), atol=1e-7)
    points = pose.head_template()
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    K = intrinsics_to_K(default_intrinsics(dtype=torch.float64), 256, 256).numpy()
    pixels = (cam @ K.T)[:, :2] / cam[:, 2:]
    np.testing.assert_allclose(pose.project(points, params[:, :3], params[:, 3:])[0] * 256, pixels, atol=1e-9)


def test_pose_fit_recovers_known_poses_from_noisy_landmarks():
    rng = np.random.default_rng(1)
    n = 300
    yaw, pitch = rng.uniform(-40, 40, n), rng.uniform(-20, 20, n)
    c2w = orbit_around(default_c2w(dtype=torch.float64), torch.tensor(np.radians(yaw)), torch.tensor(np.radians(pitch)))
    c2w[:, :3, 3] += torch.tensor(rng.normal(0, 0.05, (n, 3)))
    w2c = invert_rigid(c2w).numpy()
    uv = pose.project(pose.head_template(), Rotation.from_matrix(w2c[:, :3, :3]).as_rotvec(), w2c[:, :3, 3])
    uv += rng.normal(0, 1.5 / 256, uv.shape)  # 1.5 px of landmark noise in a 256 px crop
    fitted = pose.poses_to_c2w(pose.fit_poses(uv))
    true_yaw, true_pitch = _yaw_pitch_deg(c2w.numpy())
    fit_yaw, fit_pitch = _yaw_pitch_deg(fitted)
    assert np.abs(fit_yaw - true_yaw).mean() < 2.0
    assert np.abs(fit_pitch - true_pitch).mean() < 2.0
    assert np.abs(fitted[:, :3, 3] - c2w.numpy()[:, :3, 3]).mean() < 0.03


def test_estimate_cameras_fills_missing_frames_and_smooths():
    rng = np.random.default_rng(2)
    n = 60
    yaw = np.radians(np.linspace(-20, 20, n))
    c2w = orbit_around(default_c2w(dtype=torch.float64), torch.tensor(yaw), torch.zeros(n, dtype=torch.float64))
    w2c = invert_rigid(c2w).numpy()
    uv = pose.project(pose.head_template(), Rotation.from_matrix(w2c[:, :3, :3]).as_rotvec(), w2c[:, :3, 3])
    uv += rng.normal(0, 2 / 256, uv.shape)
    known = np.ones(n, bool)
    known[20:25] = False
    uv[~known] = np.nan
    cameras = pose.estimate_cameras(uv, known)
    fit_yaw, _ = _yaw_pitch_deg(cameras)
    assert np.isfinite(cameras).all()
    assert np.abs(fit_yaw - np.degrees(yaw)).max() < 2.0
    raw_yaw, _ = _yaw_pitch_deg(pose.estimate_cameras(uv, known, sigma_frames=0))
    assert np.abs(np.diff(fit_yaw, 2)).mean() < 0.5 * np.abs(np.diff(raw_yaw, 2)).mean()


def test_model_files_ship_in_the_package():
    assert face_model_path("shape_predictor_68_face_landmarks.dat").stat().st_size > 90_000_000
    with pytest.raises(SplatPortraitError, match=r"no_such_model\.dat is missing; reinstall it"):
        face_model_path("no_such_model.dat")


def test_detects_a_face_and_nothing_in_noise():
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image provides the public-domain test portrait")
    image = skimage_data.astronaut()
    lm = detect_landmarks(image)
    assert lm.shape == (68, 2)
    cx, cy, side = ffhq_box(lm)
    # The astronaut's face: centred near (225, 105) in the 512 px image.
    assert abs(cx - 225) < 15 and abs(cy - 105) < 15 and 140 < side < 210
    assert detect_landmarks(np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)) is None


@pytest.mark.skipif(not (SHARED / "videos").is_dir(), reason="the shared sample videos (../shared/data/videos) are absent")
@pytest.mark.parametrize("name", ["hdtf_wda_aoc", "hdtf_wda_katiehill", "talk_1", "talk_2", "talk_3", "talk_4"])
def test_face_found_on_95_percent_of_real_frames_and_crops_are_stable(name):
    track = track_face(SHARED / "videos" / f"{name}.mp4")
    assert len(track) > 100
    assert track.found.mean() >= 0.95
    assert np.isfinite(track.c2w).all()
    # Crop jitter, as frame-to-frame acceleration relative to the crop size: the smoothed box moves
    # under 0.2% of its side per frame squared (half a pixel in a 256 px crop), far below raw boxes.
    side = track.boxes[:, 2].mean()
    raw = np.abs(np.diff(fill_gaps(ffhq_box(track.landmarks)), 2, axis=0)).mean(0) / side
    smooth = np.abs(np.diff(track.boxes, 2, axis=0)).mean(0) / side
    assert (smooth < 0.002).all() and (smooth < raw / 3).all()
