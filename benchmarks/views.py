"""Does the head hold together when it turns? ``.venv/bin/python benchmarks/views.py [--model MODEL_DIR] [--json FILE]``.

Each test portrait is turned along the paper's bullet path (yaw −30…+30° in 5° steps at pitch 0 and
±12.5°), the head rendered from each camera at the speech's first frame, and three things are scored
per portrait, for the model (default: the bundled one) and for the copy-source baseline:

* ``face found``: the share of views where dlib finds a face at all;
* ``CSIM``: dlib's identity similarity of each view to the source crop (over the views with a face);
* ``tearing``: how much high-frequency energy the view has inside the face box of the frontal
  render, relative to the frontal render: mean |Laplacian| (view) / mean |Laplacian| (frontal) − 1.
  A smooth surface seen from another angle keeps about the same edge energy; splats that no longer
  cover their surface leave stripes and holes, whose edges raise it. 0 for an unchanged image;
  reported as the mean over the views and the worst view.

Copy-source answers every view with the source image, so it scores face found 1, CSIM 1 and
tearing 0 by construction: it is the reference a 3D head is measured against, not a competitor.
Prints a table and, with ``--json``, writes it with the run record.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from splat_portrait import TalkingHeadPipeline  # noqa: E402
from splat_portrait.environment import run_record  # noqa: E402
from splat_portrait.metrics.identity import DlibFaceEmbedder  # noqa: E402
from splat_portrait.metrics.views import BULLET_PITCHES_DEG, BULLET_YAWS_DEG, score_views  # noqa: E402
from splat_portrait.runtime.inputs import load_image, load_speech  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
PORTRAITS = [DATA / "portraits" / name for name in ("happy_256.png", "people_474.png", "art_640x896.png")]
SPEECH = DATA / "audio" / "speech_44k_stereo.wav"
YAWS, PITCHES = BULLET_YAWS_DEG, BULLET_PITCHES_DEG


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="MODEL_DIR or checkpoint (default: the bundled model).")
    parser.add_argument("--json", type=Path, help="Also write the table, with the run record, here.")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"sample data folder {DATA} is absent")
    pipe = TalkingHeadPipeline.from_pretrained(args.model, device="cpu")
    embedder = DlibFaceEmbedder()
    speech = load_speech(SPEECH)[:640]  # one frame: the head as the speech starts
    results = {}
    for portrait in PORTRAITS:
        image = load_image(portrait)
        views = {(y, p): pipe(image, speech, yaw=y, pitch=p).frames[0] for p in PITCHES for y in YAWS}
        source = pipe(image, speech).frames[0]
        results[portrait.name] = {
            "model": _row(score_views(embedder, views, source)),
            "copy-source": _row(score_views(embedder, {key: source for key in views}, source)),
        }
    print(f"views of {args.model or 'the bundled model'}: yaw {YAWS[0]:g}…{YAWS[-1]:g}° x pitch {', '.join(f'{p:g}' for p in PITCHES)}°")
    header = f"{'portrait':20} {'method':12} {'face found':>10} {'CSIM':>6} {'tearing mean':>12} {'tearing worst':>13}"
    print(header + "\n" + "-" * len(header))
    for name, rows in results.items():
        for method, row in rows.items():
            cells = [f"{row['face_found']:.2f}", _cell(row["csim"]), _cell(row["tearing_mean"]), _cell(row["tearing_worst"])]
            print(f"{name:20} {method:12} {cells[0]:>10} {cells[1]:>6} {cells[2]:>12} {cells[3]:>13}")
    if args.json:
        report = {"benchmark": "views", "model": str(args.model or "bundled"), "yaws": YAWS, "pitches": PITCHES, "portraits": results,
                  "record": run_record()}  # fmt: skip
        args.json.write_text(json.dumps(report, indent=1) + "\n")


def _row(scores) -> dict:
    row = dataclasses.asdict(scores)
    if row["note"] is None:
        del row["note"]
    return row


def _cell(value) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
