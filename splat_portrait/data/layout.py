"""The preprocessed data layout: the one place that knows file names and formats under DATA_DIR.

::

    DATA_DIR/manifest.jsonl            one JSON object per clip (ManifestEntry)
    DATA_DIR/clips/<id>/frames/000000.jpg ...   square RGB crops at 25 fps
                        audio.wav             16 kHz mono PCM16
                        audio_features.npy    (T, D) float32 at 50 Hz, T = ceil(samples / 320)
                        cameras.json          per-frame normalised intrinsics and c2w
                        landmarks.npy         (F, 68, 2) float32 dlib landmarks in crop coordinates
                                              ([0, 1] of the crop), NaN where no face was found; real clips
                        meta.json             ClipMeta, incl. the audio-feature spec
                        depth.npy, mouth_open.npy   ground truth, synthetic clips only
                        COMPLETE              empty, written last

A clip folder without ``COMPLETE`` is unfinished: readers ignore it and writers redo it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image

from splat_portrait.atomic import atomic_open
from splat_portrait.audio.features import FeatureSpec
from splat_portrait.errors import SplatPortraitError
from splat_portrait.media.audio import read_wav, write_wav

FPS = 25
SAMPLE_RATE = 16000
MANIFEST = "manifest.jsonl"
CLIPS = "clips"
SPLITS = ("train", "test")


@dataclass(frozen=True)
class ClipPaths:
    """File names inside one clip folder ``DATA_DIR/clips/<id>``."""

    root: Path

    @classmethod
    def of(cls, data_dir: str | os.PathLike, clip_id: str) -> ClipPaths:
        return cls(Path(data_dir) / CLIPS / clip_id)

    @property
    def id(self) -> str:
        return self.root.name

    @property
    def frames_dir(self) -> Path:
        return self.root / "frames"

    @property
    def audio(self) -> Path:
        return self.root / "audio.wav"

    @property
    def audio_features(self) -> Path:
        return self.root / "audio_features.npy"

    @property
    def cameras(self) -> Path:
        return self.root / "cameras.json"

    @property
    def meta(self) -> Path:
        return self.root / "meta.json"

    @property
    def landmarks(self) -> Path:
        return self.root / "landmarks.npy"

    @property
    def depth(self) -> Path:
        return self.root / "depth.npy"

    @property
    def mouth_open(self) -> Path:
        return self.root / "mouth_open.npy"

    @property
    def complete(self) -> Path:
        return self.root / "COMPLETE"

    def frame(self, index: int) -> Path:
        return self.frames_dir / f"{index:06d}.jpg"

    def frame_paths(self) -> list[Path]:
        """The clip's frame files in order."""
        return sorted(self.frames_dir.glob("[0-9]*.jpg"))


@dataclass(frozen=True)
class Cameras:
    """Per-frame cameras of a clip: normalised intrinsics (F, 4) and camera-to-world (F, 4, 4)."""

    intrinsics: np.ndarray
    c2w: np.ndarray
    width: int
    height: int
    fps: int = FPS

    def __post_init__(self) -> None:
        num = len(self.intrinsics)
        if self.intrinsics.shape != (num, 4) or self.c2w.shape != (num, 4, 4):
            raise ValueError(f"cameras need intrinsics (F, 4) and c2w (F, 4, 4), got {self.intrinsics.shape} and {self.c2w.shape}")


@dataclass(frozen=True)
class ClipMeta:
    """meta.json: what a clip holds and how it was made; ``extra`` keeps any further keys."""

    id: str
    num_frames: int
    duration: float
    source: str
    audio_features: FeatureSpec
    synthetic: bool = False
    fps: int = FPS
    sample_rate: int = SAMPLE_RATE
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "extra"}
        data["audio_features"] = self.audio_features.to_json()
        data.update((k, v) for k, v in self.extra.items() if k not in data)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClipMeta:
        known = {"id", "num_frames", "duration", "source", "audio_features", "synthetic", "fps", "sample_rate"}
        return cls(
            id=str(data["id"]),
            num_frames=int(data["num_frames"]),
            duration=float(data["duration"]),
            source=str(data["source"]),
            audio_features=FeatureSpec.from_json(data["audio_features"]),
            synthetic=bool(data.get("synthetic", False)),
            fps=int(data.get("fps", FPS)),
            sample_rate=int(data.get("sample_rate", SAMPLE_RATE)),
            extra={k: v for k, v in data.items() if k not in known},
        )


