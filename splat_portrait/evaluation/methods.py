"""What makes the frames under evaluation: a trained checkpoint, or the copy-source baseline.

Both take the same :class:`Drive` (source image and camera, driving audio features and cameras)
and return a :class:`Generation`, so every metric and output treats them alike.
The model runs through the public :class:`~splat_portrait.runtime.talking_head.TalkingHeadPipeline`
(``reenact``), the same frame loop as ``animate``: the generator runs once on the source, frame ``n`` gets the dynamic
offsets of the audio around ``t = n / 25`` s with ``ΔT = t`` (time since the source frame), and
the splats, living in the source view space, are rendered from the driving camera of frame ``n``
over the predicted background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from splat_portrait import camera
from splat_portrait.metrics.views import bullet_angles
from splat_portrait.render import render
from splat_portrait.runtime.cameras import view_matrices
from splat_portrait.runtime.compose import DepthColors, to_uint8
from splat_portrait.runtime.talking_head import TalkingHeadPipeline
from splat_portrait.splats import Splats

NOVEL_YAWS_DEG = (-35.0, 0.0, 35.0)


@dataclass(frozen=True)
class Drive:
    """The inputs of one evaluated clip."""

    source: Tensor  # (3, R, R) in [-1, 1]
    source_c2w: Tensor  # (4, 4)
    source_intrinsics: Tensor  # (4,) normalised
    features: Tensor  # (T, D) 50 Hz audio features of the driving clip
    c2w: Tensor  # (F, 4, 4) driving cameras
    intrinsics: Tensor  # (F, 4)
    sheet_frame: int  # the frame the contact sheet shows

    @property
    def num_frames(self) -> int:
        return len(self.c2w)

    @property
    def source_image(self) -> Tensor:
        """The source as an (R, R, 3) image in [0, 1], as frames and metrics take it."""
        return ((self.source + 1) / 2).clamp(0, 1).permute(1, 2, 0)


@dataclass
class Generation:
    """Generated frames (F, R, R, 3) in [0, 1]; the sheet frame's coloured depth and novel views where there is 3D."""

    frames: Tensor
    depth: np.ndarray | None = None
    novel_views: list[np.ndarray] = field(default_factory=list)
    # The sheet frame from the bullet path's cameras, (yaw, pitch) degrees -> (R, R, 3) uint8, when asked for.
    bullet_views: dict[tuple[float, float], np.ndarray] = field(default_factory=dict)


class Method(Protocol):
    name: str

    def generate(self, drive: Drive, bullet: bool = False) -> Generation:
        """The frames of ``drive``; with ``bullet``, also the sheet frame from every bullet-path camera."""


class CopySource:
    """The do-nothing answer: every frame is the source image."""

    name = "copy-source"

    def generate(self, drive: Drive, bullet: bool = False) -> Generation:
        result = Generation(drive.source_image.expand(drive.num_frames, -1, -1, -1).contiguous())
        if bullet:  # no 3D: every view is the source
            source = to_uint8(drive.source_image[None])[0]
            result.bullet_views = {angles: source for angles in bullet_angles()}
        return result


class ModelMethod:
    """A model (a checkpoint in PyTorch or a MODEL_DIR in ONNX Runtime) through the public :class:`TalkingHeadPipeline` (``reenact``)."""

    name = "model"

    def __init__(self, pipeline: TalkingHeadPipeline):
        self.pipeline = pipeline
        self.device = pipeline.engine.device
        self.backend = pipeline.options.render_backend
        self.size = pipeline.card.image_size

    def _Ks(self, intrinsics: Tensor) -> Tensor:
        return camera.intrinsics_to_K(intrinsics, self.size, self.size).to(self.device)

    @torch.inference_mode()
    def generate(self, drive: Drive, bullet: bool = False) -> Generation:
        chunks = self.pipeline.reenact(drive.source, drive.source_c2w, drive.source_intrinsics, drive.features, drive.c2w, drive.intrinsics)
        frames, result = [], Generation(torch.empty(0))
        for chunk in chunks:
            out, start = chunk.render, int(chunk.index[0])
            frames.append(out.rgb.clamp(0, 1).cpu())
            if start <= drive.sheet_frame < start + len(chunk.index):
                i = drive.sheet_frame - start
                depth, alpha = out.depth[i : i + 1], out.alpha[i : i + 1]
                result.depth = DepthColors.fit(depth[0], alpha[0])(depth, alpha)[0]
                views = (chunk.splats[i], drive.source_c2w, drive.source_intrinsics, chunk.background)
                result.novel_views = self._views(*views, [(yaw, 0.0) for yaw in NOVEL_YAWS_DEG])
                if bullet:
                    angles = bullet_angles()
                    result.bullet_views = dict(zip(angles, self._views(*views, angles)))
        result.frames = torch.cat(frames)
        return result

    def _views(self, splats: Splats, source_c2w: Tensor, intrinsics: Tensor, background: Tensor,
               angles: list[tuple[float, float]]) -> list[np.ndarray]:  # fmt: skip
        """The splats seen from cameras turned around the source camera by (yaw, pitch) degrees."""
        yaws = torch.tensor([math.radians(y) for y, _ in angles])
        pitches = torch.tensor([math.radians(p) for _, p in angles])
        cameras = camera.orbit_around(source_c2w, yaws, pitches)
        count = len(angles)
        batch = splats.map(lambda t: t[None].expand(count, *t.shape))
        viewmats = view_matrices(source_c2w, cameras).to(self.device)
        out = render(batch, viewmats, self._Ks(intrinsics.expand(count, -1)), self.size, self.size,
                     background.expand(count, -1, -1, -1), backend=self.backend)  # fmt: skip
        return list(to_uint8(out.rgb))
