"""Regenerate the figure tables of README.md and MODEL_CARD.md from the JSON in ``benchmarks/results/``.

    .venv/bin/python scripts/figures.py            # rewrite the tables between the marker comments
    .venv/bin/python scripts/figures.py --check    # exit 1 if a table differs from what its JSON gives

Every table sits between ``<!-- figures:NAME -->`` and ``<!-- /figures:NAME -->`` and is made only
from its JSON file, whose run record (commit, date, machine, versions, command line) is printed
under it. To refresh one, rerun the command of its ``SOURCES`` entry, then this script.
``tests/test_figures.py`` runs ``--check``, so a typed figure cannot drift from its run.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DOCUMENTS = (REPO / "README.md", REPO / "MODEL_CARD.md")

# name -> (JSON file, the command that writes it)
SOURCES = {
    "render": ("render.json", ".venv/bin/python benchmarks/render.py --json benchmarks/results/render.json"),
    "animate": ("animate.json", ".venv/bin/python benchmarks/animate.py --presets small --json benchmarks/results/animate.json"),
    "learn-synthetic": ("learn_synthetic.json", ".venv/bin/python benchmarks/learn_synthetic.py --json benchmarks/results/learn_synthetic.json"),
    "default-model": ("default_model.json", "bash scripts/evaluate_default_model.sh"),
    "lipsync": ("lipsync.json", ".venv/bin/python benchmarks/lipsync.py --videos runs/default-model/videos --sync runs/default-model/sync.ckpt --json benchmarks/results/lipsync.json"),
    "lipsync-previous": ("lipsync_previous.json", ".venv/bin/python benchmarks/lipsync.py --videos runs/default-model/videos --model runs/default-model/previous-model/splat_portrait/assets/default --sync runs/default-model/sync.ckpt --json benchmarks/results/lipsync_previous.json"),
    "sync-expert": ("sync_expert.json", ".venv/bin/python benchmarks/sync_expert.py runs/default-model/sync.ckpt runs/default-model/data --json benchmarks/results/sync_expert.json"),
    "ablation-mouth": ("ablation_mouth.json", "RUNS=runs/mouth-400 bash scripts/ablate_mouth_terms.sh"),
    "ablation-mouth-long": ("ablation_mouth_long.json", 'RUNS=runs/v3 STEPS=2000 LR=5e-4 NAMES=mouth-weight+lip-loss,mouth-weight+lip-loss+lip-gap,mouth-weight+lip-loss+still OUT=benchmarks/results/ablation_mouth_long.json bash scripts/ablate_mouth_terms.sh'),
    "ablation-mouth-code": ("ablation_mouth_code.json", "RUNS=runs/v4 STEPS=1500 LR=5e-4 NAMES=mouth-weight+lip-loss+still+mouth-code,mouth-weight+lip-loss+lip-gap+still+mouth-code OUT=benchmarks/results/ablation_mouth_code.json bash scripts/ablate_mouth_terms.sh"),
    "views": ("views.json", ".venv/bin/python benchmarks/views.py --json benchmarks/results/views.json"),
    "views-previous": ("views_previous.json", ".venv/bin/python benchmarks/views.py --model runs/before-footprint/splat_portrait/assets/default --json benchmarks/results/views_previous.json"),
    "ablation-views": ("ablation_views.json", "RUNS=runs/abl INIT=runs/v2/static/static.ckpt PRIOR=runs/abl/prior.ckpt bash scripts/ablate_view_terms.sh"),
    "stream": ("stream.json", ".venv/bin/python benchmarks/stream.py --json benchmarks/results/stream.json"),
    "talking": ("talking.json", ".venv/bin/python benchmarks/talking.py --model \"same weights, no loudness gate (a11eaa4)=runs/default-model/a11eaa4/splat_portrait/assets/default\" "
                "--model \"stage II on all 127 clips (2dd52c5)=runs/default-model/previous-model/splat_portrait/assets/default\" --json benchmarks/results/talking.json"),
}


def load(name: str) -> dict:
    return json.loads((RESULTS / SOURCES[name][0]).read_text(encoding="utf-8"))


def provenance(data: dict, name: str) -> str:
    record = data["record"]
    machine = record["machine"]
    where = f"{machine['cpus']} CPUs" + (f", {machine['gpu']}" if machine.get("gpu") else ", no GPU")
    versions = ", ".join(f"{k} {v}" for k, v in record["versions"].items())
    dirty = " with uncommitted changes" if record.get("uncommitted_changes") else ""
    return (f"*From `benchmarks/results/{SOURCES[name][0]}`: `{SOURCES[name][1]}`, run {record['date'][:10]} at commit "
            f"`{record['commit'][:10]}`{dirty} on {where} ({versions}).*")  # fmt: skip


def score(value, name: str, missing: str = "undefined") -> str:
    """A score as the evaluation report writes it (its decimals), or ``missing`` where it is not a number."""
    from splat_portrait.evaluation.report import DECIMALS

    return f"{value:.{DECIMALS[name]}f}" if isinstance(value, (int, float)) else missing


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def render_table() -> str:
    data = load("render")
    rows = [[r["backend"], r["device"], r["resolution"], f"{r['splats']:,}", f"{r['forward_s']:.3f}", f"{r['forward_backward_s']:.3f}",
             f"{r['peak_mb']:.0f}"] for r in data["rows"]]  # fmt: skip
    headers = ["backend", "device", "size", "splats", "forward s", "forward+backward s", "peak MB"]
    return table(headers, rows) + "\n\n" + provenance(data, "render")


def animate_table() -> str:
    data = load("animate")
    rows = [[r["preset"], f"{r['size']}²", r["engine"], f"{r['frames']}", f"{r['total']:.1f}", f"{r['fps']:.1f}"] for r in data["rows"]]
    headers = ["preset (untrained)", "size", "engine", "frames", "seconds end to end", "frames/s"]
    return table(headers, rows) + "\n\n" + provenance(data, "animate")


def stream_table() -> str:
    data = load("stream")
    headers = ["speech", "size", "latency after the audio a frame needs: median / p95 / max ms", "+ look-ahead ms",
               "sustained frames/s", "file: video / audio end vs speech (frames)"]  # fmt: skip
    rows = [[f"{r['seconds']:.0f} s", f"{r['size']}²", f"{r['median_ms']:.0f} / {r['p95_ms']:.0f} / {r['max_ms']:.0f}",
             f"{r['lookahead_ms']:.0f}", f"{r['fps']:.1f}", f"{r['skew_frames']:+.2f} / {r['audio_skew_frames']:+.2f}"]
            for r in data["rows"]]  # fmt: skip
    return table(headers, rows) + "\n\n" + provenance(data, "stream")


def learn_table() -> str:
    data = load("learn-synthetic")
    mouth = data.get("mouth_r", {})
    rows = [
        ["target-view PSNR (dB), held-out identities", f"{data['psnr']['untrained']:.2f}", f"{data['psnr']['trained']:.2f}"],
        ["rendered depth MAE (world units)", f"{data['depth_mae']['untrained']:.3f}", f"{data['depth_mae']['trained']:.3f}"],
    ]
    if mouth:
        rows.append([f"mouth: Pearson r(Δd, GT opening), {mouth['frames']} held-out frames", "undefined (Δd = 0)", f"{mouth['held_out']:.3f}"])
    rows += [[f"seconds per step, `{name}`", "", f"{value:.2f}"] for name, value in data.get("seconds_per_step", {}).items()]
    return table(["measure (synthetic heads)", "untrained", "trained"], rows) + "\n\n" + provenance(data, "learn-synthetic")


EVALUATION_COLUMNS = ("psnr", "ssim", "csim", "mouth_r", "mouth_amp", "lmd")


def _evaluation_rows(report: dict, label: str) -> list[list[str]]:
    rows = []
    for kind in ("real", "synthetic"):
        scores = report["aggregate_by_kind"].get(kind)
        if scores:
            rows.append([f"{label}, {kind} clips", str(scores["clips"]), *(score(scores.get(s), s, "n/a") for s in EVALUATION_COLUMNS)])
    return rows


def default_model_table() -> str:
    data = load("default-model")
    rows = [
        *_evaluation_rows(data["model"], "bundled model"), *_evaluation_rows(data["previous"], "stage II on all 127 clips, lip losses at 10 (2dd52c5)"),
        *_evaluation_rows(data["copy_source"], "copy-source baseline"),
    ]  # fmt: skip
    headers = ["method (same-identity, held-out identities)", "clips", "PSNR ↑", "SSIM ↑", "CSIM ↑ (dlib)", "mouth r ↑", "mouth amp (1 = real)", "LMD ↓"]
    return table(headers, rows) + "\n\n" + provenance(data["model"], "default-model")


def _lipsync_rows(data: dict, label: str) -> list[list[str]]:
    rows = []
    for method in ("model", "copy-source"):
        m = data["held_out_means"][method]
        in_sync = f"{m['in_sync']:.0%}" if "in_sync" in m else "n/a"
        name = label if method == "model" else "copy-source (reference)"
        rows.append([name, str(m["windows"]), *(score(m[s], s) for s in ("lmd", "mouth_r", "mouth_amp")), in_sync])
    return rows


def lipsync_table() -> str:
    data = load("lipsync")
    headers = ["5 s windows of held-out identities, first frame + own speech", "windows", "LMD ↓ (inter-ocular)", "mouth r ↑",
               "mouth amp (1 = real)", "expert offset 0"]  # fmt: skip
    previous = load("lipsync-previous")
    ours, copy_source = _lipsync_rows(data, "bundled model")
    rows = [ours, _lipsync_rows(previous, "stage II on all 127 clips, lip losses at 10 (2dd52c5)")[0], copy_source]
    return table(headers, rows) + "\n\n" + provenance(data, "lipsync") + "\n" + provenance(previous, "lipsync-previous")


def ablation_table(name: str = "ablation-mouth") -> str:
    data = load(name)
    labels = {
        "plain-l2": "plain L2 (the paper's objective)", "mouth-weight": "mouth box weighed 10x", "mouth-weight+lip-loss": "mouth box 10x + lip loss",
        "mouth-weight+lip-loss+lip-gap": "mouth box 10x + lip loss + inner-lip gap loss 5",
        "mouth-weight+lip-loss+still": "mouth box 10x + lip loss + still face 0.1",
        "mouth-weight+lip-loss+still+mouth-code": "mouth box 10x + lip loss + still face 0.1 + mouth code",
        "mouth-weight+lip-loss+lip-gap+still+mouth-code": "mouth box 10x + lip loss + inner-lip gap loss 5 + still face 0.1 + mouth code",
    }  # fmt: skip
    columns = ("mouth_r", "mouth_amp", "lmd", "psnr", "ssim", "sync_in_sync")
    rows = [[labels.get(row_name, row_name), *(score(row.get(s), s, "n/a") for s in columns)] for row_name, row in data["rows"].items()]
    lr = f", lr {data['lr']:g}" if "lr" in data else ""
    headers = [f"stage II ({data['stage_two_steps']} steps{lr}, static frozen), held-out identities", "mouth r ↑", "mouth amp (1 = real)",
               "LMD ↓", "PSNR ↑", "SSIM ↑", "expert in sync ↑"]  # fmt: skip
    return table(headers, rows) + "\n\n" + provenance(data, name)


def views_ablation_table() -> str:
    data = load("ablation-views")
    steps = data["fine_tune_steps"]
    labels = {
        "stage-I": "stage-I checkpoint as it is (free splats)", "footprint-untrained": "footprint 0.5 switched on, not trained",
        "continue": f"{steps} more steps, free splats", "footprint": f"{steps} steps with footprint 0.5",
        "footprint+smooth": f"{steps} steps, footprint 0.5 + depth smoothness 0.01", "footprint+sds": f"{steps} steps, footprint 0.5 + depth smoothness 0.01 + SDS (bullet path, landmark crop)",
    }  # fmt: skip
    rows = []
    for name, row in data["rows"].items():
        held, samples = row["held_out"], row["samples"]
        rows.append([labels.get(name, name), score(held.get("psnr"), "psnr", "n/a"), score(held.get("ssim"), "ssim", "n/a"),
                     f"{held['views_face']:.2f}", score(held["views_csim"], "csim", "-"), f"{held['views_tearing']:+.3f}",
                     f"{samples['face_found']:.2f}", score(samples["csim"], "csim", "-"), f"{samples['tearing_mean']:+.3f}"])  # fmt: skip
    headers = ["stage I fine-tune from one checkpoint", "PSNR ↑ (held-out)", "SSIM ↑", "views: face ↑", "views: CSIM ↑",
               "views: tearing ↓", "samples: face ↑", "samples: CSIM ↑", "samples: tearing ↓"]  # fmt: skip
    return table(headers, rows) + "\n\n" + provenance(data, "ablation-views")


def sync_expert_table() -> str:
    data = load("sync-expert")
    rows = []
    for split, label in (("test", "held-out identities"), ("train", "training clips")):
        overall = data["splits"][split]["overall"]
        rows.append([label, str(len(data["splits"][split]["clips"])), str(overall["windows"]), f"{overall['offset_correct']:.0%}",
                     f"{overall['pairs_ranked']:.0%} of {overall['pairs']}"])  # fmt: skip
    headers = ["clips", "count", "5 s windows", "offset found = 0", "true pair above a 3-15 frame shift"]
    return table(headers, rows) + "\n\n" + provenance(data, "sync-expert")


def talking_table() -> str:
    data = load("talking")
    rows = [[r["model"], f"{r['mouth']:.2f}", f"{r['upper_face']:.2f}", f"{r['mouth_over_upper']:.1f}x", f"{r['mouth_room_tone']:.2f}",
             f"{r['speech_over_room_tone']:.1f}x"] for r in data["rows"]]  # fmt: skip
    headers = ["astronaut, 4 s (8-bit levels)", "mouth, speech", "upper face, speech", "mouth / upper face", "mouth, room tone", "speech / room tone"]
    return table(headers, rows) + "\n\n" + provenance(data, "talking")


def _views_row(label: str, row: dict) -> list[str]:
    csim = score(row["csim"], "csim", "-")
    tearing = ("-", "-") if row["tearing_mean"] is None else (f"{row['tearing_mean']:+.2f}", f"{row['tearing_worst']:+.2f} ({row['worst_view']})")
    return [label, f"{row['face_found']:.2f}", csim, *tearing]


def views_table() -> str:
    data, previous = load("views"), load("views-previous")
    rows = []
    for name, methods in data["portraits"].items():
        rows.append(_views_row(f"bundled model: {name}", methods["model"]))
        rows.append(_views_row(f"bundled model before the surface footprint: {name}", previous["portraits"][name]["model"]))
        rows.append(_views_row(f"copy-source (reference): {name}", methods["copy-source"]))
    headers = ["portrait, yaw −30…30° × pitch 0/±12.5°", "face found", "CSIM to source", "tearing, mean", "tearing, worst (yaw/pitch)"]
    return table(headers, rows) + "\n\n" + provenance(data, "views") + "\n" + provenance(previous, "views-previous")


def paper_table() -> str:
    from splat_portrait.evaluation.report import PAPER_TABLES

    name, rows = PAPER_TABLES["same-identity"]
    scores = ("psnr", "ssim", "lpips", "csim", "fid", "lse_c")
    body = [[method, *(score(values[s], s) for s in scores)] for method, values in rows.items()]
    note = (f"*The paper's {name} (HDTF, 256², 50 test identities, GPU-trained, ArcFace CSIM, SyncNet LipSync), copied from the paper for "
            "reference. Not comparable with the tables above: other data, resolution, recogniser and training budget.*")  # fmt: skip
    return table(["method (paper, HDTF)", "PSNR ↑", "SSIM ↑", "LPIPS ↓", "CSIM ↑", "FID ↓", "LipSync ↑"], body) + "\n\n" + note


TABLES: dict[str, Callable[[], str]] = {
    "render": render_table,
    "animate": animate_table,
    "stream": stream_table,
    "learn-synthetic": learn_table,
    "default-model": default_model_table,
    "lipsync": lipsync_table,
    "sync-expert": sync_expert_table,
    "talking": talking_table,
    "ablation-mouth": ablation_table,
    "ablation-mouth-long": lambda: ablation_table("ablation-mouth-long"),
    "ablation-mouth-code": lambda: ablation_table("ablation-mouth-code"),
    "views": views_table,
    "ablation-views": views_ablation_table,
    "paper-hdtf": paper_table,
}
_BLOCK = re.compile(r"<!-- figures:([a-z-]+) -->\n.*?<!-- /figures:\1 -->", re.S)


def regenerate(text: str) -> str:
    """``text`` with every marked table rebuilt from its JSON."""
    return _BLOCK.sub(lambda m: f"<!-- figures:{m.group(1)} -->\n{TABLES[m.group(1)]()}\n<!-- /figures:{m.group(1)} -->", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Only compare; exit 1 if any table is out of date.")
    args = parser.parse_args()
    stale = []
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        new = regenerate(text)
        if new != text:
            stale.append(document.name)
            if not args.check:
                document.write_text(new, encoding="utf-8")
    if args.check and stale:
        sys.exit(f"figure tables out of date in {', '.join(stale)}: run .venv/bin/python scripts/figures.py")
    print(("out of date: " if args.check else "rewrote: ") + ", ".join(stale) if stale else "all figure tables match their JSON")


if __name__ == "__main__":
    main()
