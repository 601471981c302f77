"""Typed, frozen configurations of the networks, their named presets, and plain-dict round trips.

A checkpoint stores :meth:`ModelConfig.to_dict` (built-in types only, so ``torch.load`` can read it
with ``weights_only=True``) and rebuilds the model from :meth:`ModelConfig.from_dict` alone.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from splat_portrait.camera import DEFAULT_RADIUS

T = TypeVar("T")


@dataclass(frozen=True)
class UNetConfig:
    """A SongUNet (DDPM++) U-Net: ``len(channel_mults)`` levels, each halving the resolution."""

    image_size: int = 64
    base_channels: int = 16
    channel_mults: tuple[int, ...] = (1, 2, 2)
    blocks_per_res: int = 1
    # Self-attention after the blocks working at these resolutions (pixels per side).
    attention_resolutions: tuple[int, ...] = (16,)
    # Width of the conditioning vector every block reads its FiLM scale/shift from.
    embedding_dim: int = 64
    channels_per_head: int = 64

    def __post_init__(self) -> None:
        levels = len(self.channel_mults)
        if levels < 1 or self.image_size % 2 ** (levels - 1):
            raise ValueError(f"image_size {self.image_size} must be divisible by 2^{levels - 1} for {levels} levels")

    def level_channels(self) -> list[int]:
        return [self.base_channels * m for m in self.channel_mults]

    def level_resolutions(self) -> list[int]:
        return [self.image_size >> level for level in range(len(self.channel_mults))]


@dataclass(frozen=True)
class GeneratorConfig:
    """The static generator: U-Net body, camera conditioning and the activations of its output heads."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    # Sinusoidal embedding order of the camera translation and focal (frequencies 2^k pi, k < order).
    camera_embedding_order: int = 9
    # Depth is z-depth in the source view, squashed into [z_near, z_far].
    z_near: float = 1.8
    z_far: float = 3.6
    depth_init: float = DEFAULT_RADIUS
    opacity_init: float = 0.95
    # Splat standard deviation at initialisation, in pixels at the splat's depth.
    scale_init_px: float = 0.4
    # log(scale / scale_init) is bounded to +-scale_log_range (a smooth clamp).
    scale_log_range: float = 6.0
    max_static_offset: float = 0.1
    # The colour head adds to logit(input pixel); clamping the input keeps that logit finite.
    color_clamp: float = 0.01
    # Surface footprint (models/footprint.py): splats read their rotation in their pixel's surface
    # frame and are at least this many neighbour steps wide along it; steps count at most
    # footprint_max_px pixels. 0 (free splats) is what checkpoints from before it mean; the small
    # and paper presets use 0.5, the winner of scripts/ablate_view_terms.sh.
    footprint: float = 0.0
    footprint_max_px: float = 3.0

    def __post_init__(self) -> None:
        if not self.z_near < self.depth_init < self.z_far:
            raise ValueError(f"depth_init {self.depth_init} must lie in (z_near, z_far) = {(self.z_near, self.z_far)}")
        if not 0 < self.opacity_init < 1:
            raise ValueError(f"opacity_init must be in (0, 1), got {self.opacity_init}")
        if self.footprint < 0 or self.footprint_max_px <= 0:
            raise ValueError(f"footprint must be >= 0 and footprint_max_px > 0, got {self.footprint}, {self.footprint_max_px}")


@dataclass(frozen=True)
class AudioConfig:
    """AudioNet + AudioAttNet over (8, 16, feature_dim) windows, and the time-delta embedding."""

    # 80 for log-mel features, 1024 for wav2vec2-XLSR-53 hidden states.
    feature_dim: int = 80
    hidden_channels: int = 32
    embedding_dim: int = 32
    time_embedding_dim: int = 16
    # The time delta is embedded in video frames (seconds * fps), so the finest period is ~6 frames.
    time_scale: float = 25.0
    time_max_period: float = 10000.0

    def __post_init__(self) -> None:
        if self.time_embedding_dim % 2 or self.hidden_channels % 2:
            raise ValueError("time_embedding_dim and hidden_channels must be even")


