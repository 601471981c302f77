"""Contact sheets: one labelled row per clip, as in the paper's Fig. 2/3.

Tiles: source, target (real frame), ours (generated frame), depth, novel views at yaw -35, 0, +35
degrees. Methods without 3D (the copy-source baseline) get grey "n/a" tiles for depth and novel views.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from splat_portrait.atomic import atomic_open
from splat_portrait.evaluation.methods import NOVEL_YAWS_DEG

# Tiles are enlarged (nearest neighbour) to at least this side, so labels fit under small frames.
MIN_TILE = 128
LABEL_HEIGHT = 14
_MISSING_GREY = 64


def sheet_labels() -> list[str]:
    return ["source", "target", "ours", "depth", *(f"yaw {yaw:+.0f}" for yaw in NOVEL_YAWS_DEG)]


def contact_sheet(tiles: Sequence[np.ndarray | None]) -> np.ndarray:
    """(R, R, 3) uint8 tiles (None = not available) in :func:`sheet_labels` order -> one labelled uint8 image."""
    labels = sheet_labels()
    if len(tiles) != len(labels):
        raise ValueError(f"expected {len(labels)} tiles ({', '.join(labels)}), got {len(tiles)}")
    side = next(t.shape[0] for t in tiles if t is not None)
    scale = max(1, -(-MIN_TILE // side))
    tile_side = side * scale
    sheet = Image.new("RGB", (tile_side * len(tiles), tile_side + LABEL_HEIGHT), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    for k, (tile, label) in enumerate(zip(tiles, labels)):
        if tile is None:
            image = Image.new("RGB", (tile_side, tile_side), (_MISSING_GREY,) * 3)
            label = f"{label}: n/a"
        else:
            image = Image.fromarray(np.ascontiguousarray(tile)).resize((tile_side, tile_side), Image.NEAREST)
        sheet.paste(image, (k * tile_side, 0))
        draw.text((k * tile_side + 3, tile_side + 1), label, fill=(255, 255, 255))
    return np.asarray(sheet)


def write_png(path: Path, image: np.ndarray) -> None:
    with atomic_open(path, "wb") as f:
        Image.fromarray(image).save(f, format="PNG")
