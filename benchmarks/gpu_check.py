"""One prepared GPU check: ``python3 benchmarks/gpu_check.py [--dry-run] [--budget 480] [--json FILE]``.

A GPU machine is lent rarely, for minutes, with no package registry, so everything it needs is made
here first and the run there must not be improvised:

1. Here (CPU, with the package index): ``python benchmarks/gpu_check.py --prepare [--corpus DIR]``
   fills the ignored folder ``.gpu/``: ``wheels/`` (gsplat, the one dependency the device image
   lacks), ``inputs.npz`` (a posed portrait crop and 10 s of speech, so that neither dlib's 100 MB
   landmark model nor ffmpeg has to travel) and, with ``--corpus``, ``data/``: the training corpus
   preprocessed at 128². It prints what will travel against the 64 MiB carry limit.
2. There: ``python3 benchmarks/gpu_check.py --json $OUT/gpu_check.json`` with ``.gpu`` carried.

Steps, each in its own process with its own time limit, so a hang costs only that step and the whole
run ends within ``--budget`` seconds (default 480): ``install`` (the wheels and this repository into
a private site folder, offline), ``environment``, ``gsplat-jit`` (gsplat compiles its CUDA kernels
on first use: timed, for this GPU's architecture only, cached in ``.gpu/torch_extensions`` for the
later steps), ``gpu-tests`` (the ``gpu``-marked tests: gsplat parity, a bf16 CUDA training step),
``render-bench`` (``benchmarks/render.py``), ``animate-bench`` (``small`` and ``paper`` at 128² and
256², ONNX Runtime with the CUDA provider where it has one and PyTorch on CUDA, gsplat rendering;
frames/s from the prepared inputs to frames in memory, and with the MP4 encode where ffmpeg exists),
``train-paper`` (50 steps of ``paper`` at 256² on synthetic heads: s/step, peak memory) and, given
``--train-default DATA_DIR``, ``train-default`` (the bundled model's recipe on the GPU, exported into
the JSON's folder). Every step writes its figures as it goes, so a step stopped at its limit still
reports what it measured; failures are recorded with their reason, never fatal to the run.

``--dry-run`` walks every step on a CPU at toy sizes (wheels checked with ``pip --dry-run``, the repo
really installed into a temporary folder, ``gpu`` tests collected, not run), so the script cannot rot:
``tests/test_gpu_check.py`` runs it in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
GPU_DIR = REPO / ".gpu"
WHEELS = GPU_DIR / "wheels"
INPUTS = GPU_DIR / "inputs.npz"
EXTENSIONS = GPU_DIR / "torch_extensions"
SHARED = REPO / ".." / "shared" / "data"
CARRY_LIMIT_MB = 64
# The device image's Python (see README: GPU machines); wheels are fetched for it.
DEVICE_PYTHON = "3.12"
WHEEL_PACKAGES = ("gsplat",)
CLIP_SECONDS = 10.0
ANIMATE_ROW_SECONDS = 12.0  # wall-clock cap per animate row; slower rows report the frames they reached
TARGET_PAPER_FPS = 100.0


@dataclass(frozen=True)
class Step:
    name: str
    budget_s: float
    run: Callable[["Context"], None]
    needs: str = ""  # a command-line option without which the step is skipped


@dataclass
class Context:
    """What a step knows: the mode and where to write its figures (re-written after every figure)."""

    dry_run: bool
    result_file: Path
    work: Path
    train_default: Path | None
    figures: dict

    def record(self, **figures) -> None:
        self.figures.update(figures)
        self.result_file.write_text(json.dumps(self.figures, indent=1, default=str))


# --------------------------------------------------------------------------------------- steps


def step_install(ctx: Context) -> None:
    site = Path(os.environ["SPLAT_GPU_SITE"])
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir", "--upgrade"]
    wheels = sorted(WHEELS.glob("*.whl")) if WHEELS.is_dir() else []
    started = time.perf_counter()
    if wheels:
        _run([*pip, *(["--dry-run"] if ctx.dry_run else []), "--target", str(site), *map(str, wheels)])
    ctx.record(wheels=[w.name for w in wheels], wheels_s=round(time.perf_counter() - started, 2))
    started = time.perf_counter()
    # The package maps cli/ and export/ into splat_portrait (setuptools package-dir), so the
    # repository must be installed, not just put on sys.path; offline, with the image's setuptools.
    _run([*pip, "--no-build-isolation", "--target", str(site), str(REPO)])
    ctx.record(package_s=round(time.perf_counter() - started, 2))
    if not wheels:
        raise StepSkipped(f"no wheels in {WHEELS} (run --prepare here first); the repository alone was installed")


def step_environment(ctx: Context) -> None:
    import torch

    from splat_portrait.environment import environment_report, run_record

    record = {**run_record(), "command": json.loads(os.environ.get("SPLAT_GPU_COMMAND", "null")) or sys.argv}
    ctx.record(record=record, checks={c.name: {"ok": c.ok, "detail": c.detail} for c in environment_report()})
    nvcc = shutil.which("nvcc")
    ctx.record(nvcc=_first_line([nvcc, "--version"], last=True) if nvcc else None, ffmpeg=_has_ffmpeg())
    if torch.cuda.is_available():
        ctx.record(gpu=torch.cuda.get_device_name(0), capability=".".join(map(str, torch.cuda.get_device_capability(0))))


def step_gsplat_jit(ctx: Context) -> None:
    import torch

    from splat_portrait.render import gsplat_status

    started = time.perf_counter()
    ok, detail = gsplat_status()
    ctx.record(seconds=round(time.perf_counter() - started, 1), usable=ok, detail=detail)
    if not torch.cuda.is_available():
        raise StepSkipped(detail)
    if not ok:
        raise RuntimeError(detail)


def step_gpu_tests(ctx: Context) -> None:
    # Only the files that hold gpu tests: collecting the others would import what this machine may lack.
    files = sorted(str(p) for p in (REPO / "tests").glob("test_*.py") if "@pytest.mark.gpu" in p.read_text())
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "-rs", *files]
    if ctx.dry_run:
        command.append("--collect-only")
    output = _run(command, check=False)
    lines = [line for line in output.splitlines() if line.strip()]
    ctx.record(summary=lines[-1] if lines else "", skipped=[line for line in lines if line.startswith("SKIPPED")])
    if ctx.dry_run:
        collected = sum("::" in line for line in lines)
        ctx.record(collected=collected)
        if collected < 2:
            raise RuntimeError(f"expected the gpu-marked tests, collected {collected}")
        raise StepSkipped(f"dry run: {collected} gpu tests collected, not run")
    if " failed" in ctx.figures["summary"] or "error" in ctx.figures["summary"]:
        raise RuntimeError(ctx.figures["summary"])


def step_render_bench(ctx: Context) -> None:
    out = ctx.work / "render.json"
    size = ["--resolution", "32", "--repeats", "1"] if ctx.dry_run else []
    ctx.record(output=_run([sys.executable, str(REPO / "benchmarks" / "render.py"), *size, "--json", str(out)]).splitlines()[-12:])
    ctx.record(rows=json.loads(out.read_text())["rows"])


def step_animate_bench(ctx: Context) -> None:
    import torch

    from splat_portrait.export.graphs import export_model
    from splat_portrait.models import TalkingHead, load_model, preset, save_checkpoint
    from splat_portrait.runtime.engines import OnnxEngine, TorchEngine
    from splat_portrait.runtime.model_dir import open_model_dir
    from splat_portrait.runtime.pipeline import AnimateOptions, Animator

    presets = [("tiny", 64)] if ctx.dry_run else [("paper", 256), ("paper", 128), ("small", 128), ("small", 256)]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    for name, size in presets:
        folder = ctx.work / name
        if not (folder / "model").is_dir():
            torch.manual_seed(0)
            model = TalkingHead(preset(name, **({"feature_dim": 80} if name == "paper" else {})))
            save_checkpoint(folder / "model.ckpt", model)
            started = time.perf_counter()
            export_model(folder / "model.ckpt", folder / "model")
            rows.append({"preset": name, "event": "export", "seconds": round(time.perf_counter() - started, 1)})
        model_dir = open_model_dir(folder / "model")
        portrait, samples = load_inputs(model_dir.card.image_size, ctx.dry_run)
        engines = [lambda: TorchEngine(load_model(folder / "model.ckpt"), device), lambda: OnnxEngine(model_dir, "auto")]
        for make_engine in engines:
            engine = make_engine()
            animator = Animator(engine, model_dir.card, AnimateOptions(size=size))
            rows.append({"preset": name, "size": size, "engine": engine.name, **_frames_per_second(animator, portrait, samples)})
            ctx.record(rows=rows)
    paper = [r for r in rows if r.get("preset") == "paper" and r.get("size") == 256]
    if paper:
        best = max(r["frames_per_second"] for r in paper)
        ctx.record(paper_256_best_fps=best, target=f">= {TARGET_PAPER_FPS:g} frames/s (without the MP4 encode where ffmpeg is absent)")


def _frames_per_second(animator, portrait, samples) -> dict:
    """Prepared inputs -> frames in memory: one prepare, then chunks until the clip or the row's time is done."""
    import torch

    from splat_portrait.runtime.compose import to_uint8
    from splat_portrait.runtime.pipeline import StageTimer

    def sync() -> None:
        if animator.engine.device.type == "cuda":
            torch.cuda.synchronize()

    warm = animator.prepare(portrait, samples[: len(samples) // 10])  # first calls build kernels and sessions
    for chunk in animator.chunks(warm):
        to_uint8(chunk.render.rgb)
        break
    sync()
    timer = StageTimer()
    started = time.perf_counter()
    job = animator.prepare(portrait, samples, timer)
    frames = 0
    for chunk in animator.chunks(job, timer):
        with timer("to uint8"):
            to_uint8(chunk.render.rgb)
        frames += len(chunk.index)
        if time.perf_counter() - started > ANIMATE_ROW_SECONDS:
            break
    sync()
    total = time.perf_counter() - started
    return {
        "frames": frames, "of_frames": job.num_frames, "seconds": round(total, 3),
        "frames_per_second": round(frames / total, 2), "stages": {k: round(v, 3) for k, v in timer.seconds.items()},
    }  # fmt: skip


def step_train_paper(ctx: Context) -> None:
    import torch

    from splat_portrait.data.synthetic import SynthConfig, write_synthetic_dataset
    from splat_portrait.training import TrainConfig, train

    cuda = torch.cuda.is_available()
    name, size, steps, clips = ("paper", 256, 50, 2) if not ctx.dry_run else ("tiny", 32, 2, 1)
    data = ctx.work / "synthetic"
    started = time.perf_counter()
    write_synthetic_dataset(data, clips, seed=0, config=SynthConfig(seconds=1.0, size=size, speech="voiced"), test_fraction=0.0)
    ctx.record(data_s=round(time.perf_counter() - started, 1))
    config = TrainConfig("static", str(data), preset=name, resolution=size, steps=steps, batch_size=2, lpips_weight=0.0,
                         checkpoint_every=steps)  # fmt: skip
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    result = train(config, ctx.work / "train-paper", device="cuda" if cuda else "cpu")
    ctx.record(preset=name, resolution=size, steps=result.steps_run, seconds_per_step=round(result.seconds_per_step, 4),
               loss=result.losses["total"], peak_memory_mb=round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None)  # fmt: skip
    if not cuda:
        raise StepSkipped(f"no CUDA: {name} at {size}² on the CPU, {result.seconds_per_step:.2f} s/step")


def step_train_default(ctx: Context) -> None:
    """The bundled model's recipe (scripts/train_default_model.sh) with GPU-sized batches, exported beside the JSON."""
    import torch

    data, runs = ctx.train_default, ctx.work / "default-model"
    steps = ("2", "2") if ctx.dry_run else (os.environ.get("STATIC_STEPS", "3000"), os.environ.get("DYNAMIC_STEPS", "2000"))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    common = ["--batch-size", "2" if ctx.dry_run else "16", "--lr", "2e-4", "--lpips-weight", "0", "--seed", "0", "--device", device]
    size = ["--preset", "tiny", "--resolution", "32"] if ctx.dry_run else ["--preset", "small", "--resolution", "128"]
    cli = [sys.executable, "-m", "splat_portrait.cli"]
    started = time.perf_counter()
    _run([*cli, "train-static", str(data), "-o", str(runs / "static"), *size, "--steps", steps[0], "--checkpoint-every", "500", *common])
    ctx.record(static_s=round(time.perf_counter() - started, 1), static_steps=int(steps[0]))
    started = time.perf_counter()
    _run([*cli, "train-dynamic", str(data), "--init", str(runs / "static" / "static.ckpt"), "-o", str(runs / "dynamic"),
          "--steps", steps[1], "--checkpoint-every", "500", *common])  # fmt: skip
    ctx.record(dynamic_s=round(time.perf_counter() - started, 1), dynamic_steps=int(steps[1]))
    model = Path(os.environ["SPLAT_GPU_OUT"]) / "default-model"
    _run([*cli, "export", str(runs / "dynamic" / "dynamic.ckpt"), "-o", str(model)])
    ctx.record(model=str(model))


STEPS = (
    Step("install", 60, step_install),
    Step("environment", 90, step_environment),  # doctor builds our C++ CPU rasteriser (about 30 s on 2 cores)
    Step("gsplat-jit", 200, step_gsplat_jit),
    Step("gpu-tests", 50, step_gpu_tests),
    Step("render-bench", 35, step_render_bench),
    Step("animate-bench", 70, step_animate_bench),
    Step("train-paper", 60, step_train_paper),
    Step("train-default", 540, step_train_default, needs="--train-default"),
)


class StepSkipped(Exception):
    """A step that did what it could here and says why the rest does not apply (no CUDA, dry run)."""


# ------------------------------------------------------------------------------------ helpers


def _run(command: list[str], check: bool = True) -> str:
    result = subprocess.run(command, capture_output=True, text=True)
    output = result.stdout + result.stderr
    if check and result.returncode != 0:
        tail = " | ".join(line for line in output.strip().splitlines()[-3:])
        raise RuntimeError(f"{Path(command[1]).name if command[0] == sys.executable else command[0]} exited {result.returncode}: {tail}")
    return output


def _first_line(command: list[str], last: bool = False) -> str | None:
    try:
        lines = subprocess.run(command, capture_output=True, text=True, timeout=20).stdout.strip().splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (lines[-1] if last else lines[0]) if lines else None


def _has_ffmpeg() -> bool:
    from splat_portrait.errors import SplatPortraitError
    from splat_portrait.media.ffmpeg import ffmpeg_exe

    try:
        return _first_line([ffmpeg_exe(), "-version"]) is not None
    except SplatPortraitError:
        return False


def load_inputs(size: int, dry_run: bool):
    """The prepared portrait (cropped to ``size``) and speech: from ``.gpu/inputs.npz``, else made now (needs dlib, ffmpeg)."""
    import numpy as np
    import torch

    from splat_portrait.face.crop import crop_square
    from splat_portrait.runtime.inputs import Portrait

    if INPUTS.is_file():
        with np.load(INPUTS) as f:
            image, box, c2w, samples = f["image"], f["box"], torch.from_numpy(f["c2w"]), f["samples"]
    else:
        portrait, samples = make_inputs()
        image, box, c2w = portrait.image, portrait.box, portrait.c2w
    samples = samples[:16000] if dry_run else samples
    return Portrait(image, box, crop_square(image, box, size), c2w), samples


def make_inputs():
    """The sample portrait, found and posed, and 10 s of real speech (the sample looped)."""
    import numpy as np

    from splat_portrait.runtime.inputs import load_portrait, load_speech

    portrait = load_portrait(SHARED / "portraits" / "happy_256.png", 64)
    speech = load_speech(SHARED / "audio" / "radio31_16k_stereo.wav")
    repeats = int(np.ceil(CLIP_SECONDS * 16000 / len(speech)))
    return portrait, np.tile(speech, repeats)[: int(CLIP_SECONDS * 16000)]


def prepare(corpus: Path | None) -> None:
    """Fill .gpu/ here, where the package index is reachable, and say what will travel."""
    import importlib.metadata

    import numpy as np

    GPU_DIR.mkdir(exist_ok=True)
    WHEELS.mkdir(exist_ok=True)
    for package in WHEEL_PACKAGES:
        version = importlib.metadata.version(package)
        platforms = [a for tag in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "any") for a in ("--platform", tag)]
        _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
              DEVICE_PYTHON, "--implementation", "cp", *platforms, "-d", str(WHEELS), f"{package}=={version}"])  # fmt: skip
    portrait, samples = make_inputs()
    np.savez_compressed(INPUTS, image=portrait.image, box=portrait.box, c2w=portrait.c2w.numpy(), samples=samples)
    if corpus is not None:
        _run([sys.executable, "-m", "splat_portrait.cli", "preprocess", str(corpus), "-o", str(GPU_DIR / "data"), "--size", "128",
              "--test-fraction", "0.25"])  # fmt: skip
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             capture_output=True).stdout.split(b"\0")  # fmt: skip
    tree = sum((REPO / name.decode()).stat().st_size for name in tracked if name and (REPO / name.decode()).is_file())
    carried = sum(p.stat().st_size for p in GPU_DIR.rglob("*") if p.is_file() and EXTENSIONS not in p.parents)
    total = (tree + carried) / 2**20
    print(f"working tree {tree / 2**20:.1f} MiB + .gpu {carried / 2**20:.1f} MiB = {total:.1f} MiB of the {CARRY_LIMIT_MB} MiB carry limit")
    if total > CARRY_LIMIT_MB:
        sys.exit("too large to travel: leave out --corpus or preprocess fewer clips")
    print("on the GPU machine: python3 benchmarks/gpu_check.py --json $OUT/gpu_check.json   (carry: .gpu)")


