"""Training losses: photometric (MSE), LPIPS and an optional VGG-Face perceptual term.

Every loss takes channels-first RGB batches ``(B, 3, H, W)`` with values in [0, 1] (the renderer's
range) and returns a scalar averaged over the batch. The score-distillation loss lives in
:mod:`splat_portrait.prior`, beside the diffusion prior it needs.
"""

from splat_portrait.losses.perceptual import LPIPSLoss, VGGFaceLoss, lpips_backbone_path, lpips_network
from splat_portrait.losses.photometric import mse

__all__ = ["LPIPSLoss", "VGGFaceLoss", "lpips_backbone_path", "lpips_network", "mse"]