@dataclass(frozen=True)
class DynamicConfig:
    """The dynamic decoder: one level per generator level, FiLM-conditioned by audio + time."""

    audio: AudioConfig = field(default_factory=AudioConfig)
    base_channels: int = 8
    blocks_per_res: int = 1
    embedding_dim: int = 64
    max_offset: float = 0.1
    # 0: the decoder hears the audio (AudioNet + AudioAttNet). Above 0: the width of a mouth
    # predictor whose two-number mouth code is all the decoder gets (models/mouth_code.py).
    mouth_code_channels: int = 0


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a :class:`~splat_portrait.models.talking_head.TalkingHead`."""

    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    dynamic: DynamicConfig = field(default_factory=DynamicConfig)

    @property
    def image_size(self) -> int:
        return self.generator.unet.image_size

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return config_from_dict(cls, data)


PRESETS: dict[str, ModelConfig] = {
    # Unit tests: 64^2, one block per level; a training step takes a fraction of a second on a CPU.
    "tiny": ModelConfig(),
    # CPU-trainable demo at 128^2; its exported fp32 ONNX graphs stay around 20 MB in total.
    "small": ModelConfig(
        generator=GeneratorConfig(
            unet=UNetConfig(
                image_size=128, base_channels=32, channel_mults=(1, 2, 2, 3), blocks_per_res=2,
                attention_resolutions=(16,), embedding_dim=128,
            ),
            footprint=0.5,
        ),
        dynamic=DynamicConfig(
            audio=AudioConfig(hidden_channels=64, embedding_dim=64, time_embedding_dim=32),
            base_channels=16, blocks_per_res=1, embedding_dim=128,
        ),
    ),  # fmt: skip
    # The paper's size: Splatter Image's SongUNet widths (128 base, 4 blocks per level) at 256^2,
    # one more level so the attention runs at 16^2, and wav2vec2-XLSR audio features.
    "paper": ModelConfig(
        generator=GeneratorConfig(
            unet=UNetConfig(
                image_size=256, base_channels=128, channel_mults=(1, 2, 2, 2, 2), blocks_per_res=4,
                attention_resolutions=(16,), embedding_dim=512,
            ),
            footprint=0.5,
        ),
        dynamic=DynamicConfig(
            audio=AudioConfig(feature_dim=1024, hidden_channels=64, embedding_dim=64, time_embedding_dim=32),
            base_channels=32, blocks_per_res=2, embedding_dim=256,
        ),
    ),  # fmt: skip
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """A named preset with fields replaced, e.g. ``preset("small", feature_dim=1024)``.

    A key is a field name that occurs once in the nested config, or a ``__``-separated path where
    it is ambiguous (``dynamic__base_channels``, ``generator__unet__base_channels``).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
    config = PRESETS[name]
    leaves = _leaf_paths(config)
    for key, value in overrides.items():
        path = tuple(key.split("__"))
        matches = [p for p in leaves if p[-len(path) :] == path]
        if len(matches) != 1:
            found = ", ".join("__".join(p) for p in matches) or "none"
            raise ValueError(f"override {key!r} must name exactly one config field (matches: {found})")
        config = _replace_path(config, matches[0], value)
    return config


def _leaf_paths(config: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            paths += _leaf_paths(value, (*prefix, f.name))
        else:
            paths.append((*prefix, f.name))
    return paths


def _replace_path(config: Any, path: tuple[str, ...], value: Any) -> Any:
    head, *rest = path
    new = _replace_path(getattr(config, head), tuple(rest), value) if rest else value
    return dataclasses.replace(config, **{head: new})


def config_to_dict(config: Any) -> dict[str, Any]:
    """A nested dict of built-in types (tuples become lists) for any dataclass config."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            value = config_to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def config_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a dataclass config from :func:`config_to_dict` output.

    Unknown keys raise ``ValueError`` (the config was written by a different version); missing keys
    take their defaults so configs survive new, defaulted fields.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            value = config_from_dict(hint, value)
        elif typing.get_origin(hint) is tuple:
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)
