"""``splat-portrait preprocess``: talking-head videos -> aligned training clips with cameras and audio features."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from splat_portrait.audio.features import EXTRACTORS, NORMALISATIONS
from splat_portrait.data.preprocess import ERROR, SKIPPED, ClipOptions, PreprocessReport, default_workers, preprocess as run
from splat_portrait.errors import SplatPortraitError
from splat_portrait.render import MAX_SIZE

log = logging.getLogger(__name__)

_STATUS_STYLE = {"done": "green", "already done": "cyan", SKIPPED: "yellow", ERROR: "bold red"}


def read_identities(path: Path) -> dict[str, str]:
    """The ``--identities`` file: a JSON object of video file name -> identity label (both strings)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SplatPortraitError(f"--identities file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SplatPortraitError(f"--identities file {path} is not readable JSON ({err})") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in data.items()):
        raise SplatPortraitError(f"--identities file {path} must hold one JSON object of video file name -> identity (non-empty strings)")
    return data


def _summary(report: PreprocessReport) -> Table:
    table = Table(title="preprocess")
    for name, justify in (("clip", "left"), ("frames", "right"), ("seconds", "right"), ("status", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in report.results:
        status = f"[{_STATUS_STYLE[r.status]}]{r.status}[/]"
        if r.reason:
            status += f": {r.reason.splitlines()[0]}"
        frames = str(r.frames) if r.frames else "-"
        seconds = f"{r.duration:.2f}" if r.frames else "-"
        table.add_row(r.id, frames, seconds, status)
    return table


def preprocess(
    inputs: List[Path] = typer.Argument(..., help="Video files (mp4/mov/mkv/webm) or folders of them.", show_default=False),
    output: Path = typer.Option(..., "--output", "-o", help="DATA_DIR to write clips/ and manifest.jsonl into."),
    size: int = typer.Option(256, "--size", min=16, max=MAX_SIZE, help="Crop size in pixels (square)."),
    jpeg_quality: int = typer.Option(95, "--jpeg-quality", min=1, max=100, help="JPEG quality of the frames."),
    audio_features: str = typer.Option("mel", "--audio-features", help=f"Feature extractor: {' or '.join(EXTRACTORS)}."),
    audio_model: Optional[str] = typer.Option(
        None, "--audio-model", help="wav2vec2 model: a local folder or a hub id (e.g. facebook/wav2vec2-large-xlsr-53)."
    ),
    audio_norm: str = typer.Option(
        "utterance-gated", "--audio-norm",
        help=f"Audio feature normalisation: {', '.join(NORMALISATIONS)} (per-dimension over each clip; gated: a clip whose loudness "
        "hardly swings, such as room tone alone, is not stretched to speech's spread).",
    ),
    workers: int = typer.Option(default_workers(), "--workers", min=1, help="Clips processed in parallel."),
    test_fraction: float = typer.Option(0.1, "--test-fraction", min=0.0, max=1.0, help="Share of clips in the test split."),
    min_seconds: float = typer.Option(1.0, "--min-seconds", help="Skip clips shorter than this."),
    min_face_fraction: float = typer.Option(
        0.8, "--min-face-fraction", min=0.0, max=1.0, help="Skip clips with a face on fewer frames than this share."
    ),
    identities: Optional[Path] = typer.Option(
        None, "--identities",
        help="JSON object mapping video file names to who speaks in them: the split then keeps each identity on one side.",
    ),  # fmt: skip
) -> None:
    """Crop, align and pose every clip, extract its audio features, and write the manifest (resumable)."""
    options = ClipOptions(size, jpeg_quality, audio_features, audio_model, audio_norm, min_seconds, min_face_fraction)
    labels = read_identities(identities) if identities is not None else None
    started = time.perf_counter()
    columns = (TextColumn("preprocess"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.description}"))
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task("", total=None)
        report = run(
            inputs, output, options, workers, test_fraction,
            on_start=lambda total: progress.update(task, total=total),
            on_result=lambda result: progress.update(task, advance=1, description=result.id), identities=labels,
        )  # fmt: skip
    Console().print(_summary(report))
    splits = {s: sum(e.split == s for e in report.manifest) for s in ("train", "test")}
    log.info(
        "%d clips in %s (%d train, %d test) in %.1f s",
        len(report.manifest), output, splits["train"], splits["test"], time.perf_counter() - started,
    )  # fmt: skip
    if report.with_status(ERROR):
        raise SplatPortraitError(f"{len(report.with_status(ERROR))} clip(s) failed unexpectedly; see the log above")
    if not report.manifest:
        raise SplatPortraitError("no clip could be preprocessed; see the reasons in the table above")
