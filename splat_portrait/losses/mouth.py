"""Mouth-aware training terms, from the 68 dlib landmarks preprocessing stores per frame.

Landmarks are in crop coordinates: (0, 0) is the crop's top-left corner, (1, 1) its bottom-right,
the same normalisation as the cameras' intrinsics, so they serve every training resolution.

* :func:`mouth_weights` up-weights the photometric loss on the mouth. At 128² the mouth box is
  ~4 % of the pixels and a few per cent of a render's error, so without it almost all of the
  gradient goes to pose, background and blur, and the lips are the last thing learned.
* :func:`lip_shape_loss` is a direct gradient on how far the lips move: the splats under the source
  frame's 20 mouth landmarks, moved by their Δd and projected into the target camera, should form
  the target frame's mouth shape. Shapes are compared about their own centroid and in units of the
  target's face height (landmark 27 to 8), so an error in where the head sits does not count as a
  lip error and the term is independent of resolution.
* :func:`still_face_loss` keeps the audio offsets Δd to the mouth: their mean square, in pixel
  widths, away from the (grown) mouth box. A free decoder also learns sub-pixel offsets all over
  the face, which fit the training frames' small expression and pose residuals a little and show
  as a shimmer of the whole face that drowns the lips.
* :func:`lip_gap_loss` asks only for the inner-lip gap (62 to 66, in face heights) of the same
  projected points: the one number the mouth-track metrics score. In the shape loss it is a
  single distance among twenty points' 40 coordinates, most of which (lip width, the identity's
  lip outline) hardly change with speech.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from splat_portrait.face.landmarks import LOWER_INNER_LIP, MOUTH, UPPER_INNER_LIP, face_down_axis


def mouth_box(landmarks: Tensor, known: Tensor, size: int, margin: float = 0.25) -> Tensor:
    """Which pixels (B, 1, size, size) lie in each face's mouth box: landmarks 48-67's bounding box,
    grown by ``margin`` times its width on every side; none for frames without landmarks (``known`` False)."""
    mouth = landmarks[:, MOUTH]
    low, high = mouth.amin(1), mouth.amax(1)  # (B, 2)
    pad = margin * (high[:, :1] - low[:, :1])
    low, high = low - pad, high + pad
    centres = (torch.arange(size, dtype=landmarks.dtype, device=landmarks.device) + 0.5) / size
    inside_x = (centres >= low[:, None, 0:1]) & (centres <= high[:, None, 0:1])  # (B, 1, S)
    inside_y = (centres >= low[:, None, 1:2]) & (centres <= high[:, None, 1:2])
    inside = inside_y.transpose(1, 2) & inside_x  # (B, S, S)
    return (inside & known[:, None, None])[:, None]


def mouth_weights(landmarks: Tensor, known: Tensor, size: int, weight: float, margin: float = 0.25) -> Tensor:
    """Per-pixel loss weights (B, 1, size, size): ``weight`` inside each face's :func:`mouth_box`, 1 elsewhere
    (the lips' surroundings move with them, hence the margin); frames without landmarks get 1 everywhere."""
    return 1 + (weight - 1) * mouth_box(landmarks, known, size, margin).to(landmarks.dtype)


def weighted_mse(pred: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """``mean(weights * (pred - target)²)`` with weights (N, 1, H, W) broadcast over the channels."""
    if pred.shape != target.shape:
        raise ValueError(f"weighted_mse needs equal shapes, got {tuple(pred.shape)} and {tuple(target.shape)}")
    return (weights * (pred - target).square()).mean()


def points_under(means: Tensor, size: int, uv: Tensor) -> Tensor:
    """The per-pixel splat centres (B, size², 3) bilinearly interpolated at crop coordinates uv (B, K, 2): (B, K, 3)."""
    grid = means.transpose(1, 2).reshape(means.shape[0], 3, size, size)
    # align_corners=False: -1 and 1 are the crop's outer edges, as crop coordinates 0 and 1 are.
    sampled = F.grid_sample(grid, (uv * 2 - 1)[:, :, None], mode="bilinear", padding_mode="border", align_corners=False)
    return sampled[..., 0].transpose(1, 2)


def _known_mean(per_frame: Tensor, known: Tensor) -> Tensor:
    # No known frame gives 0, still connected to the inputs, so every process in a distributed
    # step reaches the same parameters.
    weights = known.to(per_frame.dtype)
    return (per_frame * weights).sum() / weights.sum().clamp_min(1.0)


def lip_shape_loss(lips: Tensor, target: Tensor, known: Tensor) -> Tensor:
    """Mean distance of projected lip points (B, 20, 2) to the target's (B, 68, 2) landmarks 48-67,
    both about their own centroid, in target face heights; averaged over frames where ``known`` (0 if none)."""
    truth = target[:, MOUTH]
    centred = lips - lips.mean(1, keepdim=True)
    expected = truth - truth.mean(1, keepdim=True)
    # sqrt(. + eps): the gradient of a plain norm is undefined where a point fits exactly.
    per_frame = ((centred - expected).square().sum(-1) + 1e-12).sqrt().mean(1) / face_down_axis(target)[1]
    return _known_mean(per_frame, known)


def lip_gap_loss(lips: Tensor, target: Tensor, known: Tensor) -> Tensor:
    """Mean absolute difference between the inner-lip gap of projected lip points (B, 20, 2) and that
    of the target's (B, 68, 2) landmarks, both in target face heights; over frames where ``known``.

    A gap is the lower inner lip's offset from the upper one along the target face's downward axis
    (landmark 27 to 8), not their distance: a closed mouth, whose two points coincide, still gets a
    gradient that opens it (a distance has none there).
    """
    down, height = face_down_axis(target)
    top, bottom = UPPER_INNER_LIP - MOUTH.start, LOWER_INNER_LIP - MOUTH.start
    gap = ((lips[:, bottom] - lips[:, top]) * down).sum(-1)
    truth = ((target[:, LOWER_INNER_LIP] - target[:, UPPER_INNER_LIP]) * down).sum(-1)
    per_frame = ((gap - truth).square() + 1e-12).sqrt() / height
    return _known_mean(per_frame, known)


def still_face_loss(offsets_px: Tensor, landmarks: Tensor, known: Tensor, margin: float = 0.5) -> Tensor:
    """Mean squared length of the offsets (B, 3, S, S), in pixel widths, outside each frame's mouth box.

    The box bounds landmarks 48-67 of the source frames (B, 68, 2) grown by ``margin`` times its width
    on every side, so the jaw and the lips' surroundings may follow the lips; frames without
    landmarks (``known`` False) do not count (0 if none does).
    """
    outside = (~mouth_box(landmarks, known, offsets_px.shape[-1], margin)).to(offsets_px.dtype)
    per_frame = (outside * offsets_px.square().sum(1, keepdim=True)).flatten(1).sum(1) / outside.flatten(1).sum(1).clamp_min(1.0)
    return _known_mean(per_frame, known)
