"""Our audio-visual sync expert: does 0.2 s of speech belong with these five frames of a mouth?

A small SyncNet-style pair of encoders (Chung & Zisserman 2016; used as a lip-sync critic the way
Wav2Lip uses its expert) that we can train offline on our own preprocessed clips, where the
official SyncNet weights are a download we cannot make:

* video: the mouth region of five consecutive 25 fps frames of an FFHQ-framed face crop (the framing
  preprocessing, training and rendering share), greyscale so colour and identity cues weigh less,
  stacked as channels: (N, 5, H, W) in [0, 1];
* audio: the ten 50 Hz feature vectors the frames span (frame ``t`` sits on feature ``2t``), in the
  model's own feature spec: (N, 10, D).

With ``video_input="motion"`` the video encoder sees each frame minus the window's mean frame:
what moves, not what the face looks like. Trained on a few dozen people, an encoder of whole
frames learns them by heart (it ranks held-out true pairs at chance); motion is what sync is about.

Each encoder ends in an L2-normalised embedding; matching pairs are close (cosine similarity high).
The module is tensor-in, tensor-out; cropping and the offset search live in
:mod:`splat_portrait.metrics.sync_expert`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

WINDOW_FRAMES = 5
FEATURES_PER_FRAME = 2
VIDEO_INPUTS = ("frames", "motion")
# Speech changes a mouth crop's grey levels by a few hundredths between frames; this brings the
# motion input to about the range of the frames input.
MOTION_GAIN = 8.0


@dataclass(frozen=True)
class SyncExpertConfig:
    feature_dim: int = 80
    # The mouth region in crop coordinates (x0, y0, x1, y1) and the size it is resampled to (H, W).
    region: tuple[float, float, float, float] = (0.25, 0.5, 0.75, 0.9)
    crop_size: tuple[int, int] = (32, 48)
    channels: int = 16
    embedding_dim: int = 128
    # "frames": the greyscale crops as they are; "motion": each minus the window's mean frame.
    video_input: str = "frames"

    def __post_init__(self) -> None:
        if self.video_input not in VIDEO_INPUTS:
            raise ValueError(f"video_input must be one of {', '.join(VIDEO_INPUTS)}, got {self.video_input!r}")

    @property
    def audio_frames(self) -> int:
        return WINDOW_FRAMES * FEATURES_PER_FRAME


def _block(cin: int, cout: int, stride: int | tuple[int, int]) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU())


class SyncExpert(nn.Module):
    kind: ClassVar[str] = "sync-expert"

    def __init__(self, config: SyncExpertConfig) -> None:
        super().__init__()
        self.config = config
        c, e = config.channels, config.embedding_dim
        self.video = nn.Sequential(
            _block(WINDOW_FRAMES, c, 1), _block(c, c, 2), _block(c, 2 * c, 2), _block(2 * c, 4 * c, 2), _block(4 * c, 4 * c, 2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * c, e),
        )  # fmt: skip
        # Audio as a (1, time, feature) image: time is short, frequency patterns carry the phones.
        self.audio = nn.Sequential(
            _block(1, c, 1), _block(c, c, (1, 2)), _block(c, 2 * c, 2), _block(2 * c, 4 * c, 2), _block(4 * c, 4 * c, (1, 2)),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * c, e),
        )  # fmt: skip

    def embed_video(self, mouths: Tensor) -> Tensor:
        """(N, 5, H, W) greyscale mouth crops in [0, 1] -> (N, E) unit vectors."""
        if self.config.video_input == "motion":
            return F.normalize(self.video(MOTION_GAIN * (mouths - mouths.mean(1, keepdim=True))), dim=-1)
        return F.normalize(self.video(mouths * 2 - 1), dim=-1)

    def embed_audio(self, features: Tensor) -> Tensor:
        """(N, 10, D) audio features -> (N, E) unit vectors."""
        return F.normalize(self.audio(features[:, None]), dim=-1)

    def forward(self, mouths: Tensor, features: Tensor) -> Tensor:
        """Cosine similarity of each video window with its audio window: (N,)."""
        return (self.embed_video(mouths) * self.embed_audio(features)).sum(-1)


# For splat_portrait.models.checkpoint: save_checkpoint / load_checkpoint(kinds=SYNC_KINDS).
SYNC_KINDS = {SyncExpert.kind: (SyncExpert, SyncExpertConfig)}
