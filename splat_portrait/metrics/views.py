"""Does the head hold together when it turns? Scores of one head seen along the paper's bullet path.

The views are the head at one moment rendered from yaw -30...+30 degrees in 5-degree steps at
pitch 0 and +-12.5 degrees (``BULLET_YAWS_DEG`` x ``BULLET_PITCHES_DEG``, the extreme views the
paper's score distillation looks at). Three scores:

* ``face_found``: the share of views where dlib finds a face at all;
* ``csim``: dlib's identity similarity of the views (those with a face) to the source image;
* ``tearing``: high-frequency energy inside the frontal render's face box, relative to the frontal
  render: mean |Laplacian| (view) / mean |Laplacian| (frontal) - 1. A smooth surface seen from
  another angle keeps about the same edge energy; splats that stop covering their surface leave
  stripes and holes, whose edges raise it. 0 for an unchanged image; the mean over the views and
  the worst view are reported.

A method with no 3D (copy-source) answers every view with the source: 1, 1 and 0 by construction,
the reference a 3D head is measured against.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import numpy as np

from splat_portrait.face.detect import detect_landmarks
from splat_portrait.metrics.identity import FaceEmbedder, csim

BULLET_YAWS_DEG: tuple[float, ...] = tuple(float(y) for y in range(-30, 31, 5))
BULLET_PITCHES_DEG: tuple[float, ...] = (0.0, 12.5, -12.5)
FRONTAL = (0.0, 0.0)


def bullet_angles() -> list[tuple[float, float]]:
    """(yaw, pitch) in degrees of every view, pitch by pitch."""
    return [(yaw, pitch) for pitch in BULLET_PITCHES_DEG for yaw in BULLET_YAWS_DEG]


def laplacian_energy(image: np.ndarray, box: tuple[slice, slice]) -> float:
    """Mean absolute 4-neighbour Laplacian of the grey (H, W, 3) image inside ``box``."""
    grey = image.astype(np.float64).mean(-1)
    lap = 4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    rows, cols = box
    return float(np.abs(lap[rows, cols]).mean())


def face_box(landmarks: np.ndarray, size: int) -> tuple[slice, slice]:
    """The box of the 68 landmarks, in the Laplacian's coordinates (one pixel in from each edge)."""
    x0, y0 = np.clip(landmarks.min(0).astype(int) - 1, 0, size - 3)
    x1, y1 = np.clip(landmarks.max(0).astype(int), 1, size - 2)
    return slice(y0, y1), slice(x0, x1)


@dataclass(frozen=True)
class ViewScores:
    views: int
    face_found: float
    csim: float | None  # None: no view showed a face
    tearing_mean: float | None  # None: no face in the frontal render, so no face box
    tearing_worst: float | None
    worst_view: str | None  # "yaw/pitch"
    tearing: dict[str, float] = field(default_factory=dict)
    note: str | None = None


def score_views(embedder: FaceEmbedder, views: dict[tuple[float, float], np.ndarray], source: np.ndarray) -> ViewScores:
    """Scores of ``views`` ((yaw, pitch) -> (S, S, 3) uint8, the frontal (0, 0) among them) against ``source``."""
    frontal = views[FRONTAL]
    found = [detect_landmarks(view) is not None for view in views.values()]
    identity = csim(embedder, list(views.values()), [source])
    base = dict(views=len(views), face_found=sum(found) / len(views), csim=identity.value if identity.scored else None)
    landmarks = detect_landmarks(frontal)
    if landmarks is None:
        return ViewScores(**base, tearing_mean=None, tearing_worst=None, worst_view=None, note="no face in the frontal render: no face box")
    box = face_box(landmarks, frontal.shape[0])
    reference = laplacian_energy(frontal, box)
    tearing = {f"{yaw:g}/{pitch:g}": laplacian_energy(view, box) / reference - 1 for (yaw, pitch), view in views.items()}
    worst = max(tearing, key=tearing.get)
    return ViewScores(**base, tearing_mean=statistics.fmean(tearing.values()), tearing_worst=tearing[worst], worst_view=worst,
                      tearing=tearing)  # fmt: skip
