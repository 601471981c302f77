"""Head pose from 2D landmarks: a generic 3D face template fitted per frame, smoothed over time.

The head is the world origin and the camera moves (camera.py's convention). For each frame we find
the camera whose projection of the template, with the default intrinsics, best matches the
landmarks in normalised crop coordinates (Levenberg-Marquardt on axis-angle + translation, all
frames at once). A frontal face framed like FFHQ gives ``c2w = [I | (0, 0, -2.7)]``.

Template scale. The crop rule (crop.py) makes the crop side ``S = 2 max(2 e, 1.8 m)`` where ``e``
is the eye-to-eye and ``m`` the eye-to-mouth distance. Seen frontally from distance ``D`` to those
features, the crop spans ``S / (D / f)`` of the image for normalised focal ``f``; it must span
exactly 1, so ``D = f S``. With the camera 2.7 from the origin and the eye/mouth features ``z_f``
in front of it, ``2.7 = s (f S_mm + z_f_mm)`` gives the world units per millimetre ``s``.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.spatial.transform import Rotation

from splat_portrait.camera import DEFAULT_FOCAL, DEFAULT_RADIUS
from splat_portrait.face.crop import ffhq_box, fill_gaps
from splat_portrait.face.landmarks import LEFT_EYE, MOUTH_CORNERS, RIGHT_EYE

# Generic head, millimetres, x right, y down, z away from the viewer, nose tip at z = 0.
# x, y: mean of dlib's 68 landmarks over near-frontal frames of talking-head videos, mirrored and
# averaged for symmetry, rotated level and scaled to a 63 mm distance between the eye centres.
# z: set by hand from typical facial depth profiles (eye corners 32-47 mm behind the nose tip, the
# ear-level contour about 100 mm). Row order is the iBUG 300-W 68-point numbering.
_TEMPLATE_MM = np.array([
    [-71.0, 5.0, 100], [-70.0, 23.5, 95], [-67.0, 42.0, 88], [-64.0, 60.0, 80], [-58.0, 77.5, 70],
    [-48.5, 92.5, 60], [-35.0, 105.0, 50], [-19.0, 114.5, 40], [0.0, 117.5, 36], [19.0, 114.5, 40],
    [35.0, 105.0, 50], [48.5, 92.5, 60], [58.0, 77.5, 70], [64.0, 60.0, 80], [67.0, 42.0, 88],
    [70.0, 23.5, 95], [71.0, 5.0, 100],
    [-57.5, -15.5, 47], [-49.0, -24.5, 37], [-37.0, -28.0, 30], [-24.0, -27.0, 27], [-12.5, -21.5, 26],
    [12.5, -21.5, 26], [24.0, -27.0, 27], [37.0, -28.0, 30], [49.0, -24.5, 37], [57.5, -15.5, 47],
    [0.0, -4.5, 22], [0.0, 7.0, 15], [0.0, 18.5, 8], [0.0, 30.5, 0],
    [-13.5, 41.0, 22], [-7.0, 43.0, 18], [0.0, 45.0, 16], [7.0, 43.0, 18], [13.5, 41.0, 22],
    [-43.5, 0.5, 47], [-36.0, -4.5, 38], [-27.0, -4.5, 37], [-18.5, 1.0, 32], [-27.0, 3.5, 37], [-36.5, 3.5, 38],
    [18.5, 1.0, 32], [27.0, -4.5, 37], [36.0, -4.5, 38], [43.5, 0.5, 47], [36.5, 3.5, 38], [27.0, 3.5, 37],
    [-26.5, 69.5, 33], [-17.0, 62.0, 22], [-7.0, 58.0, 16], [0.0, 59.5, 14], [7.0, 58.0, 16], [17.0, 62.0, 22],
    [26.5, 69.5, 33], [17.5, 79.0, 26], [7.5, 83.0, 20], [0.0, 84.0, 19], [-7.5, 83.0, 20], [-17.5, 79.0, 26],
    [-22.0, 69.5, 31], [-7.0, 65.5, 21], [0.0, 66.0, 19], [7.0, 65.5, 21], [22.0, 69.5, 31],
    [7.0, 72.0, 23], [0.0, 73.0, 21], [-7.0, 72.0, 23],
])  # fmt: skip
# The head's centre (the world origin, which cameras orbit) sits at the depth of the ear-level contour.
_HEAD_CENTRE_DEPTH_MM = 100.0

# Fit weights: the jaw contour is a silhouette that slides with pose and opens with speech, and the
# mouth changes shape while talking; eyes, brows and nose are the stable points.
FIT_WEIGHTS = np.concatenate([np.full(17, 0.3), np.ones(31), np.full(20, 0.5)])


@functools.lru_cache(maxsize=1)
def head_template() -> np.ndarray:
    """The 68 template landmarks (68, 3) in world units, head centre at the origin."""
    box = ffhq_box(_TEMPLATE_MM[:, :2])
    features = np.r_[np.arange(68)[LEFT_EYE], np.arange(68)[RIGHT_EYE], list(MOUTH_CORNERS)]
    feature_depth = _HEAD_CENTRE_DEPTH_MM - _TEMPLATE_MM[features, 2].mean()
    scale = DEFAULT_RADIUS / (DEFAULT_FOCAL * box[2] + feature_depth)
    origin = np.array([box[0], box[1], _HEAD_CENTRE_DEPTH_MM])
    return (_TEMPLATE_MM - origin) * scale


def project(points: np.ndarray, rotvec: np.ndarray, translation: np.ndarray, focal: float = DEFAULT_FOCAL) -> np.ndarray:
    """Normalised image coordinates (F, N, 2) of world points (N, 3) seen by world-to-camera poses (F, 3) + (F, 3)."""
    cam = np.einsum("fij,nj->fni", Rotation.from_rotvec(rotvec).as_matrix(), points) + translation[:, None]
    return focal * cam[..., :2] / cam[..., 2:] + 0.5


def fit_poses(landmarks: np.ndarray, iterations: int = 15, focal: float = DEFAULT_FOCAL) -> np.ndarray:
    """World-to-camera poses (F, 6) (axis-angle, translation) for landmarks (F, 68, 2) in normalised crop coordinates."""
    template = head_template()
    weights = np.sqrt(FIT_WEIGHTS)[None, :, None]
    num = len(landmarks)
    params = np.tile(np.array([0.0, 0.0, 0.0, 0.0, 0.0, DEFAULT_RADIUS]), (num, 1))

    def residuals(p: np.ndarray, targets: np.ndarray) -> np.ndarray:
        return ((project(template, p[:, :3], p[:, 3:], focal) - targets) * weights).reshape(len(p), -1)

    repeated = np.repeat(landmarks, 6, axis=0)

    damping = np.full(num, 1e-3)
    current = residuals(params, landmarks)
    eps = 1e-6
    for _ in range(iterations):
        # Forward-difference Jacobian for all frames at once: (F, 136, 6).
        steps = params[:, None, :] + eps * np.eye(6)[None]
        jac = (residuals(steps.reshape(-1, 6), repeated).reshape(num, 6, -1) - current[:, None]).transpose(0, 2, 1) / eps
        jtj = jac.transpose(0, 2, 1) @ jac
        jtr = jac.transpose(0, 2, 1) @ current[..., None]
        lhs = jtj + damping[:, None, None] * (np.eye(6) * np.diagonal(jtj, axis1=1, axis2=2)[:, None])
        candidate = params - np.linalg.solve(lhs, jtr)[..., 0]
        trial = residuals(candidate, landmarks)
        better = (trial**2).sum(1) < (current**2).sum(1)
        params = np.where(better[:, None], candidate, params)
        current = np.where(better[:, None], trial, current)
        damping = np.where(better, damping / 3, damping * 4)
    return params


def poses_to_c2w(params: np.ndarray) -> np.ndarray:
    """Camera-to-world matrices (F, 4, 4) from world-to-camera poses (F, 6)."""
    R = Rotation.from_rotvec(params[:, :3]).as_matrix()
    c2w = np.tile(np.eye(4), (len(params), 1, 1))
    c2w[:, :3, :3] = R.transpose(0, 2, 1)
    c2w[:, :3, 3] = -np.einsum("fji,fj->fi", R, params[:, 3:])
    return c2w


def smooth_poses(params: np.ndarray, sigma_frames: float = 2.0) -> np.ndarray:
    """Temporally smooth poses (F, 6); head rotations stay far below 180 degrees, so axis-angle averages safely."""
    return gaussian_filter1d(params, sigma_frames, axis=0, mode="nearest") if sigma_frames > 0 else params


def estimate_cameras(landmarks: np.ndarray, known: np.ndarray | None = None, sigma_frames: float = 2.0) -> np.ndarray:
    """Smoothed camera-to-world matrices (F, 4, 4) for a clip's normalised crop landmarks (F, 68, 2).

    Frames where ``known`` is False (no face found) take poses interpolated from their neighbours.
    """
    known = np.ones(len(landmarks), bool) if known is None else np.asarray(known, bool)
    params = np.full((len(landmarks), 6), np.nan)
    params[known] = fit_poses(landmarks[known])
    return poses_to_c2w(smooth_poses(fill_gaps(params), sigma_frames))
