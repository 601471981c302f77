"""``splat-portrait evaluate``: score a checkpoint (or the copy-source baseline) with the paper's protocols."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from splat_portrait.evaluation import EvaluateOptions, evaluate as run_evaluation
from splat_portrait.evaluation.protocol import parse_metric_list
from splat_portrait.metrics import MetricOptions

log = logging.getLogger(__name__)


def evaluate(
    data_dir: Path = typer.Argument(..., help="Preprocessed DATA_DIR; its test split is evaluated."),
    checkpoint: Path = typer.Option(..., "--checkpoint", "--model", help="Checkpoint from train-static / train-dynamic (PyTorch), or a MODEL_DIR from export (ONNX Runtime: what animate runs)."),
    output: Path = typer.Option(..., "--output", "-o", help="EVAL_DIR for metrics.json, metrics.csv, videos/ and sheets/."),
    protocol: str = typer.Option("same-identity", "--protocol", help="same-identity or cross-identity."),
    seconds: float = typer.Option(5.0, "--seconds", help="Evaluate the first this many seconds of each clip."),
    clips: int = typer.Option(None, "--clips", help="Evaluate only the first N test clips (default: all)."),
    metrics: str = typer.Option(None, "--metrics", help="Comma-separated subset of psnr,ssim,lpips,csim,fid,lipsync,mouth,sync,views (default: all the protocol allows)."),
    baseline: str = typer.Option(None, "--baseline", help="Score a baseline instead of the model: copy-source."),
    videos: int = typer.Option(3, "--videos", help="Write MP4s with audio for the first K clips."),
    lpips_net: str = typer.Option("alex", "--lpips-net", help="LPIPS backbone: alex or vgg."),
    face_recognizer: str = typer.Option("dlib", "--face-recognizer", help="CSIM recogniser: dlib or arcface."),
    arcface: Path = typer.Option(None, "--arcface", help="ArcFace ONNX model for --face-recognizer arcface."),
    syncnet: Path = typer.Option(None, "--syncnet", help="SyncNet weights (syncnet_v2.model) for LipSync."),
    sync: Path = typer.Option(None, "--sync", help="Our sync expert (from train-sync) for the sync metric: offset, LSE-C/D on its scale."),
    allow_download: bool = typer.Option(False, "--allow-download", help="Fetch missing LPIPS/FID weights into torch hub's cache."),
    device: str = typer.Option("cpu", "--device", help="Torch device for the model and the metrics."),
) -> None:
    """Generate the test clips and score them (PSNR, SSIM, LPIPS, CSIM, FID, LipSync) beside the paper's figures."""
    chosen = parse_metric_list(metrics)
    options = EvaluateOptions(
        data_dir=data_dir, checkpoint=checkpoint, output=output, protocol=protocol, seconds=seconds, clips=clips,
        metrics=tuple(chosen) if chosen is not None else None, baseline=baseline, videos=videos,
        metric_options=MetricOptions(lpips_net=lpips_net, face_recognizer=face_recognizer, arcface_onnx=arcface,  # type: ignore[arg-type]
                                     syncnet_weights=syncnet, sync_expert=sync, allow_download=allow_download, device=device),
    )  # fmt: skip
    columns = (TextColumn("evaluate"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task("clips", total=None)
        result = run_evaluation(options, lambda done, total: progress.update(task, completed=done, total=total))
    Console(soft_wrap=True).print(result.table)
    log.info("wrote %s and %s", result.metrics_json, result.metrics_csv)
