"""A SongUNet-family U-Net (the DDPM++ design used by EDM and Splatter Image), written for this project.

Every residual block is ``GroupNorm -> SiLU -> conv -> GroupNorm -> FiLM(scale, shift) -> SiLU ->
conv`` plus a skip, with optional self-attention after it; the scale/shift come from one
conditioning vector per sample (camera for the generator, audio + time for the dynamic decoder,
noise level for a diffusion prior). The encoder keeps every block's output as a skip; the decoder
concatenates them back on the way up.

Everything here exports to ONNX opset 17: no data-dependent Python control flow, average pooling
and nearest upsampling for resampling, and attention written with matmul/softmax.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from splat_portrait.models.config import UNetConfig

# Residual sums are scaled so the activations' variance does not grow with depth (as in DDPM++).
SKIP_SCALE = 1 / math.sqrt(2)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups of at least 4 channels (fewer groups where 32 does not divide)."""
    groups = min(32, max(1, channels // 4))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6)


def sinusoidal_embedding(values: Tensor, order: int) -> Tensor:
    """NeRF-style encoding of values (B, K): ``[x, sin(2^k pi x), cos(2^k pi x)]``, k < order -> (B, K*(1+2*order))."""
    freqs = math.pi * 2.0 ** torch.arange(order, dtype=values.dtype, device=values.device)
    angles = (values[..., None] * freqs).flatten(-2)
    return torch.cat([values, torch.sin(angles), torch.cos(angles)], -1)


def positional_embedding(values: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer-style encoding of scalars (B,) -> (B, dim): cos/sin at periods 2*pi .. 2*pi*max_period."""
    half = dim // 2
    freqs = max_period ** (-torch.arange(half, dtype=values.dtype, device=values.device) / half)
    angles = values[:, None] * freqs
    return torch.cat([torch.cos(angles), torch.sin(angles)], -1)


class ConditionMLP(nn.Sequential):
    """Maps a raw embedding to the conditioning vector the blocks read (SiLU-activated, as they expect)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__(nn.Linear(in_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim), nn.SiLU())


class SelfAttention(nn.Module):
    """Multi-head self-attention over all pixels, added residually."""

    def __init__(self, channels: int, channels_per_head: int) -> None:
        super().__init__()
        self.heads = max(1, channels // channels_per_head)
        if channels % self.heads:
            raise ValueError(f"{channels} channels do not split into {self.heads} attention heads")
        self.head_channels = channels // self.heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, self.head_channels, h * w).unbind(1)
        weights = torch.softmax(q.transpose(-1, -2) @ k / math.sqrt(self.head_channels), dim=-1)
        out = (v @ weights.transpose(-1, -2)).reshape(b, c, h, w)
        return (x + self.proj(out)) * SKIP_SCALE


class ResBlock(nn.Module):
    """A FiLM-conditioned residual block that may halve (``down``) or double (``up``) the resolution."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        embedding_dim: int,
        *,
        up: bool = False,
        down: bool = False,
        attention: bool = False,
        channels_per_head: int = 64,
    ) -> None:
        super().__init__()
        if up and down:
            raise ValueError("a block resamples up or down, not both")
        self.up, self.down = up, down
        self.norm0 = group_norm(in_channels)
        self.conv0 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.film = nn.Linear(embedding_dim, 2 * out_channels)
        self.norm1 = group_norm(out_channels)
        self.conv1 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        needs_projection = in_channels != out_channels or up or down
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if needs_projection else nn.Identity()
        self.attention = SelfAttention(out_channels, channels_per_head) if attention else nn.Identity()

    def _resample(self, x: Tensor) -> Tensor:
        if self.up:
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        if self.down:
            return F.avg_pool2d(x, 2)
        return x

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv0(self._resample(F.silu(self.norm0(x))))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.conv1(F.silu(self.norm1(h) * (1 + scale) + shift))
        x = (h + self.skip(self._resample(x))) * SKIP_SCALE
        return self.attention(x)


class SongUNet(nn.Module):
    """Encoder-decoder with skip connections; ``forward(x, emb) -> (out, decoder_features)``.

    ``decoder_features`` holds the decoder's output at every level, coarsest first (level ``l`` is
    ``image_size / 2^(L-1-l)`` pixels wide); the dynamic decoder builds on them.
    """

    def __init__(self, config: UNetConfig, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.config = config
        channels = config.level_channels()
        attend = [res in config.attention_resolutions for res in config.level_resolutions()]
        emb_dim, per_head = config.embedding_dim, config.channels_per_head

        def block(cin: int, cout: int, **kw) -> ResBlock:
            return ResBlock(cin, cout, emb_dim, channels_per_head=per_head, **kw)

        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        skip_channels = [channels[0]]
        self.encoder = nn.ModuleList()
        cur = channels[0]
        for level, ch in enumerate(channels):
            if level > 0:
                self.encoder.append(block(cur, cur, down=True))
                skip_channels.append(cur)
            for _ in range(config.blocks_per_res):
                self.encoder.append(block(cur, ch, attention=attend[level]))
                cur = ch
                skip_channels.append(cur)

        self.decoder = nn.ModuleList()
        self.feature_channels: list[int] = []
        for level in reversed(range(len(channels))):
            ch = channels[level]
            if level == len(channels) - 1:
                # The bottleneck: two blocks, the first always with attention, before the skips come in.
                before = [block(cur, cur, attention=True), block(cur, cur)]
            else:
                before = [block(cur, cur, up=True)]
            merging = []
            for _ in range(config.blocks_per_res + 1):
                merging.append(block(cur + skip_channels.pop(), ch, attention=attend[level]))
                cur = ch
            self.decoder.append(DecoderLevel(before, merging))
            self.feature_channels.append(cur)
        self.norm_out = group_norm(cur)
        self.conv_out = nn.Conv2d(cur, out_channels, 3, padding=1)

    def forward(self, x: Tensor, emb: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        x = self.conv_in(x)
        skips = [x]
        for block in self.encoder:
            x = block(x, emb)
            skips.append(x)
        features = []
        for level in self.decoder:
            for block in level.before:
                x = block(x, emb)
            for block in level.merging:
                x = block(torch.cat([x, skips.pop()], dim=1), emb)
            features.append(x)
        return self.conv_out(F.silu(self.norm_out(x))), tuple(features)


class DecoderLevel(nn.Module):
    """One decoder resolution: blocks that resample/bottleneck, then blocks that each merge one skip."""

    def __init__(self, before: list[ResBlock], merging: list[ResBlock]) -> None:
        super().__init__()
        self.before = nn.ModuleList(before)
        self.merging = nn.ModuleList(merging)