@dataclass(frozen=True)
class ManifestEntry:
    """One line of manifest.jsonl."""

    id: str
    frames: int
    duration: float
    split: str
    source: str
    synthetic: bool = False


def _write_json(path: Path, data: Any) -> None:
    with atomic_open(path, "w") as f:
        json.dump(data, f, indent=1)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SplatPortraitError(f"{path} is missing; preprocess the clip again") from None
    except json.JSONDecodeError as err:
        raise SplatPortraitError(f"{path} is not valid JSON ({err}); preprocess the clip again") from None


def write_cameras(paths: ClipPaths, cameras: Cameras) -> None:
    data = {
        "width": cameras.width,
        "height": cameras.height,
        "fps": cameras.fps,
        # Six decimals: float32 precision, without float32's noise digits in the file.
        "intrinsics": np.asarray(cameras.intrinsics, np.float64).round(6).tolist(),
        "c2w": np.asarray(cameras.c2w, np.float64).round(6).tolist(),
    }
    _write_json(paths.cameras, data)


def read_cameras(paths: ClipPaths) -> Cameras:
    data = _read_json(paths.cameras)
    return Cameras(
        intrinsics=np.asarray(data["intrinsics"], np.float32).reshape(-1, 4),
        c2w=np.asarray(data["c2w"], np.float32).reshape(-1, 4, 4),
        width=int(data["width"]),
        height=int(data["height"]),
        fps=int(data.get("fps", FPS)),
    )


def write_meta(paths: ClipPaths, meta: ClipMeta) -> None:
    _write_json(paths.meta, meta.to_json())


def read_meta(paths: ClipPaths) -> ClipMeta:
    return ClipMeta.from_json(_read_json(paths.meta))


def write_frame(paths: ClipPaths, index: int, image: np.ndarray, quality: int = 95) -> None:
    """Save an (S, S, 3) uint8 RGB frame as JPEG.

    Not atomic on purpose: the clip's COMPLETE marker already makes the folder all-or-nothing.
    """
    paths.frames_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(paths.frame(index), quality=quality)


def read_frame(paths: ClipPaths, index: int) -> np.ndarray:
    """Frame ``index`` as an (S, S, 3) uint8 RGB array."""
    with Image.open(paths.frame(index)) as image:
        return np.asarray(image.convert("RGB"))


def write_audio(paths: ClipPaths, samples: np.ndarray) -> None:
    """Save the clip's (N,) float32 16 kHz mono sound as audio.wav (PCM16)."""
    write_wav(paths.audio, samples, SAMPLE_RATE)


def read_audio(paths: ClipPaths) -> np.ndarray:
    """The clip's sound as (N,) float32 at 16 kHz."""
    samples, rate = read_wav(paths.audio)
    if rate != SAMPLE_RATE:
        raise SplatPortraitError(f"{paths.audio} is {rate} Hz, expected {SAMPLE_RATE}; preprocess the clip again")
    return samples


def write_features(paths: ClipPaths, features: np.ndarray) -> None:
    with atomic_open(paths.audio_features, "wb") as f:
        np.save(f, np.asarray(features, np.float32))


def read_features(paths: ClipPaths) -> np.ndarray:
    return np.load(paths.audio_features)


def write_landmarks(paths: ClipPaths, landmarks: np.ndarray) -> None:
    if landmarks.ndim != 3 or landmarks.shape[1:] != (68, 2):
        raise ValueError(f"landmarks must be (F, 68, 2), got {landmarks.shape}")
    with atomic_open(paths.landmarks, "wb") as f:
        np.save(f, np.asarray(landmarks, np.float32))


def read_landmarks(paths: ClipPaths) -> np.ndarray | None:
    """The clip's (F, 68, 2) crop-coordinate landmarks, or None for a clip without them (synthetic, or older)."""
    if not paths.landmarks.is_file():
        return None
    try:
        return np.load(paths.landmarks)
    except (OSError, ValueError) as err:
        raise SplatPortraitError(f"cannot read {paths.landmarks} ({err}); rerun preprocessing for clip {paths.id}") from None


