"""``splat-portrait train-static`` (stage I) and ``train-dynamic`` (stage II).

Both run alone or as every process of ``torchrun --nproc-per-node N splat-portrait train-...``;
only rank 0 shows progress and writes files.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from splat_portrait.errors import SplatPortraitError
from splat_portrait.models.config import PRESETS
from splat_portrait.training import TrainConfig, TrainResult, train
from splat_portrait.training.config import PAPER_LPIPS_WEIGHT, PAPER_LR, PAPER_WEIGHT_DECAY

log = logging.getLogger(__name__)

# Options both commands share (Typer reads these default markers; they hold no state).
_OUTPUT = typer.Option(..., "--output", "-o", help="RUN_DIR for the checkpoints (last.ckpt, <stage>.ckpt) and TensorBoard logs (tb/).")
_STEPS = typer.Option(1000, "--steps", min=1, help="Total optimisation steps of the run (a resumed run continues up to this).")
_BATCH = typer.Option(4, "--batch-size", min=1, help="Frame pairs per step and process.")
_LPIPS = typer.Option(PAPER_LPIPS_WEIGHT, "--lpips-weight", min=0.0, help="LPIPS weight (paper: 0.01; needs torchvision's VGG16 weights, 0 turns it off).")
_SDS = typer.Option(None, "--sds-weight", min=0.0, help="Score-distillation weight (default: 1 with --prior, off without).")
_PRIOR = typer.Option(None, "--prior", help="Face denoiser checkpoint for score distillation (`splat-portrait train-prior`).")
_VGGFACE = typer.Option(None, "--vggface", help="VGG-Face state dict: adds its feature distance, weighted like LPIPS (the paper's perceptual term).")
_MOUTH = typer.Option(
    1.0, "--mouth-weight", min=1.0,
    help="L2 weight of the mouth box (from the clips' landmarks) relative to other pixels (1: the paper's plain L2; try 10).",
)  # fmt: skip
_SDS_VIEWS = typer.Option("bullet", "--sds-views", help="Where score distillation looks: 'bullet' (points of the paper's bullet path) or 'uniform' (a yaw x pitch box).")
_SDS_CROP = typer.Option(
    "landmarks", "--sds-crop",
    help="The prior's framing of a render: 'landmarks' (preprocessing's crop around the face found in it) or 'centre' (the render as is).",
)  # fmt: skip
_SMOOTH = typer.Option(
    TrainConfig.depth_smoothness_weight, "--depth-smoothness", min=0.0,
    help="Weight of the edge-aware depth-smoothness term, which keeps turned views from tearing (0: off, the paper's objective).",
)  # fmt: skip
_RESUME = typer.Option(False, "--resume", help="Continue the run in RUN_DIR from last.ckpt (same settings).")
_SEED = typer.Option(0, "--seed", help="Seed of the initial weights, the sample order and the step noise.")
_LR = typer.Option(PAPER_LR, "--lr", min=0.0, help="AdamW learning rate (paper: 2.5e-5).")
_WD = typer.Option(PAPER_WEIGHT_DECAY, "--weight-decay", min=0.0, help="AdamW weight decay (paper: 1e-5).")
_CLIP = typer.Option(1.0, "--grad-clip", min=0.0, help="Clip the gradient norm to this (0: no clipping).")
_WORKERS = typer.Option(0, "--workers", min=0, help="DataLoader worker processes.")
_EVERY = typer.Option(500, "--checkpoint-every", min=1, help="Save checkpoints every this many steps (and at the end).")
_DEVICE = typer.Option("cuda" if torch.cuda.is_available() else "cpu", "--device", help="Torch device (under torchrun on CUDA: each process's LOCAL_RANK GPU).")


def train_static(
    data_dir: Path = typer.Argument(..., help="Preprocessed DATA_DIR (its train split is used).", show_default=False),
    output: Path = _OUTPUT,
    preset: str = typer.Option("tiny", "--preset", help=f"Model size: {', '.join(PRESETS)}."),
    init: Optional[Path] = typer.Option(None, "--init", help="Continue from this stage-I checkpoint (a fine-tune; its model replaces --preset)."),
    footprint: Optional[float] = typer.Option(
        None, "--footprint", min=0.0,
        help="Surface footprint of the splats in neighbour steps (default: the preset's or --init's; 0: free splats).",
    ),
    steps: int = _STEPS,
    batch_size: int = _BATCH,
    resolution: Optional[int] = typer.Option(None, "--resolution", min=8, help="Image size (default: the preset's: 64, 128 or 256)."),
    lpips_weight: float = _LPIPS,
    sds_weight: Optional[float] = _SDS,
    prior: Optional[Path] = _PRIOR,
    vggface: Optional[Path] = _VGGFACE,
    mouth_weight: float = _MOUTH,
    sds_views: str = _SDS_VIEWS,
    sds_crop: str = _SDS_CROP,
    depth_smoothness: float = _SMOOTH,
    resume: bool = _RESUME,
    seed: int = _SEED,
    lr: float = _LR,
    weight_decay: float = _WD,
    grad_clip: float = _CLIP,
    workers: int = _WORKERS,
    checkpoint_every: int = _EVERY,
    device: str = _DEVICE,
) -> None:
    """Stage I: learn static splats from frame pairs (L2 + LPIPS on both frames, eq. 1, + SDS)."""
    if preset not in PRESETS:
        raise SplatPortraitError(f"unknown model preset {preset!r}; choose one of {', '.join(PRESETS)}")
    config = _config(
        "static", data_dir, preset=preset, init=str(init.resolve()) if init else None, footprint=footprint, resolution=resolution,
        steps=steps, batch_size=batch_size, lpips_weight=lpips_weight, sds_weight=sds_weight, prior=prior, vggface=vggface,
        mouth_weight=mouth_weight, sds_views=sds_views, sds_crop=sds_crop, depth_smoothness_weight=depth_smoothness,
        seed=seed, lr=lr, weight_decay=weight_decay, grad_clip=grad_clip, workers=workers, checkpoint_every=checkpoint_every,
    )  # fmt: skip
    _run(config, output, device, resume)


def train_dynamic(
    data_dir: Path = typer.Argument(..., help="Preprocessed DATA_DIR with audio features (its train split is used).", show_default=False),
    init: Path = typer.Option(..., "--init", help="The stage-I checkpoint to start from (RUN_DIR/static.ckpt)."),
    output: Path = _OUTPUT,
    steps: int = _STEPS,
    batch_size: int = _BATCH,
    resolution: Optional[int] = typer.Option(None, "--resolution", min=8, help="Must match the stage-I model's (default: taken from it)."),
    lpips_weight: float = _LPIPS,
    sds_weight: Optional[float] = _SDS,
    prior: Optional[Path] = _PRIOR,
    vggface: Optional[Path] = _VGGFACE,
    freeze_static: bool = typer.Option(False, "--freeze-static", help="Train only the audio modules and dynamic decoder (the paper trains everything)."),
    mouth_weight: float = _MOUTH,
    lip_weight: float = typer.Option(
        0.0, "--lip-weight", min=0.0,
        help="Weight of the landmark lip-shape loss on the audio-moved lip splats (0: off, as in the paper; try 1).",
    ),
    lip_gap_weight: float = typer.Option(
        0.0, "--lip-gap-weight", min=0.0,
        help="Weight of the loss on the inner-lip gap of the same lip splats, the mouth opening the metrics score (0: off).",
    ),
    still_weight: float = typer.Option(
        0.0, "--still-weight", min=0.0,
        help="Weight of the mean square (in pixel widths) of the audio offsets away from the mouth, against a shimmering face (0: off).",
    ),
    mouth_code_channels: Optional[int] = typer.Option(
        None, "--mouth-code-channels", min=0,
        help="Give the decoder a new mouth predictor this wide: audio -> 2-number mouth code -> offsets (0: the decoder hears the audio; default: as in --init).",
    ),
    mouth_code_steps: int = typer.Option(
        0, "--mouth-code-steps", min=0,
        help="Steps fitting the mouth predictor on every real frame before stage II renders (the bundled model: 300; 0: keep --init's).",
    ),
    mouth_code_noise: float = typer.Option(
        0.3, "--mouth-code-noise", min=0.0, help="Std of the noise on the audio features while the mouth predictor is fitted (against learning clips by heart).",
    ),
    sds_views: str = _SDS_VIEWS,
    sds_crop: str = _SDS_CROP,
    depth_smoothness: float = _SMOOTH,
    resume: bool = _RESUME,
    seed: int = _SEED,
    lr: float = _LR,
    weight_decay: float = _WD,
    grad_clip: float = _CLIP,
    workers: int = _WORKERS,
    checkpoint_every: int = _EVERY,
    device: str = _DEVICE,
) -> None:
    """Stage II: add audio-driven dynamic offsets to a stage-I model (eq. 2, + SDS)."""
    config = _config(
        "dynamic", data_dir, init=str(init.resolve()), resolution=resolution, steps=steps, batch_size=batch_size,
        lpips_weight=lpips_weight, sds_weight=sds_weight, prior=prior, vggface=vggface, freeze_static=freeze_static,
        mouth_weight=mouth_weight, lip_weight=lip_weight, lip_gap_weight=lip_gap_weight, still_weight=still_weight, sds_views=sds_views, sds_crop=sds_crop, depth_smoothness_weight=depth_smoothness,
        mouth_code_channels=mouth_code_channels, mouth_code_steps=mouth_code_steps, mouth_code_noise=mouth_code_noise, seed=seed, lr=lr, weight_decay=weight_decay, grad_clip=grad_clip, workers=workers, checkpoint_every=checkpoint_every,
    )  # fmt: skip
    _run(config, output, device, resume)


def _config(stage: str, data_dir: Path, sds_weight: float | None, prior: Path | None, vggface: Path | None, **settings) -> TrainConfig:
    if sds_weight and prior is None:
        raise SplatPortraitError("--sds-weight needs --prior PATH, a face denoiser (make one with `splat-portrait train-prior`)")
    weight = sds_weight if sds_weight is not None else 1.0 if prior is not None else 0.0
    paths = {"prior": prior, "vggface": vggface}
    resolved = {name: str(path.resolve()) if path is not None else None for name, path in paths.items()}
    try:
        return TrainConfig(stage, str(data_dir), sds_weight=weight, **resolved, **settings)  # type: ignore[arg-type]
    except ValueError as err:
        raise SplatPortraitError(str(err)) from None


def _run(config: TrainConfig, output: Path, device: str, resume: bool) -> None:
    try:
        device = str(torch.device(device))
    except RuntimeError as err:
        raise SplatPortraitError(f"--device {device!r} is not a torch device ({err})") from None
    main = os.environ.get("RANK", "0") == "0"
    if not main:
        # Every process would print the same messages; rank 0 speaks for the job.
        logging.getLogger("splat_portrait").setLevel(logging.WARNING)
    columns = (
        TextColumn(f"train-{config.stage}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
    )  # fmt: skip
    with Progress(*columns, transient=True, disable=not main) as progress:
        task = progress.add_task("steps", total=config.steps, loss="-")

        def on_step(step: int, total: int, losses: dict[str, float]) -> None:
            progress.update(task, completed=step, loss=f"{losses['total']:.4f}")

        result = train(config, output, device, resume, on_step)
    if main:
        Console(stderr=True).print(_summary(config, result))


def _summary(config: TrainConfig, result: TrainResult) -> Table:
    table = Table(title=f"train-{config.stage}", show_header=False)
    table.add_row("steps", f"{result.step} of {config.steps} ({result.steps_run} in this run)")
    table.add_row("time", f"{result.seconds:.1f} s ({result.seconds_per_step:.3f} s/step)")
    for name, value in result.losses.items():
        table.add_row(name, f"{value:.5f}")
    table.add_row("checkpoint", str(result.checkpoint))
    return table