# ------------------------------------------------------------------------------- orchestrator


def run_all(args: argparse.Namespace) -> dict:
    started = time.monotonic()
    deadline = started + args.budget
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    site = work / "site"
    env = dict(os.environ)
    env["SPLAT_GPU_SITE"] = str(site)
    env["SPLAT_GPU_COMMAND"] = json.dumps([Path(sys.argv[0]).name, *sys.argv[1:]])
    env["SPLAT_GPU_OUT"] = str(args.json.parent if args.json else work)
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("TORCH_EXTENSIONS_DIR", str(EXTENSIONS))
    env.setdefault("MAX_JOBS", str(os.cpu_count() or 1))
    chosen = [s for s in STEPS if not args.only or s.name in args.only]
    report = {"mode": "dry-run" if args.dry_run else "gpu", "budget_s": args.budget, "steps": {}}
    for step in chosen:
        if step.needs and not getattr(args, step.needs.strip("-").replace("-", "_")):
            report["steps"][step.name] = {"status": "skipped", "reason": f"needs {step.needs}"}
            continue
        left = deadline - time.monotonic()
        if left < 5:
            report["steps"][step.name] = {"status": "not run", "reason": "the run's time budget was spent"}
            continue
        report["steps"][step.name] = _run_step(step, min(step.budget_s, left), args, work, env)
        _print_row(step.name, report["steps"][step.name])
        if args.json:
            _write_json(args.json, report)
    report["seconds"] = round(time.monotonic() - started, 1)
    # The run record (commit, machine, versions, command) comes from the environment step, run after the install.
    report["record"] = report["steps"].get("environment", {}).get("record")
    return report