def start_clip(paths: ClipPaths) -> None:
    """Make an empty folder for a clip about to be written, removing an unfinished earlier attempt."""
    if paths.root.exists():
        shutil.rmtree(paths.root)
    paths.root.mkdir(parents=True)


def discard_unfinished(paths: ClipPaths) -> None:
    """Remove the clip folder if it exists without its COMPLETE marker."""
    if paths.root.exists() and not is_complete(paths):
        shutil.rmtree(paths.root)


def mark_complete(paths: ClipPaths) -> None:
    """Flush every file of the clip, then write the COMPLETE marker (last, by contract)."""
    # Without the flush a crash could leave the marker on disk over frames that never reached it.
    for file in paths.root.rglob("*"):
        if file.is_file():
            with open(file, "rb+") as f:
                os.fsync(f.fileno())
    with atomic_open(paths.complete, "wb"):
        pass


def is_complete(paths: ClipPaths) -> bool:
    return paths.complete.is_file()


def complete_clips(data_dir: str | os.PathLike) -> list[ClipPaths]:
    """The finished clips under ``DATA_DIR/clips``, sorted by id."""
    clips = Path(data_dir) / CLIPS
    if not clips.is_dir():
        return []
    return [ClipPaths(p) for p in sorted(clips.iterdir()) if p.is_dir() and is_complete(ClipPaths(p))]


def _unit_hash(clip_id: str) -> float:
    digest = hashlib.sha256(clip_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(clip_ids: Iterable[str], test_fraction: float = 0.1, groups: dict[str, str] | None = None) -> dict[str, str]:
    """Deterministic train/test split: a clip is ``test`` when the hash of its group is below the fraction.

    A clip's group is ``groups[id]`` (e.g. the identity of the person speaking, so that no face of
    the test split is ever trained on), else its own id. Hashing (rather than shuffling a list)
    keeps every clip's split when clips are added or removed. With two or more groups and
    ``0 < test_fraction < 1`` there is at least one group of each split: the lowest-hash group
    becomes test, the highest-hash one train.
    """
    if not 0.0 <= test_fraction <= 1.0:
        raise SplatPortraitError(f"test fraction must be in [0, 1], got {test_fraction}")
    groups = groups or {}
    group_of = {i: groups.get(i, i) for i in set(clip_ids)}
    ranked = sorted(set(group_of.values()), key=_unit_hash)
    split_of = {g: "test" if _unit_hash(g) < test_fraction else "train" for g in ranked}
    if len(ranked) >= 2 and 0.0 < test_fraction < 1.0:
        split_of[ranked[0]] = "test"
        split_of[ranked[-1]] = "train"
    return {i: split_of[g] for i, g in group_of.items()}


def write_manifest(data_dir: str | os.PathLike, entries: Iterable[ManifestEntry]) -> None:
    with atomic_open(Path(data_dir) / MANIFEST, "w") as f:
        for entry in entries:
            f.write(json.dumps(asdict(entry)) + "\n")


def read_manifest(data_dir: str | os.PathLike) -> list[ManifestEntry]:
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise SplatPortraitError(f"{path} not found; run `splat-portrait preprocess` (or `synth`) into {data_dir} first")
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            entry = ManifestEntry(
                str(data["id"]), int(data["frames"]), float(data["duration"]), str(data["split"]),
                str(data["source"]), bool(data.get("synthetic", False)),
            )  # fmt: skip
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise SplatPortraitError(f"{path} line {number} is not a valid manifest entry ({err})") from None
        if entry.split not in SPLITS:
            raise SplatPortraitError(f"{path} line {number}: split must be train or test, got {entry.split!r}")
        entries.append(entry)
    return entries


def rebuild_manifest(data_dir: str | os.PathLike, test_fraction: float = 0.1) -> list[ManifestEntry]:
    """Write manifest.jsonl listing every complete clip under ``data_dir`` and return its entries.

    Clips whose meta.json names an ``identity`` are split by identity (:func:`assign_splits`).
    """
    metas = [read_meta(paths) for paths in complete_clips(data_dir)]
    groups = {m.id: str(m.extra["identity"]) for m in metas if m.extra.get("identity")}
    splits = assign_splits([m.id for m in metas], test_fraction, groups)
    entries = [ManifestEntry(m.id, m.num_frames, m.duration, splits[m.id], m.source, m.synthetic) for m in metas]
    write_manifest(data_dir, entries)
    return entries
