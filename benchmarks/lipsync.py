"""Do the lips move with the speech? ``.venv/bin/python benchmarks/lipsync.py --videos DIR [--model MODEL_DIR] [--json FILE]``.

Animates real talking clips as a user would (a frame as the portrait, the speech that follows it,
a fixed camera) with a model (default: the bundled one) and compares the mouth track of the video
with the real speaker's (:mod:`splat_portrait.metrics.mouth`: LMD in inter-ocular distances,
``mouth_r`` the correlation of the mouth openings, ``mouth_amp`` the ratio of their spreads), beside
the copy-source baseline (every frame is the portrait: its mouth does not move, so ``mouth_amp`` is 0
and ``mouth_r`` undefined). Sync confidence comes from SyncNet when ``--syncnet`` weights are given.

Clips: the corpus of ``data/corpus.json`` gathered into ``--videos DIR`` (``scripts/corpus.py
gather``), split by identity as its preprocessing splits it. Each held-out clip is cut into
``--seconds`` windows (at most ``--windows`` per clip); each window is animated from its own first
frame. The mean rows are over held-out windows only. Prints a table and, with ``--json``, writes it
with the run record.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from corpus import read_listing  # noqa: E402

from splat_portrait import TalkingHeadPipeline  # noqa: E402
from splat_portrait.data.layout import FPS, SAMPLE_RATE, assign_splits  # noqa: E402
from splat_portrait.environment import run_record  # noqa: E402
from splat_portrait.media.video import read_frames  # noqa: E402
from splat_portrait.metrics import MetricOptions, Unavailable, build_metric  # noqa: E402
from splat_portrait.metrics.mouth import compare_tracks, landmark_tracks, mouth_opening  # noqa: E402
from splat_portrait.metrics.sync_expert import ExpertSync  # noqa: E402
from splat_portrait.runtime.inputs import load_speech  # noqa: E402


def corpus_splits() -> tuple[dict, dict[str, str]]:
    """The listing and each clip file's split, exactly as ``corpus.py preprocess`` makes it (by identity)."""
    listing, clips = read_listing()
    ids = {c.name: Path(c.name).stem for c in clips}
    splits = assign_splits(ids.values(), listing["test_fraction"], {ids[c.name]: c.identity for c in clips})
    return listing, {c.name: splits[ids[c.name]] for c in clips}


