"""The training objective: the paper's eqs. 1 and 2 (L2 + lambda * LPIPS on I_i and I_n) plus SDS (eqs. 5, 6).

One step predicts splats from the source frame ``I_i`` (they live in its view space), renders them
at the source camera and at the target frame ``I_n``'s camera (``viewmat =
camera.relative_pose(c2w_i, c2w_n)``) and compares each render with its frame twice: composited
over a random flat colour and over the predicted 2D background (Sec. 3.1). Stage II renders
``I_n`` with the dynamic offsets Δd of the audio at ``t_n`` and ``ΔT = t_n - t_i``; ``I_i`` keeps
Δd = 0 (eq. 2). Every term sums over the two views and averages over the backgrounds and the
batch, so ``l2`` is eq. 1's ``||I_i - I_i*||² + ||I_n - I_n*||²`` with per-pixel means.

Score distillation renders the static splats at a random point of the bullet path (yaw +-45,
pitch +-12.5 degrees around the source camera), cuts the crop preprocessing would cut around the
face found in the render (the prior's training framing) and pulls it towards the prior's
denoised version (Sec. 3.3). The optional depth-smoothness term (losses/geometry.py) asks the
source view's depth map to be locally planar away from image edges.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from splat_portrait import camera
from splat_portrait.losses import LPIPSLoss, VGGFaceLoss, mse
from splat_portrait.losses.mouth import MOUTH, lip_gap_loss, lip_shape_loss, mouth_weights, points_under, still_face_loss, weighted_mse
from splat_portrait.models.mouth_code import mouth_code
from splat_portrait.models.talking_head import Encoded, TalkingHead
from splat_portrait.losses.geometry import depth_smoothness
from splat_portrait.prior import (
    EDMDenoiser, aligned_crop, bullet_poses, ffhq_crop, landmark_boxes, load_denoiser, random_extreme_poses, score_distillation_loss,
)  # fmt: skip
from splat_portrait.render import RenderOutput, render
from splat_portrait.splats import Splats
from splat_portrait.training.config import TrainConfig


@dataclass
class Critics:
    """The frozen networks the objective compares renders with; None switches that term off."""

    lpips: nn.Module | None = None
    vggface: nn.Module | None = None
    prior: EDMDenoiser | None = None


def build_critics(config: TrainConfig, device: torch.device | str) -> Critics:
    """Load the networks the config's non-zero weights need (clear errors when their weights are missing)."""
    lpips = LPIPSLoss(config.lpips_net).to(device) if config.lpips_weight > 0 else None
    vggface = VGGFaceLoss(config.vggface).to(device) if config.vggface and config.vggface_weight > 0 else None
    prior = load_denoiser(config.prior, device) if config.prior and config.sds_weight > 0 else None
    return Critics(lpips, vggface, prior)


@dataclass
class Prediction:
    """What the model made of a batch's source frames (float32 even under mixed precision)."""

    encoded: Encoded
    static: Splats  # Δd = 0: the source frame's splats
    moving: Splats  # with Δd at the target frame (stage II); the static splats in stage I
    offsets: Tensor | None  # Δd (B, 3, H, W) in the source view space (stage II), None in stage I


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast of the networks on CUDA; nothing elsewhere (CPU autocast would only slow tiny runs)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def teacher_mouth_codes(model: TalkingHead, batch: dict[str, Any]) -> Tensor | None:
    """For a decoder with a mouth predictor: the true mouth codes of the batch (target frame minus
    source frame, from their landmarks), the predicted ones where a frame has no landmarks; else None."""
    if not model.config.dynamic.mouth_code_channels:
        return None
    true = mouth_code(batch["landmarks_n"]) - mouth_code(batch["landmarks_i"])
    known = (batch["has_landmarks_i"] & batch["has_landmarks_n"])[:, None]
    if bool(known.all()):
        return true
    return torch.where(known, true, model.dynamic.mouth(batch["audio"]))


