"""The whole model of both training stages: static generator + audio-driven dynamic decoder.

Stage I trains ``generator`` only; stage II adds ``dynamic``. One class (and one checkpoint kind)
for both keeps checkpoints interchangeable. The methods here are convenience wrappers that return
named results; the traced/exported graphs are ``generator`` and ``dynamic`` themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from splat_portrait.models.config import ModelConfig
from splat_portrait.models.dynamic import DynamicDecoder
from splat_portrait.models.generator import GaussianMaps, StaticGenerator, to_splats
from splat_portrait.splats import Splats


@dataclass
class Encoded:
    """What the generator made of a batch of source portraits."""

    attributes: Tensor  # (B, 15, H, W) activated Gaussian maps, see GaussianMaps
    background: Tensor  # (B, 3, H, W) RGB in (0, 1)
    features: tuple[Tensor, ...]  # generator decoder features, coarsest first
    intrinsics: Tensor  # (B, 4) the source cameras' normalised intrinsics

    @property
    def maps(self) -> GaussianMaps:
        return GaussianMaps.from_attributes(self.attributes)

    @property
    def background_hwc(self) -> Tensor:
        """The background as renderers take it: (B, H, W, 3)."""
        return self.background.permute(0, 2, 3, 1)


class TalkingHead(nn.Module):
    kind: ClassVar[str] = "talking-head"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.generator = StaticGenerator(config.generator)
        self.dynamic = DynamicDecoder(config.dynamic, config.generator.unet)

    def encode(self, image: Tensor, c2w: Tensor, intrinsics: Tensor) -> Encoded:
        """Source portraits (B, 3, S, S) in [-1, 1] with their cameras -> per-pixel Gaussians + background."""
        size = self.config.image_size
        if tuple(image.shape[-3:]) != (3, size, size):
            raise ValueError(f"expected images of shape (B, 3, {size}, {size}), got {tuple(image.shape)}")
        attributes, background, features = self.generator(image, c2w, intrinsics)
        return Encoded(attributes, background, features, intrinsics)

    def dynamic_offsets(self, features: tuple[Tensor, ...], audio_windows: Tensor, delta_t: Tensor, mouth_code: Tensor | None = None) -> Tensor:
        """Per-pixel offsets Δd (B, 3, H, W) for audio windows (B, 8, 16, D) at ``delta_t`` (B,) seconds
        (and, for a decoder with a mouth predictor, optionally the true mouth codes (B, 2))."""
        return self.dynamic(features, audio_windows, delta_t, mouth_code)

    def splats(self, encoded: Encoded, dynamic_offsets: Tensor | None = None) -> Splats:
        """The Gaussians (batch B, H*W splats) in the source view space; without offsets, the static head."""
        return to_splats(encoded.attributes, encoded.intrinsics, dynamic_offsets)
