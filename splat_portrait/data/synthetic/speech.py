"""The sound of a synthetic clip: espeak-ng sentences or formant-shaped voiced syllables, and the mouth opening it drives."""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from scipy.signal import lfilter

from splat_portrait.data import layout
from splat_portrait.errors import SplatPortraitError
from splat_portrait.media.audio import load_audio

FPS = layout.FPS
SAMPLE_RATE = layout.SAMPLE_RATE
SpeechKind = Literal["auto", "espeak", "voiced"]
SPEECH_KINDS: tuple[str, ...] = get_args(SpeechKind)

_VOWEL_FORMANTS = np.array(
    [[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410], [660, 1720, 2410]],
    np.float64,
)
_FORMANT_BANDWIDTHS = np.array([90.0, 110.0, 170.0])
_WORDS = (
    "the quick brown fox jumps over a lazy dog while seven happy people talk about weather music travel "
    "and science today we will learn how light moves through water glass and air every morning she walks "
    "to the old market near the river where fresh bread costs little and friends meet to share stories"
).split()


def voiced_speech(rng: np.random.Generator, seconds: float, f0: float) -> np.ndarray:
    """Speech-like sound without a synthesiser: vowel syllables at 3-5 Hz in phrases with pauses.

    A glottal pulse train (pitch ``f0`` with intonation) is shaped by the formants of a random
    vowel per syllable; each syllable rises and falls in loudness, so the mouth has something to
    follow.
    """
    num = round(seconds * SAMPLE_RATE)
    t = np.arange(num) / SAMPLE_RATE
    pitch = f0 * (1 + 0.08 * np.sin(2 * math.pi * rng.uniform(0.2, 0.5) * t + rng.uniform(0, 2 * math.pi)))
    phase = np.cumsum(pitch) / SAMPLE_RATE
    pulses = np.diff(np.floor(phase), prepend=0.0)
    out = np.zeros(num + SAMPLE_RATE // 2)
    start = rng.uniform(0.05, 0.3)
    while start < seconds:
        for _ in range(rng.integers(3, 9)):
            duration = rng.uniform(0.12, 0.3)
            a, b = round(start * SAMPLE_RATE), min(round((start + duration) * SAMPLE_RATE), num)
            if b - a > 16:
                envelope = np.sin(np.linspace(0, math.pi, b - a)) ** 0.7 * rng.uniform(0.4, 1.0)
                vowel = _VOWEL_FORMANTS[rng.integers(len(_VOWEL_FORMANTS))]
                syllable = _formant_filter(pulses[a:b] * envelope, vowel)
                out[a : a + len(syllable)] += syllable
            start += duration + rng.uniform(0.0, 0.05)
        start += rng.uniform(0.15, 0.6)
    out = out[:num]
    peak = np.abs(out).max()
    return (0.6 * out / peak if peak > 0 else out).astype(np.float32)


def _formant_filter(source: np.ndarray, formants: np.ndarray) -> np.ndarray:
    # Zero padding leaves room for the resonances to ring out instead of wrapping around.
    size = 1 << int(math.ceil(math.log2(len(source) + 1024)))
    freqs = np.fft.rfftfreq(size, 1 / SAMPLE_RATE)
    response = sum(1.0 / (1.0 + ((freqs - f) / bw) ** 2) for f, bw in zip(formants, _FORMANT_BANDWIDTHS))
    # A gentle high-frequency roll-off (-6 dB per octave above 300 Hz), as in voiced speech.
    response = response / (1.0 + (freqs / 300.0) ** 2) ** 0.5
    return np.fft.irfft(np.fft.rfft(source, size) * response, size)


def espeak_speech(rng: np.random.Generator, seconds: float, voice: str, exe: str) -> np.ndarray:
    """A random English sentence spoken by espeak-ng, 16 kHz mono, cut or padded to ``seconds``."""
    words = rng.choice(_WORDS, size=math.ceil(seconds * 3.5))
    text = " ".join(w + ("," if rng.random() < 0.15 else "") for w in words)
    command = [exe, "-v", voice, "-p", str(rng.integers(30, 71)), "-s", str(rng.integers(140, 181))]
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        result = subprocess.run([*command, "-w", str(wav), text], capture_output=True)
        if result.returncode != 0:
            raise SplatPortraitError(f"espeak-ng failed: {result.stderr.decode('utf-8', 'replace').strip()}")
        speech = load_audio(wav)
    num = round(seconds * SAMPLE_RATE)
    lead = round(rng.uniform(0.05, 0.3) * SAMPLE_RATE)
    out = np.zeros(num, np.float32)
    speech = speech[: num - lead]
    out[lead : lead + len(speech)] = speech
    return out


def room_noise(rng: np.random.Generator, num: int) -> np.ndarray:
    """Quiet broadband noise (-60 to -45 dB below full scale, tilted towards low frequencies).

    Real recordings are never digitally silent between words; without this floor, pauses in
    synthetic clips sit on the features' log floor, a cue a model learns and real speech never gives.
    """
    level = 10 ** (rng.uniform(-60.0, -45.0) / 20)
    if num == 0:
        return np.zeros(0, np.float32)
    white = rng.standard_normal(num)
    # White noise plus a one-pole low-pass of it: a gentle tilt towards low frequencies, like room tone.
    tilted = 0.5 * white + lfilter([0.05], [1.0, -0.95], white)
    return (level * tilted / np.sqrt(np.mean(tilted**2))).astype(np.float32)


def clip_audio(rng: np.random.Generator, seconds: float, voice: str, f0: float, kind: SpeechKind) -> tuple[np.ndarray, str]:
    """The clip's clean sound and how it was made: espeak-ng speech (``voice``) where available, else voiced sound (pitch ``f0``)."""
    exe = shutil.which("espeak-ng")
    if kind == "espeak" and exe is None:
        raise SplatPortraitError("espeak-ng not found; install it (apt-get install espeak-ng) or use --speech voiced")
    if kind != "voiced" and exe is not None:
        return espeak_speech(rng, seconds, voice, exe), "espeak"
    return voiced_speech(rng, seconds, f0), "voiced"


def mouth_opening(audio: np.ndarray, num_frames: int) -> np.ndarray:
    """Per-frame mouth opening in [0, 1] from the audio's loudness: (num_frames,) float32.

    Frame ``n`` sits at time ``n / 25`` s (the same centring as the 50 Hz features): its RMS over
    the 40 ms around that time, normalised by the clip's loud level, gently compressed so quieter
    syllables still open the mouth, and smoothed because lips cannot move instantly.
    """
    hop = SAMPLE_RATE // FPS
    padded = np.pad(np.asarray(audio, np.float64), (hop // 2, hop * (num_frames + 1)))
    windows = padded[: num_frames * hop].reshape(num_frames, hop)
    rms = np.sqrt((windows**2).mean(1))
    loud = np.percentile(rms, 95)
    if loud < 1e-4:
        return np.zeros(num_frames, np.float32)
    opening = np.clip(rms / loud, 0, 1) ** 0.7
    kernel = np.array([0.25, 0.5, 0.25])
    smoothed = np.convolve(np.pad(opening, 1, mode="edge"), kernel, mode="valid")
    return np.clip(smoothed, 0, 1).astype(np.float32)
