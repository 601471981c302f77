"""``splat-portrait animate``: portrait + speech -> talking-head MP4 (plus optional depth video and .ply files)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from splat_portrait.camera import TRAJECTORIES
from splat_portrait.errors import SplatPortraitError
from splat_portrait.render import MAX_SIZE

log = logging.getLogger(__name__)


class _FramesPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:.1f} frames/s" if task.speed else "- frames/s", style="progress.data.speed")


def _progress() -> Progress:
    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _FramesPerSecond(),
        TimeElapsedColumn(), TimeRemainingColumn(),
    )  # fmt: skip
    console = Console(stderr=True)
    # Off when stderr is no terminal (a log file, a pipe): there a bar would only leave blank lines.
    return Progress(*columns, console=console, transient=True, disable=not console.is_terminal)


def _summary(result) -> str:
    stages = ", ".join(f"{name} {seconds:.2f}" for name, seconds in result.seconds.items())
    return (
        f"{result.outputs.video}: {result.frames} frames ({result.duration:.2f} s of speech) in "
        f"{result.total_seconds:.1f} s, {result.frames_per_second:.1f} frames/s; seconds per stage: {stages}"
    )


def animate(
    image: Optional[Path] = typer.Argument(None, help="Portrait photo (PNG, JPEG, WebP, ...).", show_default=False),
    audio: Optional[Path] = typer.Argument(None, help="Speech (any audio or video file ffmpeg reads).", show_default=False),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="The MP4 to write (H.264 + AAC, 25 fps)."),
    model: Optional[Path] = typer.Option(None, "--model", help="MODEL_DIR from `splat-portrait export` (ONNX Runtime), or a checkpoint (PyTorch); default: the bundled model."),
    camera: str = typer.Option("static", "--camera", help=f"Camera path: {', '.join(TRAJECTORIES)}."),
    pose_from: Optional[Path] = typer.Option(None, "--pose-from", help="Follow the head pose of the face in this video."),
    yaw: float = typer.Option(0.0, "--yaw", help="Fixed camera yaw offset in degrees (positive: camera moves right)."),
    pitch: float = typer.Option(0.0, "--pitch", help="Fixed camera pitch offset in degrees (positive: camera moves up)."),
    size: Optional[int] = typer.Option(None, "--size", min=16, max=MAX_SIZE, help="Output size in pixels (default: the model's resolution)."),
    ply: Optional[Path] = typer.Option(None, "--ply", help="Also write the static head as a 3DGS .ply."),
    ply_frames: Optional[Path] = typer.Option(None, "--ply-frames", help="Also write one .ply per frame into this new folder."),
    depth: Optional[Path] = typer.Option(None, "--depth", help="Also write a colour-mapped depth video (MP4)."),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write one self-contained .html page: the 3D head talking with the speech, to orbit with the mouse (no server needed)."),
    paste_back: bool = typer.Option(False, "--paste-back", help="Composite the generated head back into the full original picture."),
    batch: Optional[Path] = typer.Option(None, "--batch", help="CSV of jobs (header: image,audio,output) run with one loaded model."),
    overwrite: bool = typer.Option(False, "--overwrite", help="With --batch: replace outputs that already exist (otherwise refused)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when onnxruntime has it), cpu or cuda."),
    batch_frames: int = typer.Option(16, "--batch-frames", min=1, help="Frames per audio-decoder and render call."),
    allow_download: bool = typer.Option(False, "--allow-download", help="Let a wav2vec2 model the model card names be fetched from the Hugging Face hub."),
) -> None:
    """Animate a portrait with speech: ONNX Runtime for the networks, gsplat (CUDA) or torch for rendering."""

    from splat_portrait.runtime.cameras import CameraOptions
    from splat_portrait.runtime.pipeline import AnimateOptions
    from splat_portrait.runtime.talking_head import TalkingHeadPipeline

    if device not in ("auto", "cpu", "cuda"):
        raise SplatPortraitError(f"unknown --device {device!r}; choose auto, cpu or cuda")
    if batch is not None:
        extras = [name for name, value in (("IMAGE", image), ("AUDIO", audio), ("--output", output), ("--ply", ply),
                                           ("--ply-frames", ply_frames), ("--depth", depth), ("--html", html)) if value is not None]  # fmt: skip
        if extras:
            raise SplatPortraitError(f"--batch takes its inputs and outputs from the CSV file; leave out {', '.join(extras)}")
    elif image is None or audio is None or output is None:
        raise SplatPortraitError("give IMAGE, AUDIO and -o OUT.mp4 (or --batch jobs.csv)")
    options = AnimateOptions(CameraOptions(camera, pose_from, yaw, pitch), size, paste_back, batch_frames)
    pipe = TalkingHeadPipeline.from_pretrained(model, device, options, allow_download)
    log.info("model %s (%s, %d²) on %s", model or "bundled", pipe.card.preset, pipe.card.image_size, pipe.engine.name)
    if batch is not None:
        _run_batch(pipe, batch, overwrite)
        return
    with _progress() as progress:
        task = progress.add_task("animate", total=None)
        result = pipe.save(
            image, audio, output, ply, ply_frames, depth,
            on_frames=lambda done, total: progress.update(task, completed=done, total=total), html=html,
        )  # fmt: skip
    if result.dropped_splats:
        log.warning("left %d non-finite splats out of the .ply files", result.dropped_splats)
    Console().print(_summary(result), highlight=False, soft_wrap=True)


def _run_batch(pipe, batch: Path, overwrite: bool) -> None:
    from splat_portrait.runtime.batch import read_jobs, run_batch

    jobs = read_jobs(batch, overwrite)
    with _progress() as progress:
        task = progress.add_task("", total=None)

        def start(job) -> None:
            progress.reset(task, total=None, description=f"row {job.row}: {job.output.name}")

        statuses = run_batch(pipe, jobs, start, lambda done, total: progress.update(task, completed=done, total=total))
    table = Table(title=f"animate --batch {batch}")
    for name, justify in (("row", "right"), ("output", "left"), ("frames", "right"), ("frames/s", "right"), ("status", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for s in statuses:
        frames = str(s.result.frames) if s.ok else "-"
        speed = f"{s.result.frames_per_second:.1f}" if s.ok else "-"
        status = "[green]ok[/]" if s.ok else f"[bold red]failed[/]: {s.error}"
        table.add_row(str(s.job.row), str(s.job.output), frames, speed, status)
    Console(soft_wrap=True).print(table)
    failed = sum(not s.ok for s in statuses)
    if failed:
        raise SplatPortraitError(f"{failed} of {len(statuses)} batch jobs failed; see the table above")
