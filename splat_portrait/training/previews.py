"""Preview images for TensorBoard: what the model makes of one training sample.

All images are (3, H, W) in [0, 1]: the source and target frames, the render at the target camera
(over the predicted background), its depth (near = bright) and a strip of novel views orbiting the
source camera at yaw -35, 0 and +35 degrees.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from splat_portrait.camera import orbit_around
from splat_portrait.models.talking_head import TalkingHead
from splat_portrait.training.objective import composite, predict, render_view, to_unit

NOVEL_YAWS_DEG = (-35.0, 0.0, 35.0)


def depth_image(depth: Tensor, alpha: Tensor, z_near: float, z_far: float) -> Tensor:
    """Rendered depth (H, W, 1) as a grey (3, H, W) image: near bright, far dark, empty pixels black."""
    closeness = ((z_far - depth) / (z_far - z_near)).clamp(0, 1) * alpha
    return closeness.permute(2, 0, 1).expand(3, -1, -1)


@torch.no_grad()
def preview_images(model: TalkingHead, batch: dict[str, Any], dynamic: bool, backend: str = "auto") -> dict[str, Tensor]:
    """Previews of the first sample of ``batch`` (tensors already on the model's device)."""
    sample = {k: v[:1] for k, v in batch.items() if isinstance(v, Tensor)}
    prediction = predict(model, sample, dynamic)
    size = sample["image_i"].shape[-1]
    background = prediction.encoded.background_hwc
    c2w = sample["c2w_i"]
    target = render_view(prediction.moving, c2w, sample["c2w_n"], sample["intrinsics_n"], size, backend)
    generator = model.config.generator
    yaws = torch.tensor([math.radians(y) for y in NOVEL_YAWS_DEG], dtype=c2w.dtype, device=c2w.device)
    cameras = orbit_around(c2w, yaws, torch.zeros_like(yaws))
    novel = [
        composite(render_view(prediction.moving, c2w, view[None], sample["intrinsics_i"], size, backend), background)[0]
        for view in cameras
    ]
    return {
        "source": to_unit(sample["image_i"][0]).clamp(0, 1),
        "target": to_unit(sample["image_n"][0]).clamp(0, 1),
        "render": composite(target, background)[0].clamp(0, 1),
        "depth": depth_image(target.depth[0], target.alpha[0], generator.z_near, generator.z_far),
        "novel_views": torch.cat(novel, dim=-1).clamp(0, 1),
    }
