"""Pixel losses between renders and frames."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def mse(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over every element: the L2 terms of the paper's eqs. 1 and 2."""
    if pred.shape != target.shape:
        raise ValueError(f"mse needs equal shapes, got {tuple(pred.shape)} and {tuple(target.shape)}")
    return F.mse_loss(pred, target)
