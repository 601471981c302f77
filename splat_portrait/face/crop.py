"""The square face crop: FFHQ-style placement from landmarks, smoothed over time, cut out and resized.

A box is ``(cx, cy, side)`` in pixels. Its placement follows the FFHQ alignment rule (without the
rotation): centred a tenth of the way from the eyes to the mouth, with a side of four eye-to-eye
distances or 3.6 eye-to-mouth distances, whichever is larger. The default camera (camera.py) and the
head template (pose.py) assume this framing.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter1d

from splat_portrait.face.landmarks import LEFT_EYE, MOUTH_CORNERS, RIGHT_EYE


def ffhq_box(landmarks: np.ndarray) -> np.ndarray:
    """Crop boxes (..., 3) as (cx, cy, side) from 68-point landmarks (..., 68, 2)."""
    eye_left = landmarks[..., LEFT_EYE, :].mean(-2)
    eye_right = landmarks[..., RIGHT_EYE, :].mean(-2)
    eyes = (eye_left + eye_right) / 2
    mouth = landmarks[..., MOUTH_CORNERS, :].mean(-2)
    eye_to_eye = np.linalg.norm(eye_right - eye_left, axis=-1)
    eye_to_mouth = np.linalg.norm(mouth - eyes, axis=-1)
    centre = eyes + 0.1 * (mouth - eyes)
    side = 2 * np.maximum(2.0 * eye_to_eye, 1.8 * eye_to_mouth)
    return np.concatenate([centre, side[..., None]], -1)


def fill_gaps(values: np.ndarray) -> np.ndarray:
    """Linearly interpolate NaN rows of a (F, K) series from their neighbours (the ends hold still)."""
    values = np.array(values, np.float64)
    known = ~np.isnan(values).any(-1)
    if not known.any():
        raise ValueError("no known values to interpolate from")
    frames = np.arange(len(values))
    for k in range(values.shape[1]):
        values[:, k] = np.interp(frames, frames[known], values[known, k])
    return values


def smooth_boxes(boxes: np.ndarray, sigma_frames: float = 3.0, size_sigma_frames: float = 8.0) -> np.ndarray:
    """Temporally smooth per-frame boxes (F, 3); NaN rows (no face) are interpolated first.

    Landmarks jitter by a pixel or two per frame; a Gaussian of ``sigma_frames`` (0.12 s at 25 fps)
    removes that while following head motion. The side changes far more slowly than the centre, so
    it gets a wider kernel: zoom jitter is the most visible kind.
    """
    boxes = fill_gaps(boxes)
    centre = gaussian_filter1d(boxes[:, :2], sigma_frames, axis=0, mode="nearest")
    side = gaussian_filter1d(boxes[:, 2:], size_sigma_frames, axis=0, mode="nearest")
    return np.concatenate([centre, side], -1)


def crop_square(image: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Cut ``box`` (cx, cy, side) out of an (H, W, 3) uint8 image and resize it to (size, size, 3).

    The box keeps its sub-pixel position (no rounding, so a smooth box gives a smooth crop); parts
    outside the image are filled by reflecting the image at its border, as FFHQ does.
    """
    cx, cy, side = (float(v) for v in box)
    left, top = cx - side / 2, cy - side / 2
    h, w = image.shape[:2]
    pad = int(np.ceil(max(0.0, -left, -top, left + side - w, top + side - h))) + 1
    if pad > 1:
        image = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
        left, top = left + pad, top + pad
    region = (left, top, left + side, top + side)
    return np.asarray(Image.fromarray(image).resize((size, size), Image.LANCZOS, box=region))


def to_crop_coordinates(points: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Pixel points (..., N, 2) as normalised crop coordinates in [0, 1] of boxes (..., 3)."""
    corner = box[..., None, :2] - box[..., None, 2:] / 2
    return (points - corner) / box[..., None, 2:]
