"""The 2D face prior for score distillation (the paper's Sec. 3.3).

Module map: ``edm`` (noise schedule, preconditioning, :class:`EDMDenoiser`, its loss, the Euler
step, :func:`load_denoiser`), ``sds`` (noise band, score-distillation loss, extreme and bullet poses,
the prior's centred and landmark-aligned crops), ``train`` (``splat-portrait train-prior``: a denoiser trained on the preprocessed frames).
"""

from splat_portrait.prior.edm import (
    PRIOR_PRESETS,
    EDMDenoiser,
    EDMDenoiserConfig,
    EDMSchedule,
    edm_loss,
    euler_step,
    load_denoiser,
    preconditioning,
)
from splat_portrait.prior.sds import (
    aligned_crop,
    band_indices,
    bullet_poses,
    denoise_from_band,
    ffhq_crop,
    landmark_boxes,
    random_extreme_poses,
    score_distillation_loss,
)

__all__ = [
    "PRIOR_PRESETS",
    "EDMDenoiser",
    "EDMDenoiserConfig",
    "EDMSchedule",
    "aligned_crop",
    "band_indices",
    "bullet_poses",
    "denoise_from_band",
    "edm_loss",
    "euler_step",
    "ffhq_crop",
    "landmark_boxes",
    "load_denoiser",
    "preconditioning",
    "random_extreme_poses",
    "score_distillation_loss",
]
