"""FID: the Fréchet distance between Gaussians fitted to Inception pool3 features of two image sets.

Features come from ``pytorch-fid``'s port of the TensorFlow FID Inception (the network behind the
published FID numbers); its weights, ``pt_inception-2015-12-05-6726825d.pth``, are a download that
torch hub caches. The distance itself is computed here.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

from splat_portrait.metrics.availability import MetricUnavailable, hub_checkpoint, require_module
from splat_portrait.metrics.image import channels_first

FEATURE_DIM = 2048
# Added to both covariances' diagonals when their product has no finite square root (few samples).
_SQRTM_EPS = 1e-6
# A real covariance product's square root is real; larger imaginary parts mean broken statistics.
_MAX_IMAGINARY = 1e-3


class InceptionFeatures:
    """``InceptionFeatures()(images)`` -> (B, 2048) float64 pool3 features of a [0, 1] RGB batch."""

    name = "pytorch-fid InceptionV3 pool3 (pt_inception-2015-12-05)"

    def __init__(self, device: str | torch.device = "cpu", allow_download: bool = False, batch_size: int = 32):
        inception = require_module("pytorch_fid.inception", "pytorch-fid", "FID")
        checkpoint = hub_checkpoint(inception.FID_WEIGHTS_URL, "FID", allow_download)
        # With the file in torch hub's cache, pytorch-fid loads it from there instead of downloading.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
            try:
                model = inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[FEATURE_DIM]])
            except (RuntimeError, EOFError, pickle.UnpicklingError) as err:
                raise MetricUnavailable(
                    f"FID could not load {checkpoint} ({err}); replace it with {inception.FID_WEIGHTS_URL}"
                ) from err
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, images: Tensor) -> np.ndarray:
        images = channels_first(images)
        features = [
            self.model(batch.to(self.device, torch.float32))[0].flatten(1).cpu()
            for batch in images.split(self.batch_size)
        ]
        return torch.cat(features).double().numpy()


def gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of (N, D) features, N >= 2."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"FID needs at least two (N, D) feature vectors per set, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray) -> float:
    """Fréchet (2-Wasserstein squared) distance between N(mean_a, cov_a) and N(mean_b, cov_b).

    ``|mean_a - mean_b|^2 + tr(cov_a + cov_b - 2 (cov_a cov_b)^(1/2))``.
    """
    cov_a, cov_b = np.atleast_2d(cov_a), np.atleast_2d(cov_b)
    root = scipy.linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():
        # Singular covariances (fewer samples than dimensions): regularise as the reference FID code does.
        offset = np.eye(len(cov_a)) * _SQRTM_EPS
        root = scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    if np.iscomplexobj(root):
        if np.abs(root.imag).max() > _MAX_IMAGINARY:
            raise ValueError(f"covariance square root has imaginary part {np.abs(root.imag).max():.3g}")
        root = root.real
    difference = np.atleast_1d(mean_a) - np.atleast_1d(mean_b)
    return float(difference @ difference + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(root))


def fid_from_features(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID between two (N, D) feature sets, e.g. real and generated frames through :class:`InceptionFeatures`."""
    return frechet_distance(*gaussian_statistics(features_a), *gaussian_statistics(features_b))
