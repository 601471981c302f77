"""The mouth code: two numbers that say how a mouth is shaped, and the audio net that predicts them.

With a mouth code the dynamic decoder does not hear the audio itself: ``audio -> mouth code ->
offsets Δd``. The split matters because the two halves learn from very different amounts of data.

* Audio to mouth is the hard part, and it needs no render. So :class:`MouthPredictor` is fitted
  beforehand on every real frame, over many passes, in seconds
  (:func:`splat_portrait.training.mouth_code.fit_mouth_predictor`).
* Mouth code to splat offsets is geometry and does not depend on who is speaking. Stage II learns
  it from the true codes of its frames' landmarks (teacher forcing). It then no longer has to
  discover a faint audio cue through a few hundred mouth pixels.

The code of a face's 68 landmarks (crop coordinates) is:

* the inner-lip gap: landmark 66 minus 62 along the face's downward axis (27 to 8), in face heights
  (signed, so a closed mouth is 0);
* the mouth width: landmark 48 to 54, in face heights.

Stage II feeds the decoder the code of the target frame minus that of the source frame, since
offsets move the source frame's splats. The predictor gives a frame's code minus its clip's mean
code, which is what the decoder gets at inference, where the portrait is taken as a resting mouth.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from splat_portrait.face.landmarks import LOWER_INNER_LIP, MOUTH_CORNERS, UPPER_INNER_LIP, face_down_axis
from splat_portrait.models.audio import AudioEncoder
from splat_portrait.models.config import AudioConfig

CODE_DIM = 2
# Speech moves the gap by a few hundredths of a face height; this scale brings codes to order one
# before the decoder's condition MLP.
CODE_SCALE = 20.0


def mouth_code(landmarks: Tensor) -> Tensor:
    """Landmarks (..., 68, 2) -> mouth codes (..., 2): inner-lip gap and mouth width, in face heights."""
    down, height = face_down_axis(landmarks)
    gap = ((landmarks[..., LOWER_INNER_LIP, :] - landmarks[..., UPPER_INNER_LIP, :]) * down).sum(-1)
    left, right = MOUTH_CORNERS
    width = (landmarks[..., right, :] - landmarks[..., left, :]).norm(dim=-1)
    return torch.stack([gap, width], -1) / height[..., None]


class MouthPredictor(nn.Module):
    """Audio windows (B, 8, 16, D) -> mouth codes (B, 2) relative to the speaker's mean mouth.

    A narrow AudioNet + AudioAttNet and one linear layer: with minutes of real speech, wider nets
    only learn their training clips by heart.
    """

    def __init__(self, feature_dim: int, channels: int) -> None:
        super().__init__()
        self.encoder = AudioEncoder(AudioConfig(feature_dim=feature_dim, hidden_channels=channels, embedding_dim=channels))
        self.head = nn.Linear(channels, CODE_DIM)

    def forward(self, windows: Tensor) -> Tensor:
        return self.head(self.encoder(windows))