def predict(model: TalkingHead, batch: dict[str, Any], dynamic: bool, amp: bool = False) -> Prediction:
    """Splats (and background) from ``batch["image_i"]``; with ``dynamic``, Δd from its audio and ``delta_t``
    (a decoder with a mouth predictor is given the frames' true mouth codes where their landmarks are known)."""
    device = batch["image_i"].device
    with autocast(device, amp):
        encoded = model.encode(batch["image_i"], batch["c2w_i"], batch["intrinsics_i"])
        offsets = None
        if dynamic:
            codes = teacher_mouth_codes(model, batch)
            offsets = model.dynamic_offsets(encoded.features, batch["audio"], batch["delta_t"], codes)
    # Rasterisation and the losses run in float32 (gsplat needs it, and the sums are long).
    encoded = dataclasses.replace(encoded, attributes=encoded.attributes.float(), background=encoded.background.float())
    static = model.splats(encoded)
    offsets = offsets.float() if offsets is not None else None
    moving = model.splats(encoded, offsets) if offsets is not None else static
    return Prediction(encoded, static, moving, offsets)


def render_view(
    splats: Splats, c2w_source: Tensor, c2w_target: Tensor, intrinsics: Tensor, size: int, backend: str = "auto"
) -> RenderOutput:
    """Splats living in the source view space, seen by the target cameras; splats only (over black)."""
    viewmats = camera.relative_pose(c2w_source, c2w_target)
    Ks = camera.intrinsics_to_K(intrinsics, size, size)
    return render(splats, viewmats, Ks, size, size, background=None, backend=backend)


def composite(view: RenderOutput, background: Tensor) -> Tensor:
    """A render over ``background`` ((B, 3) colours or (B, H, W, 3) images) as (B, 3, H, W) in [0, 1]."""
    if background.dim() == 2:
        background = background[:, None, None, :]
    return (view.rgb + (1 - view.alpha) * background).permute(0, 3, 1, 2)


def to_unit(images: Tensor) -> Tensor:
    """Frames in [-1, 1] (the datasets' range) -> [0, 1] (the renders' range)."""
    return (images + 1) / 2


def reconstruction_terms(renders: Tensor, targets: Tensor, critics: Critics, pixel_weights: Tensor | None = None) -> dict[str, Tensor]:
    """Unweighted eq. 1 terms of renders (V, K, B, 3, H, W) (V views, K backgrounds) against frames (V, B, 3, H, W).

    Each term is summed over the views and averaged over backgrounds, batch and pixels;
    ``pixel_weights`` (V, B, 1, H, W) weigh the L2 term's pixels (None: all alike).
    """
    views = renders.shape[0]
    flat = renders.flatten(0, 2)
    expected = targets[:, None].expand_as(renders).flatten(0, 2)
    if pixel_weights is None:
        l2 = mse(flat, expected)
    else:
        l2 = weighted_mse(flat, expected, pixel_weights[:, None].expand(*renders.shape[:3], *pixel_weights.shape[2:]).flatten(0, 2))
    terms = {"l2": views * l2}
    if critics.lpips is not None:
        terms["lpips"] = views * critics.lpips(flat, expected)
    if critics.vggface is not None:
        terms["vggface"] = views * critics.vggface(flat, expected)
    return terms


def sds_term(
    prediction: Prediction, batch: dict[str, Any], prior: EDMDenoiser, config: TrainConfig, generator: torch.Generator, size: int
) -> Tensor:
    """Score distillation on the static splats rendered at random extreme poses over the predicted background."""
    c2w = batch["c2w_i"]
    poses = bullet_poses if config.sds_views == "bullet" else random_extreme_poses
    extreme = poses(c2w, generator, config.sds_yaw_deg, config.sds_pitch_deg)
    view = render_view(prediction.static, c2w, extreme, batch["intrinsics_i"], size, config.render_backend)
    image = composite(view, prediction.encoded.background_hwc)
    if config.sds_crop == "landmarks":
        x_clean = aligned_crop(image * 2 - 1, landmark_boxes(image)[0], prior.resolution)
    else:
        x_clean = ffhq_crop(image * 2 - 1, prior.resolution)
    return score_distillation_loss(x_clean, prior, prior.config.schedule, generator, config.sds_band, config.sds_euler_steps)


def mouth_pixel_weights(batch: dict[str, Any], size: int, weight: float) -> Tensor:
    """(2, B, 1, S, S) L2 weights of the source and target views from their frames' mouth boxes."""
    return torch.stack([
        mouth_weights(batch[f"landmarks_{v}"], batch[f"has_landmarks_{v}"], size, weight) for v in ("i", "n")
    ])  # fmt: skip


