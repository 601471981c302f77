"""Does our sync expert know when sound and lips belong together? ``.venv/bin/python benchmarks/sync_expert.py SYNC_CKPT DATA_DIR [--json FILE]``.

On the test split of DATA_DIR (real clips of identities the expert never saw, when the data was
preprocessed with ``--identities``), cuts every clip into whole ``--seconds`` windows and reports:

* the share of windows whose offset search (-15..15 frames) finds the true offset 0, overall and
  per clip, with the offsets found;
* the share of (window, shifted window) pairs, 3-15 frames apart, where the true audio scores above
  the shifted one.

The same figures on the training split show how much of it is memorised.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from splat_portrait.environment import run_record  # noqa: E402
from splat_portrait.metrics.sync_expert import load_sync_expert  # noqa: E402
from splat_portrait.training.sync import held_out_figures, load_windows  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("expert", type=Path)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--stride", type=float, default=1.0, help="Seconds between window starts (windows overlap when below --seconds).")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    expert, record = load_sync_expert(args.expert)
    report = {"benchmark": "sync_expert", "expert": str(args.expert), "trained_on": record, "seconds": args.seconds, "stride": args.stride, "splits": {}}
    print(f"sync expert {args.expert.name} ({len(record['clips'])} training clips), {args.seconds:g} s windows every {args.stride:g} s")
    header = f"{'split':6} {'clip':34} {'windows':>7} {'offsets found':24} {'pairs ranked':>12}"
    print(header + "\n" + "-" * len(header))
    for split in ("test", "train"):
        clips, _ = load_windows(args.data_dir, split, expert.config, record["config"]["resolution"])
        rows = {c.id: held_out_figures(expert, [c], args.seconds, stride=args.stride) for c in clips}
        overall = held_out_figures(expert, clips, args.seconds, stride=args.stride)
        for clip_id, row in rows.items():
            print(f"{split:6} {clip_id[:34]:34} {row['windows']:>7} {str(row['offsets'])[:24]:24} {row['pairs_ranked']:>12.2f}")
        print(f"{split:6} {'all':34} {overall['windows']:>7} {'offset 0: ' + format(overall['offset_correct'], '.0%'):24} {overall['pairs_ranked']:>12.2f}")
        report["splits"][split] = {"overall": overall, "clips": rows}
    if args.json:
        report["record"] = run_record()
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
