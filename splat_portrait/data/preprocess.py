"""Talking-head videos -> training clips in the preprocessed layout (layout.py).

Per clip: decode at 25 fps with 16 kHz mono audio, find 68 landmarks on every frame, cut a square
FFHQ-style crop that is smoothed over time, fit per-frame cameras to the landmarks, keep the
landmarks in crop coordinates (the lip loss and mouth weighting of training use them), compute
50 Hz audio features, and mark the folder COMPLETE last. Clips run in worker processes; finished clips
are skipped on the next run, and a bad clip is reported with its reason without stopping the rest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import multiprocessing
import os
import re
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from splat_portrait.atomic import writable_dir
from splat_portrait.audio.features import FeatureSpec, make_extractor
from splat_portrait.camera import default_intrinsics
from splat_portrait.data import layout
from splat_portrait.data.layout import Cameras, ClipMeta, ClipPaths, ManifestEntry
from splat_portrait.errors import SplatPortraitError
from splat_portrait.face.crop import crop_square, to_crop_coordinates
from splat_portrait.face.track import track_face
from splat_portrait.media.audio import load_audio
from splat_portrait.media.video import FPS, VIDEO_SUFFIXES, probe_video, read_frames

log = logging.getLogger(__name__)

SAMPLES_PER_FRAME = layout.SAMPLE_RATE // FPS

DONE, ALREADY_DONE, SKIPPED, ERROR = "done", "already done", "skipped", "error"


@dataclass(frozen=True)
class ClipOptions:
    """How each clip is processed."""

    size: int = 256
    jpeg_quality: int = 95
    audio_features: str = "mel"
    audio_model: str | None = None
    audio_norm: str = "utterance-gated"
    min_seconds: float = 1.0
    # Below this share of frames with a face the clip is rejected; gaps above it are interpolated.
    min_face_fraction: float = 0.8


@dataclass(frozen=True)
class ClipResult:
    """What happened to one input video."""

    id: str
    source: str
    status: str
    frames: int = 0
    duration: float = 0.0
    reason: str = ""
    seconds: float = 0.0
    face_fraction: float | None = None


@dataclass(frozen=True)
class PreprocessReport:
    results: list[ClipResult]
    manifest: list[ManifestEntry]

    def with_status(self, *statuses: str) -> list[ClipResult]:
        return [r for r in self.results if r.status in statuses]


def find_videos(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Video files named directly, plus those found (recursively) in the folders named."""
    videos: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            videos += sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        elif item.exists():
            videos.append(item)
        else:
            raise SplatPortraitError(f"{item} does not exist")
    if not videos:
        raise SplatPortraitError(f"no video files ({', '.join(VIDEO_SUFFIXES)}) found in {', '.join(map(str, inputs))}")
    return list(dict.fromkeys(p.absolute() for p in videos))


def clip_ids(videos: Sequence[Path]) -> list[str]:
    """Folder-safe clip ids from file names; clashing names get a short hash of their path."""
    stems = [re.sub(r"[^A-Za-z0-9_.-]+", "_", v.stem).strip("._") or "clip" for v in videos]
    counts = {s: stems.count(s) for s in stems}
    return [s if counts[s] == 1 else f"{s}-{hashlib.sha1(str(v).encode()).hexdigest()[:8]}" for s, v in zip(stems, videos)]


def preprocess_clip(
    video: str | os.PathLike, paths: ClipPaths, options: ClipOptions = ClipOptions(), identity: str | None = None
) -> ClipResult:
    """Turn one video into the clip folder ``paths``; raises SplatPortraitError for a bad clip.

    ``identity`` (who speaks) goes into meta.json: the manifest splits clips by it.
    """
    start = time.perf_counter()
    video = Path(video)
    info = probe_video(video)
    if not info.has_audio:
        raise SplatPortraitError(f"{video.name} has no audio track")
    if info.duration is not None and info.duration < options.min_seconds:
        raise SplatPortraitError(f"{video.name} is too short ({info.duration:.2f} s; the minimum is {options.min_seconds:g} s)")
    audio = load_audio(video)
    track = track_face(video, FPS)
    # Frames and sound cover the same time span, so audio feature 2n stays on video frame n.
    num_frames = min(len(track), round(len(audio) / SAMPLES_PER_FRAME)) if track else 0
    face_fraction = float(track.found[:num_frames].mean()) if track and num_frames else 0.0
    if track is None or face_fraction < options.min_face_fraction:
        raise SplatPortraitError(
            f"no face found in {video.name} (a face on {face_fraction:.0%} of frames; at least "
            f"{options.min_face_fraction:.0%} needed)"
        )
    if num_frames / FPS < options.min_seconds:
        raise SplatPortraitError(
            f"{video.name} is too short ({num_frames / FPS:.2f} s of video with sound; the minimum is {options.min_seconds:g} s)"
        )
    audio = np.pad(audio, (0, max(0, num_frames * SAMPLES_PER_FRAME - len(audio))))[: num_frames * SAMPLES_PER_FRAME]
    extractor = make_extractor(options.audio_features, options.audio_model, normalise=options.audio_norm)

    layout.start_clip(paths)
    for index, frame in zip(range(num_frames), read_frames(video, FPS)):
        layout.write_frame(paths, index, crop_square(frame, track.boxes[index], options.size), options.jpeg_quality)
    c2w = track.c2w[:num_frames]
    intrinsics = default_intrinsics((num_frames,), dtype=torch.float64).numpy()
    layout.write_cameras(paths, Cameras(intrinsics, c2w, options.size, options.size))
    layout.write_landmarks(paths, to_crop_coordinates(track.landmarks[:num_frames], track.boxes[:num_frames]))
    layout.write_audio(paths, audio)
    layout.write_features(paths, extractor(audio))
    duration = num_frames / FPS
    extra = {"face_fraction": round(face_fraction, 4), "crop_size": options.size}
    if identity:
        extra["identity"] = identity
    layout.write_meta(paths, ClipMeta(paths.id, num_frames, duration, str(video), extractor.spec, extra=extra))
    layout.mark_complete(paths)
    elapsed = time.perf_counter() - start
    return ClipResult(paths.id, str(video), DONE, num_frames, duration, seconds=elapsed, face_fraction=face_fraction)


