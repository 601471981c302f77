"""LipSync: SyncNet (Chung & Zisserman 2016) confidence LSE-C and distance LSE-D.

The network is defined here with the layer layout of the published ``syncnet_v2.model`` (from
joonson/syncnet_python), so that state dict loads as is; the weights are a download the user
supplies. Evaluation follows the reference script:

* video: 224x224 face crops (square around the face box, reaching below the chin), BGR, 0..255,
  five frames per window;
* audio: 13 MFCCs at 100 Hz (``python_speech_features`` defaults) of 16 kHz PCM16-scale samples,
  20 MFCC frames (0.2 s) per window, window ``i`` starting at video frame ``i``;
* for each offset ``k`` in ``-15..15`` the distance between video window ``t`` and audio window
  ``t + k`` is averaged over ``t``; LSE-D is the smallest of those means and LSE-C the median of
  them minus LSE-D.

The reference crops from S3FD face tracks; here the face box is the bounding box of the project's
68 landmarks, so values are close to, not identical with, published ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from splat_portrait.errors import SplatPortraitError
from splat_portrait.face.detect import detect_landmarks
from splat_portrait.metrics.availability import require_module, user_weights

FPS = 25
SAMPLE_RATE = 16000
MFCC_PER_FRAME = 4  # 100 Hz MFCCs over 25 fps video
WINDOW_FRAMES = 5
CROP_SIZE = 224
CROP_SCALE = 0.4  # the reference's padding of the face box
CROP_PAD_VALUE = 110  # grey the reference pads frames with where the crop leaves the image
SMOOTH_FRAMES = 13  # median filter over the face track, as in the reference
MAX_OFFSET = 15
EMBEDDING_DIM = 1024
SYNCNET_HOW = (
    "download syncnet_v2.model (see joonson/syncnet_python's download_model.sh) "
    "and pass its path as the SyncNet weights"
)


def _conv_block(conv: nn.Conv2d | nn.Conv3d, pool: nn.Module | None = None) -> list[nn.Module]:
    norm = nn.BatchNorm3d if isinstance(conv, nn.Conv3d) else nn.BatchNorm2d
    return [conv, norm(conv.out_channels), nn.ReLU(inplace=True), *([pool] if pool is not None else [])]


def _head() -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Linear(512, EMBEDDING_DIM))


class SyncNet(nn.Module):
    """Audio and lip streams that embed 0.2 s of MFCCs (N, 1, 13, 20) and 5 face crops (N, 3, 5, 224, 224).

    Attribute names and layer positions follow the published state dict (``netcnnaud.0.weight`` ...).
    """

    def __init__(self) -> None:
        super().__init__()
        self.netcnnaud = nn.Sequential(
            # The reference has a 1x1 max-pool here; Identity keeps the later layers' indices.
            *_conv_block(nn.Conv2d(1, 64, 3, padding=1), nn.Identity()),
            *_conv_block(nn.Conv2d(64, 192, 3, padding=1), nn.MaxPool2d(3, stride=(1, 2))),
            *_conv_block(nn.Conv2d(192, 384, 3, padding=1)),
            *_conv_block(nn.Conv2d(384, 256, 3, padding=1)),
            *_conv_block(nn.Conv2d(256, 256, 3, padding=1), nn.MaxPool2d(3, stride=2)),
            *_conv_block(nn.Conv2d(256, 512, (5, 4))),
        )
        self.netfcaud = _head()
        self.netcnnlip = nn.Sequential(
            *_conv_block(nn.Conv3d(3, 96, (5, 7, 7), stride=(1, 2, 2)), nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2))),
            *_conv_block(
                nn.Conv3d(96, 256, (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),
                nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            ),
            *_conv_block(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1))),
            *_conv_block(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1))),
            *_conv_block(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2))),
            *_conv_block(nn.Conv3d(256, 512, (1, 6, 6))),
        )
        self.netfclip = _head()

    def embed_audio(self, mfcc: Tensor) -> Tensor:
        """(N, 1, 13, 20) MFCC windows -> (N, 1024)."""
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def embed_video(self, crops: Tensor) -> Tensor:
        """(N, 3, 5, 224, 224) BGR 0..255 crop windows -> (N, 1024)."""
        return self.netfclip(self.netcnnlip(crops).flatten(1))


def load_syncnet(path: str | Path | None) -> SyncNet:
    """SyncNet with the published weights at ``path``; :class:`MetricUnavailable` when there are none."""
    path = user_weights(path, "LipSync (SyncNet)", SYNCNET_HOW)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types for a file that is not a checkpoint
        raise SplatPortraitError(f"{path} is not a readable PyTorch checkpoint ({err})") from err
    if not isinstance(state, dict):
        raise SplatPortraitError(f"{path} holds a {type(state).__name__}, not a SyncNet state dict")
    model = SyncNet()
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise SplatPortraitError(f"{path} does not fit SyncNet's layers ({err})") from err
    # Checkpoints from early PyTorch predate BatchNorm's num_batches_tracked counter, unused in eval.
    missing = [key for key in missing if not key.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise SplatPortraitError(
            f"{path} is not a syncnet_v2 state dict (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model.eval()


@dataclass(frozen=True)
class SyncResult:
    """Best audio-video offset in frames (> 0: the video lags the audio), LSE-D, LSE-C, windows scored."""

    offset: int
    min_dist: float
    confidence: float
    windows: int


def offset_distances(video: Tensor, audio: Tensor, max_offset: int = MAX_OFFSET) -> Tensor:
    """(2 * max_offset + 1, N) distances between video embedding ``t`` and audio embedding ``t + k``.

    Row ``j`` holds offset ``k = j - max_offset``; audio beyond either end counts as a zero vector,
    as in the reference, so every offset averages over the same ``N`` frames.
    """
    if video.shape != audio.shape or video.ndim != 2:
        raise ValueError(f"expected two (N, D) embeddings of one shape, got {tuple(video.shape)}, {tuple(audio.shape)}")
    padded = F.pad(audio, (0, 0, max_offset, max_offset))
    frames = len(video)
    return torch.stack([F.pairwise_distance(video, padded[j : j + frames]) for j in range(2 * max_offset + 1)])


def sync_offset(video: Tensor, audio: Tensor, max_offset: int = MAX_OFFSET) -> SyncResult:
    """Offset search over (N, D) per-window embeddings: the offset whose time-averaged distance is least.

    ``min_dist`` (LSE-D) is that least mean distance and ``confidence`` (LSE-C) the median over
    offsets of the mean distance minus it. A video that lags its audio by ``d`` frames (video
    window ``t`` matches audio window ``t - d``) gives ``offset = d``.
    """
    mean_distance = offset_distances(video, audio, max_offset).mean(dim=1)
    min_dist, best = mean_distance.min(dim=0)
    return SyncResult(
        offset=max_offset - int(best),
        min_dist=float(min_dist),
        confidence=float(mean_distance.median() - min_dist),
        windows=len(video),
    )


def mfcc(samples: np.ndarray) -> np.ndarray:
    """(13, T) MFCCs at 100 Hz of 16 kHz mono float samples in [-1, 1]."""
    speech_features = require_module("python_speech_features", "python_speech_features", "LipSync (SyncNet)")
    # The reference reads PCM16 WAVs without rescaling; the energy coefficient depends on that scale.
    pcm_scale = np.asarray(samples, np.float64) * 32768.0
    return speech_features.mfcc(pcm_scale, SAMPLE_RATE).T


def crop_windows(boxes: np.ndarray, crop_scale: float = CROP_SCALE) -> np.ndarray:
    """(T, 4) crop windows ``x0, y0, x1, y1`` for (T, 4) face boxes, NaN rows where no face was found.

    Missing boxes are interpolated and the track is median-filtered like the reference's; each crop
    is a square of side ``2 s (1 + crop_scale)`` (``s`` = half the box's longer side), centred
    horizontally on the box, from ``s`` above its centre down past the chin.
    """
    from scipy.ndimage import median_filter

    boxes = np.asarray(boxes, np.float64)
    found = ~np.isnan(boxes).any(axis=1)
    if not found.any():
        raise SplatPortraitError("LipSync found no face in any frame")
    frames = np.arange(len(boxes))
    boxes = np.stack([np.interp(frames, frames[found], boxes[found, i]) for i in range(4)], axis=1)
    half = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / 2
    centre_x, centre_y = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    # 'nearest' edges: the reference's zero padding would shrink the first and last boxes.
    half, centre_x, centre_y = (median_filter(v, SMOOTH_FRAMES, mode="nearest") for v in (half, centre_x, centre_y))
    return np.stack(
        [
            centre_x - half * (1 + crop_scale),
            centre_y - half,
            centre_x + half * (1 + crop_scale),
            centre_y + half * (1 + 2 * crop_scale),
        ],
        axis=1,
    )


def crop_face(frame: np.ndarray, window: np.ndarray) -> Tensor:
    """(3, 224, 224) BGR 0..255 crop of an (H, W, 3) uint8 RGB frame; outside the frame is grey."""
    x0, y0, x1, y1 = np.floor(window).astype(int)
    height, width = frame.shape[:2]
    pad = max(0, -x0, -y0, x1 - width, y1 - height)
    padded = np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), constant_values=CROP_PAD_VALUE)
    crop = torch.from_numpy(np.ascontiguousarray(padded[y0 + pad : y1 + pad, x0 + pad : x1 + pad, ::-1]))
    crop = crop.permute(2, 0, 1)[None].float()
    return F.interpolate(crop, size=(CROP_SIZE, CROP_SIZE), mode="bilinear", align_corners=False)[0]


def face_boxes(frames: Sequence[np.ndarray]) -> np.ndarray:
    """(T, 4) landmark bounding boxes ``x0, y0, x1, y1`` per frame, NaN where no face is found."""
    boxes = np.full((len(frames), 4), np.nan)
    for i, frame in enumerate(frames):
        landmarks = detect_landmarks(frame)
        if landmarks is not None:
            boxes[i] = [*landmarks.min(axis=0), *landmarks.max(axis=0)]
    return boxes


def window_count(num_frames: int, num_samples: int) -> int:
    """How many 5-frame windows the reference scores: five fewer than the frames both streams cover."""
    covered = min(num_frames, num_samples // (SAMPLE_RATE // FPS))
    if covered <= WINDOW_FRAMES:
        raise SplatPortraitError(f"LipSync needs more than {WINDOW_FRAMES} frames with audio, got {covered}")
    return covered - WINDOW_FRAMES


@torch.no_grad()
def syncnet_embeddings(
    model: SyncNet, crops: Tensor, mfccs: np.ndarray, windows: int, batch_size: int = 20
) -> tuple[Tensor, Tensor]:
    """(windows, 1024) video and audio embeddings of (T, 3, 224, 224) crops and (13, T_a) MFCCs."""
    device = next(model.parameters()).device
    audio = torch.from_numpy(mfccs).float()
    span = MFCC_PER_FRAME * WINDOW_FRAMES
    video_embeddings, audio_embeddings = [], []
    for start in range(0, windows, batch_size):
        starts = range(start, min(windows, start + batch_size))
        video = torch.stack([crops[i : i + WINDOW_FRAMES].transpose(0, 1) for i in starts])
        sound = torch.stack([audio[None, :, MFCC_PER_FRAME * i : MFCC_PER_FRAME * i + span] for i in starts])
        video_embeddings.append(model.embed_video(video.to(device)).cpu())
        audio_embeddings.append(model.embed_audio(sound.to(device)).cpu())
    return torch.cat(video_embeddings), torch.cat(audio_embeddings)


class LipSync:
    """``LipSync(weights)(frames, samples)`` -> :class:`SyncResult` for 25 fps RGB frames and 16 kHz audio."""

    def __init__(self, weights: str | Path | None, device: str | torch.device = "cpu"):
        require_module("python_speech_features", "python_speech_features", "LipSync (SyncNet)")
        self.model = load_syncnet(weights).to(device)
        self.name = f"syncnet_v2 ({Path(weights).name})"

    def __call__(self, frames: Sequence[np.ndarray], samples: np.ndarray) -> SyncResult:
        """``frames``: (H, W, 3) uint8 RGB at 25 fps; ``samples``: mono float in [-1, 1] at 16 kHz."""
        windows = window_count(len(frames), len(samples))
        used = frames[: windows + WINDOW_FRAMES - 1]
        crops = torch.stack([crop_face(frame, box) for frame, box in zip(used, crop_windows(face_boxes(used)))])
        video, audio = syncnet_embeddings(self.model, crops, mfcc(samples), windows)
        return sync_offset(video, audio)
