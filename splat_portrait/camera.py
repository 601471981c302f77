"""Pinhole cameras in the OpenCV convention, as batched tensors.

Conventions (``docs``: method.md):

* camera axes: x right, y down, z forward; a camera is a camera-to-world matrix ``c2w`` (..., 4, 4)
  and renderers take ``viewmat = inv(c2w)``;
* intrinsics are stored *normalised*, ``(fx/W, fy/H, cx/W, cy/H)`` as (..., 4), so one camera
  serves every resolution; :func:`intrinsics_to_K` gives the pixel matrix for a given size;
* the head is the world origin and the camera moves (the paper's convention). The world axes
  match a frontal camera's: x to the image right, y down, z from the camera into the face, so the
  default camera is ``c2w = [I | (0, 0, -DEFAULT_RADIUS)]``.

Default camera: the FFHQ/EG3D framing the face priors are trained with (normalised focal 4.2647,
i.e. an 18.8 degree field of view, 2.7 units from the head centre).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

DEFAULT_FOCAL = 4.2647
DEFAULT_RADIUS = 2.7
# World "up" is -y because the world shares the frontal camera's y-down axes.
WORLD_UP = (0.0, -1.0, 0.0)

TrajectoryKind = Literal["static", "orbit", "bullet", "nod"]
TRAJECTORIES: tuple[str, ...] = ("static", "orbit", "bullet", "nod")


def default_intrinsics(
    batch_shape: tuple[int, ...] = (), focal: float = DEFAULT_FOCAL, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Normalised intrinsics (fx/W, fy/H, cx/W, cy/H) of a centred square-pixel camera."""
    return torch.tensor([focal, focal, 0.5, 0.5], dtype=dtype).expand(*batch_shape, 4).clone()


def default_c2w(
    batch_shape: tuple[int, ...] = (), radius: float = DEFAULT_RADIUS, dtype: torch.dtype = torch.float32
) -> Tensor:
    """The frontal camera ``radius`` units in front of the head, looking at the world origin."""
    c2w = torch.eye(4, dtype=dtype)
    c2w[2, 3] = -radius
    return c2w.expand(*batch_shape, 4, 4).clone()


def intrinsics_to_K(intrinsics: Tensor, width: int, height: int) -> Tensor:
    """Pixel-space 3x3 intrinsic matrices (..., 3, 3) from normalised intrinsics (..., 4)."""
    fx, fy, cx, cy = intrinsics.unbind(-1)
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    rows = [
        torch.stack([fx * width, zero, cx * width], -1),
        torch.stack([zero, fy * height, cy * height], -1),
        torch.stack([zero, zero, one], -1),
    ]
    return torch.stack(rows, -2)


def K_to_intrinsics(K: Tensor, width: int, height: int) -> Tensor:
    """Normalised intrinsics (..., 4) from pixel-space matrices (..., 3, 3)."""
    return torch.stack(
        [K[..., 0, 0] / width, K[..., 1, 1] / height, K[..., 0, 2] / width, K[..., 1, 2] / height], -1
    )


def pixel_rays(intrinsics: Tensor, height: int, width: int) -> Tensor:
    """View-space ray directions through every pixel centre, scaled to z = 1: (..., H, W, 3).

    Scaling to z = 1 (not unit length) makes ``ray * d`` a point at *z-depth* d, the same depth the
    renderers report, so predicted and rendered depth share one meaning.
    """
    dtype, device = intrinsics.dtype, intrinsics.device
    # Pixel (u, v) covers [u, u+1) x [v, v+1): its centre is at +0.5, as in gsplat.
    v, u = torch.meshgrid(
        (torch.arange(height, dtype=dtype, device=device) + 0.5) / height,
        (torch.arange(width, dtype=dtype, device=device) + 0.5) / width,
        indexing="ij",
    )
    fx, fy, cx, cy = (t[..., None, None] for t in intrinsics.unbind(-1))
    x = (u - cx) / fx
    y = (v - cy) / fy
    return torch.stack([x, y, torch.ones_like(x)], -1)


def pixel_widths(depth: Tensor, intrinsics: Tensor) -> Tensor:
    """World units one pixel spans at each z-depth of maps (B, 1, S, S) seen by normalised ``intrinsics`` (B, 4): d / fx_pixels."""
    return depth / (intrinsics[:, 0, None, None, None] * depth.shape[-1])


def project_points(viewmats: Tensor, points: Tensor, intrinsics: Tensor) -> Tensor:
    """Points (B, K, 3) seen by cameras ``viewmats`` (B, 4, 4) with normalised intrinsics (B, 4): their
    image positions (B, K, 2) as shares of the width and height, the inverse of :func:`pixel_rays`."""
    seen = transform_points(viewmats, points)
    z = seen[..., 2].clamp_min(1e-6)
    fx, fy, cx, cy = (t[:, None] for t in intrinsics.unbind(-1))
    return torch.stack([fx * seen[..., 0] / z + cx, fy * seen[..., 1] / z + cy], -1)


def invert_rigid(T: Tensor) -> Tensor:
    """Inverse of rigid transforms (..., 4, 4) using R^T, exact where a general inverse drifts."""
    R, t = T[..., :3, :3], T[..., :3, 3:]
    Rt = R.transpose(-1, -2)
    top = torch.cat([Rt, -Rt @ t], -1)
    bottom = torch.zeros_like(T[..., 3:, :])
    bottom[..., 3] = 1
    return torch.cat([top, bottom], -2)


def world_to_view(c2w: Tensor) -> Tensor:
    """The renderer's ``viewmat`` (world-to-camera) for camera-to-world matrices."""
    return invert_rigid(c2w)