def _run_job(video: Path, paths: ClipPaths, options: ClipOptions, identity: str | None) -> ClipResult:
    """:func:`preprocess_clip` that turns any failure into a result, so one clip cannot stop the batch."""
    start = time.perf_counter()
    try:
        return preprocess_clip(video, paths, options, identity)
    except SplatPortraitError as err:
        status, reason = SKIPPED, str(err)
    except Exception as err:  # a bug: keep its traceback for the log, but finish the other clips
        status, reason = ERROR, f"{type(err).__name__}: {err}\n{traceback.format_exc()}"
    layout.discard_unfinished(paths)
    return ClipResult(paths.id, str(video), status, reason=reason, seconds=time.perf_counter() - start)


def _check_settings(meta: ClipMeta, paths: ClipPaths, options: ClipOptions, spec: FeatureSpec) -> None:
    """Refuse to add clips made with other settings to a data folder: training needs them all alike."""
    size = meta.extra.get("crop_size", options.size)
    if size != options.size or meta.audio_features != spec:
        raise SplatPortraitError(
            f"{paths.root} was made with --size {size} and {meta.audio_features.describe()} audio features, not "
            f"--size {options.size} and {spec.describe()}; use the same settings or another output folder"
        )


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def preprocess(
    inputs: Iterable[str | os.PathLike],
    data_dir: str | os.PathLike,
    options: ClipOptions = ClipOptions(),
    workers: int | None = None,
    test_fraction: float = 0.1,
    on_start: Callable[[int], None] | None = None,
    on_result: Callable[[ClipResult], None] | None = None,
    identities: dict[str, str] | None = None,
) -> PreprocessReport:
    """Preprocess every video in ``inputs`` into ``data_dir`` and write its manifest.

    ``on_start`` gets the number of videos found, ``on_result`` each clip's result as it finishes.
    ``identities`` maps video file names to who speaks in them; the split then keeps every
    identity on one side (train or test). A finished clip whose identity changed is relabelled.
    """
    videos = find_videos(inputs)
    layout.assign_splits([], test_fraction)  # reject a bad fraction before hours of work
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise SplatPortraitError(f"--workers must be at least 1, got {workers}")
    # Fail once, up front, on a missing feature model rather than once per clip.
    spec = make_extractor(options.audio_features, options.audio_model, normalise=options.audio_norm).spec
    writable_dir(data_dir)
    if on_start:
        on_start(len(videos))
    results: list[ClipResult] = []

    def report(result: ClipResult) -> None:
        if result.status == ERROR:
            log.error("%s failed unexpectedly: %s", result.source, result.reason)
        elif result.status == SKIPPED:
            log.warning("skipped %s: %s", result.source, result.reason)
        results.append(result)
        if on_result:
            on_result(result)

    identities = identities or {}
    jobs = []
    for video, clip_id in zip(videos, clip_ids(videos)):
        paths = ClipPaths.of(data_dir, clip_id)
        identity = identities.get(video.name)
        if layout.is_complete(paths):
            meta = layout.read_meta(paths)
            _check_settings(meta, paths, options, spec)
            if meta.source == str(video):
                if identity and meta.extra.get("identity") != identity:
                    layout.write_meta(paths, dataclasses.replace(meta, extra={**meta.extra, "identity": identity}))
                report(ClipResult(clip_id, str(video), ALREADY_DONE, meta.num_frames, meta.duration))
            else:
                reason = f"clip id {clip_id!r} already holds {meta.source}; rename this file or use another output folder"
                report(ClipResult(clip_id, str(video), SKIPPED, reason=reason))
        else:
            jobs.append((video, paths, identity))
    if workers == 1 or len(jobs) <= 1:
        for video, paths, identity in jobs:
            report(_run_job(video, paths, options, identity))
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        # spawn, not fork: forking a process that already runs torch threads can deadlock.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(jobs)), context, _init_worker, (threads,)) as pool:
            futures = [pool.submit(_run_job, video, paths, options, identity) for video, paths, identity in jobs]
            try:
                for future in as_completed(futures):
                    report(future.result())
            except BrokenProcessPool:
                raise SplatPortraitError(
                    "a worker process died (out of memory?); finished clips are kept, so run the same "
                    "command again to resume, perhaps with fewer --workers"
                ) from None
    order = {str(v): i for i, v in enumerate(videos)}
    results.sort(key=lambda r: order[r.source])
    return PreprocessReport(results, layout.rebuild_manifest(data_dir, test_fraction))
