"""Priors on the predicted geometry, for the views no training frame shows.

Real clips turn the head by under about 10 degrees, so nothing in the photometric loss says what
the surface between neighbouring pixels does in depth; a cheek may come out as a staircase that
only shows its steps from the side. :func:`depth_smoothness` asks the depth map to be locally
planar (second differences, so slanted planes cost nothing) except where the image has an edge,
where real depth discontinuities live (hair against background, the jaw line).
"""

from __future__ import annotations

import torch
from torch import Tensor

from splat_portrait.camera import pixel_widths


def _second_differences(maps: Tensor, dim: int) -> Tensor:
    n = maps.shape[dim]
    return maps.narrow(dim, 2, n - 2) - 2 * maps.narrow(dim, 1, n - 2) + maps.narrow(dim, 0, n - 2)


def _central_differences(maps: Tensor, dim: int) -> Tensor:
    n = maps.shape[dim]
    return (maps.narrow(dim, 2, n - 2) - maps.narrow(dim, 0, n - 2)) / 2


def depth_smoothness(depth: Tensor, image: Tensor, intrinsics: Tensor, edge_scale: float = 10.0) -> Tensor:
    """Edge-aware curvature of depth maps (B, 1, H, W) seen by normalised ``intrinsics`` (B, 4).

    The mean over interior pixels and both image axes of ``|d2 depth| / pixel width`` (how many
    pixel widths the surface bends per pixel, so the value means the same at any resolution),
    weighted by ``exp(-edge_scale * |d image|)`` with ``image`` (B, 3, H, W) in [-1, 1].
    """
    if depth.shape[-2] < 3 or depth.shape[-1] < 3:
        raise ValueError(f"depth smoothness needs maps of at least 3x3 pixels, got {tuple(depth.shape[-2:])}")
    pixel = pixel_widths(depth, intrinsics)
    grey = (image.mean(1, keepdim=True) + 1) / 2
    terms = []
    for dim, other in ((3, 2), (2, 3)):
        bend = _second_differences(depth, dim).abs() / pixel.narrow(dim, 1, depth.shape[dim] - 2)
        weight = torch.exp(-edge_scale * _central_differences(grey, dim).abs())
        rows = depth.shape[other]
        terms.append((bend * weight).narrow(other, 1, rows - 2).mean())
    return sum(terms) / 2
