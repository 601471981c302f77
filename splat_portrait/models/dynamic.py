"""The dynamic decoder: audio + time delta -> a per-pixel offset Δd of every splat (paper Sec. 3.2).

With ``mouth_code_channels`` the audio reaches it only through a predicted mouth code
(:mod:`splat_portrait.models.mouth_code`), which training may replace by the true one.

A U-Net decoder whose skip connections are the static generator's decoder features: at every
level (coarsest first) it concatenates its upsampled state with the generator's features there and
runs FiLM residual blocks conditioned on ``MLP(concat(audio embedding, time embedding))``.

``forward(features, windows, delta_t) -> offsets`` is tensor-only for ONNX export. Features of
batch 1 broadcast over any number of frames, so one encoded portrait drives a whole batch of audio
frames. The last convolution starts at zero: an untrained decoder leaves the head static.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from splat_portrait.models.audio import AudioEncoder, time_delta_embedding
from splat_portrait.models.config import DynamicConfig, UNetConfig
from splat_portrait.models.mouth_code import CODE_DIM, CODE_SCALE, MouthPredictor
from splat_portrait.models.unet import ConditionMLP, ResBlock, group_norm


class DynamicDecoder(nn.Module):
    """Audio encoder + time embedding + a FiLM U-Net decoder over a generator's decoder features."""

    def __init__(self, config: DynamicConfig, generator_unet: UNetConfig) -> None:
        super().__init__()
        self.config = config
        audio = config.audio
        if config.mouth_code_channels:
            self.mouth = MouthPredictor(audio.feature_dim, config.mouth_code_channels)
            heard = CODE_DIM
        else:
            self.audio = AudioEncoder(audio)
            heard = audio.embedding_dim
        self.condition = ConditionMLP(heard + audio.time_embedding_dim, config.embedding_dim)
        # The generator's decoder features, coarsest level first.
        feature_channels = generator_unet.level_channels()[::-1]
        channels = [config.base_channels * m for m in generator_unet.channel_mults[::-1]]
        self.levels = nn.ModuleList()
        previous = 0
        for feat, ch in zip(feature_channels, channels):
            blocks = [ResBlock(previous + feat, ch, config.embedding_dim)]
            blocks += [ResBlock(ch, ch, config.embedding_dim) for _ in range(config.blocks_per_res - 1)]
            self.levels.append(nn.ModuleList(blocks))
            previous = ch
        self.norm_out = group_norm(previous)
        self.conv_out = nn.Conv2d(previous, 3, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def heard(self, windows: Tensor, mouth_code: Tensor | None = None) -> Tensor:
        """What the decoder takes from the audio windows (B, 8, 16, D): their embedding, or with a
        mouth predictor its code (B, 2), which ``mouth_code`` (teacher forcing) replaces when given."""
        if not self.config.mouth_code_channels:
            return self.audio(windows)
        code = self.mouth(windows) if mouth_code is None else mouth_code
        return CODE_SCALE * code

    def forward(self, features: Sequence[Tensor], windows: Tensor, delta_t: Tensor, mouth_code: Tensor | None = None) -> Tensor:
        """features from :class:`StaticGenerator` (batch B or 1), windows (B, 8, 16, D), delta_t (B,)
        seconds -> view-space offsets Δd (B, 3, H, W), each component bounded by ``max_offset``."""
        condition = torch.cat([self.heard(windows, mouth_code), time_delta_embedding(delta_t, self.config.audio)], dim=1)
        emb = self.condition(condition)
        # Adding a zero derived from emb broadcasts batch-1 features to the batch; unlike expand(B, ...)
        # or ones_like, the traced ONNX graph keeps that batch size symbolic instead of baking it in.
        zero = 0 * emb[:, :1, None, None]
        x = features[0] + zero
        for i, blocks in enumerate(self.levels):
            if i > 0:
                x = torch.cat([F.interpolate(x, scale_factor=2.0, mode="nearest"), features[i] + zero], dim=1)
            for block in blocks:
                x = block(x, emb)
        return self.config.max_offset * torch.tanh(self.conv_out(F.silu(self.norm_out(x))))
