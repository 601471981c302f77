"""The evaluation's outputs: metrics.json, metrics.csv and a rich table beside the paper's figures.

The reference rows are the paper's Tab. 1 (same identity) and Tab. 2 (cross identity), on HDTF;
the paper reports LipSync as SyncNet confidence (LSE-C) and gives no LSE-D.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from rich.table import Table

from splat_portrait.atomic import atomic_open
from splat_portrait.evaluation.scoring import SCORES, ClipScores

PAPER_DATASET = "HDTF"
_TAB1 = ("psnr", "ssim", "lpips", "csim", "fid", "lse_c")
_TAB2 = ("csim", "fid", "lse_c")
PAPER_TABLES: dict[str, tuple[str, dict[str, dict[str, float]]]] = {
    "same-identity": ("Tab. 1", {
        name: dict(zip(_TAB1, values)) for name, values in [
            ("OTAvatar", (13.85, 0.488, 0.432, 0.559, 78.98, 5.908)),
            ("NeRFFaceSpeech", (13.90, 0.520, 0.480, 0.580, 64.60, 4.880)),
            ("HiDe-NeRF", (21.44, 0.685, 0.221, 0.716, 28.63, 5.552)),
            ("Real3D-Portrait", (22.40, 0.758, 0.191, 0.761, 35.69, 6.681)),
            ("GAGAvatar + ARtalker", (23.08, 0.786, 0.182, 0.753, 37.89, 6.580)),
            ("Splat-Portrait", (23.87, 0.814, 0.128, 0.811, 25.58, 6.328)),
        ]
    }),
    "cross-identity": ("Tab. 2", {
        name: dict(zip(_TAB2, values)) for name, values in [
            ("NeRFFaceSpeech", (0.450, 50.80, 4.423)),
            ("OTAvatar", (0.521, 79.32, 5.032)),
            ("HiDe-NeRF", (0.628, 31.23, 5.652)),
            ("Real3D-Portrait", (0.691, 40.82, 6.521)),
            ("GAGAvatar + ARtalker", (0.687, 35.82, 6.503)),
            ("Splat-Portrait", (0.726, 28.62, 6.218)),
        ]
    }),
}  # fmt: skip
HEADERS = {
    "psnr": "PSNR↑", "ssim": "SSIM↑", "lpips": "LPIPS↓", "csim": "CSIM↑", "fid": "FID↓", "lse_c": "LSE-C↑", "lse_d": "LSE-D↓",
    "lmd": "LMD↓", "mouth_r": "mouth r↑", "mouth_amp": "mouth amp→1", "mouth_r_audio": "mouth r (driving)↑",
    "sync_c": "expert C↑", "sync_d": "expert D↓", "sync_offset": "expert offset→0", "sync_in_sync": "in sync↑",
    "views_face": "views: face↑", "views_csim": "views: CSIM↑", "views_tearing": "views: tearing↓",
}  # fmt: skip
_NAMES = {"psnr": "PSNR", "ssim": "SSIM", "lpips": "LPIPS", "csim": "CSIM", "fid": "FID", "lse_c": "LipSync", "lse_d": "LipSync",
          "lmd": "Mouth", "mouth_r": "Mouth", "mouth_amp": "Mouth", "mouth_r_audio": "Mouth",
          "sync_c": "Sync expert", "sync_d": "Sync expert", "sync_offset": "Sync expert", "sync_in_sync": "Sync expert",
          "views_face": "Views", "views_csim": "Views", "views_tearing": "Views"}  # fmt: skip
DECIMALS = {"psnr": 2, "ssim": 3, "lpips": 3, "csim": 3, "fid": 2, "lse_c": 3, "lse_d": 3, "lmd": 3, "mouth_r": 3, "mouth_amp": 3,
             "mouth_r_audio": 3, "sync_c": 3, "sync_d": 3, "sync_offset": 1, "sync_in_sync": 2,
             "views_face": 2, "views_csim": 3, "views_tearing": 2}  # fmt: skip


def paper_reference(protocol: str) -> dict[str, Any]:
    table, rows = PAPER_TABLES[protocol]
    return {"source": f"paper {table}", "dataset": PAPER_DATASET, "rows": rows}


def is_unavailable(value: Any) -> bool:
    """Whether an aggregate entry is a metric's ``"unavailable: reason"`` rather than a score."""
    return isinstance(value, str) and value.startswith("unavailable")


def json_number(value: float | None) -> float | str | None:
    """Numbers as JSON allows them: infinities (identical images' PSNR) as strings."""
    if value is None or math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def clip_record(clip: ClipScores) -> dict[str, Any]:
    return {
        "id": clip.id,
        "source": clip.source,
        "frames": clip.frames,
        "scored_frames": clip.scored_frames,
        **{score: json_number(clip.values[score]) for score in SCORES if score in clip.values},
        "pairs": dict(clip.counts),
        "notes": dict(clip.notes),
    }


def write_json(path: Path, report: dict[str, Any]) -> None:
    with atomic_open(path, "w") as f:
        json.dump(report, f, indent=1, allow_nan=False)
        f.write("\n")


def write_csv(path: Path, clips: list[ClipScores], aggregate: dict[str, Any]) -> None:
    """One row per clip and a last ``aggregate`` row; empty cells where a score does not exist."""
    columns = [s for s in SCORES if s in aggregate]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["clip", "source", "frames", "scored_frames", *columns])

    def cell(value: Any) -> str:
        return "" if value is None or is_unavailable(value) else str(json_number(value))

    for clip in clips:
        writer.writerow([clip.id, clip.source, clip.frames, clip.scored_frames, *(cell(clip.values.get(s)) for s in columns)])
    total_frames = sum(c.frames for c in clips)
    writer.writerow(["aggregate", "", total_frames, sum(c.scored_frames for c in clips), *(cell(aggregate[s]) for s in columns)])
    with atomic_open(path, "w") as f:
        f.write(buffer.getvalue())


def _format(score: str, value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return "unavailable" if is_unavailable(value) else value
    return f"{value:.{DECIMALS[score]}f}"


def results_table(protocol: str, label: str, aggregate: dict[str, Any], clips: int) -> Table:
    """Our aggregate scores under the paper's reference rows; unavailable metrics' reasons in the caption."""
    table_name, rows = PAPER_TABLES[protocol]
    columns = [s for s in SCORES if s in aggregate or any(s in r for r in rows.values())]
    unavailable = {f"{_NAMES[s]} {v}" for s, v in aggregate.items() if is_unavailable(v)}
    notes = ["LipSync = SyncNet confidence LSE-C (the paper's LipSync column)", *sorted(unavailable)]
    table = Table(
        title=f"{protocol} evaluation, {clips} clip{'s' if clips != 1 else ''}; reference rows: paper {table_name} on {PAPER_DATASET}",
        caption="\n".join(notes),
        caption_justify="left",
    )
    table.add_column("method")
    for score in columns:
        table.add_column(HEADERS[score], justify="right")
    for name, values in rows.items():
        table.add_row(f"{name} (paper, {PAPER_DATASET})", *(_format(s, values.get(s)) for s in columns), style="dim")
    table.add_section()
    table.add_row(label, *(_format(s, aggregate.get(s)) if s in aggregate else "n/a" for s in columns), style="bold")
    return table
