"""``splat-portrait train-sync``: our audio-visual sync expert, trained on preprocessed real clips."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from splat_portrait.atomic import writable_dir
from splat_portrait.errors import SplatPortraitError
from splat_portrait.models.sync_expert import SyncExpertConfig
from splat_portrait.training.sync import SyncTrainConfig, train_sync as run


def train_sync(
    data_dir: Path = typer.Argument(..., help="Preprocessed DATA_DIR (its real train clips are used).", show_default=False),
    output: Path = typer.Option(..., "--output", "-o", help="The expert checkpoint to write (e.g. sync.ckpt)."),
    steps: int = typer.Option(2000, "--steps", min=1, help="Optimisation steps."),
    batch_size: int = typer.Option(32, "--batch-size", min=2, help="Windows per step (each also a negative for the others)."),
    shifts: int = typer.Option(4, "--shifts", min=0, help="Time-shifted audio negatives of each window's own clip."),
    lr: float = typer.Option(1e-3, "--lr", min=0.0, help="AdamW learning rate."),
    seed: int = typer.Option(0, "--seed", help="Seed of the weights and the sample order."),
    video_input: str = typer.Option(
        "motion", "--video-input", help="What the video encoder sees: 'motion' (each mouth crop minus the window's mean) or 'frames' (the crops as they are).",
    ),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="Mirror, shift and re-light the windows and mask a band of their audio at random."),
) -> None:
    """Train a SyncNet-style expert (5 mouth frames <-> their 0.2 s of audio) for `evaluate --sync` and stage II."""
    try:
        config = SyncTrainConfig(str(data_dir), steps=steps, batch_size=batch_size, shifts=shifts, lr=lr, seed=seed, augment=augment)
        expert = SyncExpertConfig(video_input=video_input)
    except ValueError as err:
        raise SplatPortraitError(str(err)) from None
    writable_dir(output.parent, for_file=output)
    columns = (TextColumn("train-sync"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]} acc {task.fields[acc]}"),
               TimeElapsedColumn(), TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task("steps", total=steps, loss="-", acc="-")
        record = run(config, output, expert, on_step=lambda s, loss, acc: progress.update(task, completed=s, loss=f"{loss:.3f}", acc=f"{acc:.2f}"))
    table = Table(title="train-sync", show_header=False)
    table.add_row("clips", f"{len(record['clips'])} ({record['frames']} frames)")
    table.add_row("time", f"{record['seconds']:.1f} s")
    table.add_row("loss (last 50 steps)", f"{record['final_loss']:.4f}")
    table.add_row("true pair ranked first", f"{record['final_accuracy']:.1%}")
    table.add_row("checkpoint", str(output))
    Console(stderr=True).print(table)
