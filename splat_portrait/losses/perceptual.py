"""Perceptual losses: LPIPS (VGG16 backbone) and a VGG-Face feature distance.

The paper's perceptual term mixes generic ImageNet features with face-recognition features. Both
networks need weights no package ships, and neither ever falls back to random weights (a random
backbone gives a loss that trains towards nothing while looking plausible):

* LPIPS uses the ``lpips`` package's v0.1 linear heads (shipped inside it) on torchvision's
  ImageNet backbone, read from torch hub's cache (``$TORCH_HOME/hub/checkpoints``). It is never
  downloaded from here.
* VGG-Face (Parkhi et al., "Deep Face Recognition", BMVC 2015) is supplied by the user as a
  PyTorch state dict; see :class:`VGGFaceLoss` for the key layout.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from splat_portrait.errors import SplatPortraitError

LpipsNet = Literal["alex", "vgg"]
_BACKBONE_NAMES = {"alex": "AlexNet", "vgg": "VGG16"}

# VGG-Face's trunk: convolutions per block and each block's width relative to the first (64).
VGGFACE_BLOCKS = (2, 2, 3, 3, 3)
VGGFACE_WIDTHS = (1, 2, 4, 8, 8)
# The classifier of the published model; accepted in a state dict and ignored (only conv features are used).
VGGFACE_CLASSIFIER = ("fc6", "fc7", "fc8")
# VGG-Face subtracts this per-channel RGB mean (0-255 scale) and does not divide by a deviation.
VGGFACE_MEAN_RGB = (129.186279296875, 104.76238250732422, 93.59396362304688)


def _backbone_url(net: LpipsNet) -> str:
    from torchvision.models import AlexNet_Weights, VGG16_Weights

    weights = {"alex": AlexNet_Weights.IMAGENET1K_V1, "vgg": VGG16_Weights.IMAGENET1K_V1}
    if net not in weights:
        raise ValueError(f"LPIPS backbone must be 'alex' or 'vgg', got {net!r}")
    return weights[net].url


def lpips_backbone_path(net: LpipsNet) -> Path:
    """Where torchvision looks for the ImageNet backbone ``lpips.LPIPS(net=net)`` loads (it may not exist)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(_backbone_url(net)).path).name


