"""The 68-point landmark numbering (iBUG 300-W, as dlib gives it) and the face's own vertical axis.

Every module that reads landmarks (the crop, the mouth metrics, the mouth losses, the mouth code)
takes its indices from here, so they cannot drift apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the crop and the metrics read the indices without torch
    from torch import Tensor

CHIN = 8
NOSE_BRIDGE = 27
LEFT_EYE, RIGHT_EYE = slice(36, 42), slice(42, 48)
MOUTH = slice(48, 68)
MOUTH_CORNERS = (48, 54)
UPPER_INNER_LIP, LOWER_INNER_LIP = 62, 66


def face_down_axis(landmarks: Tensor) -> tuple[Tensor, Tensor]:
    """Faces (..., 68, 2) -> the unit vector from nose bridge to chin (..., 2) and that length, the face height (...)."""
    down = landmarks[..., CHIN, :] - landmarks[..., NOSE_BRIDGE, :]
    height = down.norm(dim=-1).clamp_min(1e-3)
    return down / height[..., None], height
