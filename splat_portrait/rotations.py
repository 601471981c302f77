"""Unit quaternions (wxyz, the 3DGS and gsplat order) as plain tensor functions over the last dimension.

Branch-free on purpose: the static generator composes rotations inside its ONNX graph, so every
function here is made of element-wise arithmetic (and element-wise selection) that traces to any opset.
"""

from __future__ import annotations

import torch
from torch import Tensor


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product ``a * b`` of wxyz quaternions (..., 4): rotation ``b`` first, then ``a``."""
    w1, x1, y1, z1 = a.unbind(-1)
    w2, x2, y2, z2 = b.unbind(-1)
    return torch.stack(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ],
        -1,
    )


def quat_rotate(q: Tensor, v: Tensor) -> Tensor:
    """Vectors (..., 3) turned by unit quaternions (..., 4)."""
    w, u = q[..., :1], q[..., 1:]
    t = 2 * torch.cross(u, v, dim=-1)
    return v + w * t + torch.cross(u, t, dim=-1)


def shortest_arc(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """The unit quaternion (..., 4) of the smallest rotation taking unit vectors ``a`` to ``b`` (..., 3).

    Undefined only for opposite vectors (then it returns a near-zero rotation axis, normalised by
    ``eps``); callers orient their vectors so that never happens.
    """
    q = torch.cat([1 + (a * b).sum(-1, keepdim=True), torch.cross(a, b, dim=-1)], -1)
    return q / torch.sqrt((q * q).sum(-1, keepdim=True) + eps)


def turn_about(axis: Tensor, a: Tensor, b: Tensor, eps: float = 1e-12) -> Tensor:
    """The unit quaternion (..., 4) turning unit vector ``a`` onto unit vector ``b`` about the unit
    ``axis`` both are orthogonal to (..., 3), for any angle up to a half turn.

    The shortest arc's ``(1 + cos, sin * axis)`` loses its precision near a half turn, where both
    parts vanish: a float32 rounding of the inputs then moves the result by ~1e-3. Whenever
    ``cos < 0`` this takes the equal ``(sin, (1 - cos) * axis)`` (the same rotation, up to sign),
    whose norm is at least sqrt(2) there, so the result is as precise as its inputs at every angle.
    """
    cos = (a * b).sum(-1, keepdim=True)
    sin = (axis * torch.cross(a, b, dim=-1)).sum(-1, keepdim=True)
    near = cos >= 0
    q = torch.cat([torch.where(near, 1 + cos, sin), torch.where(near, sin, 1 - cos) * axis], -1)
    return q / torch.sqrt((q * q).sum(-1, keepdim=True) + eps)
