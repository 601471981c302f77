"""Speech features computed as the audio arrives, and the audio windows of frames as soon as they can be made.

:class:`StreamingMel` gives exactly the features :class:`~splat_portrait.audio.features.MelExtractor`
gives the whole clip: feature ``t`` covers samples ``[320 t - 320, 320 t + 320)``, so it is final
once sample ``320 t + 319`` has arrived, and each sample is transformed once (no recomputation of
the clip per chunk). :meth:`StreamingMel.finish` pads the end with zeros as the offline extractor does.

:class:`FeatureBuffer` keeps only the features windows still need and cuts each frame's
(8, 16, D) windows with the offline indexing (edges repeat the first and last feature), so a
stream's frames equal ``animate``'s. Frame ``n`` (``t = n / 25`` s) reaches feature ``2n + 13``:
a live stream cannot make it before 280 ms of audio past ``t`` have arrived (``LOOKAHEAD_SECONDS``).

Per-utterance normalisation cannot be done live (it needs the whole clip's statistics);
:class:`RunningNormalised` uses the statistics of the features so far instead, which converge to
the clip's within the first seconds of speech; so does its loudness gate (the swing of the hops so far).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from splat_portrait.audio.features import HOP, FeatureSpec, MelExtractor, extractor_for, hop_log_energy, loudness_gate
from splat_portrait.audio.windows import LOOKAHEAD_FEATURES, LOOKBACK_FEATURES, frames_ready, window_indices
from splat_portrait.errors import SplatPortraitError

# Audio past a frame's own time its windows need: the last feature's centre plus half its window.
LOOKAHEAD_SECONDS = (LOOKAHEAD_FEATURES * HOP + MelExtractor.window // 2) / 16000


class StreamingExtractor(Protocol):
    spec: FeatureSpec

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Append (N,) float32 16 kHz samples; return the (k, D) features that became final."""

    def finish(self) -> np.ndarray:
        """End of speech: the remaining features, so that all together are ``ceil(N / 320)``."""


