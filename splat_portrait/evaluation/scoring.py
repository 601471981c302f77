"""Per-clip and aggregate scores of generated frames.

Frame 0 is the source frame's own moment, so reproducing it is reconstruction, not prediction:
PSNR, SSIM, LPIPS, CSIM and FID score frames ``1 .. F-1``. LipSync scores the whole generated
video (frames ``0 .. F-1``) against the driving audio, as SyncNet needs the continuous stream.
CSIM compares each frame with the source image (identity preservation) in both protocols.

Aggregates: PSNR/SSIM/LPIPS are means over all scored frames, CSIM the mean over all frame pairs
where both images showed a face, LSE-C/LSE-D means over clips, FID one distance between the
Inception features of all generated and all real frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

from splat_portrait.errors import SplatPortraitError
from splat_portrait.metrics import Metric, Unavailable
from splat_portrait.metrics.fid import fid_from_features
from splat_portrait.runtime.compose import to_uint8

# The columns of every report, in order; "lipsync" yields two, "mouth" three per protocol, "sync"
# (our expert) four: its LSE-C and LSE-D, the offset found and whether it is 0 (its mean: the share
# of clips in sync); "views" three: on the bullet path, the share of views with a face, their CSIM
# to the source and the mean tearing.
SCORES = ("psnr", "ssim", "lpips", "csim", "fid", "lse_c", "lse_d", "lmd", "mouth_r", "mouth_amp", "mouth_r_audio",
          "sync_c", "sync_d", "sync_offset", "sync_in_sync", "views_face", "views_csim", "views_tearing")  # fmt: skip
SCORES_OF = {"psnr": ("psnr",), "ssim": ("ssim",), "lpips": ("lpips",), "csim": ("csim",), "fid": ("fid",), "lipsync": ("lse_c", "lse_d"),
             "mouth": ("lmd", "mouth_r", "mouth_amp", "mouth_r_audio"), "sync": ("sync_c", "sync_d", "sync_offset", "sync_in_sync"),
             "views": ("views_face", "views_csim", "views_tearing")}  # fmt: skip
METRIC_OF = {score: metric for metric, scores in SCORES_OF.items() for score in scores}


@dataclass
class ClipScores:
    """One clip's scores (None where a metric could not score it, with the reason in ``notes``)."""

    id: str
    source: str
    frames: int
    scored_frames: int
    values: dict[str, float | None] = field(default_factory=dict)
    # How many pairs each mean covers (CSIM: pairs where both images showed a face).
    counts: dict[str, int] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


