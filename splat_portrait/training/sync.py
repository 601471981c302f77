"""Training our sync expert (``splat-portrait train-sync``) on preprocessed real clips.

Each step takes ``batch_size`` windows (five frames of a clip and the audio they span) and scores
every video window against: its own audio, ``shifts`` windows of the same clip's audio moved by
3-15 frames (the hard negatives: same voice, same face, wrong time) and the other windows' audio
(other people, other times). A softmax cross-entropy over those scores (InfoNCE) pulls the true
pair's cosine similarity above all the others'.

With ``augment`` every window is changed in ways that keep it in sync: mirrored, its brightness
and contrast moved, shifted by up to two pixels; its audio gets noise and one masked band of
frequencies. A few dozen people are far too few to see every face and voice; these make them
look like more.

Every real clip of the split long enough for the shifts is used; synthetic clips are left out
(their sound is not speech). The whole train split's mouth crops are held in memory as uint8 (a few MB per
minute of video), so steps never wait for JPEG decoding.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from splat_portrait.audio.features import FeatureSpec
from splat_portrait.data import layout
from splat_portrait.data.datasets import DynamicDataset
from splat_portrait.errors import SplatPortraitError
from splat_portrait.metrics.sync_expert import audio_windows, expert_sync_mouths, mouth_crops
from splat_portrait.models.checkpoint import save_checkpoint
from splat_portrait.models.sync_expert import SYNC_KINDS, WINDOW_FRAMES, SyncExpert, SyncExpertConfig

MIN_SHIFT, MAX_SHIFT = 3, 15


@dataclass(frozen=True)
class SyncTrainConfig:
    data_dir: str
    steps: int = 2000
    batch_size: int = 32
    shifts: int = 4
    lr: float = 1e-3
    temperature: float = 0.1
    seed: int = 0
    resolution: int = 128
    # Synthetic clips' sound is not speech; only tests of the machinery train on them.
    include_synthetic: bool = False
    augment: bool = False

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "resolution"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.temperature <= 0 or self.lr <= 0:
            raise ValueError("lr and temperature must be positive")


@dataclass
class ClipWindows:
    """One clip's greyscale mouth crops (F, H, W) uint8 and audio features (T, D)."""

    id: str
    mouths: torch.Tensor
    features: torch.Tensor


def load_windows(
    data_dir: str | os.PathLike, split: str, expert: SyncExpertConfig, resolution: int, include_synthetic: bool = False
) -> tuple[list[ClipWindows], FeatureSpec]:
    """Every real clip of ``split`` long enough for shifted negatives, decoded once."""
    dataset = DynamicDataset(data_dir, split, resolution, seed=0)
    clips = []
    for number, record in enumerate(dataset.clips):
        synthetic = layout.read_meta(record.paths).synthetic and not include_synthetic
        if synthetic or record.num_frames < WINDOW_FRAMES + 2 * MAX_SHIFT:
            continue
        frames = torch.stack([dataset.frame_uint8(number, f) for f in range(record.num_frames)])
        mouths = (mouth_crops(frames, expert) * 255).round().to(torch.uint8)
        features = torch.from_numpy(np.asarray(layout.read_features(record.paths), np.float32))
        clips.append(ClipWindows(record.id, mouths, features))
    if not clips:
        raise SplatPortraitError(
            f"no real clip of at least {(WINDOW_FRAMES + 2 * MAX_SHIFT) / layout.FPS:.1f} s in the {split} split of {data_dir}; "
            "the sync expert learns from real talking clips (preprocess some videos)"
        )
    return clips, dataset.feature_spec


