"""The static generator: one portrait -> one Gaussian per pixel, plus an inpainted 2D background.

``StaticGenerator.forward(image, c2w, intrinsics) -> (attributes, background, features)`` is
tensor-only so it traces to ONNX as is. ``attributes`` (B, 15, H, W) stacks the activated maps in
:data:`ATTRIBUTES` order; :class:`GaussianMaps` names them and :func:`to_splats` turns them into
:class:`~splat_portrait.splats.Splats` in the source camera's view space, ``p = ray * depth + offset``.

The output heads are initialised so an untrained generator already reproduces its input at the
source camera: every splat sits on its own pixel's ray at ``depth_init``, is about one pixel wide
there, nearly opaque, and coloured by its input pixel (the colour head adds to the input's logit).
With ``GeneratorConfig.footprint`` set, rotations and scales are read in each pixel's surface frame
and widened to cover its patch (:mod:`splat_portrait.models.footprint`), inside the graph, so
training, export and every renderer see the same splats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from splat_portrait.camera import pixel_rays, pixel_widths
from splat_portrait.models.config import GeneratorConfig
from splat_portrait.models.footprint import cover_surface
from splat_portrait.models.unet import ConditionMLP, SongUNet, sinusoidal_embedding
from splat_portrait.splats import Splats

# Channel count of each activated map, in the order they are stacked in ``attributes``.
ATTRIBUTES: tuple[tuple[str, int], ...] = (
    ("opacity", 1), ("scale", 3), ("depth", 1), ("offset", 3), ("rotation", 4), ("color", 3),
)  # fmt: skip
ATTRIBUTE_CHANNELS = sum(c for _, c in ATTRIBUTES)


def attribute_slice(name: str) -> slice:
    """The channels of attribute ``name`` in the generator's (B, 15, H, W) attribute maps."""
    names = [n for n, _ in ATTRIBUTES]
    if name not in names:
        raise KeyError(f"no generator attribute {name!r}; they are {', '.join(names)}")
    start = sum(c for _, c in ATTRIBUTES[: names.index(name)])
    return slice(start, start + dict(ATTRIBUTES)[name])

BACKGROUND_CHANNELS = 3
# Camera conditioning reads the c2w translation (3) and the normalised focal fx (1).
CAMERA_VALUES = 4
# The output conv starts this much smaller than PyTorch's default init: head pre-activations start
# near zero (so the designed initial splats hold) while gradients still reach every layer.
HEAD_INIT_GAIN = 1e-2


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


@dataclass
class GaussianMaps:
    """Named views of ``attributes``: per-pixel maps (B, C, H, W), all activated."""

    opacity: Tensor  # (B, 1, H, W) in (0, 1)
    scale: Tensor  # (B, 3, H, W) standard deviations, world units
    depth: Tensor  # (B, 1, H, W) z-depth in (z_near, z_far)
    offset: Tensor  # (B, 3, H, W) static offset, view space, |.| < max_static_offset
    rotation: Tensor  # (B, 4, H, W) unit quaternion wxyz
    color: Tensor  # (B, 3, H, W) RGB in (0, 1)

    @classmethod
    def from_attributes(cls, attributes: Tensor) -> GaussianMaps:
        return cls(*attributes.split([c for _, c in ATTRIBUTES], dim=1))


