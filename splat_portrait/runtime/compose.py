"""Turning rendered crops into output frames: paste-back into the full picture and colour-mapped depth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

# Share of the crop side over which a pasted crop fades into the original picture.
FEATHER = 0.08
# Depth colours from near to far: warm and bright in front, dark blue-violet behind (our own ramp).
_DEPTH_RAMP = np.array([(255, 244, 176), (246, 164, 64), (206, 72, 80), (112, 42, 132), (28, 24, 72)], np.float32)


def to_uint8(images: Tensor) -> np.ndarray:
    """(B, H, W, C) floats in [0, 1] -> uint8 numpy."""
    return (images.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


@dataclass(frozen=True)
class PasteBack:
    """Composite generated crops back into the picture they were cut from, with a soft-edged mask.

    The crop box is rounded to whole pixels (at most half a pixel off) and clipped to the picture
    where it reached past the border (``crop_square`` filled those parts by reflection).
    """

    image: np.ndarray  # (H, W, 3) uint8, the original picture
    box: np.ndarray  # (cx, cy, side) in picture pixels

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the frames this makes."""
        return self.image.shape[1], self.image.shape[0]

    def _placement(self) -> tuple[int, int, int]:
        cx, cy, side = (float(v) for v in self.box)
        side_px = max(1, round(side))
        return round(cx - side_px / 2), round(cy - side_px / 2), side_px

    def _mask(self, side_px: int) -> np.ndarray:
        ramp = max(1.0, FEATHER * side_px)
        centres = np.arange(side_px) + 0.5
        edge = np.minimum(centres, side_px - centres) / ramp
        fade = np.clip(edge, 0, 1)
        fade = fade * fade * (3 - 2 * fade)  # smoothstep: no visible kink where the fade ends
        return np.minimum(fade[:, None], fade[None, :])[..., None].astype(np.float32)

    def __call__(self, crop: np.ndarray) -> np.ndarray:
        """One (S, S, 3) uint8 generated crop -> the (H, W, 3) uint8 picture with it pasted in."""
        from PIL import Image

        left, top, side_px = self._placement()
        h, w = self.image.shape[:2]
        scaled = np.asarray(Image.fromarray(crop).resize((side_px, side_px), Image.BILINEAR), np.float32)
        x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + side_px, w), min(top + side_px, h)
        out = self.image.copy()
        if x0 >= x1 or y0 >= y1:
            return out
        region = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
        mask = self._mask(side_px)[region]
        under = out[y0:y1, x0:x1].astype(np.float32)
        out[y0:y1, x0:x1] = (mask * scaled[region] + (1 - mask) * under + 0.5).astype(np.uint8)
        return out


@dataclass(frozen=True)
class DepthColors:
    """Colour-map rendered depth with one fixed near/far range, so colours mean the same in every frame."""

    near: float
    far: float

    @classmethod
    def fit(cls, depth: Tensor, alpha: Tensor) -> DepthColors:
        """The range of the head's depth (where it is mostly opaque) in a rendered frame, padded by 5%."""
        values = depth[alpha > 0.5]
        if values.numel() < 2:
            return cls(0.0, 1.0)
        lo, hi = torch.quantile(values.float(), torch.tensor([0.02, 0.98], device=values.device)).tolist()
        pad = 0.05 * max(hi - lo, 1e-3)
        return cls(lo - pad, hi + pad)

    def __call__(self, depth: Tensor, alpha: Tensor) -> np.ndarray:
        """Depth (B, H, W, 1) and alpha (B, H, W, 1) -> (B, H, W, 3) uint8; no head is black."""
        t = ((depth - self.near) / (self.far - self.near)).clamp(0, 1).cpu().numpy()[..., 0]
        position = t * (len(_DEPTH_RAMP) - 1)
        low = np.minimum(position.astype(np.int64), len(_DEPTH_RAMP) - 2)
        frac = (position - low)[..., None]
        colors = _DEPTH_RAMP[low] * (1 - frac) + _DEPTH_RAMP[low + 1] * frac
        return (colors * alpha.clamp(0, 1).cpu().numpy() + 0.5).astype(np.uint8)
