"""Make docs/demo.png, README's still of the demo: frames of `make demo`'s orbit video side by side.

    .venv/bin/python scripts/readme_still.py demo-output/astronaut.mp4 docs/demo.png

Frames are read back from the MP4 that `splat-portrait animate` wrote (so the still shows exactly
what users get), at evenly spaced times across the orbit.
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

from splat_portrait.atomic import atomic_open
from splat_portrait.media.video import read_frames


def still(video: str, output: str, count: int) -> None:
    frames = list(read_frames(video))
    picks = np.linspace(0, len(frames) - 1, count + 2)[1:-1].round().astype(int)
    strip = np.concatenate([frames[i] for i in picks], axis=1)
    with atomic_open(output, "wb") as f:
        Image.fromarray(strip).save(f, format="PNG", optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video")
    parser.add_argument("output")
    parser.add_argument("--count", type=int, default=4, help="frames in the strip")
    args = parser.parse_args()
    still(args.video, args.output, args.count)


if __name__ == "__main__":
    main()
