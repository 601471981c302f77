"""Training samples read from the preprocessed layout: frame pairs of one clip, plus audio for stage II.

Sampling is index-based: sample ``k`` is a pure function of ``(seed, k)``. A training run reads
samples ``0, 1, 2, ...`` in order (:class:`IndexStream`), so the data-sampler position in a
checkpoint is just ``(seed, samples consumed)``, and resuming with
``make_loader(dataset, batch_size, start=consumed)`` yields exactly the batches an uninterrupted run
would have seen, whatever the number of workers. A dataset built with ``seed=None`` draws a fresh
seed and exposes it as ``dataset.seed`` so random runs can still be recorded and resumed.

Each dataset copy (one per DataLoader worker) keeps an LRU cache of decoded frames.
"""

from __future__ import annotations

import itertools
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from splat_portrait.audio.features import FeatureSpec
from splat_portrait.audio.windows import window_indices
from splat_portrait.data import layout
from splat_portrait.data.layout import ClipPaths
from splat_portrait.errors import SplatPortraitError

DEFAULT_CACHE_BYTES = 256 << 20


@dataclass(frozen=True)
class ClipRecord:
    """What the datasets know about one clip without touching its frames."""

    paths: ClipPaths
    num_frames: int
    intrinsics: Tensor  # (F, 4) normalised
    c2w: Tensor  # (F, 4, 4)
    # (F, 68, 2) crop coordinates, NaN where no face was found; None for clips without landmarks.
    landmarks: Tensor | None = None

    @property
    def id(self) -> str:
        return self.paths.id


def load_clips(data_dir: str | os.PathLike, split: str) -> list[ClipRecord]:
    """The clips of ``split`` listed in ``data_dir``'s manifest, checked to be complete and consistent."""
    root = Path(data_dir)
    if root.exists() and not root.is_dir():
        raise SplatPortraitError(f"data directory {root} is a file; pass the folder `splat-portrait preprocess` wrote")
    if not root.is_dir():
        raise SplatPortraitError(
            f"data directory {root} does not exist; create it with `splat-portrait preprocess` or `splat-portrait synth -o {root}`"
        )
    entries = layout.read_manifest(root)
    chosen = [e for e in entries if e.split == split]
    if not chosen:
        counts = ", ".join(f"{sum(e.split == s for e in entries)} {s}" for s in layout.SPLITS)
        raise SplatPortraitError(f"no {split!r} clips in {root / layout.MANIFEST} (it lists {counts})")
    return [_check_clip(root, entry) for entry in chosen]


def _check_clip(root: Path, entry: layout.ManifestEntry) -> ClipRecord:
    paths = ClipPaths.of(root, entry.id)
    redo = "rerun `splat-portrait preprocess` (or `synth`) to finish it"
    if not layout.is_complete(paths):
        raise SplatPortraitError(f"clip {entry.id} is unfinished: {paths.root} has no COMPLETE marker; {redo}")
    found = len(paths.frame_paths())
    if found != entry.frames:
        raise SplatPortraitError(f"clip {entry.id} has {found} of its {entry.frames} frames in {paths.frames_dir}; {redo}")
    cameras = layout.read_cameras(paths)
    if len(cameras.c2w) != entry.frames:
        raise SplatPortraitError(f"clip {entry.id} has {len(cameras.c2w)} cameras for {entry.frames} frames in {paths.cameras}; {redo}")
    landmarks = layout.read_landmarks(paths)
    if landmarks is not None and landmarks.shape != (entry.frames, 68, 2):
        raise SplatPortraitError(f"clip {entry.id} has landmarks of shape {landmarks.shape} for {entry.frames} frames in {paths.landmarks}; {redo}")
    landmarks = None if landmarks is None else torch.from_numpy(landmarks.astype(np.float32))
    return ClipRecord(paths, entry.frames, torch.from_numpy(cameras.intrinsics), torch.from_numpy(cameras.c2w), landmarks)


def frame_landmarks(record: ClipRecord, frame: int) -> tuple[Tensor, Tensor]:
    """Frame ``frame``'s (68, 2) crop-coordinate landmarks and whether they are real (zeros, False if not)."""
    if record.landmarks is None:
        return torch.zeros(68, 2), torch.tensor(False)
    points = record.landmarks[frame]
    known = bool(torch.isfinite(points).all())
    return (points if known else torch.zeros(68, 2)), torch.tensor(known)