def windows(video: Path, seconds: float, most: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to ``most`` consecutive whole windows of ``seconds``: (frames (F, H, W, 3), their speech)."""
    length = round(seconds * FPS)
    frames = np.stack(list(islice(read_frames(video), length * most)))
    speech = load_speech(video)
    step = SAMPLE_RATE // FPS
    count = min(len(frames) // length, len(speech) // (length * step))
    return [(frames[k * length : (k + 1) * length], speech[k * length * step : (k + 1) * length * step]) for k in range(count)]


def sheet(real: np.ndarray, generated: np.ndarray, real_track: np.ndarray, generated_track: np.ndarray, columns: int = 8) -> np.ndarray:
    """Real frames over generated ones at ``columns`` even times, above both mouth openings over time."""
    side = generated.shape[1]
    picks = np.linspace(0, len(generated) - 1, columns).round().astype(int)
    canvas = Image.new("RGB", (side * columns, 2 * side + 110), (255, 255, 255))
    for k, f in enumerate(picks):
        canvas.paste(Image.fromarray(real[f]).resize((side, side)), (k * side, 0))
        canvas.paste(Image.fromarray(generated[f]), (k * side, side))
    draw = ImageDraw.Draw(canvas)
    curves = [(mouth_opening(real_track), (0, 0, 0), "real"), (mouth_opening(generated_track), (220, 40, 40), "model")]
    top, height, width = 2 * side + 5, 90, side * columns
    scale = max(0.05, *(np.nanmax(c) for c, _, _ in curves if np.isfinite(c).any()))
    for values, colour, label in curves:
        points = [(i * width / max(1, len(values) - 1), top + height * (1 - v / scale)) for i, v in enumerate(values) if np.isfinite(v)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
    draw.text((4, top), "mouth opening: real (black), model (red)", fill=(0, 0, 0))
    return np.asarray(canvas)


def score_window(pipe: TalkingHeadPipeline, real: np.ndarray, speech: np.ndarray, sync, expert: ExpertSync | None, sheet_path: Path | None = None) -> dict:
    generated = pipe(real[0], speech).frames[: len(real)]
    real_track = landmark_tracks(real)
    rows = {}
    for method, frames in (("model", generated), ("copy-source", np.repeat(real[:1], len(generated), axis=0))):
        tracks = landmark_tracks(frames)
        if method == "model" and sheet_path is not None:
            Image.fromarray(sheet(real, generated, real_track, tracks)).save(sheet_path)
        scores = compare_tracks(tracks, real_track)
        row = {"lmd": scores.lmd, "mouth_r": scores.mouth_r, "mouth_amp": scores.mouth_amp, "pairs": scores.pairs,
               "no_face_generated": scores.no_face_generated, "no_face_real": scores.no_face_real, "notes": scores.notes}  # fmt: skip
        if not isinstance(sync, Unavailable):
            row["sync_confidence"] = sync.compute(list(frames), speech).confidence
        rows[method] = row
    if expert is not None:
        # Renders are face crops in the training framing, which the expert reads; raw video frames are not.
        result = expert(torch.from_numpy(generated).float() / 255, speech)
        rows["model"].update(sync_offset=result.offset, sync_c=result.confidence)
    return {"frames": len(generated), **rows}


def _cell(value, decimals: int = 3) -> str:
    return "undefined" if value is None else f"{value:.{decimals}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=Path, required=True, help="The gathered corpus videos (scripts/corpus.py gather).")
    parser.add_argument("--model", type=Path, default=None, help="MODEL_DIR or checkpoint (default: the bundled model).")
    parser.add_argument("--seconds", type=float, default=5.0, help="Seconds of each window.")
    parser.add_argument("--windows", type=int, default=3, help="At most this many windows of each held-out clip.")
    parser.add_argument("--syncnet", type=Path, default=None, help="SyncNet weights (syncnet_v2.model) for a sync confidence.")
    parser.add_argument("--sync", type=Path, default=None, help="Our sync expert (train-sync): the offset it finds in each window.")
    parser.add_argument("--sheets", type=Path, default=None, help="Write a PNG per window here: frames and both mouth openings over time.")
    parser.add_argument("--json", type=Path, help="Also write the table, with the run record, here.")
    args = parser.parse_args()
    expert = ExpertSync(args.sync) if args.sync else None
    listing, splits = corpus_splits()
    held_out = sorted(name for name, split in splits.items() if split == "test")
    missing = [name for name in held_out if not (args.videos / name).is_file()]
    if missing:
        sys.exit(f"{len(missing)} held-out clips are not in {args.videos} (e.g. {missing[0]}); run scripts/corpus.py gather")
    pipe = TalkingHeadPipeline.from_pretrained(args.model, device="cpu")
    sync = build_metric("lipsync", MetricOptions(syncnet_weights=args.syncnet))
    scored = {}
    for name in held_out:
        for k, (real, speech) in enumerate(windows(args.videos / name, args.seconds, args.windows)):
            window = f"{Path(name).stem}@{k * args.seconds:g}s"
            sheet_path = None
            if args.sheets:
                args.sheets.mkdir(parents=True, exist_ok=True)
                sheet_path = args.sheets / f"{window.replace('@', '_')}.png"
            scored[window] = score_window(pipe, real, speech, sync, expert, sheet_path)

    print(f"mouth tracks of {args.model or 'the bundled model'} vs the real speaker ({args.seconds:g} s windows of held-out identities, static camera)")
    if isinstance(sync, Unavailable):
        print(f"sync confidence {sync}")
    header = f"{'window':44} {'method':12} {'LMD':>7} {'mouth_r':>9} {'mouth_amp':>9} {'pairs':>6} {'offset':>6}"
    print(header + "\n" + "-" * len(header))
    means = {}
    for method in ("model", "copy-source"):
        for name, window in scored.items():
            row = window[method]
            offset = row.get("sync_offset", "-")
            print(f"{name:44} {method:12} {_cell(row['lmd']):>7} {_cell(row['mouth_r']):>9} {_cell(row['mouth_amp']):>9} {row['pairs']:>6} {offset:>6}")
        rows = [w[method] for w in scored.values()]
        means[method] = {k: _mean([r[k] for r in rows]) for k in ("lmd", "mouth_r", "mouth_amp")} | {"windows": len(rows)}
        if expert is not None and method == "model":
            means[method]["in_sync"] = _mean([float(r["sync_offset"] == 0) for r in rows])
        m = means[method]
        in_sync = f"{m['in_sync']:.0%} at 0" if "in_sync" in m else ""
        print(f"{'mean of held-out windows':44} {method:12} {_cell(m['lmd']):>7} {_cell(m['mouth_r']):>9} {_cell(m['mouth_amp']):>9} {'':>6} {in_sync}")
    if args.json:
        identities = sorted({c.identity for c in read_listing()[1] if splits[c.name] == "test"})
        report = {"benchmark": "lipsync", "model": str(args.model or "bundled"), "seconds": args.seconds,
                  "split": {"listing": "data/corpus.json", "test_fraction": listing["test_fraction"], "held_out_identities": identities},
                  "sync": str(sync) if isinstance(sync, Unavailable) else sync.implementation,
                  "expert": expert.name if expert else None, "windows": scored,
                  "held_out_means": means, "record": run_record()}  # fmt: skip
        args.json.write_text(json.dumps(report, indent=1) + "\n")


def _mean(values: list) -> float | None:
    defined = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(defined) if defined else None


if __name__ == "__main__":
    main()
