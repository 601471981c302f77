"""50 Hz speech features from 16 kHz mono audio, with pluggable extractors.

Two extractors share one timing: feature ``t`` is centred on sample ``320 t`` (so video frame ``n``
at 25 fps sits on feature ``2n``) and a clip of ``N`` samples gives ``T = ceil(N / 320)`` features.

* ``mel``: 80-bin log-mel spectrogram (40 ms window, 20 ms hop). Needs no weights; the default.
* ``wav2vec2``: the last hidden states of a ``transformers`` ``Wav2Vec2Model`` loaded from a local
  folder or a hub id (the paper uses ``facebook/wav2vec2-large-xlsr-53``, 1024-d).

Either can be normalised per utterance (``normalise="utterance"``: every feature dimension to zero
mean and unit variance over the clip). Loudness, microphone and room then no longer set the level a
model sees, only how the sound changes, which is what the mouth follows. That also stretches a clip
of room tone alone to a speech-like spread, which a model hears as talking; ``"utterance-gated"``
(the default of new data) scales a clip's normalised features down where its loudness hardly swings
(:func:`loudness_gate`), and leaves speech as ``"utterance"`` has it.

A :class:`FeatureSpec` records which extractor made a feature file; checkpoints keep the spec they
were trained with and :func:`check_compatible` refuses features from any other.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from splat_portrait.errors import SplatPortraitError

SAMPLE_RATE = 16000
FEATURE_RATE_HZ = 50
HOP = SAMPLE_RATE // FEATURE_RATE_HZ
EXTRACTORS: tuple[str, ...] = ("mel", "wav2vec2")
NORMALISATIONS: tuple[str, ...] = ("none", "utterance", "utterance-gated")
# The spread (std) of the log energy of 20 ms hops is 0.7 to 5 in every clip of our real corpus
# (syllables and pauses), and about 0.07 in steady noise at any level. Below this swing a clip's
# normalised features are scaled down in proportion (:func:`loudness_gate`).
SPEECH_SWING = 0.5
# Digital silence: its hops' log energy sits here rather than at -inf.
ENERGY_FLOOR = 1e-10


@dataclass(frozen=True)
class FeatureSpec:
    """Which extractor made a feature sequence: stored in meta.json and in checkpoints."""

    extractor: str
    model: str | None
    dim: int
    rate_hz: int = FEATURE_RATE_HZ
    # Specs written before normalisation existed read as "none".
    normalise: str = "none"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureSpec:
        rate = int(data.get("rate_hz", FEATURE_RATE_HZ))
        return cls(str(data["extractor"]), data.get("model"), int(data["dim"]), rate, str(data.get("normalise", "none")))

    def describe(self) -> str:
        model = f" {self.model!r}" if self.model else ""
        norm = {"none": "", "utterance": ", utterance-normalised"}.get(self.normalise, ", utterance-normalised, loudness-gated")
        return f"{self.extractor}{model} ({self.dim}-d, {self.rate_hz} Hz{norm})"


def _model_name(model: str | None) -> str | None:
    # A hub id and a local copy of it ("facebook/x" vs "/data/x") name the same weights: compare
    # only the last component, so a checkpoint moves between machines with its feature model.
    return None if model is None else Path(model.rstrip("/\\")).name


def check_compatible(trained: FeatureSpec, given: FeatureSpec) -> None:
    """Raise if features ``given`` were not made the way the checkpoint's ``trained`` ones were."""
    if (trained.extractor, _model_name(trained.model), trained.dim, trained.rate_hz, trained.normalise) == (
        given.extractor, _model_name(given.model), given.dim, given.rate_hz, given.normalise,
    ):  # fmt: skip
        return
    redo = f"--audio-features {trained.extractor}" + (f" --audio-model {trained.model}" if trained.model else "")
    if trained.normalise != given.normalise:
        redo += f" --audio-norm {trained.normalise}"
    raise SplatPortraitError(
        f"audio features come from {given.describe()} but the checkpoint was trained with "
        f"{trained.describe()}; recompute them with {redo}"
    )


def check_model_reads(trained: FeatureSpec | None, width: int, given: FeatureSpec, where: str) -> None:
    """Raise unless a model reading ``width``-d features, trained on ``trained`` (None: not recorded), can take ``given`` from ``where``."""
    if trained is not None:
        check_compatible(trained, given)
    if width != given.dim:
        raise SplatPortraitError(
            f"the model reads {width}-d audio features but {where} has {given.describe()}; "
            "recompute the features with the extractor the model was trained with"
        )


def num_feature_frames(num_samples: int) -> int:
    """Number of 50 Hz features for ``num_samples`` samples at 16 kHz."""
    return math.ceil(num_samples / HOP)


class FeatureExtractor(Protocol):
    spec: FeatureSpec

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """(N,) float32 16 kHz mono -> (ceil(N / 320), D) float32."""