class FrameCache:
    """LRU cache of decoded frames (uint8 tensors), bounded in bytes.

    An instance attribute of each dataset, so every DataLoader worker has its own.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[tuple[str, int], Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: tuple[str, int]) -> Tensor | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: tuple[str, int], frame: Tensor) -> None:
        size = frame.numel() * frame.element_size()
        if size > self.max_bytes or key in self._items:
            return
        self._items[key] = frame
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()


def _fresh_seed() -> int:
    # 63 bits: fits a signed int64 wherever a checkpoint stores it.
    return int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> np.uint64(1))


class StaticPairDataset(Dataset):
    """Pairs (I_i, I_n) of frames of one clip with their cameras, for stage I.

    Sample ``k``: frame ``i`` uniform over all frames of the split (so longer clips weigh more), and
    frame ``n`` uniform over the other frames of the same clip. Each frame comes with its
    landmarks (``landmarks_i``/``landmarks_n``, with ``has_landmarks_*`` False where a clip has none). Any ``k >= 0`` is valid; ``len`` is
    the number of frames in the split, a nominal epoch. Images are 3 x R x R in [-1, 1], resized
    (antialiased) when the stored frames are not ``resolution`` square.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        resolution: int = 256,
        seed: int | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.resolution = resolution
        self.seed = _fresh_seed() if seed is None else seed
        self.clips = load_clips(root, split)
        self.cache = FrameCache(cache_bytes)
        self._first_frame = np.cumsum([0] + [c.num_frames for c in self.clips])

    def __len__(self) -> int:
        return int(self._first_frame[-1])

    def __getstate__(self) -> dict[str, Any]:
        # A copy pickled for a spawned worker starts with empty caches rather than shipping them.
        state = self.__dict__.copy()
        state["cache"] = FrameCache(self.cache.max_bytes)
        return state

    def pair(self, index: int) -> tuple[int, int, int]:
        """Sample ``index``'s (clip number, frame i, frame n): a pure function of (seed, index)."""
        if index < 0:
            raise IndexError(f"sample index must be >= 0, got {index}")
        rng = np.random.default_rng([self.seed, index])
        flat = int(rng.integers(len(self)))
        clip = int(np.searchsorted(self._first_frame, flat, side="right")) - 1
        i = flat - int(self._first_frame[clip])
        frames = self.clips[clip].num_frames
        if frames == 1:
            return clip, i, i
        n = int(rng.integers(frames - 1))
        return clip, i, n + (n >= i)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._sample(index, *self.pair(index))

    def _sample(self, index: int, clip: int, i: int, n: int) -> dict[str, Any]:
        record = self.clips[clip]
        landmarks_i, has_i = frame_landmarks(record, i)
        landmarks_n, has_n = frame_landmarks(record, n)
        return {
            "index": index,
            "clip": record.id,
            "frame_i": i,
            "frame_n": n,
            "image_i": self.image(clip, i),
            "image_n": self.image(clip, n),
            "intrinsics_i": record.intrinsics[i],
            "intrinsics_n": record.intrinsics[n],
            "c2w_i": record.c2w[i],
            "c2w_n": record.c2w[n],
            "landmarks_i": landmarks_i,
            "landmarks_n": landmarks_n,
            "has_landmarks_i": has_i,
            "has_landmarks_n": has_n,
        }

    def image(self, clip: int, frame: int) -> Tensor:
        """Frame ``frame`` of clip number ``clip`` as 3 x R x R float32 in [-1, 1]."""
        return self.frame_uint8(clip, frame).float() / 127.5 - 1.0

    def frame_uint8(self, clip: int, frame: int) -> Tensor:
        """The decoded (and resized) frame as 3 x R x R uint8, through the cache."""
        record = self.clips[clip]
        key = (record.id, frame)
        cached = self.cache.get(key)
        if cached is None:
            cached = self._decode(record.paths, frame)
            self.cache.put(key, cached)
        return cached

    def _decode(self, paths: ClipPaths, frame: int) -> Tensor:
        try:
            with Image.open(paths.frame(frame)) as image:
                image = image.convert("RGB")
                if image.size != (self.resolution, self.resolution):
                    # Pillow's resampling filters widen with the scale factor: antialiased downscaling.
                    image = image.resize((self.resolution, self.resolution), Image.Resampling.BICUBIC)
                array = np.asarray(image)
        except OSError as err:
            raise SplatPortraitError(f"cannot read frame {paths.frame(frame)} ({err}); rerun preprocessing for clip {paths.id}") from None
        return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


