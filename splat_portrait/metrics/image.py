"""Per-image fidelity metrics on RGB images in [0, 1]: PSNR and SSIM.

Images are batched float tensors, either channels-first ``(B, 3, H, W)`` (dataset frames) or
channels-last ``(B, H, W, 3)`` (what the renderer returns); the layout is read from which axis has
size 3, and a shape where both could be channels is refused. Results are per image, shape ``(B,)``:
the caller averages them over a clip or a test set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

DATA_RANGE = 1.0
# Wang et al. 2004: an 11x11 Gaussian window of sigma 1.5 and these stabilising constants.
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
_RANGE_SLACK = 1e-3


def channels_first(images: Tensor) -> Tensor:
    """``(B, 3, H, W)`` view of a batch given as ``(B, 3, H, W)`` or ``(B, H, W, 3)``."""
    if images.ndim != 4:
        raise ValueError(f"expected a batch of RGB images (B,3,H,W) or (B,H,W,3), got shape {tuple(images.shape)}")
    first, last = images.shape[1] == 3, images.shape[-1] == 3
    if first and last:
        raise ValueError(f"cannot tell the channel axis of shape {tuple(images.shape)}: both axis 1 and -1 have size 3")
    if not (first or last):
        raise ValueError(f"expected 3 colour channels on axis 1 or -1, got shape {tuple(images.shape)}")
    return images if first else images.permute(0, 3, 1, 2)


def image_pair(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Check two batches match and lie in [0, 1]; return both channels-first."""
    if pred.shape != target.shape:
        raise ValueError(f"images differ in shape: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if not (pred.is_floating_point() and target.is_floating_point()):
        raise ValueError("images must be float tensors in [0, 1] (convert uint8 with x / 255)")
    for images in (pred, target):
        low, high = images.aminmax()
        if low < -_RANGE_SLACK or high > DATA_RANGE + _RANGE_SLACK:
            raise ValueError(f"images must lie in [0, 1], got values in [{low.item():.3g}, {high.item():.3g}]")
    return channels_first(pred), channels_first(target)


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB per image, (B,); identical images give ``inf``."""
    pred, target = image_pair(pred, target)
    mse = (pred - target).square().flatten(1).mean(dim=1)
    return 10.0 * torch.log10(DATA_RANGE**2 / mse)


def gaussian_window(sigma: float = SSIM_SIGMA, radius: int = SSIM_RADIUS, dtype: torch.dtype = torch.float32) -> Tensor:
    """Normalised 1-D Gaussian taps, ``2 * radius + 1`` long (the 2-D window is their outer product)."""
    x = torch.arange(-radius, radius + 1, dtype=dtype)
    taps = torch.exp(-0.5 * (x / sigma) ** 2)
    return taps / taps.sum()


def _blur(images: Tensor, taps: Tensor) -> Tensor:
    """Separable 'valid' Gaussian filtering of each channel: (B, C, H, W) -> (B, C, H - 10, W - 10)."""
    channels = images.shape[1]
    rows = taps.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    cols = taps.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    return F.conv2d(F.conv2d(images, rows, groups=channels), cols, groups=channels)


def ssim(pred: Tensor, target: Tensor) -> Tensor:
    """Structural similarity per image, (B,): 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03, range 1.

    Each channel's SSIM map is averaged over the positions where the window fits inside the image,
    then the channels are averaged: the same number as scikit-image's ``structural_similarity``
    with ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1``.
    """
    pred, target = image_pair(pred, target)
    if min(pred.shape[-2:]) < 2 * SSIM_RADIUS + 1:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {tuple(pred.shape[-2:])}")
    # float64 keeps the variance terms (E[x^2] - E[x]^2) free of cancellation error.
    dtype = torch.float64 if pred.device.type == "cpu" or pred.dtype == torch.float64 else torch.float32
    x, y = pred.to(dtype), target.to(dtype)
    taps = gaussian_window(dtype=dtype).to(x.device)
    mu_x, mu_y = _blur(x, taps), _blur(y, taps)
    var_x = _blur(x * x, taps) - mu_x.square()
    var_y = _blur(y * y, taps) - mu_y.square()
    cov = _blur(x * y, taps) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(dim=1).to(pred.dtype)
