"""Evaluation metrics of the paper's tables: PSNR, SSIM, LPIPS, CSIM, FID and LipSync.

:func:`build_metric` gives each metric ready to run, or an :class:`Unavailable` with the reason
(missing weights or package) for the results table and metrics.json. A built metric's ``compute``:

* ``psnr``, ``ssim``, ``lpips``: ``(pred, target)`` [0, 1] RGB batches -> per-image tensor (B,);
* ``csim``: ``(images, reference_images)`` -> :class:`~splat_portrait.metrics.identity.CsimResult`;
* ``fid``: ``(images)`` -> (B, 2048) Inception features; the distance between the features of two
  sets is :func:`~splat_portrait.metrics.fid.fid_from_features`;
* ``lipsync``: ``(frames, samples)`` 25 fps RGB uint8 frames and 16 kHz audio ->
  :class:`~splat_portrait.metrics.syncnet.SyncResult` (LSE-D = ``min_dist``, LSE-C = ``confidence``);
* ``mouth``: ``(generated, real, same_identity)`` uint8 frames -> :class:`~splat_portrait.metrics.mouth.MouthScores`
  (LMD, mouth_r, mouth_amp from dlib's 68 landmarks);
* ``views``: ``(views, source)`` the head at one moment from the bullet path's cameras ((yaw, pitch)
  -> uint8 image) and the source -> :class:`~splat_portrait.metrics.views.ViewScores` (face found,
  CSIM, tearing).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Literal

from splat_portrait.errors import SplatPortraitError
from splat_portrait.face.detect import LANDMARK_MODEL, face_model_path
from splat_portrait.metrics import image
from splat_portrait.metrics.availability import MetricUnavailable, require_module
from splat_portrait.metrics.fid import InceptionFeatures
from splat_portrait.metrics.identity import ArcFaceEmbedder, DlibFaceEmbedder, FaceEmbedder, csim
from splat_portrait.metrics.lpips import Lpips
from splat_portrait.metrics.mouth import compare_mouths
from splat_portrait.metrics.sync_expert import ExpertSync
from splat_portrait.metrics.syncnet import LipSync
from splat_portrait.metrics.views import score_views

METRICS = ("psnr", "ssim", "lpips", "csim", "fid", "lipsync", "mouth", "sync", "views")


@dataclass(frozen=True)
class MetricOptions:
    """Choices and weight locations for the metrics that need them."""

    lpips_net: Literal["alex", "vgg"] = "alex"
    face_recognizer: Literal["dlib", "arcface"] = "dlib"
    arcface_onnx: Path | None = None
    syncnet_weights: Path | None = None
    # Our sync expert (``splat-portrait train-sync``), for the ``sync`` metric.
    sync_expert: Path | None = None
    # Fetch missing torchvision / Inception weights into torch hub's cache instead of reporting them.
    allow_download: bool = False
    device: str = "cpu"


@dataclass(frozen=True)
class Metric:
    """A runnable metric; ``implementation`` names the network and weights, since numbers differ between them."""

    name: str
    implementation: str
    compute: Callable[..., Any]


@dataclass(frozen=True)
class Unavailable:
    """A metric that cannot run here, and why."""

    name: str
    reason: str

    def __str__(self) -> str:
        return f"unavailable: {self.reason}"


def _face_embedder(options: MetricOptions) -> FaceEmbedder:
    if options.face_recognizer == "arcface":
        return ArcFaceEmbedder(options.arcface_onnx)
    if options.face_recognizer == "dlib":
        return DlibFaceEmbedder()
    raise ValueError(f"face recognizer must be 'dlib' or 'arcface', got {options.face_recognizer!r}")


def _csim(options: MetricOptions) -> Metric:
    embedder = _face_embedder(options)
    return Metric("csim", embedder.name, partial(csim, embedder))


def _mouth(options: MetricOptions) -> Metric:
    require_module("dlib", "dlib-bin", "Mouth tracks")
    try:
        face_model_path(LANDMARK_MODEL)
    except SplatPortraitError as err:
        raise MetricUnavailable(f"Mouth tracks need dlib's landmark model: {err}") from None
    return Metric("mouth", "dlib 68 landmarks (shape_predictor_68_face_landmarks), inter-ocular normalised", compare_mouths)


def _sync(options: MetricOptions) -> Metric:
    if options.sync_expert is None:
        raise MetricUnavailable("no sync expert given (train one with `splat-portrait train-sync` and pass --sync)")
    return _named("sync", ExpertSync(options.sync_expert, options.device))


def _views(options: MetricOptions) -> Metric:
    embedder = _face_embedder(options)
    try:
        face_model_path(LANDMARK_MODEL)
    except SplatPortraitError as err:
        raise MetricUnavailable(f"View scores need dlib's landmark model: {err}") from None
    implementation = f"bullet path views: dlib face detection, {embedder.name} CSIM, Laplacian tearing in the frontal face box"
    return Metric("views", implementation, partial(score_views, embedder))


def _named(name: str, metric: Any) -> Metric:
    return Metric(name, metric.name, metric)


# Each builder constructs its metric eagerly, so missing weights surface here and not mid-evaluation.
_BUILDERS: dict[str, Callable[[MetricOptions], Metric]] = {
    "psnr": lambda o: Metric("psnr", "psnr on [0, 1] RGB", image.psnr),
    "ssim": lambda o: Metric("ssim", "ssim, 11x11 Gaussian window (sigma 1.5) on [0, 1] RGB", image.ssim),
    "lpips": lambda o: _named("lpips", Lpips(o.lpips_net, o.device, o.allow_download)),
    "csim": _csim,
    "fid": lambda o: _named("fid", InceptionFeatures(o.device, o.allow_download)),
    "lipsync": lambda o: _named("lipsync", LipSync(o.syncnet_weights, o.device)),
    "mouth": _mouth,
    "sync": _sync,
    "views": _views,
}


def build_metric(name: str, options: MetricOptions = MetricOptions()) -> Metric | Unavailable:
    """The metric ``name`` ready to run, or :class:`Unavailable` when its weights or package are missing.

    A weights file that is given but broken still raises :class:`~splat_portrait.errors.SplatPortraitError`:
    the user asked for it, so it is an error, not a gap in the table.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")
    try:
        return _BUILDERS[name](options)
    except MetricUnavailable as err:
        return Unavailable(name, str(err))


__all__ = ["METRICS", "Metric", "MetricOptions", "MetricUnavailable", "Unavailable", "build_metric"]
