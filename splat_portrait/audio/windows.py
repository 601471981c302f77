"""Per-video-frame audio windows: 50 Hz feature sequences -> the (8, 16, D) tensors the audio nets take.

Video runs at 25 fps and features at 50 Hz, so frame ``n`` is centred on feature ``2n``. Each frame
sees a 16-feature window around its centre (AudioNet), and the 8 windows of frames ``n-4 .. n+3``
are smoothed by AudioAttNet. Indices beyond either end repeat the edge feature, so the first and last
frames get full-size windows without inventing sound.
"""

from __future__ import annotations

import torch
from torch import Tensor

FEATURE_RATE_HZ = 50
VIDEO_FPS = 25
WINDOW = 16
NUM_WINDOWS = 8
_FEATURES_PER_FRAME = FEATURE_RATE_HZ // VIDEO_FPS
# Features a frame's windows reach past and before its own centre (2n): the last is 2n + 13, the
# first 2n - 16. The look-ahead is what a live stream must wait for before frame n can be made.
LOOKAHEAD_FEATURES = (NUM_WINDOWS // 2 - 1) * _FEATURES_PER_FRAME + WINDOW // 2 - 1
LOOKBACK_FEATURES = NUM_WINDOWS // 2 * _FEATURES_PER_FRAME + WINDOW // 2


def window_indices(frames: Tensor, num_features: int) -> Tensor:
    """Feature indices (F, 8, 16) for video frame indices (F,), clamped to ``[0, num_features)``."""
    if num_features < 1:
        raise ValueError("audio feature sequence is empty")
    neighbours = torch.arange(NUM_WINDOWS, device=frames.device) - NUM_WINDOWS // 2
    offsets = torch.arange(WINDOW, device=frames.device) - WINDOW // 2
    centres = (frames[:, None] + neighbours[None, :]) * _FEATURES_PER_FRAME
    return (centres[..., None] + offsets).clamp(0, num_features - 1)


def frames_ready(num_features: int, lookahead: int = LOOKAHEAD_FEATURES) -> int:
    """How many frames (0, 1, ..) have the features up to ``lookahead`` past their centre among the first ``num_features``."""
    if num_features < 1:
        return 0
    return max(0, (num_features - 1 - lookahead) // _FEATURES_PER_FRAME + 1)


def audio_windows(features: Tensor, frames: Tensor | int) -> Tensor:
    """Windows of a (T, D) feature sequence for one frame index -> (8, 16, D), or (F,) -> (F, 8, 16, D)."""
    if features.ndim != 2:
        raise ValueError(f"audio features must be (T, D), got shape {tuple(features.shape)}")
    single = not torch.is_tensor(frames) or frames.ndim == 0
    frames = torch.as_tensor(frames, device=features.device).reshape(-1)
    windows = features[window_indices(frames, features.shape[0])]
    return windows[0] if single else windows