class StreamingMel:
    """:class:`MelExtractor`'s log-mel features, computed incrementally (identical numbers)."""

    def __init__(self) -> None:
        self.offline = MelExtractor()
        self.spec = self.offline.spec
        # Samples not yet consumed by a final feature, starting at padded-signal position
        # ``320 * self.emitted`` (the signal is padded with half a window of zeros in front).
        self._pending = np.zeros(self.offline.window // 2, np.float32)
        self.emitted = 0
        self.samples_seen = 0

    def _features(self, count: int) -> np.ndarray:
        window = self.offline.window
        segment = torch.from_numpy(self._pending[: (count - 1) * HOP + window])
        spec = torch.stft(segment, window, HOP, window=self.offline._hann, center=False, return_complex=True)
        power = spec.abs().square().T
        out = torch.log(torch.clamp(power @ self.offline._filters, min=1e-6)).numpy()
        self._pending = self._pending[count * HOP :]
        self.emitted += count
        return out

    def push(self, samples: np.ndarray) -> np.ndarray:
        samples = np.asarray(samples, np.float32).reshape(-1)
        self.samples_seen += len(samples)
        self._pending = np.concatenate([self._pending, samples])
        count = (len(self._pending) - self.offline.window) // HOP + 1
        return self._features(count) if count > 0 else np.empty((0, self.spec.dim), np.float32)

    def finish(self) -> np.ndarray:
        total = -(-self.samples_seen // HOP)
        count = total - self.emitted
        if count <= 0:
            return np.empty((0, self.spec.dim), np.float32)
        needed = (count - 1) * HOP + self.offline.window
        self._pending = np.concatenate([self._pending, np.zeros(max(0, needed - len(self._pending)), np.float32)])
        return self._features(count)


class Welford:
    """Running mean and deviation (population) of arrays of one shape, one sample at a time."""

    def __init__(self, shape: tuple[int, ...] = ()) -> None:
        self.count = 0
        self.mean = np.zeros(shape, np.float64)
        self._m2 = np.zeros(shape, np.float64)

    def add(self, value: np.ndarray | float) -> None:
        self.count += 1
        delta = value - self.mean
        self.mean = self.mean + delta / self.count
        self._m2 = self._m2 + delta * (value - self.mean)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self._m2 / max(self.count, 1))


class RunningNormalised:
    """Per-dimension standardisation with the mean and deviation of every feature so far; with
    ``gated``, times the loudness gate of every whole hop so far (the offline extractors' rules)."""

    def __init__(self, inner: StreamingExtractor, gated: bool = False) -> None:
        self.inner = inner
        self.gated = gated
        self.spec = dataclasses.replace(inner.spec, normalise="utterance-gated" if gated else "utterance")
        self._features = Welford((inner.spec.dim,))
        self._energy = Welford()
        self._partial_hop = np.zeros(0, np.float32)

    def _normalise(self, features: np.ndarray) -> np.ndarray:
        out = np.empty_like(features)
        for i, f in enumerate(features.astype(np.float64)):
            self._features.add(f)
            out[i] = (f - self._features.mean) / np.maximum(self._features.std, 1e-3)
        return out * loudness_gate(float(self._energy.std)) if self.gated else out

    def _hear(self, samples: np.ndarray) -> None:
        pending = np.concatenate([self._partial_hop, np.asarray(samples, np.float32).reshape(-1)])
        whole = len(pending) // HOP * HOP
        for energy in hop_log_energy(pending[:whole]):
            self._energy.add(energy)
        self._partial_hop = pending[whole:]

    def push(self, samples: np.ndarray) -> np.ndarray:
        self._hear(samples)
        return self._normalise(self.inner.push(samples))

    def finish(self) -> np.ndarray:
        return self._normalise(self.inner.finish())


def streaming_extractor(spec: FeatureSpec) -> StreamingExtractor:
    """The live counterpart of the extractor ``spec`` names (a model card's or a checkpoint's)."""
    if spec.extractor != "mel":
        raise SplatPortraitError(
            f"live streaming needs a model trained on mel features; this one reads {spec.describe()}, "
            "whose transformer looks at the whole clip; use `animate` for it"
        )
    extractor_for(spec)  # the same checks as animate: an unknown normalisation is refused here
    mel = StreamingMel()
    return mel if spec.normalise == "none" else RunningNormalised(mel, gated=spec.normalise == "utterance-gated")


def lookahead_features(seconds: float | None) -> int:
    """Features past a frame's centre to wait for, for a look-ahead of ``seconds`` (None: all its windows need)."""
    if seconds is None:
        return LOOKAHEAD_FEATURES
    if not 0 <= seconds <= LOOKAHEAD_SECONDS:
        raise SplatPortraitError(f"the look-ahead must be 0 to {1000 * LOOKAHEAD_SECONDS:.0f} ms, got {1000 * seconds:.0f} ms")
    # Feature t is final 320 samples (half a window) after its centre.
    return max(-1, math.floor((seconds * 16000 - MelExtractor.window // 2) / HOP))


class FeatureBuffer:
    """The tail of a growing feature sequence that future frames' windows reach, and those windows.

    With a ``lookahead`` shorter than the windows' (:data:`LOOKAHEAD_FEATURES`), frames are made
    before their last features exist; those repeat the newest feature, as at the end of a clip.
    That trades the mouth's anticipation of coming sounds for latency.
    """

    def __init__(self, dim: int, lookahead: int = LOOKAHEAD_FEATURES) -> None:
        self.lookahead = lookahead
        self._features = torch.empty(0, dim)
        self._first = 0  # global index of self._features[0]
        self.total = 0
        self.finished = False
        self.frames_done = 0

    def append(self, features: np.ndarray, finished: bool = False) -> None:
        self._features = torch.cat([self._features, torch.from_numpy(np.asarray(features, np.float32))])
        self.total += len(features)
        self.finished = self.finished or finished

    def frames_available(self, total_frames: int | None = None) -> int:
        """Frames whose windows are complete: all of them (``total_frames``) once the speech has ended."""
        if self.finished:
            if total_frames is None:
                raise ValueError("a finished stream needs its total number of frames")
            return total_frames
        return frames_ready(self.total, self.lookahead)

    def take(self, count: int) -> tuple[Tensor, Tensor]:
        """The next ``count`` frames' indices (count,) and windows (count, 8, 16, D); drops features no later frame needs."""
        if self.total == 0:
            raise ValueError("no audio features yet")
        index = torch.arange(self.frames_done, self.frames_done + count)
        # The offline clamping to [0, T): indices are global, the buffer starts at self._first.
        windows = self._features[window_indices(index, self.total) - self._first]
        self.frames_done += count
        keep_from = max(0, 2 * self.frames_done - LOOKBACK_FEATURES)
        if keep_from > self._first:
            self._features = self._features[keep_from - self._first :]
            self._first = keep_from
        return index, windows
