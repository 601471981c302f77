"""EWA projection of 3D Gaussians to screen-space ellipses, with gsplat 1.5.3's rules.

Every rule here copies what gsplat's fused CUDA projection does in its classic (not antialiased)
mode, so our torch rasterizer and gsplat keep and drop the same splats and draw the same ellipses:

* a splat is dropped when its camera-space z is outside ``[near_plane, far_plane]``;
* the Jacobian of the perspective map is evaluated at the mean with x/z and y/z clamped to 1.3x the
  field of view, which keeps splats far outside the frustum from blowing up into huge ellipses;
* 0.3 px^2 is added to the diagonal of the 2D covariance (a pixel-sized low-pass filter that also
  keeps the covariance invertible) and no opacity compensation is applied;
* the screen extent is opacity-aware: a splat can only reach alpha >= 1/255 where its Mahalanobis
  distance is below ``sqrt(2 ln(255 opacity))`` (capped at 3.33), so that many standard deviations
  bound it; splats with opacity < 1/255 never show and are dropped, as are ones whose integer box
  lies completely off screen.

Everything is differentiable through torch autograd; the integer radii and the float extents are
bookkeeping for the rasterizer and carry no gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

EPS2D = 0.3
ALPHA_THRESHOLD = 1.0 / 255.0
MAX_EXTEND = 3.33
# x/z and y/z beyond the image edge by this fraction of the half field of view are clamped.
FOV_CLAMP_MARGIN = 0.3


@dataclass
class Projected:
    """Screen-space splats for a batch of B images of N splats each."""

    means2d: Tensor  # (B, N, 2) pixel coordinates of the centres (pixel centres are at +0.5)
    conics: Tensor  # (B, N, 3) inverse 2D covariance (a, b, c) = [[a, b], [b, c]]
    depths: Tensor  # (B, N) camera-space z of the centres
    radii: Tensor  # (B, N, 2) int32 screen half-extents; 0 where the splat is dropped
    extents: Tensor  # (B, N, 2) float half-extents of the alpha >= 1/255 ellipse's bounding box


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices (..., 3, 3) from wxyz quaternions (..., 4), normalised first like gsplat."""
    return torch.stack([torch.stack(row, -1) for row in _rotation_entries(quats)], -2)


def _rotation_entries(quats: Tensor) -> list[list[Tensor]]:
    """The entries R[i][j], each (...), of :func:`quat_to_rotmat`."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    return [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]


def project(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = EPS2D,
) -> Projected:
    """Project B clouds (B, N, ...) through one pinhole camera each (viewmats (B, 4, 4), Ks (B, 3, 3))."""
    # Everything is written out per component on contiguous (B, N) tensors: on CPU, batched 3x3
    # matmuls over N splats and broadcasts over size-3 dimensions (and their backward reductions)
    # are many times slower than a few dozen elementwise ops.
    V = viewmats[:, :3, :3, None]  # V[:, i, j]: (B, 1), broadcasting over splats
    mx, my, mz = means.unbind(-1)
    x, y, z = (V[:, i, 0] * mx + V[:, i, 1] * my + V[:, i, 2] * mz + viewmats[:, i, 3, None] for i in range(3))
    depths = z

    with torch.no_grad():
        in_depth = (z >= near_plane) & (z <= far_plane)
    # Culled splats still flow through the maths below; safe stand-ins keep their (unused) values
    # and gradients finite instead of letting inf * 0 turn into NaN in the backward pass.
    z = torch.where(in_depth, z, torch.ones_like(z))

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    rz = 1.0 / z
    tx = z * torch.minimum((width - cx) / fx + FOV_CLAMP_MARGIN * tan_fovx,
                           torch.maximum(-(cx / fx + FOV_CLAMP_MARGIN * tan_fovx), x * rz))  # fmt: skip
    ty = z * torch.minimum((height - cy) / fy + FOV_CLAMP_MARGIN * tan_fovy,
                           torch.maximum(-(cy / fy + FOV_CLAMP_MARGIN * tan_fovy), y * rz))  # fmt: skip

    # The Jacobian J (2x3) times the camera rotation V, then times the splat's rotation and scale,
    # gives the 2D "half covariance" L with cov2d = L L^T: the 3x3 covariances are never formed.
    a0, a2 = fx * rz, -fx * tx * rz * rz  # J row 0 = (a0, 0, a2), row 1 = (0, b1, b2)
    b1, b2 = fy * rz, -fy * ty * rz * rz
    JV0 = [a0 * V[:, 0, j] + a2 * V[:, 2, j] for j in range(3)]
    JV1 = [b1 * V[:, 1, j] + b2 * V[:, 2, j] for j in range(3)]
    Rq = _rotation_entries(quats)
    sx, sy, sz = scales.unbind(-1)
    L0 = [(JV0[0] * Rq[0][j] + JV0[1] * Rq[1][j] + JV0[2] * Rq[2][j]) * s for j, s in enumerate((sx, sy, sz))]
    L1 = [(JV1[0] * Rq[0][j] + JV1[1] * Rq[1][j] + JV1[2] * Rq[2][j]) * s for j, s in enumerate((sx, sy, sz))]
    c00 = L0[0] * L0[0] + L0[1] * L0[1] + L0[2] * L0[2] + eps2d
    c11 = L1[0] * L1[0] + L1[1] * L1[1] + L1[2] * L1[2] + eps2d
    c01 = L0[0] * L1[0] + L0[1] * L1[1] + L0[2] * L1[2]
    det = c00 * c11 - c01 * c01

    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], -1)

    with torch.no_grad():
        keep = in_depth & (det > 0) & (opacities >= ALPHA_THRESHOLD)
        extend = torch.sqrt(2.0 * torch.log(opacities.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
        extend = extend.clamp_max(MAX_EXTEND)
        extents = torch.stack([extend * c00.clamp_min(0).sqrt(), extend * c11.clamp_min(0).sqrt()], -1)
        radii_f = torch.ceil(extents)
        u, v = means2d.unbind(-1)
        rx, ry = radii_f.unbind(-1)
        keep &= (rx > 0) & (ry > 0)  # gsplat bins a splat into no tile unless both are positive
        keep &= (u + rx > 0) & (u - rx < width) & (v + ry > 0) & (v - ry < height)
        keep &= torch.isfinite(extents).all(-1) & torch.isfinite(means2d).all(-1)
        radii = torch.where(keep[..., None], radii_f, torch.zeros_like(radii_f)).to(torch.int32)
        extents = torch.where(keep[..., None], extents, torch.zeros_like(extents))

    det = torch.where(keep, det, torch.ones_like(det))
    conics = torch.stack([c11 / det, -c01 / det, c00 / det], -1)
    return Projected(means2d=means2d, conics=conics, depths=depths, radii=radii, extents=extents)