def _run_step(step: Step, limit: float, args: argparse.Namespace, work: Path, env: dict) -> dict:
    result_file = work / f"{step.name}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--step", step.name, "--result", str(result_file), "--work", str(work)]
    command += ["--dry-run"] if args.dry_run else []
    command += ["--hang", args.hang] if args.hang == step.name else []
    command += ["--train-default", str(args.train_default)] if args.train_default else []
    if step.name == "gsplat-jit" and "TORCH_CUDA_ARCH_LIST" not in env:
        env = {**env, "TORCH_CUDA_ARCH_LIST": _cuda_arch(env)}
    started = time.monotonic()
    # A process group of its own: on a timeout its children (nvcc, pytest, ffmpeg) go with it.
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=limit)
        status = None
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        status = {"status": "timed out", "reason": f"stopped at its {limit:.0f} s limit"}
    figures = json.loads(result_file.read_text()) if result_file.is_file() else {}
    outcome = status or figures.pop("_outcome", {"status": "failed", "reason": (output or "").strip()[-400:]})
    figures.pop("_outcome", None)
    return {**outcome, "seconds": round(time.monotonic() - started, 1), "limit_s": round(limit), **figures}


def _cuda_arch(env: dict) -> str:
    # Only this GPU's architecture: gsplat's JIT build then compiles each kernel once, not for every GPU.
    probe = "import torch; print('%d.%d' % torch.cuda.get_device_capability(0) if torch.cuda.is_available() else '')"
    arch = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env).stdout.strip()
    return arch or "9.0"


