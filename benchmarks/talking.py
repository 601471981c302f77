"""Does the head talk with its mouth, and only when there is speech? ``.venv/bin/python benchmarks/talking.py [--model NAME=MODEL_DIR ...] [--json FILE]``.

The scene of ``tests/test_default_model.py``: skimage's astronaut portrait animated with 4 s of the
bundled example speech, and again with 4 s of room tone (Gaussian noise at -50 dBFS, what a
microphone records when nobody speaks). Per model, the pixel motion (:mod:`splat_portrait.metrics.motion`:
each pixel's spread over time, in 8-bit levels) of the mouth box and of the upper-face box in
speech, of the mouth box in room tone, and their ratios. The test asks the bundled model for a mouth
moving more than 3 times as much as the upper face and 2 times as much in speech as in room tone.
Prints a table and, with ``--json``, writes it with the run record.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from splat_portrait import TalkingHeadPipeline  # noqa: E402
from splat_portrait.data.layout import SAMPLE_RATE  # noqa: E402
from splat_portrait.environment import run_record  # noqa: E402
from splat_portrait.media.audio import load_audio  # noqa: E402
from splat_portrait.metrics.motion import MOUTH_BOX, UPPER_FACE_BOX, region_motion  # noqa: E402

SPEECH = ROOT / "examples" / "speech.wav"
SECONDS = 4


def room_tone(seconds: float, dbfs: float = -50.0) -> np.ndarray:
    return (np.random.default_rng(0).standard_normal(round(seconds * SAMPLE_RATE)) * 10 ** (dbfs / 20)).astype(np.float32)


def score(model_dir: Path | None) -> dict:
    from skimage import data

    pipe = TalkingHeadPipeline.from_pretrained(model_dir)
    portrait = data.astronaut()
    talking = pipe(portrait, load_audio(SPEECH)[: SECONDS * SAMPLE_RATE]).frames
    silent = pipe(portrait, room_tone(SECONDS)).frames
    mouth, upper, quiet = (region_motion(talking, MOUTH_BOX), region_motion(talking, UPPER_FACE_BOX), region_motion(silent, MOUTH_BOX))
    return {"mouth": mouth, "upper_face": upper, "mouth_room_tone": quiet, "mouth_over_upper": mouth / upper, "speech_over_room_tone": mouth / quiet}


def _named(value: str) -> tuple[str, Path | None]:
    name, sep, path = value.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=MODEL_DIR, got {value!r}")
    return name, Path(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=_named, action="append", default=[],
                        help="NAME=MODEL_DIR, repeatable (default: the bundled model only; it is always scored, as 'bundled').")  # fmt: skip
    parser.add_argument("--json", type=Path, help="Also write the table, with the run record, here.")
    args = parser.parse_args()
    rows = [{"model": name, **score(path)} for name, path in [("bundled", None), *args.model]]
    print(f"{'model':42} {'mouth':>7} {'upper':>7} {'mouth/upper':>12} {'room tone':>10} {'speech/room tone':>17}")
    for r in rows:
        print(f"{r['model']:42} {r['mouth']:7.2f} {r['upper_face']:7.2f} {r['mouth_over_upper']:12.1f} "
              f"{r['mouth_room_tone']:10.2f} {r['speech_over_room_tone']:17.1f}")  # fmt: skip
    if args.json:
        report = {"benchmark": "talking", "seconds": SECONDS, "speech": "examples/speech.wav", "portrait": "skimage astronaut",
                  "rows": rows, "record": run_record()}  # fmt: skip
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