def seen_lips(prediction: Prediction, batch: dict[str, Any], size: int) -> Tensor:
    """The moving splats under the source frame's mouth landmarks, projected into the target camera: (B, 20, 2)."""
    lips = points_under(prediction.moving.means, size, batch["landmarks_i"][:, MOUTH])
    viewmats = camera.relative_pose(batch["c2w_i"], batch["c2w_n"])
    return camera.project_points(viewmats, lips, batch["intrinsics_n"])


def lip_terms(prediction: Prediction, batch: dict[str, Any], size: int, config: TrainConfig) -> dict[str, Tensor]:
    """The landmark lip terms the config weighs: ``lip`` (shape) and ``lip_gap`` (inner-lip gap)."""
    seen = seen_lips(prediction, batch, size)
    known = batch["has_landmarks_i"] & batch["has_landmarks_n"]
    terms = {}
    if config.lip_weight > 0:
        terms["lip"] = lip_shape_loss(seen, batch["landmarks_n"], known)
    if config.lip_gap_weight > 0:
        terms["lip_gap"] = lip_gap_loss(seen, batch["landmarks_n"], known)
    return terms


def still_term(prediction: Prediction, batch: dict[str, Any]) -> Tensor:
    """The still-face loss of the audio offsets Δd in source pixel widths."""
    pixel = camera.pixel_widths(prediction.encoded.maps.depth, batch["intrinsics_i"])
    return still_face_loss(prediction.offsets / pixel, batch["landmarks_i"], batch["has_landmarks_i"])


def weighted_total(terms: dict[str, Tensor], config: TrainConfig) -> Tensor:
    weights = {
        "l2": 1.0, "lpips": config.lpips_weight, "vggface": config.vggface_weight, "sds": config.sds_weight,
        "lip": config.lip_weight, "lip_gap": config.lip_gap_weight, "still": config.still_weight, "depth_smoothness": config.depth_smoothness_weight,
    }  # fmt: skip
    return sum(weights[name] * value for name, value in terms.items())


class Objective(nn.Module):
    """``forward(batch, generator) -> {"l2", ["lpips", "vggface", "lip", "lip_gap", "still", "depth_smoothness", "sds",] "total"}`` for one batch.

    The module ``DistributedDataParallel`` wraps: gradients are averaged across processes when
    they flow back through this forward. The critics are not submodules (they are frozen and
    never saved with the model). ``generator`` (CPU) draws the flat backgrounds, SDS poses and noise.
    """

    def __init__(self, model: TalkingHead, critics: Critics, config: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.critics = critics
        self.config = config

    def forward(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, Tensor]:
        config = self.config
        prediction = predict(self.model, batch, config.stage == "dynamic", config.amp)
        size = batch["image_i"].shape[-1]
        c2w_i, intrinsics = batch["c2w_i"], batch["intrinsics_i"]
        # One rasterisation per view; both backgrounds are composited onto it.
        views = [
            render_view(prediction.static, c2w_i, c2w_i, intrinsics, size, config.render_backend),
            render_view(prediction.moving, c2w_i, batch["c2w_n"], batch["intrinsics_n"], size, config.render_backend),
        ]
        background = prediction.encoded.background_hwc
        renders = torch.stack([
            torch.stack([composite(view, torch.rand(len(c2w_i), 3, generator=generator).to(c2w_i)), composite(view, background)])
            for view in views
        ])  # fmt: skip
        targets = torch.stack([to_unit(batch["image_i"]), to_unit(batch["image_n"])])
        pixel_weights = mouth_pixel_weights(batch, size, config.mouth_weight) if config.mouth_weight > 1 else None
        terms = reconstruction_terms(renders, targets, self.critics, pixel_weights)
        if config.lip_weight > 0 or config.lip_gap_weight > 0:
            terms.update(lip_terms(prediction, batch, size, config))
        if config.still_weight > 0:
            terms["still"] = still_term(prediction, batch)
        if config.depth_smoothness_weight > 0:
            terms["depth_smoothness"] = depth_smoothness(prediction.encoded.maps.depth, batch["image_i"], intrinsics)
        if self.critics.prior is not None:
            terms["sds"] = sds_term(prediction, batch, self.critics.prior, config, generator, size)
        terms["total"] = weighted_total(terms, config)
        return terms
