"""Contact sheet of the novel-view ablation: ``.venv/bin/python scripts/views_sheet.py NAME=CKPT ... [-o FILE]``.

Each portrait gets one block: a row per model (in the order given), a column per yaw (-30, -15,
0, +15, +30 degrees, pitch 0), the head at the first frame of the sample speech, at the model's
resolution enlarged 2x; the row's name is written on its first tile. Portraits: the three sample
portraits of benchmarks/views.py (none is in the training corpus).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from splat_portrait.runtime.inputs import load_image, load_speech  # noqa: E402
from splat_portrait.runtime.talking_head import TalkingHeadPipeline  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data"
PORTRAITS = [DATA / "portraits" / name for name in ("happy_256.png", "people_474.png", "art_640x896.png")]
SPEECH = DATA / "audio" / "speech_44k_stereo.wav"
YAWS = (-30, -15, 0, 15, 30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="NAME=CKPT_OR_MODEL_DIR, one row each.")
    parser.add_argument("-o", "--output", type=Path, default=REPO / "docs" / "figures" / "views_ablation.jpg")
    args = parser.parse_args()
    rows = [spec.split("=", 1) for spec in args.models]
    speech = load_speech(SPEECH)[:640]
    blocks = []
    for portrait in PORTRAITS:
        image = load_image(portrait)
        for name, path in rows:
            pipe = TalkingHeadPipeline.from_pretrained(path, device="cpu")
            tiles = [Image.fromarray(pipe(image, speech, yaw=yaw).frames[0]) for yaw in YAWS]
            tiles = [tile.resize((tile.width * 2, tile.height * 2), Image.NEAREST) for tile in tiles]
            ImageDraw.Draw(tiles[0]).text((4, 4), name, fill=(255, 255, 0))
            blocks.append(np.concatenate([np.asarray(t) for t in tiles], 1))
    sheet = Image.fromarray(np.concatenate(blocks, 0))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.output, quality=75)
    print(f"wrote {args.output} ({sheet.width}x{sheet.height}): rows {', '.join(n for n, _ in rows)} per portrait; yaws {YAWS}")


if __name__ == "__main__":
    main()
