"""Fitting the mouth predictor (:mod:`splat_portrait.models.mouth_code`) before stage II renders anything.

Every frame of every clip with landmarks gives one example: its audio windows and its mouth code
minus the clip's mean code (the speaker's resting mouth is not in the audio). No frame is decoded
or rendered, so a few thousand steps over all of a corpus's frames take about a minute on a CPU.

The loss is one minus the concordance correlation coefficient (Lin 1989) of each code component
over the batch. Mean-square regression from so weak a cue shrinks predictions towards the mean,
leaving a mouth that barely moves; CCC is highest only when predictions also have the truth's
spread, so the predicted mouth moves about as much as a real one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from splat_portrait.audio.windows import audio_windows
from splat_portrait.data import layout
from splat_portrait.data.datasets import DynamicDataset
from splat_portrait.errors import SplatPortraitError
from splat_portrait.models.mouth_code import MouthPredictor, mouth_code

@dataclass
class CodedClip:
    """One clip's features (T, D) and its frames' mouth codes relative to its mean (F, 2), for the frames with a face."""

    id: str
    features: Tensor
    frames: Tensor
    codes: Tensor


def coded_clips(dataset: DynamicDataset) -> list[CodedClip]:
    """The dataset's clips that carry landmarks, with their centred mouth codes."""
    clips = []
    for record in dataset.clips:
        if record.landmarks is None:
            continue
        codes = mouth_code(record.landmarks)
        found = ~codes.isnan().any(-1)
        if int(found.sum()) < 2:
            continue
        features = torch.from_numpy(np.asarray(layout.read_features(record.paths), np.float32))
        codes = codes[found]
        clips.append(CodedClip(record.id, features, found.nonzero()[:, 0], codes - codes.mean(0)))
    if not clips:
        raise SplatPortraitError(
            f"no clip of {dataset.root} has face landmarks; the mouth predictor learns from preprocessed real clips"
        )
    return clips


def concordance_loss(predicted: Tensor, truth: Tensor) -> Tensor:
    """Mean over components of 1 - CCC between predicted and true codes (N, C): 0 only for equal columns."""
    pm, tm = predicted.mean(0), truth.mean(0)
    covariance = ((predicted - pm) * (truth - tm)).mean(0)
    spread = predicted.var(0, unbiased=False) + truth.var(0, unbiased=False) + (pm - tm).square()
    return (1 - 2 * covariance / spread.clamp_min(1e-12)).mean()


def sample(clips: list[CodedClip], count: int, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """``count`` random frames, drawn in proportion to clip length: windows (N, 8, 16, D) and codes (N, 2)."""
    sizes = np.array([len(c.frames) for c in clips], np.float64)
    picks = rng.choice(len(clips), size=count, p=sizes / sizes.sum())
    windows, codes = [], []
    for k in np.unique(picks):
        clip = clips[k]
        rows = torch.from_numpy(rng.integers(0, len(clip.frames), size=int((picks == k).sum())))
        windows.append(audio_windows(clip.features, clip.frames[rows]))
        codes.append(clip.codes[rows])
    return torch.cat(windows), torch.cat(codes)


def fit_mouth_predictor(
    predictor: MouthPredictor, dataset: DynamicDataset, steps: int, lr: float = 1e-3, batch_size: int = 256, seed: int = 0,
    noise: float = 0.3,
) -> dict:
    """Fit ``predictor`` in place on ``dataset``'s clips with landmarks; returns a record for the checkpoint.

    ``noise``: std of Gaussian noise on the (normalised) features, a cheap guard against learning clips by heart.
    """
    clips = coded_clips(dataset)
    device = next(predictor.parameters()).device
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(predictor.parameters(), lr=lr, weight_decay=1e-3)
    started = time.perf_counter()
    losses = []
    predictor.train()
    for _ in range(steps):
        windows, codes = sample(clips, batch_size, rng)
        windows = windows + noise * torch.randn(windows.shape, generator=generator)
        loss = concordance_loss(predictor(windows.to(device)), codes.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    predictor.eval()
    tail = losses[-50:]
    return {
        "steps": steps, "noise": noise, "clips": len(clips), "frames": int(sum(len(c.frames) for c in clips)),
        "seconds": round(time.perf_counter() - started, 1), "final_loss": float(np.mean(tail)) if tail else None,
    }  # fmt: skip
