"""``splat-portrait synth``: synthetic talking-head clips with ground truth, in the preprocessed layout."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from splat_portrait.atomic import writable_dir
from splat_portrait.audio.features import NORMALISATIONS
from splat_portrait.errors import SplatPortraitError
from splat_portrait.data.synthetic import SynthConfig, write_synthetic_dataset

log = logging.getLogger(__name__)


def synth(
    output: Path = typer.Option(..., "--output", "-o", help="DATA_DIR to write clips/ and manifest.jsonl into."),
    clips: int = typer.Option(8, "--clips", min=1, help="Number of clips (one random identity each)."),
    seconds: float = typer.Option(5.0, "--seconds", help="Length of each clip."),
    size: int = typer.Option(128, "--size", min=16, max=1024, help="Frame size in pixels (square)."),
    seed: int = typer.Option(0, "--seed", help="Seed: the same seed and settings give the same clips."),
    test_fraction: float = typer.Option(0.1, "--test-fraction", help="Share of clips in the test split."),
    speech: str = typer.Option("auto", "--speech", help="auto (espeak-ng if installed), espeak, or voiced."),
    audio_norm: str = typer.Option(
        "utterance-gated", "--audio-norm", help=f"Audio feature normalisation: {', '.join(NORMALISATIONS)}; match the real clips beside these."
    ),
) -> None:
    """Render procedural talking heads (with depth and mouth-opening ground truth) as training data."""
    if audio_norm not in NORMALISATIONS:
        raise SplatPortraitError(f"unknown audio normalisation {audio_norm!r}; choose one of {', '.join(NORMALISATIONS)}")
    config = SynthConfig(seconds=seconds, size=size, speech=speech, audio_norm=audio_norm)  # type: ignore[arg-type]
    writable_dir(output)
    started = time.perf_counter()
    columns = (TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task("clips", total=clips)
        entries = write_synthetic_dataset(output, clips, seed, config, test_fraction, lambda _: progress.advance(task))
    splits = {s: sum(e.split == s for e in entries) for s in ("train", "test")}
    log.info(
        "%d clips in %s (%d train, %d test) in %.1f s",
        len(entries), output, splits["train"], splits["test"], time.perf_counter() - started,
    )  # fmt: skip