class StaticGenerator(nn.Module):
    """SongUNet + camera FiLM conditioning + activated Gaussian heads."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        camera_dim = CAMERA_VALUES * (1 + 2 * config.camera_embedding_order)
        self.camera_mlp = ConditionMLP(camera_dim, config.unet.embedding_dim)
        self.unet = SongUNet(config.unet, 3, ATTRIBUTE_CHANNELS + BACKGROUND_CHANNELS)
        with torch.no_grad():
            self.unet.conv_out.weight.mul_(HEAD_INIT_GAIN)
            self.unet.conv_out.bias.zero_()

    @property
    def feature_channels(self) -> list[int]:
        return self.unet.feature_channels

    def forward(self, image: Tensor, c2w: Tensor, intrinsics: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        """image (B, 3, H, W) in [-1, 1], c2w (B, 4, 4), normalised intrinsics (B, 4) ->
        attributes (B, 15, H, W), background (B, 3, H, W) in (0, 1), decoder features (coarsest first)."""
        camera = torch.cat([c2w[:, :3, 3], intrinsics[:, :1]], dim=1)
        emb = self.camera_mlp(sinusoidal_embedding(camera, self.config.camera_embedding_order))
        raw, features = self.unet(image, emb)
        attributes = self._activate(raw[:, :ATTRIBUTE_CHANNELS], image, intrinsics)
        background = torch.sigmoid(raw[:, ATTRIBUTE_CHANNELS:])
        return attributes, background, features

    def _activate(self, raw: Tensor, image: Tensor, intrinsics: Tensor) -> Tensor:
        cfg = self.config
        o, s, d, off, r, c = raw.split([c for _, c in ATTRIBUTES], dim=1)
        opacity = torch.sigmoid(o + _logit(cfg.opacity_init))
        depth_init = (cfg.depth_init - cfg.z_near) / (cfg.z_far - cfg.z_near)
        depth = cfg.z_near + (cfg.z_far - cfg.z_near) * torch.sigmoid(d + _logit(depth_init))
        # One pixel at z-depth d spans d / fx_pixels world units; scales are predicted relative to
        # it, so the initial splats fit their pixel at every resolution and focal length.
        pixel_size = pixel_widths(depth, intrinsics)
        bound = cfg.scale_log_range
        scale = pixel_size * cfg.scale_init_px * torch.exp(bound * torch.tanh(s / bound))
        offset = cfg.max_static_offset * torch.tanh(off)
        rotation = F.normalize(torch.cat([r[:, :1] + 1, r[:, 1:]], dim=1), dim=1)
        if cfg.footprint > 0:
            points = splat_centres(intrinsics, depth, offset)
            rotation, scale = cover_surface(points, rotation, scale, pixel_size, cfg.footprint, cfg.footprint_max_px)
        pixels = ((image + 1) / 2).clamp(cfg.color_clamp, 1 - cfg.color_clamp)
        color = torch.sigmoid(torch.log(pixels / (1 - pixels)) + c)
        return torch.cat([opacity, scale, depth, offset, rotation, color], dim=1)


def splat_centres(intrinsics: Tensor, depth: Tensor, offset: Tensor) -> Tensor:
    """Splat centres (B, 3, H, W) in the source camera's view space: ``p = ray * depth + offset``."""
    rays = pixel_rays(intrinsics, *depth.shape[-2:]).permute(0, 3, 1, 2)
    return rays * depth + offset


def to_splats(attributes: Tensor, intrinsics: Tensor, dynamic_offsets: Tensor | None = None) -> Splats:
    """Per-pixel Gaussians (B, H*W) in the source camera's view space: ``p = ray * depth + offset (+ Δd)``.

    ``attributes`` (B, 15, H, W) from :class:`StaticGenerator`, ``intrinsics`` (B, 4) the source
    camera's, ``dynamic_offsets`` (B, 3, H, W) from the dynamic decoder (None: the static head).
    """
    maps = GaussianMaps.from_attributes(attributes)

    def per_splat(t: Tensor) -> Tensor:
        return t.flatten(2).transpose(1, 2)

    means = per_splat(splat_centres(intrinsics, maps.depth, maps.offset))
    if dynamic_offsets is not None:
        means = means + per_splat(dynamic_offsets)
    return Splats(
        means=means,
        quats=per_splat(maps.rotation),
        scales=per_splat(maps.scale),
        opacities=per_splat(maps.opacity)[..., 0],
        colors=per_splat(maps.color),
    )