def _mel_scale(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Triangular HTK-mel filters (n_fft // 2 + 1, n_mels), each normalised to unit area in Hz."""
    edges_mel = np.linspace(0.0, _mel_scale(np.array(sample_rate / 2.0)), n_mels + 2)
    edges_hz = 700.0 * (10.0 ** (edges_mel / 2595.0) - 1.0)
    bins_hz = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bins_hz - lower) / (centre - lower)
    falling = (upper - bins_hz) / (upper - centre)
    filters = np.clip(np.minimum(rising, falling), 0.0, None) * (2.0 / (upper - lower))
    return torch.from_numpy(filters.T.astype(np.float32))


class MelExtractor:
    """Log-mel spectrogram at 50 Hz: 80 bins, 640-sample Hann window, 320-sample hop."""

    n_mels = 80
    window = 640
    # Seconds of audio per STFT call: bounds memory for hour-long inputs.
    chunk_seconds = 60

    def __init__(self) -> None:
        self.spec = FeatureSpec("mel", None, self.n_mels)
        self._filters = mel_filterbank(self.n_mels, self.window)
        self._hann = torch.hann_window(self.window)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        num = num_feature_frames(len(samples))
        # Zero padding of half a window centres frame t on sample 320 t, like a centred STFT, and
        # works for inputs shorter than the window.
        half = self.window // 2
        needed = (num - 1) * HOP + self.window
        padded = np.zeros(max(needed, len(samples) + half), np.float32)
        padded[half : half + len(samples)] = samples
        chunk = self.chunk_seconds * FEATURE_RATE_HZ
        out = np.empty((num, self.n_mels), np.float32)
        for start in range(0, num, chunk):
            stop = min(start + chunk, num)
            segment = torch.from_numpy(padded[start * HOP : (stop - 1) * HOP + self.window])
            spec = torch.stft(segment, self.window, HOP, window=self._hann, center=False, return_complex=True)
            power = spec.abs().square().T
            out[start:stop] = torch.log(torch.clamp(power @ self._filters, min=1e-6)).numpy()
        return out


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~", "\\")) or Path(model).expanduser().exists() or ":" in model[:3]


class Wav2Vec2Extractor:
    """Last hidden states of a ``transformers`` Wav2Vec2Model, aligned to the mel timing.

    The conv front end maps samples ``[320 t, 320 t + 400)`` to frame ``t``; padding 200 samples in
    front centres frame ``t`` on sample ``320 t``. Long audio runs in ``chunk_seconds`` chunks with
    ``context_seconds`` of overlap on each side, so memory stays bounded and chunk edges see context.
    """

    receptive_field = 400
    chunk_seconds = 20
    context_seconds = 1

    def __init__(self, model: str, device: str = "cpu", allow_download: bool = True) -> None:
        self.model, self.normalise = _load_wav2vec2(model, allow_download)
        self.device = torch.device(device)
        self.model.to(self.device)
        self.spec = FeatureSpec("wav2vec2", model, int(self.model.config.hidden_size))

    @torch.inference_mode()
    def __call__(self, samples: np.ndarray) -> np.ndarray:
        samples = np.asarray(samples, np.float32)
        if self.normalise:
            # Whole-utterance statistics (as the model's feature extractor does), not per chunk.
            samples = (samples - samples.mean()) / np.sqrt(samples.var() + 1e-7)
        num = num_feature_frames(len(samples))
        front = self.receptive_field // 2
        padded = np.zeros(max((num - 1) * HOP + self.receptive_field, front + len(samples)), np.float32)
        padded[front : front + len(samples)] = samples
        chunk, context = self.chunk_seconds * FEATURE_RATE_HZ, self.context_seconds * FEATURE_RATE_HZ
        out = np.empty((num, self.spec.dim), np.float32)
        for start in range(0, num, chunk):
            stop = min(start + chunk, num)
            first, last = max(start - context, 0), min(stop + context, num)
            segment = torch.from_numpy(padded[first * HOP : (last - 1) * HOP + self.receptive_field])
            hidden = self.model(segment[None].to(self.device)).last_hidden_state[0]
            out[start:stop] = hidden[start - first : stop - first].float().cpu().numpy()
        return out


def _load_wav2vec2(model: str, allow_download: bool = True) -> tuple[Any, bool]:
    """The model in eval mode and whether its feature extractor normalises the waveform.

    A hub id is looked up in the local Hugging Face cache first; only with ``allow_download`` may
    the hub be asked (the user named the model themselves, as with ``preprocess --audio-model``).
    """
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    if _looks_like_path(model):
        folder = Path(model).expanduser()
        if not (folder / "config.json").is_file():
            raise SplatPortraitError(
                f"wav2vec2 model folder {str(folder)!r} not found or has no config.json; pass --audio-model a folder "
                "written by save_pretrained (or a hub id), or use --audio-features mel"
            )
        source, local_only = str(folder), True
    else:
        source, local_only = model, not allow_download
    try:
        net = Wav2Vec2Model.from_pretrained(source, local_files_only=local_only)
    except OSError as err:
        if not allow_download:
            raise SplatPortraitError(
                f"wav2vec2 model {model!r} is not on this machine (not in the Hugging Face cache) and downloads were "
                f"not asked for; download it (huggingface-cli download {model}) or pass --allow-download"
            ) from err
        raise SplatPortraitError(
            f"wav2vec2 model {model!r} not found locally and the hub is unreachable or does not have it; download it "
            f"on a machine with internet (huggingface-cli download {model} --local-dir DIR) and pass --audio-model DIR, "
            "or use --audio-features mel"
        ) from err
    try:
        normalise = bool(Wav2Vec2FeatureExtractor.from_pretrained(source, local_files_only=local_only).do_normalize)
    except OSError:
        # No preprocessor_config.json: wav2vec2 checkpoints from the hub all normalise.
        normalise = True
    return net.eval(), normalise


def normalise_utterance(features: np.ndarray) -> np.ndarray:
    """(T, D) features with every dimension shifted and scaled to zero mean and unit variance over T.

    The floor on the deviation keeps a constant dimension (e.g. a silent band) at zero rather than
    blowing its rounding noise up.
    """
    features = np.asarray(features, np.float32)
    if len(features) == 0:
        return features
    mean = features.mean(0, keepdims=True)
    std = features.std(0, keepdims=True)
    return ((features - mean) / np.maximum(std, 1e-3)).astype(np.float32)


def hop_log_energy(samples: np.ndarray) -> np.ndarray:
    """(N,) 16 kHz samples -> (N // 320,) log mean square of each whole 20 ms hop (floored at ``ENERGY_FLOOR``)."""
    count = len(samples) // HOP
    hops = np.asarray(samples[: count * HOP], np.float64).reshape(count, HOP)
    return np.log(np.square(hops).mean(1) + ENERGY_FLOOR)


def loudness_gate(swing: float) -> float:
    """The factor on a clip's normalised features, from the std of its hops' log energy: 1 for speech
    (a swing of at least ``SPEECH_SWING``), in proportion below it (steady noise about 0.15, digital silence 0)."""
    return min(1.0, swing / SPEECH_SWING)


class UtteranceNormalised:
    """Any extractor's features, normalised per utterance (:func:`normalise_utterance`); with ``gated``,
    times the clip's :func:`loudness_gate`."""

    def __init__(self, inner: FeatureExtractor, gated: bool = False) -> None:
        self.inner = inner
        self.gated = gated
        self.spec = dataclasses.replace(inner.spec, normalise="utterance-gated" if gated else "utterance")

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        features = normalise_utterance(self.inner(samples))
        if not self.gated:
            return features
        energy = hop_log_energy(samples)
        return (features * loudness_gate(float(energy.std()) if len(energy) else 0.0)).astype(np.float32)


def make_extractor(
    name: str, model: str | None = None, device: str = "cpu", allow_download: bool = True, normalise: str = "none"
) -> FeatureExtractor:
    """The extractor ``name`` (``mel`` or ``wav2vec2`` with ``model``), per-utterance normalised with
    ``normalise="utterance"`` (and loudness-gated with ``"utterance-gated"``); the underlying network
    is loaded once per process.

    ``allow_download``: whether a hub id missing from the local cache may be fetched (see :func:`_load_wav2vec2`).
    """
    if normalise not in NORMALISATIONS:
        raise SplatPortraitError(f"unknown audio normalisation {normalise!r}; choose one of {', '.join(NORMALISATIONS)}")
    extractor = _base_extractor(name, model, device, allow_download)
    return extractor if normalise == "none" else UtteranceNormalised(extractor, gated=normalise == "utterance-gated")


@functools.lru_cache(maxsize=2)
def _base_extractor(name: str, model: str | None, device: str, allow_download: bool) -> FeatureExtractor:
    if name == "mel":
        if model is not None:
            raise SplatPortraitError("--audio-model applies only to --audio-features wav2vec2")
        return MelExtractor()
    if name == "wav2vec2":
        if not model:
            raise SplatPortraitError(
                "--audio-features wav2vec2 needs --audio-model PATH_OR_HUB_ID (e.g. facebook/wav2vec2-large-xlsr-53)"
            )
        return Wav2Vec2Extractor(model, device, allow_download)
    raise SplatPortraitError(f"unknown audio feature extractor {name!r}; choose one of {', '.join(EXTRACTORS)}")


def extractor_for(spec: FeatureSpec, device: str = "cpu", allow_download: bool = False) -> FeatureExtractor:
    """The extractor that makes features matching ``spec`` (e.g. a checkpoint's or a model card's), checked.

    The spec comes from a file, not from the user, so nothing is downloaded unless ``allow_download``.
    """
    extractor = make_extractor(spec.extractor, spec.model, device, allow_download, spec.normalise)
    check_compatible(spec, extractor.spec)
    return extractor