def lpips_network(net: LpipsNet = "vgg", alternative: str | None = None) -> nn.Module:
    """``lpips.LPIPS`` v0.1 on torchvision's pretrained backbone, frozen and in eval mode.

    The backbone file must already be in torch hub's cache; otherwise this raises
    :class:`SplatPortraitError` naming the file and the folder (and ``alternative``, what the caller
    can do instead, e.g. ``"pass --lpips-weight 0"``). Checking first is what keeps ``lpips`` from
    downloading it, and asking for the pretrained backbone is what keeps it from going random.
    """
    path = lpips_backbone_path(net)
    if not path.is_file():
        instead = f" or {alternative}" if alternative else ""
        raise SplatPortraitError(
            f"LPIPS needs torchvision's {_BACKBONE_NAMES[net]} weights ({path.name}), which are not in "
            f"{path.parent} and cannot be downloaded here: copy the file there (or set TORCH_HOME){instead}"
        )
    import lpips

    # The warnings are torchvision's, about the ``pretrained=`` keyword lpips still uses.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        try:
            model = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=False, verbose=False)
        except (RuntimeError, EOFError, pickle.UnpicklingError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise SplatPortraitError(
                f"LPIPS could not load {path} ({reason}); replace it with torchvision's file from {_backbone_url(net)}"
            ) from None
    return model.requires_grad_(False).eval()


class _FrozenLoss(nn.Module):
    """A loss around a fixed network: no trainable parameters, and ``.train()`` leaves the network in eval mode."""

    net: nn.Module

    def train(self, mode: bool = True) -> _FrozenLoss:
        super().train(mode)
        # LPIPS heads hold dropout layers; a loss must not turn them on when its owner trains.
        self.net.eval()
        return self


def _check_images(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape or pred.ndim != 4 or pred.shape[1] != 3:
        raise ValueError(f"expected two (B, 3, H, W) image batches, got {tuple(pred.shape)} and {tuple(target.shape)}")


class LPIPSLoss(_FrozenLoss):
    """``LPIPSLoss(net)(pred, target)``: mean LPIPS distance of (B, 3, H, W) batches in [0, 1]."""

    def __init__(self, net: LpipsNet = "vgg") -> None:
        super().__init__()
        self.net = lpips_network(net, alternative="pass --lpips-weight 0")

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        _check_images(pred, target)
        return self.net(pred, target, normalize=True).mean()


class VGGFace(nn.Module):
    """VGG-Face's convolutional trunk (the VGG16 layout); ``forward`` gives each block's last ReLU output.

    ``width`` is the first layer's channel count (64 in the published network); tests use less.
    """

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.blocks: list[list[str]] = []
        channels = 3
        for block, (convs, mult) in enumerate(zip(VGGFACE_BLOCKS, VGGFACE_WIDTHS), start=1):
            names = []
            for index in range(1, convs + 1):
                name = f"conv{block}_{index}"
                self.add_module(name, nn.Conv2d(channels, width * mult, 3, padding=1))
                channels = width * mult
                names.append(name)
            self.blocks.append(names)

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for block, names in enumerate(self.blocks):
            if block:
                x = F.max_pool2d(x, 2)
            for name in names:
                x = F.relu(getattr(self, name)(x))
            features.append(x)
        return features


def _read_state_dict(path: Path, layout: str) -> dict[str, Tensor]:
    if not path.is_file():
        raise SplatPortraitError(f"VGGFace weights {path} do not exist; pass --vggface a PyTorch state dict {layout}, or leave --vggface out")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch.load fails with many exception types on foreign bytes
        state = None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise SplatPortraitError(f"VGGFace weights {path} are not a PyTorch state dict; convert the published model to one {layout}")
    return state


def load_vggface(path: str | os.PathLike) -> VGGFace:
    """A frozen :class:`VGGFace` with the weights in ``path``; its width is read from ``conv1_1.weight``."""
    path = Path(path).expanduser()
    layout = "with keys conv1_1.weight ... conv5_3.bias (fc6-fc8 optional), as in a converted vgg_face_dag.pth"
    state = _read_state_dict(path, layout)
    first = state.get("conv1_1.weight")
    model = VGGFace(first.shape[0] if first is not None and first.ndim == 4 else 64)
    expected = model.state_dict()
    convs = {k: v for k, v in state.items() if k.split(".")[0] not in VGGFACE_CLASSIFIER}
    missing = [k for k in expected if k not in convs]
    unexpected = [k for k in convs if k not in expected]
    if missing or unexpected:
        example = (missing + unexpected)[0]
        raise SplatPortraitError(
            f"{path} is not a VGG-Face state dict ({len(missing)} missing and {len(unexpected)} unexpected keys, "
            f"e.g. {example}); it must be one {layout}"
        )
    for key, value in expected.items():
        if convs[key].shape != value.shape:
            raise SplatPortraitError(
                f"{path}: {key} has shape {tuple(convs[key].shape)} where a VGG-Face of width "
                f"{expected['conv1_1.weight'].shape[0]} has {tuple(value.shape)}; the file is not a VGG-Face state dict"
            )
    model.load_state_dict(convs)
    return model.requires_grad_(False).eval()


class VGGFaceLoss(_FrozenLoss):
    """``VGGFaceLoss(path)(pred, target)``: face-feature distance of (B, 3, H, W) batches in [0, 1].

    ``path`` is a ``torch.save``-d state dict of VGG-Face (2622 identities; the network is
    published for MatConvNet/Caffe, so it has to be converted, e.g. the widely used
    ``vgg_face_dag.pth``): keys ``conv{block}_{i}.weight``/``.bias`` for blocks 1-5 with 2, 2, 3,
    3, 3 convolutions of 64, 128, 256, 512, 512 channels (3x3 kernels); ``fc6``/``fc7``/``fc8``
    may be present and are ignored. Images are compared at their own resolution.

    The distance sums, over the five blocks, the mean over pixels of the squared difference of
    channel-normalised features (LPIPS' form without learned weights).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        self.net = load_vggface(path)
        self.register_buffer("mean", torch.tensor(VGGFACE_MEAN_RGB).view(1, 3, 1, 1) / 255.0, persistent=False)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        _check_images(pred, target)
        total = pred.new_zeros(())
        for a, b in zip(self.net((pred - self.mean) * 255.0), self.net((target - self.mean) * 255.0)):
            diff = F.normalize(a, dim=1, eps=1e-10) - F.normalize(b, dim=1, eps=1e-10)
            total = total + diff.square().sum(1).mean()
        return total
