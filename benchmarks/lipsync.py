"""Do the lips move with the speech? ``.venv/bin/python benchmarks/lipsync.py [--model MODEL_DIR] [--json FILE]``.

Animates real talking clips as a user would (the clip's first frame as the portrait, its own speech,
a fixed camera) with a model (default: the bundled one) and compares the mouth track of the video
with the real speaker's (:mod:`splat_portrait.metrics.mouth`: LMD in inter-ocular distances,
``mouth_r`` the correlation of the mouth openings, ``mouth_amp`` the ratio of their spreads), beside
the copy-source baseline (every frame is the portrait: its mouth does not move, so ``mouth_amp`` is 0
and ``mouth_r`` undefined). Sync confidence comes from SyncNet when ``--syncnet`` weights are given.

Clips: the sample videos in ``../shared/data/videos``, each marked held out or seen in training by
the bundled model's split (the id hash of ``scripts/train_default_model.sh``'s data); the mean rows
are over held-out clips only. Prints a table and, with ``--json``, writes it with the run record.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from splat_portrait import TalkingHeadPipeline  # noqa: E402
from splat_portrait.data.layout import assign_splits  # noqa: E402
from splat_portrait.data.preprocess import clip_ids  # noqa: E402
from splat_portrait.data.synthetic import clip_id  # noqa: E402
from splat_portrait.environment import run_record  # noqa: E402
from splat_portrait.media.video import read_frames  # noqa: E402
from splat_portrait.metrics import MetricOptions, Unavailable, build_metric  # noqa: E402
from splat_portrait.metrics.mouth import compare_tracks, landmark_tracks  # noqa: E402
from splat_portrait.runtime.inputs import load_speech  # noqa: E402

VIDEOS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "videos"
# The bundled model's data: these videos plus 24 synthetic clips of seed 0, split at 0.25 by id hash.
DEFAULT_SPLIT = {"test_fraction": 0.25, "synthetic_clips": 24}


def default_model_split(videos: list[Path]) -> dict[str, str]:
    ids = clip_ids(videos)
    synthetic = [clip_id(0, i) for i in range(DEFAULT_SPLIT["synthetic_clips"])]
    splits = assign_splits([*ids, *synthetic], DEFAULT_SPLIT["test_fraction"])
    return {video.name: splits[i] for video, i in zip(videos, ids)}


def score_clip(pipe: TalkingHeadPipeline, video: Path, seconds: float, sync) -> dict:
    real = np.stack([f for _, f in zip(range(round(seconds * 25)), read_frames(video))])
    speech = load_speech(video)[: len(real) * 640]
    generated = pipe(real[0], speech).frames[: len(real)]
    real_track = landmark_tracks(real)
    rows = {}
    for method, frames in (("model", generated), ("copy-source", np.repeat(real[:1], len(generated), axis=0))):
        scores = compare_tracks(landmark_tracks(frames), real_track)
        row = {"lmd": scores.lmd, "mouth_r": scores.mouth_r, "mouth_amp": scores.mouth_amp, "pairs": scores.pairs,
               "no_face_generated": scores.no_face_generated, "no_face_real": scores.no_face_real, "notes": scores.notes}  # fmt: skip
        if not isinstance(sync, Unavailable):
            row["sync_confidence"] = sync.compute(list(frames), speech).confidence
        rows[method] = row
    return {"frames": len(generated), **rows}


def _cell(value, decimals: int = 3) -> str:
    return "undefined" if value is None else f"{value:.{decimals}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="MODEL_DIR or checkpoint (default: the bundled model).")
    parser.add_argument("--seconds", type=float, default=5.0, help="Seconds of each clip to animate.")
    parser.add_argument("--syncnet", type=Path, default=None, help="SyncNet weights (syncnet_v2.model) for a sync confidence.")
    parser.add_argument("--json", type=Path, help="Also write the table, with the run record, here.")
    args = parser.parse_args()
    if not VIDEOS.is_dir():
        sys.exit(f"sample videos folder {VIDEOS} is absent")
    videos = sorted(p for p in VIDEOS.iterdir() if p.suffix == ".mp4")
    splits = default_model_split(videos)
    pipe = TalkingHeadPipeline.from_pretrained(args.model, device="cpu")
    sync = build_metric("lipsync", MetricOptions(syncnet_weights=args.syncnet))
    clips = {video.name: {"split": splits[video.name], **score_clip(pipe, video, args.seconds, sync)} for video in videos}

    print(f"mouth tracks of {args.model or 'the bundled model'} vs the real speaker (first {args.seconds:g} s, static camera)")
    if isinstance(sync, Unavailable):
        print(f"sync confidence {sync}")
    header = f"{'clip':26} {'split':6} {'method':12} {'LMD':>7} {'mouth_r':>9} {'mouth_amp':>9} {'pairs':>6}"
    print(header + "\n" + "-" * len(header))
    means = {}
    for method in ("model", "copy-source"):
        for name, clip in clips.items():
            row = clip[method]
            print(f"{name:26} {clip['split']:6} {method:12} {_cell(row['lmd']):>7} {_cell(row['mouth_r']):>9} "
                  f"{_cell(row['mouth_amp']):>9} {row['pairs']:>6}")  # fmt: skip
        held_out = [c[method] for c in clips.values() if c["split"] == "test"]
        means[method] = {k: _mean([r[k] for r in held_out]) for k in ("lmd", "mouth_r", "mouth_amp")} | {"clips": len(held_out)}
        m = means[method]
        print(f"{'mean of held-out clips':26} {'test':6} {method:12} {_cell(m['lmd']):>7} {_cell(m['mouth_r']):>9} {_cell(m['mouth_amp']):>9}")
    if args.json:
        report = {"benchmark": "lipsync", "model": str(args.model or "bundled"), "seconds": args.seconds, "split": DEFAULT_SPLIT,
                  "sync": str(sync) if isinstance(sync, Unavailable) else sync.implementation, "clips": clips,
                  "held_out_means": means, "record": run_record()}  # fmt: skip
        args.json.write_text(json.dumps(report, indent=1) + "\n")


def _mean(values: list) -> float | None:
    defined = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(defined) if defined else None


if __name__ == "__main__":
    main()
