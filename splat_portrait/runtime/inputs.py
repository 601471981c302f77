"""The user's inputs: a portrait in any common image format, and speech in any common audio format.

Portraits are decoded with Pillow: EXIF orientation is applied, greyscale is expanded to RGB, 16-bit
images are reduced to 8 bits, and transparency is flattened onto **white** (cut-out portraits are
usually shown on white; the generator paints its own background behind the head anyway). The face
is then cropped and posed exactly as ``preprocess`` does for training clips
(:func:`splat_portrait.face.track.locate_face`).

Speech goes through :func:`splat_portrait.media.audio.load_audio` (16 kHz mono float32). A talking
head needs sound, so a track whose peak stays below :data:`SILENCE_DBFS` is refused as silent.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from splat_portrait.errors import SplatPortraitError
from splat_portrait.face.crop import crop_square
from splat_portrait.face.track import locate_face
from splat_portrait.media.audio import SAMPLE_RATE, load_audio
from splat_portrait.media.ffmpeg import check_input

# Peak level below which a track counts as silence: -60 dBFS is below any usable recording's noise floor.
SILENCE_DBFS = -60.0
FLATTEN_ONTO = (255, 255, 255)


@dataclass(frozen=True)
class Portrait:
    """A portrait ready for the generator: the full image, its face box, the crop and its camera."""

    image: np.ndarray  # (H, W, 3) uint8 RGB, the whole picture (for --paste-back)
    box: np.ndarray  # (3,) crop box (cx, cy, side) in image pixels
    crop: np.ndarray  # (S, S, 3) uint8 RGB, aligned like the training crops
    c2w: Tensor  # (4, 4) the crop's estimated camera-to-world

    def generator_input(self) -> Tensor:
        """The crop as the generator takes it: (1, 3, S, S) float32 in [-1, 1]."""
        return torch.tensor(self.crop).permute(2, 0, 1)[None].float() / 127.5 - 1


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Any image Pillow reads as (H, W, 3) uint8 RGB, upright per its EXIF orientation."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = check_input(path)
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            img.load()
    except UnidentifiedImageError:
        reason = "or not in a format Pillow reads: PNG, JPEG, WebP, TIFF, BMP, ..."
        raise SplatPortraitError(f"{path} is not an image ({reason})") from None
    except Image.DecompressionBombError:
        limit = 2 * Image.MAX_IMAGE_PIXELS
        raise SplatPortraitError(f"{path} is too large to be a portrait (over {limit} pixels); downscale it") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise SplatPortraitError(f"{path} is a damaged image ({err})") from None
    return _to_rgb(img)


def _to_rgb(img) -> np.ndarray:
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: Pillow's RGB conversion would clip instead of scaling.
        values = np.asarray(img, np.float64)
        peak = 65535.0 if values.max() > 255 else 255.0
        img = Image.fromarray(np.clip(values / peak * 255.0, 0, 255).round().astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*FLATTEN_ONTO, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("RGB"), np.uint8)


def load_portrait(image: str | os.PathLike | np.ndarray | Any, size: int) -> Portrait:
    """Find the largest face of ``image`` (a file, an (H, W, 3) uint8 RGB array or a PIL image) and cut the aligned crop."""
    name = "the image" if _in_memory(image) else str(image)
    image = image_array(image) if _in_memory(image) else load_image(image)
    face = locate_face(image)
    if face is None:
        raise SplatPortraitError(f"no face found in {name}; use a photo with one clearly visible, roughly frontal face")
    box = face.boxes[0]
    return Portrait(image, box, crop_square(image, box, size), torch.from_numpy(face.c2w[0]).float())


def load_speech(audio: str | os.PathLike | np.ndarray) -> np.ndarray:
    """Any audio (or video) file's sound, or (N,) samples already at 16 kHz, as mono float32; empty and silent tracks are refused."""
    if isinstance(audio, np.ndarray):
        name = "the speech samples"
        if audio.ndim != 1 or audio.size == 0 or not np.issubdtype(audio.dtype, np.floating):
            raise SplatPortraitError(f"speech samples must be a non-empty (N,) float array at {SAMPLE_RATE} Hz, got {audio.dtype} {audio.shape}")
        samples = audio.astype(np.float32)
    else:
        name, samples = str(audio), load_audio(Path(audio), SAMPLE_RATE)
    peak = float(np.abs(samples).max())
    level = 20 * math.log10(peak) if peak > 0 else -math.inf
    if not level >= SILENCE_DBFS:  # also refuses NaN samples
        raise SplatPortraitError(
            f"{name} contains only silence (peak level {level:.0f} dBFS); a talking head needs a speech recording"
        )
    return samples


def _in_memory(image: Any) -> bool:
    return not isinstance(image, (str, os.PathLike))


def image_array(image: Any) -> np.ndarray:
    """An in-memory portrait (an (H, W, 3) uint8 RGB array or a PIL image) as the (H, W, 3) uint8 array the face finder takes."""
    from PIL import Image, ImageOps

    if isinstance(image, Image.Image):
        return _to_rgb(ImageOps.exif_transpose(image))
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        return np.ascontiguousarray(image)
    raise SplatPortraitError(
        f"an in-memory portrait must be an (H, W, 3) uint8 RGB array or a PIL image, got {_describe(image)}"
    )


def _describe(value: Any) -> str:
    return f"an array of {value.dtype} {value.shape}" if isinstance(value, np.ndarray) else f"a {type(value).__name__}"
