"""Splats that cover their surface: each pixel's Gaussian widened to the patch its pixel spans on the predicted surface.

Why: the generator predicts one Gaussian per pixel, and a free one learns to be about a third of a
pixel wide and stretched along its ray, which is all the source view can see. Turned 30 degrees,
neighbouring pixels' centres lie several pixels apart on a slanted cheek and the thin splats
between them leave stripes and holes. Here the splat centres themselves define a surface: the
steps ``t_x``, ``t_y`` to the next pixel's centre along the row and the column span the pixel's
patch. :func:`cover_surface` makes each splat's learned rotation relative to that patch's frame
(tangent ``u`` along ``t_x``, ``v`` in the patch orthogonal to it, normal ``n``) and widens its
two tangent axes to at least ``c`` times the steps, ``sqrt(s^2 + (c |t|)^2)``; the normal axis
stays learned. Trained through it, the network learns colours and depths for splats that cover
their surface from any side, instead of having holes patched at render time.

A step is the shorter of the forward and backward differences, so at a silhouette (a depth jump on
one side) the continuous side's step is used; steps are capped at ``max_px`` pixels so a lone
splat across a jump does not become a sheet.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from splat_portrait.rotations import quat_multiply, quat_rotate, shortest_arc, turn_about


# Explicit permutations: ONNX export writes movedim's negative axes into Transpose, which is invalid.
def _channels_last(maps: Tensor) -> Tensor:
    return maps.permute(0, 2, 3, 1)


def _channels_first(values: Tensor) -> Tensor:
    return values.permute(0, 3, 1, 2)


def _shorter_step(points: Tensor, dim: int) -> Tensor:
    length = points.shape[dim]
    diff = points.narrow(dim, 1, length - 1) - points.narrow(dim, 0, length - 1)
    forward = torch.cat([diff, diff.narrow(dim, length - 2, 1)], dim)
    backward = torch.cat([diff.narrow(dim, 0, 1), diff], dim)
    take_forward = (forward * forward).sum(1, keepdim=True) <= (backward * backward).sum(1, keepdim=True)
    return torch.where(take_forward, forward, backward)


def surface_steps(points: Tensor) -> tuple[Tensor, Tensor]:
    """Splat centres on the pixel grid (B, 3, H, W) -> steps to the neighbouring pixel along x and along y, each (B, 3, H, W)."""
    if points.shape[-1] < 2 or points.shape[-2] < 2:
        raise ValueError(f"surface steps need at least 2x2 pixels, got {tuple(points.shape[-2:])}")
    return _shorter_step(points, 3), _shorter_step(points, 2)


def surface_frame(step_x: Tensor, step_y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Unit tangent ``u``, tangent ``v`` and normal ``n`` (B, 3, H, W) of the patches spanned by the steps.

    The normal is oriented towards +z (away from the source camera) so that the frame's rotation
    from the view axes stays under 90 degrees for any surface the camera sees.
    """
    u = F.normalize(step_x, dim=1)
    n = F.normalize(torch.cross(step_x, step_y, dim=1), dim=1)
    n = torch.where(n[:, 2:3] < 0, -n, n)
    v = torch.cross(n, u, dim=1)
    return u, v, n


def frame_quaternion(u: Tensor, n: Tensor) -> Tensor:
    """The wxyz quaternion (B, 4, H, W) turning the view axes x, z onto the frame's ``u``, ``n`` (B, 3, H, W)."""
    u, n = _channels_last(u), _channels_last(n)
    axis_x, _, axis_z = (t.expand_as(n) for t in torch.eye(3, dtype=n.dtype, device=n.device).unbind(0))
    tilt = shortest_arc(axis_z, n)
    # After the tilt, x lies in the patch; a turn about n brings it onto u. That turn can be any
    # angle (a row step may point back where depth falls away), so it is not a shortest arc, which
    # is ill-conditioned near a half turn; the tilt stays under 90 degrees by the normal's orientation.
    turn = turn_about(n, quat_rotate(tilt, axis_x), u)
    return _channels_first(quat_multiply(turn, tilt))


def cover_surface(
    points: Tensor, rotation: Tensor, scale: Tensor, pixel_size: Tensor, c: float, max_px: float
) -> tuple[Tensor, Tensor]:
    """Rotations (B, 4, H, W) and scales (B, 3, H, W) of splats at ``points`` made to cover their patches.

    ``rotation`` and ``scale`` are the learned ones, read in each patch's frame; ``pixel_size``
    (B, 1, H, W) is one pixel's width in world units at each splat's depth.
    """
    step_x, step_y = surface_steps(points)
    u, v, n = surface_frame(step_x, step_y)
    limit = max_px * pixel_size
    extent_u = torch.minimum(step_x.norm(dim=1, keepdim=True), limit)
    extent_v = torch.minimum((step_y * v).sum(1, keepdim=True).abs(), limit)
    tangent = torch.cat([extent_u, extent_v], 1) * c
    covered = torch.cat([torch.sqrt(scale[:, :2] ** 2 + tangent**2), scale[:, 2:]], 1)
    frame = frame_quaternion(u, n)
    turned = _channels_first(quat_multiply(_channels_last(frame), _channels_last(rotation)))
    return turned, covered
