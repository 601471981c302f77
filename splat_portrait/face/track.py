"""A face followed through a video: landmarks on every 25 fps frame, smoothed crop boxes and cameras."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from splat_portrait.face.crop import ffhq_box, smooth_boxes, to_crop_coordinates
from splat_portrait.face.detect import detect_landmarks
from splat_portrait.face.pose import estimate_cameras
from splat_portrait.media.video import FPS, read_frames


@dataclass(frozen=True)
class FaceTrack:
    """Per-frame landmarks (F, 68, 2) in pixels (NaN where no face was found), smoothed crop boxes
    (F, 3) as (cx, cy, side), and the smoothed camera-to-world matrices (F, 4, 4) of those crops."""

    landmarks: np.ndarray
    boxes: np.ndarray
    c2w: np.ndarray

    @property
    def found(self) -> np.ndarray:
        """(F,) bool: frames where a face was found."""
        return ~np.isnan(self.landmarks).any(axis=(1, 2))

    def __len__(self) -> int:
        return len(self.landmarks)


def locate_face(image: np.ndarray) -> FaceTrack | None:
    """The largest face in one (H, W, 3) uint8 RGB image as a one-frame track, or None.

    The crop box and camera are made exactly as :func:`track_face` makes them for a video frame,
    so a single portrait is framed like the training clips (without temporal smoothing).
    """
    landmarks = detect_landmarks(image)
    if landmarks is None:
        return None
    landmarks = landmarks[None]
    boxes = ffhq_box(landmarks)
    return FaceTrack(landmarks, boxes, estimate_cameras(to_crop_coordinates(landmarks, boxes), sigma_frames=0))


def track_face(video: str | os.PathLike, fps: int = FPS) -> FaceTrack | None:
    """Follow the largest face through ``video``; None when no frame shows a face."""
    detected = [detect_landmarks(frame) for frame in read_frames(video, fps)]
    landmarks = np.stack([np.full((68, 2), np.nan) if lm is None else lm for lm in detected]) if detected else np.zeros((0, 68, 2))
    found = ~np.isnan(landmarks).any(axis=(1, 2))
    if not found.any():
        return None
    boxes = smooth_boxes(ffhq_box(landmarks))
    return FaceTrack(landmarks, boxes, estimate_cameras(to_crop_coordinates(landmarks, boxes), found))
