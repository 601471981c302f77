"""Where in the frame does the head move? Pixel motion of fixed regions of the render crop.

A talking head should move its mouth, hardly its upper face, and hardly anything without speech.
Every render shares preprocessing's FFHQ-style framing of the face, so fixed boxes of the crop
(``MOUTH_BOX``, ``UPPER_FACE_BOX``) hold the same part of any face; no landmark detector is needed,
which keeps the measure usable on renders a detector may fail on.
"""

from __future__ import annotations

import numpy as np

Box = tuple[float, float, float, float]
"""(x0, y0, x1, y1) as fractions of the crop's width and height."""

MOUTH_BOX: Box = (0.36, 0.62, 0.64, 0.82)
UPPER_FACE_BOX: Box = (0.25, 0.25, 0.75, 0.5)  # eyes, brows, forehead


def region_motion(frames: np.ndarray, box: Box) -> float:
    """Mean over the pixels of ``box`` of each pixel's standard deviation over time, in the frames' units.

    ``frames``: (T, H, W, C) or (T, H, W), T >= 2. A still region scores 0; a region that flickers
    between two values a and b on alternate frames scores |a - b| / 2.
    """
    frames = np.asarray(frames)
    if frames.ndim not in (3, 4) or frames.shape[0] < 2:
        raise ValueError(f"frames must be (T, H, W[, C]) with T >= 2, got shape {frames.shape}")
    height, width = frames.shape[1:3]
    x0, y0, x1, y1 = round(box[0] * width), round(box[1] * height), round(box[2] * width), round(box[3] * height)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f"box {box} is empty or outside a {width}x{height} frame")
    return float(frames[:, y0:y1, x0:x1].astype(np.float64).std(axis=0).mean())
