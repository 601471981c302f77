"""LPIPS (Zhang et al. 2018) through the ``lpips`` package, version 0.1 linear heads.

The heads ship inside ``lpips``; the AlexNet or VGG16 backbone is torchvision's ImageNet checkpoint,
read from torch hub's cache. Without it the metric is unavailable: a randomly initialised backbone
would give numbers that look plausible and mean nothing.
"""

from __future__ import annotations

import pickle
import warnings
from typing import Literal

import torch
from torch import Tensor

from splat_portrait.metrics.availability import MetricUnavailable, hub_checkpoint, require_module
from splat_portrait.metrics.image import image_pair

LpipsNet = Literal["alex", "vgg"]


def backbone_url(net: LpipsNet) -> str:
    """Where torchvision publishes the ImageNet backbone that ``lpips.LPIPS(net=net)`` loads."""
    from torchvision.models import AlexNet_Weights, VGG16_Weights

    weights = {"alex": AlexNet_Weights.IMAGENET1K_V1, "vgg": VGG16_Weights.IMAGENET1K_V1}
    if net not in weights:
        raise ValueError(f"LPIPS backbone must be 'alex' or 'vgg', got {net!r}")
    return weights[net].url


class Lpips:
    """``Lpips(net)(pred, target)`` -> per-image LPIPS distance (B,) of [0, 1] RGB batches (lower is closer)."""

    def __init__(self, net: LpipsNet = "alex", device: str | torch.device = "cpu", allow_download: bool = False):
        lpips = require_module("lpips", "lpips", "LPIPS")
        checkpoint = hub_checkpoint(backbone_url(net), f"LPIPS ({net})", allow_download)
        # The file is in torchvision's cache now, so lpips' pretrained backbone loads it from there
        # without touching the network; the warnings are torchvision's about lpips' old keyword.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
            try:
                model = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=False, verbose=False)
            except (RuntimeError, EOFError, pickle.UnpicklingError) as err:
                raise MetricUnavailable(
                    f"LPIPS ({net}) could not load {checkpoint} ({err}); replace it with {backbone_url(net)}"
                ) from err
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.name = f"lpips-v0.1-{net}"

    @torch.no_grad()
    def __call__(self, pred: Tensor, target: Tensor) -> Tensor:
        pred, target = image_pair(pred, target)
        distance = self.model(pred.to(self.device), target.to(self.device), normalize=True)
        return distance.flatten().to(pred.device)