def transform_points(T: Tensor, points: Tensor) -> Tensor:
    """Apply transforms (..., 4, 4) to points (..., N, 3)."""
    return points @ T[..., :3, :3].transpose(-1, -2) + T[..., None, :3, 3]


def relative_pose(c2w_source: Tensor, c2w_target: Tensor) -> Tensor:
    """The transform taking points in the source camera's view space into the target camera's.

    Splats are predicted in the source view space, so this is the ``viewmat`` that renders them
    from the target camera.
    """
    return invert_rigid(c2w_target) @ c2w_source


def look_at(eye: Tensor, target: Tensor, up: Tensor | None = None) -> Tensor:
    """OpenCV camera-to-world matrices at ``eye`` (..., 3) looking at ``target`` (..., 3)."""
    if up is None:
        up = torch.tensor(WORLD_UP, dtype=eye.dtype, device=eye.device).expand_as(eye)
    forward = torch.nn.functional.normalize(target - eye, dim=-1)
    right = torch.nn.functional.normalize(torch.cross(forward, up, dim=-1), dim=-1)
    down = torch.cross(forward, right, dim=-1)
    R = torch.stack([right, down, forward], -1)
    top = torch.cat([R, eye[..., None]], -1)
    bottom = torch.zeros_like(top[..., :1, :])
    bottom[..., 3] = 1
    return torch.cat([top, bottom], -2)


def axis_angle_to_matrix(axis: Tensor, angle: Tensor) -> Tensor:
    """Rotation matrices (..., 3, 3) about unit ``axis`` (..., 3) by ``angle`` radians (...) (Rodrigues)."""
    axis = torch.nn.functional.normalize(axis, dim=-1)
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack(
        [torch.stack([zero, -z, y], -1), torch.stack([z, zero, -x], -1), torch.stack([-y, x, zero], -1)], -2
    )
    s, c = torch.sin(angle)[..., None, None], torch.cos(angle)[..., None, None]
    eye = torch.eye(3, dtype=axis.dtype, device=axis.device).expand_as(skew)
    return eye + s * skew + (1 - c) * (skew @ skew)


def orbit_around(c2w: Tensor, yaw: Tensor, pitch: Tensor, pivot: Tensor | None = None) -> Tensor:
    """Move cameras on a sphere around ``pivot`` (default: the head at the world origin).

    Angles are radians relative to each camera's own axes, so they mean the same for any source
    view: positive yaw moves the camera to its right, positive pitch moves it up; it keeps looking
    at the pivot. ``c2w`` (..., 4, 4) broadcasts against ``yaw``/``pitch`` (...).
    """
    yaw, pitch = torch.broadcast_tensors(torch.as_tensor(yaw), torch.as_tensor(pitch))
    yaw = yaw.to(c2w)
    pitch = pitch.to(c2w)
    shape = torch.broadcast_shapes(c2w.shape[:-2], yaw.shape)
    c2w = c2w.expand(*shape, 4, 4)
    if pivot is None:
        pivot = torch.zeros(3, dtype=c2w.dtype, device=c2w.device)
    # Rotating about the camera's up axis (-y) moves it right; about its left axis (-x) moves it up.
    R_yaw = axis_angle_to_matrix(-c2w[..., :3, 1], yaw.expand(shape))
    R_pitch = axis_angle_to_matrix(-c2w[..., :3, 0], pitch.expand(shape))
    R = R_yaw @ R_pitch
    out = c2w.clone()
    out[..., :3, :3] = R @ c2w[..., :3, :3]
    out[..., :3, 3] = (R @ (c2w[..., :3, 3] - pivot)[..., None])[..., 0] + pivot
    return out


def trajectory(
    kind: str,
    c2w_source: Tensor,
    num_frames: int,
    fps: float = 25.0,
    period_s: float = 4.0,
    max_yaw_deg: float | None = None,
    max_pitch_deg: float | None = None,
) -> Tensor:
    """Camera paths for rendering a talking head: (..., num_frames, 4, 4) from ``c2w_source`` (..., 4, 4).

    Every path starts at the source view and loops with ``period_s``:

    * ``static``: the source camera throughout;
    * ``orbit``: a yaw sweep, ``max_yaw`` (30 deg) to each side;
    * ``bullet``: a figure-eight around the source view reaching yaw +-45 deg and pitch +-12.5 deg,
      the extreme poses the paper's score distillation uses;
    * ``nod``: a pitch oscillation of ``max_pitch`` (12.5 deg).
    """
    defaults = {"static": (0.0, 0.0), "orbit": (30.0, 0.0), "bullet": (45.0, 12.5), "nod": (0.0, 12.5)}
    if kind not in defaults:
        raise ValueError(f"unknown camera trajectory {kind!r}; choose one of {', '.join(TRAJECTORIES)}")
    yaw_amp, pitch_amp = defaults[kind]
    yaw_amp = math.radians(yaw_amp if max_yaw_deg is None else max_yaw_deg) if yaw_amp else 0.0
    pitch_amp = math.radians(pitch_amp if max_pitch_deg is None else max_pitch_deg) if pitch_amp else 0.0
    phase = 2 * math.pi * torch.arange(num_frames, dtype=c2w_source.dtype, device=c2w_source.device) / (fps * period_s)
    if kind == "bullet":
        yaw, pitch = yaw_amp * torch.sin(phase), pitch_amp * torch.sin(2 * phase)
    else:
        yaw, pitch = yaw_amp * torch.sin(phase), pitch_amp * torch.sin(phase)
    return orbit_around(c2w_source[..., None, :, :], yaw, pitch)
