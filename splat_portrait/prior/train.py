"""Training a face denoiser for score distillation on the preprocessed frames (``splat-portrait train-prior``).

For users without a published face prior: EDM's denoising loss on every frame of the train split,
at the prior's resolution. The checkpoint (written atomically every ``checkpoint_every`` steps and
at the end) holds the network config and noise range, so :func:`~splat_portrait.prior.edm.load_denoiser`
rebuilds the denoiser from the file alone.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch

from splat_portrait.data.datasets import StaticPairDataset, make_loader
from splat_portrait.models.checkpoint import save_checkpoint
from splat_portrait.prior.edm import DENOISER_KINDS, EDMDenoiser, EDMDenoiserConfig, edm_loss

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PriorTraining:
    """Optimisation settings of :func:`train_prior`."""

    steps: int = 2000
    batch_size: int = 16
    lr: float = 2e-4
    weight_decay: float = 0.0
    seed: int = 0
    checkpoint_every: int = 500
    # Faces are close to mirror-symmetric, so flipped frames are valid extra samples.
    hflip: bool = True
    workers: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class PriorFrames(StaticPairDataset):
    """Single frames of a split, uniform over all its frames: sample ``k`` is frame ``i`` of ``pair(k)``."""

    def __getitem__(self, index: int) -> dict[str, Any]:
        clip, frame, _ = self.pair(index)
        return {"index": index, "image": self.image(clip, frame)}


def train_prior(
    data_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    config: EDMDenoiserConfig,
    training: PriorTraining = PriorTraining(),
    device: str | torch.device = "cpu",
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train an :class:`EDMDenoiser` on ``data_dir``'s train frames and save it to ``out_path``.

    Frames are resized to ``config.unet.image_size``. A run is a function of ``training.seed``
    (initial weights, frame order, noise, flips). ``on_step(step, loss)`` follows progress.
    Returns the loss of every step.
    """
    dataset = PriorFrames(data_dir, "train", config.unet.image_size, seed=training.seed)
    # Seeded initial weights without touching the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(training.seed)
        model = EDMDenoiser(config)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=training.lr, weight_decay=training.weight_decay)
    generator = torch.Generator(device).manual_seed(training.seed)
    loader = make_loader(dataset, training.batch_size, training.workers, count=training.steps * training.batch_size)
    losses: list[float] = []
    for step, batch in enumerate(loader, start=1):
        images = batch["image"].to(device)
        if training.hflip:
            flip = torch.rand(images.shape[0], generator=generator, device=images.device) < 0.5
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        loss = edm_loss(model, images, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
        if step % training.checkpoint_every == 0 or step == training.steps:
            recent = losses[-training.checkpoint_every :]
            state = {
                "step": step,
                "samples": step * training.batch_size,
                "seed": training.seed,
                "mean_loss": sum(recent) / len(recent),
            }
            save_checkpoint(out_path, model, state, kinds=DENOISER_KINDS)
            log.debug("step %d: checkpoint %s (mean loss %.4f)", step, out_path, state["mean_loss"])
    return losses