def sample_batch(clips: list[ClipWindows], config: SyncTrainConfig, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Video windows (B, 5, H, W) and audio candidates (B, 1 + shifts, 10, D): the true window first."""
    weights = np.array([len(c.mouths) for c in clips], np.float64)
    picks = rng.choice(len(clips), size=config.batch_size, p=weights / weights.sum())
    videos, audios = [], []
    for k in picks:
        clip = clips[k]
        frames = len(clip.mouths)
        start = int(rng.integers(0, frames - WINDOW_FRAMES + 1))
        video = clip.mouths[start : start + WINDOW_FRAMES].float() / 255
        candidates = [start]
        while len(candidates) < 1 + config.shifts:
            shift = int(rng.integers(MIN_SHIFT, MAX_SHIFT + 1)) * (1 if rng.random() < 0.5 else -1)
            if 0 <= start + shift <= frames - WINDOW_FRAMES:
                candidates.append(start + shift)
        videos.append(video)
        audios.append(audio_windows(clip.features, torch.tensor(candidates)))
    return torch.stack(videos), torch.stack(audios)


SHIFT_PX = 2
NOISE, MASKED_BINS = 0.1, 8


def augment(videos: torch.Tensor, audios: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Sync-keeping random changes of video windows (B, 5, H, W) and their audio candidates (B, C, 10, D).

    Each window is mirrored (half of them), its contrast scaled by 0.7-1.3 about its mean and its
    brightness moved by up to 0.1, and it is shifted by up to ``SHIFT_PX`` pixels (edges repeated).
    All candidates of a window get the same masked band of up to ``MASKED_BINS`` features (set to 0,
    the utterance mean) and fresh noise, so what tells them apart is still their timing alone.
    """
    b, _, h, w = videos.shape
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    flip = rand(b) < 0.5
    videos = torch.where(flip[:, None, None, None], videos.flip(-1), videos)
    mean = videos.mean((1, 2, 3), keepdim=True)
    videos = ((videos - mean) * (0.7 + 0.6 * rand(b, 1, 1, 1)) + mean + 0.2 * (rand(b, 1, 1, 1) - 0.5)).clamp(0, 1)
    padded = F.pad(videos, (SHIFT_PX,) * 4, mode="replicate")
    starts = torch.randint(0, 2 * SHIFT_PX + 1, (b, 2), generator=generator)
    videos = torch.stack([padded[k, :, y : y + h, x : x + w] for k, (y, x) in enumerate(starts.tolist())])
    bins = audios.shape[-1]
    low = torch.randint(0, bins, (b,), generator=generator)
    width = torch.randint(0, MASKED_BINS + 1, (b,), generator=generator)
    band = torch.arange(bins)
    masked = (band >= low[:, None]) & (band < (low + width)[:, None])  # (B, D)
    audios = audios.masked_fill(masked[:, None, None, :], 0.0) + NOISE * torch.randn(audios.shape, generator=generator)
    return videos, audios


def contrastive_loss(expert: SyncExpert, videos: torch.Tensor, audios: torch.Tensor, temperature: float) -> tuple[torch.Tensor, float]:
    """InfoNCE of each video window against its own shifted audio and every other window's true audio; and the accuracy."""
    b, c = audios.shape[:2]
    v = expert.embed_video(videos)  # (B, E)
    a = expert.embed_audio(audios.flatten(0, 1)).view(b, c, -1)  # (B, C, E)
    own = torch.einsum("be,bce->bc", v, a)  # column 0: the true pair
    others = v @ a[:, 0].T  # (B, B): other windows' true audio (the diagonal is the true pair again)
    others = others.masked_fill(torch.eye(b, dtype=torch.bool), float("-inf"))
    logits = torch.cat([own, others], 1) / temperature
    target = torch.zeros(b, dtype=torch.long)
    return F.cross_entropy(logits, target), float((logits.argmax(1) == 0).float().mean())


def train_sync(
    config: SyncTrainConfig,
    output: str | os.PathLike,
    expert_config: SyncExpertConfig | None = None,
    on_step: Callable[[int, float, float], None] | None = None,
) -> dict:
    """Train an expert and save it to ``output`` (a checkpoint whose training record names its data)."""
    chosen = expert_config or SyncExpertConfig()
    clips, spec = load_windows(config.data_dir, "train", chosen, config.resolution, config.include_synthetic)
    # The mouth crops do not depend on the feature width, so the expert takes the data's only now.
    expert_config = dataclasses.replace(chosen, feature_dim=spec.dim)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    expert = SyncExpert(expert_config)
    optimizer = torch.optim.AdamW(expert.parameters(), lr=config.lr, weight_decay=1e-4)
    started = time.perf_counter()
    recent: deque[tuple[float, float]] = deque(maxlen=50)
    for step in range(1, config.steps + 1):
        videos, audios = sample_batch(clips, config, rng)
        if config.augment:
            videos, audios = augment(videos, audios, generator)
        loss, accuracy = contrastive_loss(expert, videos, audios, config.temperature)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        recent.append((loss.item(), accuracy))
        if on_step:
            on_step(step, *recent[-1])
    record = {
        "config": asdict(config), "feature_spec": spec.to_json(), "clips": [c.id for c in clips],
        "frames": int(sum(len(c.mouths) for c in clips)), "seconds": round(time.perf_counter() - started, 1),
        "final_loss": float(np.mean([r[0] for r in recent])), "final_accuracy": float(np.mean([r[1] for r in recent])),
    }  # fmt: skip
    save_checkpoint(Path(output), expert.eval(), {"sync_training": record}, kinds=SYNC_KINDS)
    return record


@torch.inference_mode()
def held_out_figures(expert: SyncExpert, clips: list[ClipWindows], seconds: float = 5.0, seed: int = 0, stride: float | None = None) -> dict:
    """How well ``expert`` does on clips it never saw.

    ``offset_correct``: the share of whole ``seconds`` windows (starting every ``stride`` seconds,
    by default back to back) whose offset search (:func:`~splat_portrait.metrics.sync_expert.expert_sync`) finds 0;
    ``pairs_ranked``: the share of (window, shifted window) pairs, 3-15 frames apart, where the true
    audio scores above the shifted one.
    """
    length = round(seconds * layout.FPS)
    step = round((stride or seconds) * layout.FPS)
    offsets, ranked = [], []
    rng = np.random.default_rng(seed)
    for clip in clips:
        for start in range(0, len(clip.mouths) - length + 1, step):
            mouths = clip.mouths[start : start + length].float() / 255
            features = clip.features[2 * start : 2 * (start + length)]
            offsets.append(expert_sync_mouths(expert, mouths, features).offset)
        for _ in range(32):
            t = int(rng.integers(MAX_SHIFT, len(clip.mouths) - WINDOW_FRAMES - MAX_SHIFT + 1))
            shift = int(rng.integers(MIN_SHIFT, MAX_SHIFT + 1)) * (1 if rng.random() < 0.5 else -1)
            video = clip.mouths[t : t + WINDOW_FRAMES][None].float() / 255
            audio = audio_windows(clip.features, torch.tensor([t, t + shift]))
            scores = expert(video.expand(2, -1, -1, -1), audio)
            ranked.append(bool(scores[0] > scores[1]))
    return {
        "windows": len(offsets), "offset_correct": float(np.mean([o == 0 for o in offsets])) if offsets else None,
        "offsets": offsets, "pairs": len(ranked), "pairs_ranked": float(np.mean(ranked)) if ranked else None,
    }  # fmt: skip