def _step_main(args: argparse.Namespace) -> None:
    step = next(s for s in STEPS if s.name == args.step)
    ctx = Context(args.dry_run, args.result, args.work, args.train_default, {})
    try:
        if args.hang:
            subprocess.run(["sleep", "3600"])  # a child too: the whole process group must go
        step.run(ctx)
        outcome = {"status": "ok"}
    except StepSkipped as why:
        outcome = {"status": "skipped", "reason": str(why)}
    except Exception as err:  # recorded, never fatal: the next step still runs
        outcome = {"status": "failed", "reason": f"{type(err).__name__}: {str(err)[:600]}"}
    ctx.record(_outcome=outcome)


def _print_row(name: str, result: dict) -> None:
    shown = {k: v for k, v in result.items() if k not in ("status", "reason", "seconds", "limit_s", "rows", "output", "record", "checks")}
    detail = result.get("reason") or ", ".join(f"{k}={v}" for k, v in shown.items())
    print(f"{name:14} {result['status']:10} {result['seconds']:7.1f} s  {str(detail)[:160]}", flush=True)


def _write_json(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1, default=str))
    os.replace(tmp, path)


def print_table(report: dict) -> None:
    print(f"\ngpu_check ({report['mode']}): {report['seconds']} s of a {report['budget_s']} s budget")
    for name, result in report["steps"].items():
        print(f"  {name:14} {result['status']:10} {result.get('seconds', 0):7.1f} s  {result.get('reason', '')}")
    rows = report["steps"].get("animate-bench", {}).get("rows", [])
    for row in rows:
        if "engine" in row:
            print(f"    animate {row['preset']:6} {row['size']:4}²  {row['engine']:30} {row['frames_per_second']:8.1f} frames/s "
                  f"({row['frames']} of {row['of_frames']} frames)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="Walk every step on a CPU at toy sizes.")
    parser.add_argument("--budget", type=float, default=480.0, help="Seconds for the whole run.")
    parser.add_argument("--json", type=Path, help="Write the report here (after every step).")
    parser.add_argument("--only", nargs="+", choices=[s.name for s in STEPS], help="Run only these steps.")
    parser.add_argument("--train-default", type=Path, help="Preprocessed DATA_DIR: also train the default model here.")
    parser.add_argument("--prepare", action="store_true", help="Fill .gpu/ on this machine (needs the package index).")
    parser.add_argument("--corpus", type=Path, help="With --prepare: videos to preprocess into .gpu/data for --train-default.")
    parser.add_argument("--hang", choices=[s.name for s in STEPS], help="Make this step hang (to check the time limits).")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        _step_main(args)
    elif args.prepare:
        prepare(args.corpus)
    else:
        report = run_all(args)
        print_table(report)
        if args.json:
            _write_json(args.json, report)


if __name__ == "__main__":
    main()
