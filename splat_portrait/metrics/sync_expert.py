"""Lip sync scored by our own expert (:mod:`splat_portrait.models.sync_expert`): offset, LSE-D, LSE-C.

The same search as the official SyncNet metric (:func:`splat_portrait.metrics.syncnet.sync_offset`):
for each offset ``k`` in -15..15 frames, the distance between video window ``t`` and audio window
``t + k`` averaged over ``t``; the offset is the least, LSE-D that least mean distance and LSE-C the
median over offsets minus it. Distances are between unit embeddings (0..2), so values are on our
expert's scale, not comparable with published SyncNet numbers; reports say which expert scored them
and the data it was trained on.

Frames must show FFHQ-framed face crops (preprocessed clips and renders at the source camera do);
the mouth region is a fixed box of that framing, so no face detection runs here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from splat_portrait.audio.features import FeatureSpec, extractor_for
from splat_portrait.errors import SplatPortraitError
from splat_portrait.metrics.syncnet import MAX_OFFSET, SyncResult, sync_offset
from splat_portrait.models.checkpoint import load_checkpoint
from splat_portrait.models.sync_expert import FEATURES_PER_FRAME, SYNC_KINDS, WINDOW_FRAMES, SyncExpert, SyncExpertConfig

# ITU-R BT.601 luma weights.
_LUMA = (0.299, 0.587, 0.114)


def mouth_crops(frames: Tensor, config: SyncExpertConfig) -> Tensor:
    """(F, 3, S, S) uint8 or [0, 1] float face crops -> (F, H, W) greyscale mouth regions in [0, 1]."""
    frames = frames.float() / 255 if frames.dtype == torch.uint8 else frames.float()
    size = frames.shape[-1]
    x0, y0, x1, y1 = (round(v * size) for v in config.region)
    grey = torch.einsum("fchw,c->fhw", frames[:, :, y0:y1, x0:x1], torch.tensor(_LUMA))
    return F.interpolate(grey[:, None], size=config.crop_size, mode="area")[:, 0]


def video_windows(mouths: Tensor) -> Tensor:
    """(F, H, W) -> (F - 4, 5, H, W): window ``t`` holds frames ``t .. t + 4``."""
    return mouths.unfold(0, WINDOW_FRAMES, 1).permute(0, 3, 1, 2).contiguous()


def audio_windows(features: Tensor, starts: Tensor, frames: int = WINDOW_FRAMES) -> Tensor:
    """(T, D) 50 Hz features -> (N, 2 * frames, D): window ``i`` spans video frames ``starts[i] ..
    starts[i] + frames - 1`` (features ``2 t`` onwards); rows beyond the end are zeros."""
    length = FEATURES_PER_FRAME * frames
    padded = torch.cat([features, features.new_zeros(length, features.shape[1])])
    rows = FEATURES_PER_FRAME * starts[:, None] + torch.arange(length)
    return padded[rows.clamp(0, len(padded) - 1)]


def expert_sync(expert: SyncExpert, frames: Tensor, features: np.ndarray | Tensor, max_offset: int = MAX_OFFSET) -> SyncResult:
    """Offset, LSE-D and LSE-C of face-crop frames (F, 3, S, S) against their audio features (T, D)."""
    return expert_sync_mouths(expert, mouth_crops(frames, expert.config), features, max_offset)


@torch.inference_mode()
def expert_sync_mouths(expert: SyncExpert, mouths: Tensor, features: np.ndarray | Tensor, max_offset: int = MAX_OFFSET, batch: int = 256) -> SyncResult:
    """:func:`expert_sync` of mouth crops (F, H, W) already cut out."""
    features = torch.as_tensor(np.asarray(features, np.float32))
    windows = video_windows(mouths)
    starts = torch.arange(len(windows))
    audio = audio_windows(features, starts)
    video_embeddings = torch.cat([expert.embed_video(windows[i : i + batch]) for i in range(0, len(windows), batch)])
    audio_embeddings = torch.cat([expert.embed_audio(audio[i : i + batch]) for i in range(0, len(audio), batch)])
    return sync_offset(video_embeddings, audio_embeddings, max_offset)


def load_sync_expert(path: str | Path, device: str = "cpu") -> tuple[SyncExpert, dict]:
    """An expert written by ``train-sync`` and its training record (data, clips, feature spec)."""
    path = Path(path)
    if not path.is_file():
        raise SplatPortraitError(f"sync expert {path} does not exist; train one with `splat-portrait train-sync DATA_DIR -o {path}`")
    expert, state = load_checkpoint(path, device, kinds=SYNC_KINDS)
    record = (state or {}).get("sync_training") if isinstance(state, dict) else None
    if not isinstance(expert, SyncExpert) or not isinstance(record, dict):
        raise SplatPortraitError(f"{path} is not a sync expert checkpoint (made by `splat-portrait train-sync`)")
    return expert.eval(), record


class ExpertSync:
    """The ``sync`` metric: our expert's offset, LSE-D and LSE-C of generated frames and the speech that drove them."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        self.expert, self.record = load_sync_expert(path, device)
        self.extractor = extractor_for(FeatureSpec.from_json(self.record["feature_spec"]))
        clips = self.record["clips"]
        self.name = (
            f"our sync expert ({Path(path).name}: trained on {len(clips)} real clips, {self.record['frames']} frames, "
            f"of {self.record['config']['data_dir']}); not SyncNet's scale"
        )

    def __call__(self, frames: Tensor, samples: np.ndarray) -> SyncResult:
        """``frames`` (F, R, R, 3) in [0, 1] face crops, ``samples`` their 16 kHz speech."""
        if len(frames) < WINDOW_FRAMES:
            raise SplatPortraitError(f"the sync expert needs at least {WINDOW_FRAMES} frames, got {len(frames)}")
        return expert_sync(self.expert, frames.permute(0, 3, 1, 2), self.extractor(samples))
