"""``splat-portrait train-prior``: a face denoiser for score distillation, trained on preprocessed frames."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Optional

import torch
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from splat_portrait.atomic import writable_dir
from splat_portrait.errors import SplatPortraitError
from splat_portrait.prior.edm import PRIOR_PRESETS
from splat_portrait.prior.train import PriorTraining, train_prior as run

log = logging.getLogger(__name__)
_DEFAULTS = PriorTraining()


def train_prior(
    data_dir: Path = typer.Argument(..., help="Preprocessed DATA_DIR; every frame of its train split is used.", show_default=False),
    output: Path = typer.Option(..., "--output", "-o", help="Checkpoint to write, e.g. prior.ckpt (pass it to --prior)."),
    preset: str = typer.Option("tiny", "--preset", help=f"Network size: {' or '.join(PRIOR_PRESETS)}."),
    steps: int = typer.Option(_DEFAULTS.steps, "--steps", min=1, help="Optimisation steps."),
    batch_size: int = typer.Option(_DEFAULTS.batch_size, "--batch-size", min=1, help="Frames per step."),
    resolution: Optional[int] = typer.Option(None, "--resolution", min=8, help="Image size (default: the preset's, 64 or 128)."),
    seed: int = typer.Option(_DEFAULTS.seed, "--seed", help="Seed of weights, frame order and noise."),
    lr: float = typer.Option(_DEFAULTS.lr, "--lr", min=0.0, help="AdamW learning rate."),
    checkpoint_every: int = typer.Option(_DEFAULTS.checkpoint_every, "--checkpoint-every", min=1, help="Save the checkpoint every this many steps."),
    workers: int = typer.Option(_DEFAULTS.workers, "--workers", min=0, help="DataLoader worker processes."),
    device: str = typer.Option("cuda" if torch.cuda.is_available() else "cpu", "--device", help="Torch device."),
) -> None:
    """Train an EDM denoiser on the frames so score distillation works without a published face prior."""
    if preset not in PRIOR_PRESETS:
        raise SplatPortraitError(f"unknown prior preset {preset!r}; choose one of {', '.join(PRIOR_PRESETS)}")
    config = PRIOR_PRESETS[preset]
    if resolution is not None:
        try:
            config = dataclasses.replace(config, unet=dataclasses.replace(config.unet, image_size=resolution))
        except ValueError as err:
            raise SplatPortraitError(f"--resolution {resolution} does not suit the {preset} preset: {err}") from None
    try:
        device = str(torch.device(device))
    except RuntimeError as err:
        raise SplatPortraitError(f"--device {device!r} is not a torch device ({err})") from None
    training = dataclasses.replace(
        _DEFAULTS, steps=steps, batch_size=batch_size, lr=lr, seed=seed, checkpoint_every=checkpoint_every, workers=workers
    )
    writable_dir(output.parent, for_file=output)  # fail now, not when the first checkpoint is due
    started = time.perf_counter()
    columns = (
        TextColumn("train-prior"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(), TimeRemainingColumn(),
    )  # fmt: skip
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task("steps", total=steps, loss="-")
        losses = run(
            data_dir, output, config, training, device,
            on_step=lambda step, loss: progress.update(task, completed=step, loss=f"{loss:.4f}"),
        )  # fmt: skip
    tail = losses[-min(len(losses), 50) :]
    log.info(
        "prior (%s, %d px) trained for %d steps in %.1f s, mean loss of the last %d steps %.4f; saved to %s",
        preset, config.unet.image_size, steps, time.perf_counter() - started, len(tail), sum(tail) / len(tail), output,
    )  # fmt: skip
