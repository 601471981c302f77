"""Synthetic clips end to end: the settings, one clip rendered with its ground truth, and datasets written in the preprocessed layout."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from splat_portrait.atomic import atomic_open
from splat_portrait.audio.features import make_extractor
from splat_portrait.data import layout
from splat_portrait.data.layout import ClipPaths
from splat_portrait.data.synthetic.head import blinks, random_identity, render_head, talking_cameras
from splat_portrait.data.synthetic.speech import FPS, SAMPLE_RATE, SPEECH_KINDS, SpeechKind, clip_audio, mouth_opening, room_noise
from splat_portrait.errors import SplatPortraitError
from splat_portrait.media.audio import write_wav


@dataclass(frozen=True)
class SynthConfig:
    """How synthetic clips look and move."""

    seconds: float = 5.0
    size: int = 128
    # Colour is averaged over supersample^2 rays per pixel (antialiased edges like a real camera's).
    supersample: int = 2
    max_yaw_deg: float = 8.0
    max_pitch_deg: float = 5.0
    max_roll_deg: float = 2.0
    # Camera translation jitter (world units; the head is ~0.4 wide).
    max_shift: float = 0.02
    speech: SpeechKind = "auto"
    jpeg_quality: int = 95
    # The audio feature normalisation (audio/features.py); match the real clips trained beside these.
    audio_norm: str = "utterance-gated"

    @property
    def num_frames(self) -> int:
        return round(self.seconds * FPS)


@dataclass(frozen=True)
class SyntheticClip:
    """One rendered clip with its ground truth, before it is written to disk."""

    frames: np.ndarray  # (F, S, S, 3) uint8
    depth: np.ndarray  # (F, S, S) float32 z-depth, 0 = background
    mouth_open: np.ndarray  # (F,) float32 in [0, 1]
    audio: np.ndarray  # (N,) float32 16 kHz mono
    intrinsics: np.ndarray  # (F, 4) normalised
    c2w: np.ndarray  # (F, 4, 4)
    speech: str  # "espeak" or "voiced": how the audio was made


def synthesize_clip(seed: int, config: SynthConfig = SynthConfig()) -> SyntheticClip:
    """Render one clip: a random identity (from ``seed``) talking for ``config.seconds``."""
    rng = np.random.default_rng(seed)
    identity = random_identity(rng)
    num_frames = config.num_frames
    # Separate streams, so e.g. switching the speech kind leaves the camera path and blinks as they were.
    audio_rng, camera_rng, blink_rng, noise_rng = (np.random.default_rng([seed, k]) for k in (1, 2, 3, 4))
    clean, speech = clip_audio(audio_rng, config.seconds, identity.voice, identity.f0, config.speech)
    # The mouth follows the voice; the recording also holds room tone (never digital silence).
    mouth = mouth_opening(clean, num_frames)
    audio = clean + room_noise(noise_rng, len(clean))
    intrinsics, c2w = talking_cameras(
        camera_rng, num_frames, config.max_yaw_deg, config.max_pitch_deg, config.max_roll_deg, config.max_shift
    )
    frames, depth = render_head(identity, c2w, intrinsics, mouth, blinks(blink_rng, num_frames), config.size, config.supersample)
    return SyntheticClip(frames, depth, mouth, audio, intrinsics.numpy(), c2w.numpy(), speech)


@dataclass(frozen=True)
class GroundTruth:
    """What a synthetic clip knows about itself: per-frame z-depth and mouth opening."""

    depth: np.ndarray  # (F, S, S) float32, 0 = background
    mouth_open: np.ndarray  # (F,) float32 in [0, 1]


def write_ground_truth(paths: ClipPaths, truth: GroundTruth) -> None:
    with atomic_open(paths.depth, "wb") as f:
        np.save(f, truth.depth.astype(np.float16))
    with atomic_open(paths.mouth_open, "wb") as f:
        np.save(f, truth.mouth_open.astype(np.float32))


def read_ground_truth(paths: ClipPaths) -> GroundTruth:
    """Depth and mouth opening of a synthetic clip (float32); a clear error for a real clip."""
    if not (paths.depth.is_file() and paths.mouth_open.is_file()):
        raise SplatPortraitError(f"clip {paths.id} has no ground truth (depth.npy, mouth_open.npy); only synthetic clips do")
    return GroundTruth(np.load(paths.depth).astype(np.float32), np.load(paths.mouth_open).astype(np.float32))


def clip_seed(seed: int, index: int) -> int:
    """The seed of clip ``index`` of a dataset made with ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def clip_id(seed: int, index: int) -> str:
    return f"synth-s{seed}-{index:05d}"


