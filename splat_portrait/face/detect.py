"""Face detection and 68-point landmarks with dlib, using models that ship in PyPI packages.

The detector is dlib's HOG frontal face detector (built into dlib, Boost licence). Landmarks come
from dlib's 68-point shape predictor, whose weights ship in the ``face_recognition_models`` package
(trained on iBUG 300-W, whose annotations are for non-commercial use). Nothing is downloaded.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

from splat_portrait.errors import SplatPortraitError

# Detection first runs on a copy scaled to this many pixels on the long side: dlib's HOG detector
# finds faces from about 80 px up, so this finds faces filling a quarter of the frame cheaply; smaller
# faces are found by a second, larger look. Landmarks are always fitted at full resolution.
DETECT_SIDE = 320


def face_model_path(name: str) -> Path:
    """Path of a model file shipped in ``face_recognition_models`` (e.g. ``shape_predictor_68_face_landmarks.dat``)."""
    # find_spec locates the package without importing it: its __init__ needs pkg_resources, which
    # recent setuptools no longer provides.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise SplatPortraitError("face landmark models not installed; run: pip install face-recognition-models")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise SplatPortraitError(f"{path} is missing; reinstall it: pip install --force-reinstall face-recognition-models")
    return path


LANDMARK_MODEL = "shape_predictor_68_face_landmarks.dat"


def require_dlib():
    """The dlib module, or the one-line error that says how to install it."""
    try:
        import dlib
    except ImportError as err:
        raise SplatPortraitError(f"dlib is not importable ({err}); run: pip install dlib-bin") from None
    return dlib


@functools.lru_cache(maxsize=1)
def _detector():
    return require_dlib().get_frontal_face_detector()


@functools.lru_cache(maxsize=1)
def landmark_predictor():
    """dlib's 68-point shape predictor, loaded once; a damaged model file is a one-line error."""
    path = face_model_path(LANDMARK_MODEL)
    try:
        return require_dlib().shape_predictor(str(path))
    except RuntimeError as err:
        raise SplatPortraitError(f"{path} does not load ({err}); reinstall it: pip install --force-reinstall face-recognition-models") from None


def _downscale(image: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    scale = min(1.0, side / max(image.shape[:2]))
    if scale == 1.0:
        return image, 1.0
    from PIL import Image

    h, w = image.shape[:2]
    small = Image.fromarray(image).resize((round(w * scale), round(h * scale)), Image.BILINEAR)
    return np.asarray(small), scale


def detect_landmarks(image: np.ndarray, detect_side: int = DETECT_SIDE) -> np.ndarray | None:
    """68 (x, y) pixel landmarks of the largest face in an (H, W, 3) uint8 RGB image, or None."""
    dlib = require_dlib()

    image = np.ascontiguousarray(image)
    small, scale = _downscale(image, detect_side)
    faces = _detector()(small, 0)
    if len(faces) == 0:
        # Maybe a face below the detector's 80 px window: look again at three times the size, or
        # let dlib upsample once when the image is already at full size.
        retry, retry_scale = _downscale(image, 3 * detect_side)
        faces = _detector()(retry, 1 if retry_scale == scale else 0)
        scale = retry_scale
    if len(faces) == 0:
        return None
    face = max(faces, key=lambda r: r.width() * r.height())
    box = dlib.rectangle(
        round(face.left() / scale), round(face.top() / scale), round(face.right() / scale), round(face.bottom() / scale)
    )
    shape = landmark_predictor()(image, box)
    return np.array([(p.x, p.y) for p in shape.parts()], np.float64)
