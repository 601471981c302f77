"""``splat-portrait stream``: animate speech while it arrives (stdin, a growing file, a microphone)."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from splat_portrait.camera import TRAJECTORIES
from splat_portrait.errors import SplatPortraitError
from splat_portrait.render import MAX_SIZE

log = logging.getLogger(__name__)


def stream(
    image: Path = typer.Argument(..., help="Portrait photo (PNG, JPEG, WebP, ...).", show_default=False),
    audio: str = typer.Option("-", "--audio", help="Where the speech comes from: - (stdin: WAV or raw PCM), a file read as it grows, or mic."),
    fmt: str = typer.Option("auto", "--format", help="Speech on stdin: auto (WAV if it starts with RIFF, else s16le), wav, s16le or f32le; raw PCM is 16 kHz mono."),
    output: str = typer.Option(..., "--output", "-o", help="OUT.mkv / OUT.mp4 (written as it goes, with the speech), or - for raw rgb24 frames on stdout."),
    model: Optional[Path] = typer.Option(None, "--model", help="MODEL_DIR (ONNX Runtime) or a checkpoint; default: the bundled model."),
    camera: str = typer.Option("static", "--camera", help=f"Camera path: {', '.join(TRAJECTORIES)}."),
    yaw: float = typer.Option(0.0, "--yaw", help="Fixed camera yaw offset in degrees."),
    pitch: float = typer.Option(0.0, "--pitch", help="Fixed camera pitch offset in degrees."),
    size: Optional[int] = typer.Option(None, "--size", min=16, max=MAX_SIZE, help="Output size in pixels (default: the model's)."),
    batch_frames: int = typer.Option(2, "--batch-frames", min=1, help="Most frames per decoder and render call: more is faster, fewer is less latency."),
    lookahead_ms: Optional[float] = typer.Option(None, "--lookahead-ms", min=0, max=280, help="Wait for this much audio past a frame's moment (default 280: the frames animate makes; less: sooner, the mouth anticipates less)."),
    idle_seconds: float = typer.Option(2.0, "--idle-seconds", min=0.1, help="A growing file has ended when no bytes came for this long."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
) -> None:
    """Animate speech as it arrives: frames leave 280 ms (the audio window's look-ahead) plus compute time after their moment."""
    from splat_portrait.audio.streaming import LOOKAHEAD_SECONDS
    from splat_portrait.media.live_audio import live_audio
    from splat_portrait.media.mp4 import LiveVideoWriter
    from splat_portrait.runtime.cameras import CameraOptions
    from splat_portrait.runtime.inputs import load_portrait
    from splat_portrait.runtime.outputs import OutputPaths
    from splat_portrait.runtime.pipeline import AnimateOptions
    from splat_portrait.runtime.streaming import LiveHead, RawSink, VideoSink, run_stream
    from splat_portrait.runtime.talking_head import TalkingHeadPipeline

    raw = output == "-"
    if not raw:
        if Path(output).suffix.lower() not in (".mkv", ".mp4"):
            raise SplatPortraitError(f"-o {output}: name an .mkv or .mp4 file, or - for raw frames on stdout")
        OutputPaths(Path(output)).check(inputs=[image] + ([Path(audio)] if audio not in ("-", "mic") else []))
    if raw and audio == "-":
        raise SplatPortraitError("stdin cannot carry both the speech and the frames: with -o -, give --audio FILE or mic")
    options = AnimateOptions(CameraOptions(camera, None, yaw, pitch), size, batch_frames=batch_frames)
    pipe = TalkingHeadPipeline.from_pretrained(model, device, options)
    animator = pipe.animator()
    lookahead_s = LOOKAHEAD_SECONDS if lookahead_ms is None else lookahead_ms / 1000
    head = LiveHead(animator, load_portrait(image, pipe.card.image_size), lookahead_s=lookahead_s)
    log.info("streaming %d² frames at %d fps; each frame waits for %.0f ms of audio after its moment",
             animator.size, pipe.fps, 1000 * lookahead_s)  # fmt: skip
    with contextlib.ExitStack() as stack:
        if raw:
            sink = RawSink(sys.stdout.buffer)
        else:
            writer = LiveVideoWriter(output, animator.size, animator.size, pipe.fps, pipe.card.sample_rate)
            sink = VideoSink(stack.enter_context(writer))
        chunks = stack.enter_context(live_audio(audio, fmt, idle_seconds))
        stats = run_stream(head, chunks, [sink])
    seconds = stats.samples / pipe.card.sample_rate
    where = "stdout" if raw else output
    Console(stderr=True, soft_wrap=True).print(
        f"{where}: {stats.frames} frames ({seconds:.2f} s of speech) of {animator.size}² in {stats.seconds:.1f} s; "
        f"latency after the audio a frame needs: median {1000 * stats.latency_percentile(50):.0f} ms, "
        f"p95 {1000 * stats.latency_percentile(95):.0f} ms (plus {1000 * lookahead_s:.0f} ms look-ahead)",
        highlight=False,
    )