class Scorer:
    """Runs the built metrics on each clip and keeps FID's features for the aggregate."""

    def __init__(self, metrics: dict[str, Metric | Unavailable], same_identity: bool = True) -> None:
        self.metrics = metrics
        # Same identity: the real frames are the generated clip's own truth (LMD, mouth_r, mouth_amp);
        # cross identity: they are the driving clip of another face, so only the tracks' correlation applies.
        self.same_identity = same_identity
        self._fid_generated: list[np.ndarray] = []
        self._fid_real: list[np.ndarray] = []

    def runnable(self, name: str) -> Metric | None:
        metric = self.metrics.get(name)
        return metric if isinstance(metric, Metric) else None

    def score_clip(
        self, scores: ClipScores, generated: Tensor, real: Tensor, source: Tensor, samples: np.ndarray,
        views: dict[tuple[float, float], np.ndarray] | None = None,
    ) -> ClipScores:  # fmt: skip
        """``generated``/``real`` (F, R, R, 3) in [0, 1], ``source`` (R, R, 3), ``samples`` the driving audio of the F frames,
        ``views`` the bullet path's views of one frame (for the ``views`` metric)."""
        ours, truth = generated[1:], real[1:]
        for name in ("psnr", "ssim", "lpips"):
            if metric := self.runnable(name):
                values = metric.compute(ours, truth).double()
                scores.values[name] = float(values.mean())
                scores.counts[name] = len(values)
        if metric := self.runnable("csim"):
            result = metric.compute(ours, source[None])
            scores.counts["csim"] = result.scored
            scores.values["csim"] = result.value if result.scored else None
            if result.no_face:
                scores.notes["csim"] = f"no face found in {result.no_face} of {len(ours)} frame pairs"
        if metric := self.runnable("fid"):
            self._fid_generated.append(metric.compute(ours))
            self._fid_real.append(metric.compute(truth))
        if metric := self.runnable("lipsync"):
            try:
                sync = metric.compute(list(to_uint8(generated)), samples)
                scores.values.update(lse_c=sync.confidence, lse_d=sync.min_dist)
                scores.counts.update(lse_c=1, lse_d=1)
            except SplatPortraitError as err:
                scores.notes["lipsync"] = str(err)
        if metric := self.runnable("sync"):
            try:
                sync = metric.compute(generated, samples)
                scores.values.update(sync_c=sync.confidence, sync_d=sync.min_dist, sync_offset=sync.offset, sync_in_sync=float(sync.offset == 0))
                scores.counts.update(sync_c=1, sync_d=1, sync_offset=1, sync_in_sync=1)
            except SplatPortraitError as err:
                scores.notes["sync"] = str(err)
        if metric := self.runnable("mouth"):
            self._score_mouth(scores, metric.compute(to_uint8(ours), to_uint8(truth), self.same_identity))
        if (metric := self.runnable("views")) and views:
            turned = metric.compute(views, to_uint8(source[None])[0])
            named = {"views_face": turned.face_found, "views_csim": turned.csim, "views_tearing": turned.tearing_mean}
            for score, value in named.items():
                scores.values[score] = value
                scores.counts[score] = 1 if value is not None else 0
            if turned.note:
                scores.notes["views"] = turned.note
        return scores

    def _score_mouth(self, scores: ClipScores, mouth) -> None:
        # Cross identity reports the tracks' correlation under its own name, against the driving clip.
        correlation = "mouth_r" if self.same_identity else "mouth_r_audio"
        named = {"lmd": mouth.lmd, "mouth_r": mouth.mouth_r, "mouth_amp": mouth.mouth_amp} if self.same_identity else {}
        named[correlation] = mouth.mouth_r
        for score, value in named.items():
            scores.values[score] = value
            scores.counts[score] = mouth.pairs if value is not None else 0
        scores.counts["mouth_no_face_generated"], scores.counts["mouth_no_face_real"] = mouth.no_face_generated, mouth.no_face_real
        renamed = {"faces": "mouth", "mouth_r": correlation}
        for key, note in mouth.notes.items():
            scores.notes[renamed.get(key, key)] = note

    def aggregate(self, clips: list[ClipScores]) -> dict[str, Any]:
        """Each score over all clips: a number, None (nothing scored) or ``"unavailable: reason"``."""
        out: dict[str, Any] = {}
        for score in SCORES:
            metric = self.metrics.get(METRIC_OF[score])
            if metric is None or score in SCORES_OF["mouth"] and not any(score in c.values for c in clips):
                continue
            if isinstance(metric, Unavailable):
                out[score] = str(metric)
            elif score == "fid":
                out[score] = self._fid()
            else:
                out[score] = weighted_mean(clips, score)
        return out

    def _fid(self) -> float | str:
        generated, real = np.concatenate(self._fid_generated), np.concatenate(self._fid_real)
        if len(generated) < 2:
            return "unavailable: FID needs at least 2 generated frames; evaluate more clips or --seconds"
        return fid_from_features(generated, real)


def weighted_mean(clips: list[ClipScores], score: str) -> float | None:
    """Mean of the clips' values weighted by how many pairs each covers; None when none scored."""
    pairs = [(c.values[score], c.counts[score]) for c in clips if c.values.get(score) is not None and c.counts.get(score)]
    total = sum(n for _, n in pairs)
    if not total:
        return None
    return math.fsum(v * n for v, n in pairs) / total
