"""Animation speed: ``.venv/bin/python benchmarks/animate.py [--presets small paper] [--device auto]``.

For each model preset (untrained weights: speed does not depend on them) the script exports the
model to ONNX, then animates a real portrait (``../shared/data/portraits/happy_256.png``) with a
10 s speech clip (a real recording looped to length) through the same :class:`Animator` twice:
once with ONNX Runtime running the exported graphs, once with PyTorch eager running the same
networks. It prints the seconds spent in each stage and the end-to-end frames per second, where
end to end is from reading the inputs to the finished MP4 (model loading is reported apart: batch
mode pays it once). A second table times the two graphs alone (median of repeated calls).

The ``paper`` preset is built with 80-d mel audio features instead of wav2vec2's 1024 (no
wav2vec2 weights are available offline); only the first AudioNet convolution differs, a negligible
part of the decoder. On a CPU the ``paper`` preset is too slow for a 10 s clip in a benchmark, so
it animates ``--cpu-paper-seconds`` of speech and the 10 s figures are extrapolated from that run's
fixed (per clip) and per-frame costs; such rows are marked ``extrapolated``.

PyTorch's OpenMP threads are set to wait passively (``OMP_WAIT_POLICY=passive``, unless already
set) so that eager timings are not dominated by spinning barriers when the machine's cores are
shared; the animation pipeline itself renders on one thread and is unaffected.

Targets (issue 7): >= 5 frames/s end to end for ``small`` at 128^2 on a 2-core CPU; >= 100 frames/s
for ``paper`` at 256^2 on an H100.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from splat_portrait import camera  # noqa: E402
from splat_portrait.environment import run_record  # noqa: E402
from splat_portrait.export.graphs import export_model  # noqa: E402
from splat_portrait.media.ffmpeg import ffmpeg_exe  # noqa: E402
from splat_portrait.models import TalkingHead, load_model, preset, save_checkpoint  # noqa: E402
from splat_portrait.runtime.engines import OnnxEngine, TorchEngine  # noqa: E402
from splat_portrait.runtime.inputs import load_portrait  # noqa: E402
from splat_portrait.runtime.model_dir import open_model_dir  # noqa: E402
from splat_portrait.runtime.outputs import OutputPaths  # noqa: E402
from splat_portrait.runtime.pipeline import STAGES, AnimateOptions, Animator  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
PORTRAIT = DATA / "portraits" / "happy_256.png"
SPEECH = DATA / "audio" / "radio31_16k_stereo.wav"
CLIP_SECONDS = 10.0
FIXED_STAGES = ("image", "audio", "features", "camera", "generator")
TARGETS = {("small", "cpu"): 5.0, ("paper", "cuda"): 100.0}


def make_speech(path: Path, seconds: float) -> Path:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-stream_loop", "-1", "-i", str(SPEECH), "-t", f"{seconds}", str(path)], check=True)
    return path


def make_model(name: str, folder: Path) -> tuple[Path, Path, float]:
    """(checkpoint, exported model dir, export seconds) of an untrained ``name`` model."""
    overrides = {"feature_dim": 80} if name == "paper" else {}
    torch.manual_seed(0)
    model = TalkingHead(preset(name, **overrides))
    with torch.no_grad():
        model.dynamic.conv_out.weight.normal_(0, 0.003)  # non-zero offsets, as a trained decoder gives
    ckpt = folder / f"{name}.ckpt"
    save_checkpoint(ckpt, model)
    started = time.perf_counter()
    export_model(ckpt, folder / name)
    return ckpt, folder / name, time.perf_counter() - started


def run(animator: Animator, speech: Path, out: Path, clip_frames: int) -> dict:
    result = animator.animate(PORTRAIT, speech, OutputPaths(out))
    seconds = dict(result.seconds)
    row = {"frames": result.frames, "seconds": seconds, "total": result.total_seconds, "extrapolated": False}
    if result.frames != clip_frames:
        fixed = sum(seconds.get(s, 0.0) for s in FIXED_STAGES)
        per_frame = (result.total_seconds - fixed) / result.frames
        row |= {"total": fixed + per_frame * clip_frames, "extrapolated": True}
        row["seconds"] = {s: v if s in FIXED_STAGES else v / result.frames * clip_frames for s, v in seconds.items()}
    row["fps"] = clip_frames / row["total"]
    return row


def time_graphs(engine, size: int, feature_dim: int, batch: int, repeats: int) -> tuple[float, float]:
    """Median seconds of one generator call and of the audio decoder per frame at ``batch`` frames."""
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, size, size, generator=gen) * 2 - 1
    c2w, intrinsics = camera.default_c2w((1,)), camera.default_intrinsics((1,))
    windows, delta_t = torch.randn(batch, 8, 16, feature_dim, generator=gen), torch.rand(batch, generator=gen)

    def timed(fn) -> float:
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            if engine.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if engine.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    encoded = engine.encode(image, c2w, intrinsics)
    return timed(lambda: engine.encode(image, c2w, intrinsics)), timed(lambda: engine.dynamic_offsets(encoded, windows, delta_t)) / batch


def print_tables(rows: list[dict], graph_rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(200, Console().width))
    table = Table(title=f"animate: seconds per stage for a {CLIP_SECONDS:g} s clip ({int(CLIP_SECONDS * 25)} frames), end-to-end frames/s")
    stages = [s for s in STAGES if any(s in r["seconds"] for r in rows)]
    for h in ["preset", "size", "engine", "load s", *stages, "total s", "frames/s", "target"]:
        table.add_column(h, justify="left" if h in ("preset", "engine") else "right")
    for r in rows:
        target = TARGETS.get((r["preset"], r["device"]))
        verdict = "-" if target is None else f">= {target:g} " + ("met" if r["fps"] >= target else "MISSED")
        note = " (extrapolated)" if r["extrapolated"] else ""
        table.add_row(
            r["preset"], f"{r['size']}²", r["engine"], f"{r['load']:.2f}",
            *(f"{r['seconds'].get(s, 0.0):.2f}" for s in stages), f"{r['total']:.1f}{note}", f"{r['fps']:.2f}", verdict,
        )  # fmt: skip
    console.print(table)
    graphs = Table(title="the graphs alone: median seconds (generator per call, audio decoder per frame at batch 16)")
    for h in ["preset", "engine", "generator s", "audio decoder s/frame"]:
        graphs.add_column(h, justify="left" if h in ("preset", "engine") else "right")
    for g in graph_rows:
        graphs.add_row(g["preset"], g["engine"], f"{g['generator']:.4f}", f"{g['decoder']:.4f}")
    console.print(graphs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["small", "paper"])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--cpu-paper-seconds", type=float, default=2.0, help="Speech animated for the paper preset on a CPU.")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-eager", action="store_true", help="Only time ONNX Runtime in the animation table.")
    parser.add_argument("--json", type=Path, help="Also write both tables, with the run record (commit, machine, versions), here.")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"sample data folder {DATA} is absent")

    load = os.getloadavg()[0]
    print(f"python {platform.python_version()}, torch {torch.__version__}, {os.cpu_count()} CPUs, load average {load:.1f}; "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")  # fmt: skip
    rows, graph_rows = [], []
    clip_frames = int(CLIP_SECONDS * 25)
    started = time.perf_counter()
    load_portrait(PORTRAIT, 64)  # loads dlib's models once, so no engine's first run pays for them
    print(f"face detector and landmark model loaded in {time.perf_counter() - started:.2f} s")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in args.presets:
            ckpt, model_path, export_s = make_model(name, folder)
            print(f"{name}: exported in {export_s:.1f} s", flush=True)
            started = time.perf_counter()
            model_dir = open_model_dir(model_path)
            onnx_engine = OnnxEngine(model_dir, args.device)
            onnx_load = time.perf_counter() - started
            device = onnx_engine.device.type
            seconds = args.cpu_paper_seconds if name == "paper" and device == "cpu" else CLIP_SECONDS
            speech = make_speech(folder / f"speech_{seconds:g}.wav", seconds)
            started = time.perf_counter()
            torch_engine = TorchEngine(load_model(ckpt), onnx_engine.device)
            torch_load = time.perf_counter() - started
            engines = [(onnx_engine, onnx_load)] + ([] if args.skip_eager else [(torch_engine, torch_load)])
            for engine, load_s in engines:
                animator = Animator(engine, model_dir.card, AnimateOptions())
                row = run(animator, speech, folder / f"{name}.mp4", clip_frames)
                rows.append({"preset": name, "size": model_dir.card.image_size, "engine": engine.name, "device": device, "load": load_s, **row})
                print(f"{name} {engine.name}: {row['fps']:.2f} frames/s", flush=True)
            for engine in (onnx_engine, torch_engine):
                gen_s, dec_s = time_graphs(engine, model_dir.card.image_size, 80, 16, args.repeats if name != "paper" or device != "cpu" else 2)
                graph_rows.append({"preset": name, "engine": engine.name, "generator": gen_s, "decoder": dec_s})
    print_tables(rows, graph_rows)
    if args.json:
        record = {"benchmark": "animate", "clip_seconds": CLIP_SECONDS, "record": run_record(seed=0), "rows": rows, "graphs": graph_rows}
        args.json.write_text(json.dumps(record, indent=1))
    print(f"load average at the end {os.getloadavg()[0]:.1f} (the machine may be shared: compare runs at similar load)")


if __name__ == "__main__":
    main()
