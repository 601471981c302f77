"""The bytes the browser viewer reads: the static head once, then one small message per frame.

gsplat.js draws each splat with a screen-space low-pass of 0.075 px² (it adds 0.3 to four times
the 2D covariance) where our renderer, like gsplat's CUDA rasteriser, adds 0.3 px². The model's
splats are a fraction of a pixel across and made for the larger one, so drawn as they are they
leave gaps between rows of splats. :func:`encode_head` widens every splat by the missing 0.225 px²,
turned into world units at its distance from the source camera (``VIEWER_DILATION``); near the
source view that restores our renderer's footprint.

Static head (:func:`encode_head`): the visible splats (opacity >= 1/255, finite) in world
coordinates as gsplat.js's ``SplatData`` arrays, concatenated little-endian: positions float32
(N, 3), rotations float32 (N, 4) wxyz, scales float32 (N, 3) standard deviations, colours uint8
(N, 4) RGBA with the opacity as alpha. :func:`head_meta` describes it (count, fps, the source
camera) as JSON.

Frame (:func:`encode_frame`): uint32 frame index, float32 step, then the zlib-deflated int16
(3, N) world-space offsets of those splats in units of the step, x of every
splat first, then y, then z. The step (``OFFSET_STEP``, 2.5e-4 of the world's units: 1/20 of a source pixel at 128², 1/5
at 512²) is far below what a viewer can see, and offsets as small integers in planes compress
to a quarter of float16's size (about 20 kB a frame for the bundled model at 128²).
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from splat_portrait.render.projection import ALPHA_THRESHOLD
from splat_portrait.splats import Splats

OFFSET_STEP = 2.5e-4
# px² of low-pass gsplat.js leaves out (see above).
VIEWER_DILATION = 0.3 - 0.3 / 4
FRAME_HEADER = struct.Struct("<If")


@dataclass(frozen=True)
class WebHead:
    """A static head ready for the viewer: its bytes, and which of the model's splats they are."""

    keep: np.ndarray  # (N_model,) bool: the splats sent
    data: bytes

    @property
    def count(self) -> int:
        return int(self.keep.sum())


def encode_head(splats: Splats, camera_position: Tensor, focal_px: float) -> WebHead:
    """One cloud of world-space splats (N, ...) as the viewer's static head.

    ``camera_position`` (3,) and ``focal_px`` (pixels at the viewer's drawing size) are the source
    camera's: they set how much each splat is widened (``VIEWER_DILATION``).
    """
    s = splats.map(lambda t: t.detach().to("cpu", torch.float32))
    columns = torch.cat([t.reshape(len(t), -1) for t in (s.means, s.quats, s.scales, s.colors, s.opacities)], 1)
    keep = (columns.isfinite().all(1) & (s.opacities >= ALPHA_THRESHOLD)).numpy()
    distance = (s.means - camera_position.to(s.means)).norm(dim=1, keepdim=True)
    # Adding v I to R S² Rᵀ keeps R and adds v to every squared scale.
    scales = (s.scales.square() + VIEWER_DILATION * (distance / focal_px).square()).sqrt()
    floats = [np.ascontiguousarray(a.numpy()[keep], "<f4") for a in (s.means, s.quats, scales)]
    rgba = np.concatenate([s.colors.numpy()[keep], s.opacities.numpy()[keep, None]], 1)
    colors = np.clip(np.round(rgba * 255), 0, 255).astype(np.uint8)
    return WebHead(keep, b"".join(a.tobytes() for a in floats) + colors.tobytes())


def head_meta(head: WebHead, fps: int, frames: int | None, focal: float, source_c2w: Tensor, size: int) -> dict:
    """What the page needs besides the bytes: sizes, timing, and the source camera as gsplat.js orbit angles.

    The world's origin is the head's centre; ``focal`` is the source camera's, normalised by the
    image side, and ``size`` the side in pixels the head is drawn at. gsplat.js's orbit puts the camera at ``r (sin a cos b, -sin b, -cos a cos b)``.
    """
    x, y, z = (float(v) for v in source_c2w[:3, 3])
    distance = math.sqrt(x * x + y * y + z * z)
    return {"count": head.count, "fps": fps, "frames": frames, "focal": float(focal), "size": int(size), "distance": distance,
            "alpha": math.atan2(x, -z), "beta": math.asin(max(-1.0, min(1.0, -y / distance)))}  # fmt: skip


def viewer_head(splats: Splats, source_c2w: Tensor, focal: float, size: int, fps: int, frames: int | None) -> tuple[WebHead, dict]:
    """The static head (world-space ``splats``) and its meta for a page drawing it at ``size`` pixels from the source camera.

    ``focal`` is the source camera's, normalised by the image side; ``frames`` None for a live stream.
    """
    head = encode_head(splats, source_c2w[:3, 3], focal * size)
    return head, head_meta(head, fps, frames, focal, source_c2w, size)


def encode_frame(index: int, offsets: np.ndarray, keep: np.ndarray, step: float = OFFSET_STEP) -> bytes:
    """Frame ``index``'s (N_model, 3) world-space offsets as a viewer message (only the ``keep`` splats)."""
    limit = np.iinfo(np.int16).max
    moved = np.nan_to_num(np.asarray(offsets, np.float64)[keep], nan=0.0, posinf=0.0, neginf=0.0)
    steps = np.clip(np.round(moved / step), -limit, limit)
    planes = np.ascontiguousarray(steps.T, "<i2")
    return FRAME_HEADER.pack(index, step) + zlib.compress(planes.tobytes(), 6)


def decode_frame(message: bytes, count: int) -> tuple[int, np.ndarray]:
    """The inverse of :func:`encode_frame`: (index, (count, 3) float32 offsets)."""
    index, step = FRAME_HEADER.unpack_from(message)
    planes = np.frombuffer(zlib.decompress(message[FRAME_HEADER.size :]), "<i2").reshape(3, count)
    return index, (planes.T * np.float32(step)).astype(np.float32)


def decode_head(data: bytes, count: int) -> dict[str, np.ndarray]:
    """The inverse of :func:`encode_head`: positions, rotations, scales (float32) and colours (uint8)."""
    out, at = {}, 0
    for name, width in (("positions", 3), ("rotations", 4), ("scales", 3)):
        out[name] = np.frombuffer(data, "<f4", count * width, at).reshape(count, width)
        at += 4 * count * width
    out["colors"] = np.frombuffer(data, np.uint8, count * 4, at).reshape(count, 4)
    return out