def write_clip(paths: ClipPaths, clip: SyntheticClip, recipe: dict, config: SynthConfig) -> None:
    """Write a rendered clip in the preprocessed layout, ground truth included, COMPLETE last."""
    extractor = make_extractor("mel", normalise=config.audio_norm)
    layout.start_clip(paths)
    for index, frame in enumerate(clip.frames):
        layout.write_frame(paths, index, frame, quality=config.jpeg_quality)
    write_wav(paths.audio, clip.audio)
    layout.write_features(paths, extractor(clip.audio))
    size = clip.frames.shape[1]
    layout.write_cameras(paths, layout.Cameras(clip.intrinsics, clip.c2w, size, size))
    write_ground_truth(paths, GroundTruth(clip.depth, clip.mouth_open))
    duration = len(clip.audio) / SAMPLE_RATE
    meta = layout.ClipMeta(
        id=paths.id, num_frames=len(clip.frames), duration=duration, source="synthetic",
        audio_features=extractor.spec, synthetic=True, extra={"synth": {**recipe, "speech": clip.speech}},
    )  # fmt: skip
    layout.write_meta(paths, meta)
    layout.mark_complete(paths)


def _recipe(seed: int, index: int, config: SynthConfig) -> dict:
    return {"seed": seed, "index": index, "clip_seed": clip_seed(seed, index), "config": asdict(config)}


def _already_made(paths: ClipPaths, recipe: dict) -> bool:
    if not layout.is_complete(paths):
        return False
    made = layout.read_meta(paths).extra.get("synth", {})
    return {k: made.get(k) for k in recipe} == recipe


def write_synthetic_dataset(
    data_dir: str | os.PathLike,
    num_clips: int,
    seed: int = 0,
    config: SynthConfig = SynthConfig(),
    test_fraction: float = 0.1,
    on_clip: Callable[[str], None] | None = None,
) -> list[layout.ManifestEntry]:
    """Render ``num_clips`` clips into ``data_dir`` and (re)write its manifest.

    Clips already there from the same seed and settings are kept, so an interrupted run resumes.
    The manifest lists every complete clip in ``data_dir`` (see :func:`layout.rebuild_manifest`).
    ``on_clip`` is called with each clip id once it is on disk.
    """
    if num_clips < 1:
        raise SplatPortraitError(f"--clips must be at least 1, got {num_clips}")
    if config.seconds * FPS < 1:
        raise SplatPortraitError(f"--seconds must give at least one frame at {FPS} fps, got {config.seconds}")
    if config.size < 8:
        raise SplatPortraitError(f"--size must be at least 8 pixels, got {config.size}")
    if not 0.0 <= test_fraction <= 1.0:
        raise SplatPortraitError(f"--test-fraction must be in [0, 1], got {test_fraction}")
    if config.speech not in SPEECH_KINDS:
        raise SplatPortraitError(f"--speech must be one of {', '.join(SPEECH_KINDS)}, got {config.speech!r}")
    for index in range(num_clips):
        paths = ClipPaths.of(data_dir, clip_id(seed, index))
        recipe = _recipe(seed, index, config)
        if not _already_made(paths, recipe):
            write_clip(paths, synthesize_clip(recipe["clip_seed"], config), recipe, config)
        if on_clip is not None:
            on_clip(paths.id)
    return layout.rebuild_manifest(data_dir, test_fraction)
