"""``splat-portrait export``: a checkpoint -> MODEL_DIR of ONNX graphs + model.json, parity-checked."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from splat_portrait.audio.features import EXTRACTORS

log = logging.getLogger(__name__)


def export(
    checkpoint: Path = typer.Argument(..., help="Model checkpoint (from train-static/train-dynamic).", show_default=False),
    output: Path = typer.Option(..., "--output", "-o", help="MODEL_DIR to write the graphs and model.json into."),
    fp16: bool = typer.Option(
        False, "--fp16", help="Also write mixed-precision graphs, used on CUDA (parity: 2% of each output's range)."
    ),
    opset: int = typer.Option(17, "--opset", min=17, help="ONNX opset version."),
    audio_features: Optional[str] = typer.Option(
        None, "--audio-features", help=f"Feature extractor ({' or '.join(EXTRACTORS)}), for checkpoints that do not record it."
    ),
    audio_model: Optional[str] = typer.Option(
        None, "--audio-model", help="wav2vec2 model folder or hub id, with --audio-features wav2vec2."
    ),
) -> None:
    """Export the generator and the audio decoder to ONNX, check them against PyTorch, and write model.json."""
    from splat_portrait.export.graphs import export_model

    started = time.perf_counter()
    card = export_model(checkpoint, output, opset=opset, fp16=fp16, audio_features=audio_features, audio_model=audio_model)
    table = Table(title=f"{output} ({card.preset}, {card.image_size}², {card.audio_features.describe()} audio)")
    columns = (("graph", "left"), ("precision", "left"), ("MB", "right"), ("parity max |diff|", "right"), ("rotations (rad)", "right"), ("sha256", "left"))
    for name, justify in columns:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for info in card.graphs.values():
        size = (output / info.file).stat().st_size / 1e6
        table.add_row(info.file, info.precision, f"{size:.1f}", f"{info.parity_max_abs_diff:.2e}", f"{info.parity_max_rotation_rad:.2e}", info.sha256[:16])
    Console().print(table)
    log.info("exported %s to %s in %.1f s", checkpoint, output, time.perf_counter() - started)
