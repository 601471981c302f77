"""The settings of a training run, stored inside every checkpoint it writes.

A :class:`TrainConfig` holds only built-in types, so ``to_dict()`` goes into a checkpoint as is
and a checkpoint alone says how it was made. Resuming compares the stored config with the new
one: fields in :data:`RESUMABLE_FIELDS` may change (how long to run, how often to save, how many
loader workers), every other difference is refused because the resumed run would no longer be
the run that was started.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

from splat_portrait.models.config import config_from_dict, config_to_dict

Stage = Literal["static", "dynamic"]
STAGES: tuple[str, ...] = ("static", "dynamic")
SDS_VIEWS: tuple[str, ...] = ("bullet", "uniform")
SDS_CROPS: tuple[str, ...] = ("landmarks", "centre")
# The paper's optimiser (Sec. 3.4).
PAPER_LR = 2.5e-5
PAPER_WEIGHT_DECAY = 1e-5
PAPER_LPIPS_WEIGHT = 0.01
# Fields that do not change what a step computes, so a resumed run may set them anew.
RESUMABLE_FIELDS = frozenset({"steps", "checkpoint_every", "log_every", "preview_every", "workers", "data_dir"})


@dataclass(frozen=True)
class TrainConfig:
    """One training run of either stage.

    ``batch_size`` is per process: under ``torchrun`` each of the ``W`` processes takes its own
    ``batch_size`` samples per step. ``resolution`` None means the preset's (stage I) or the
    initial checkpoint's (stage II) image size.
    """

    stage: Stage
    data_dir: str
    # Stage I's model size; stage II takes its model (and size) from ``init``.
    preset: str = "tiny"
    # Stage II starts from this stage-I checkpoint; stage I may continue one (a fine-tune).
    init: Optional[str] = None
    # The generator's surface footprint (models/footprint.py); None keeps the preset's or init's.
    footprint: Optional[float] = None
    # Edge-aware smoothness of the predicted depth surface (losses/geometry.py); 0.01 won the view
    # ablation (scripts/ablate_view_terms.sh) at no cost to the source views.
    depth_smoothness_weight: float = 0.01
    resolution: Optional[int] = None
    steps: int = 1000
    batch_size: int = 4
    lr: float = PAPER_LR
    weight_decay: float = PAPER_WEIGHT_DECAY
    # Linear warm-up to ``lr`` over this many steps, then constant (0: the paper's constant rate).
    warmup_steps: int = 0
    grad_clip: float = 1.0
    lpips_weight: float = PAPER_LPIPS_WEIGHT
    lpips_net: str = "vgg"
    # The paper's perceptual term also compares VGG-Face features; used when a state dict is given.
    vggface: Optional[str] = None
    vggface_weight: float = PAPER_LPIPS_WEIGHT
    # Score distillation: off without a prior checkpoint (``splat-portrait train-prior``).
    prior: Optional[str] = None
    sds_weight: float = 0.0
    sds_band: tuple[float, float] = (0.6, 0.8)
    # Euler steps of the denoising run (None: every schedule level below the start).
    sds_euler_steps: Optional[int] = None
    sds_yaw_deg: float = 45.0
    sds_pitch_deg: float = 12.5
    # Where SDS looks: points of the bullet path ("bullet", the paper's) or a uniform yaw x pitch box.
    sds_views: str = "bullet"
    # The prior's framing of a render: the crop preprocessing would cut around the face dlib finds
    # in it ("landmarks", falling back to the whole render) or the render as it is ("centre").
    sds_crop: str = "landmarks"
    freeze_static: bool = False
    # Mouth-aware terms (losses/mouth.py), from the landmarks preprocess stores; clips without
    # landmarks (synthetic ones) simply do not contribute to them.
    # The photometric loss counts mouth-box pixels this many times (1: plain L2, the paper's).
    mouth_weight: float = 1.0
    # Weight of the landmark lip-shape loss on Δd-moved lip splats (stage II only).
    lip_weight: float = 0.0
    # Weight of the inner-lip gap loss on the same lip splats (stage II only).
    lip_gap_weight: float = 0.0
    # Weight of the still-face loss on the audio offsets away from the mouth (stage II only).
    still_weight: float = 0.0
    # Stage II: the width of a mouth predictor to give a decoder built afresh (models/mouth_code.py);
    # None keeps the initial checkpoint's decoder as it is, 0 makes one that hears the audio itself.
    mouth_code_channels: int | None = None
    # Stage II: steps fitting the mouth predictor on every real frame before the first render step
    # (training/mouth_code.py); it is frozen afterwards. 0 keeps the initial checkpoint's predictor.
    mouth_code_steps: int = 0
    # Std of the Gaussian noise on the (normalised) features while fitting it, against learning the
    # training clips by heart. 0.3 did as well as 0.1 or better wherever we compared them (held-out
    # mouth r 0.41 vs 0.30 at 1,000 steps on the 10-minute corpus, 0.374 vs 0.367 at 300 steps on
    # the 15-minute one), though one seed to the next moves r as much (about 0.05).
    mouth_code_noise: float = 0.3
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 10
    preview_every: int = 200
    workers: int = 0
    # bf16 autocast of the networks on CUDA (ignored on CPU).
    amp: bool = True
    render_backend: str = "auto"

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        for name in ("steps", "batch_size", "checkpoint_every", "log_every", "preview_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("lr", "weight_decay", "warmup_steps", "grad_clip", "lpips_weight", "vggface_weight", "sds_weight", "lip_weight", "lip_gap_weight", "still_weight", "depth_smoothness_weight", "mouth_code_noise", "workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.stage == "dynamic" and self.init is None:
            raise ValueError("stage II (dynamic) starts from a stage-I checkpoint: init is required")
        if self.stage == "static" and self.freeze_static:
            raise ValueError("freeze_static belongs to stage II (dynamic)")
        if self.footprint is not None and self.footprint < 0:
            raise ValueError(f"footprint must not be negative, got {self.footprint}")
        if self.mouth_weight < 1:
            raise ValueError(f"mouth_weight must be at least 1 (1 weighs the mouth like any pixel), got {self.mouth_weight}")
        if self.mouth_code_steps < 0 or (self.mouth_code_channels or 0) < 0:
            raise ValueError("mouth_code_channels and mouth_code_steps must not be negative")
        if (self.mouth_code_channels is not None or self.mouth_code_steps) and self.stage != "dynamic":
            raise ValueError("the mouth code belongs to stage II (dynamic)")
        for name in ("lip_weight", "lip_gap_weight", "still_weight"):
            if getattr(self, name) > 0 and self.stage != "dynamic":
                raise ValueError(f"{name} > 0 weighs the audio offsets: it belongs to stage II (dynamic)")
        if self.sds_views not in SDS_VIEWS or self.sds_crop not in SDS_CROPS:
            raise ValueError(f"sds_views must be one of {', '.join(SDS_VIEWS)} and sds_crop one of {', '.join(SDS_CROPS)}, "
                             f"got {self.sds_views!r}, {self.sds_crop!r}")
        if self.sds_weight > 0 and self.prior is None:
            raise ValueError("score distillation (sds_weight > 0) needs a prior checkpoint")

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return config_from_dict(cls, data)


def resume_differences(saved: dict[str, Any], current: TrainConfig) -> list[str]:
    """``"name: saved -> current"`` for every setting a resumed run may not change."""
    now = current.to_dict()
    names = sorted((set(saved) | set(now)) - RESUMABLE_FIELDS)
    return [f"{n}: {saved.get(n)!r} -> {now.get(n)!r}" for n in names if saved.get(n) != now.get(n)]