class DynamicDataset(StaticPairDataset):
    """Stage II samples: a static pair plus the audio windows at frame n and ``delta_t`` = (n - i) / 25 s.

    ``audio`` is (8, 16, D) as :func:`splat_portrait.audio.windows.audio_windows` gives for frame n.
    Every clip must carry features from the same extractor (``feature_spec``).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        resolution: int = 256,
        seed: int | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        super().__init__(root, split, resolution, seed, cache_bytes)
        self.feature_spec = self._common_feature_spec()
        self._features: dict[str, np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_features"] = {}
        return state

    def _common_feature_spec(self) -> FeatureSpec:
        specs = [self._feature_spec(record) for record in self.clips]
        for record, spec in zip(self.clips[1:], specs[1:]):
            if spec != specs[0]:
                raise SplatPortraitError(
                    f"audio features differ between clips: {self.clips[0].id} has {specs[0].describe()} but "
                    f"{record.id} has {spec.describe()}; recompute them all with one extractor"
                )
        return specs[0]

    def _feature_spec(self, record: ClipRecord) -> FeatureSpec:
        spec = layout.read_meta(record.paths).audio_features
        shape = self._open_features(record).shape
        if len(shape) != 2 or shape[1] != spec.dim:
            raise SplatPortraitError(
                f"clip {record.id}: {record.paths.audio_features} has shape {shape}, expected (T, {spec.dim}) "
                f"for {spec.describe()}; rerun preprocessing for it"
            )
        return spec

    @staticmethod
    def _open_features(record: ClipRecord) -> np.ndarray:
        try:
            return np.load(record.paths.audio_features, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise SplatPortraitError(f"cannot read {record.paths.audio_features} ({err}); rerun preprocessing for clip {record.id}") from None

    def audio(self, clip: int, frame: int) -> Tensor:
        """The (8, 16, D) audio windows of clip number ``clip`` at ``frame``."""
        record = self.clips[clip]
        features = self._features.get(record.id)
        if features is None:
            # Memory-mapped: only the rows a window touches are read, however long the clip.
            features = self._features[record.id] = self._open_features(record)
        rows = window_indices(torch.tensor([frame]), features.shape[0])[0].numpy()
        return torch.from_numpy(np.ascontiguousarray(features[rows], np.float32))

    def _sample(self, index: int, clip: int, i: int, n: int) -> dict[str, Any]:
        sample = super()._sample(index, clip, i, n)
        sample["audio"] = self.audio(clip, n)
        sample["delta_t"] = torch.tensor((n - i) / layout.FPS, dtype=torch.float32)
        return sample


class IndexStream(Sampler[int]):
    """Sample indices ``start, start + 1, ...``: ``count`` of them, or endlessly when ``count`` is None."""

    def __init__(self, start: int = 0, count: int | None = None) -> None:
        self.start, self.count = start, count

    def __iter__(self) -> Iterator[int]:
        stop = None if self.count is None else self.start + self.count
        return iter(itertools.count(self.start) if stop is None else range(self.start, stop))

    def __len__(self) -> int:
        if self.count is None:
            raise TypeError("an endless IndexStream has no length")
        return self.count


def make_loader(
    dataset: StaticPairDataset,
    batch_size: int,
    workers: int = 0,
    start: int = 0,
    count: int | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    """Batches of samples ``start, start + 1, ...`` (``count`` of them, or endless).

    Resume a run after ``consumed`` samples with ``start=consumed``. Workers stay alive between
    epochs (``persistent_workers``), keeping their frame caches warm.
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=IndexStream(start, count),
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=pin_memory,
    )
