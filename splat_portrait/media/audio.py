"""Audio in and out: any audio or video file's sound as 16 kHz mono float32, and PCM16 WAV files."""

from __future__ import annotations

import io
import os
import subprocess
import wave

import numpy as np

from splat_portrait.atomic import atomic_open
from splat_portrait.errors import SplatPortraitError
from splat_portrait.media.ffmpeg import failure_reason, ffmpeg_exe, probe

SAMPLE_RATE = 16000


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode the first audio stream of any file ffmpeg reads, downmixed and resampled: (N,) float32."""
    info = probe(path)
    if not info.has_audio:
        raise SplatPortraitError(f"{path} has no audio track")
    command = [
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:a:0", "-vn",
        "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "-",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True)
    if result.returncode != 0:
        log = result.stderr.decode("utf-8", "replace")
        raise SplatPortraitError(f"could not decode the audio of {path} (ffmpeg: {failure_reason(log)})")
    samples = np.frombuffer(result.stdout, np.float32).copy()
    if samples.size == 0:
        raise SplatPortraitError(f"{path} has an empty audio track")
    return samples


def write_wav(path: str | os.PathLike, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write mono float samples in [-1, 1] as a PCM16 WAV file, atomically (values beyond are clipped)."""
    with atomic_open(path, "wb") as f:
        _write_wav_to(f, samples, sample_rate)


def wav_bytes(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """Mono float samples as the bytes of a PCM16 WAV file (what a page's <audio> plays)."""
    buffer = io.BytesIO()
    _write_wav_to(buffer, samples, sample_rate)
    return buffer.getvalue()


def _write_wav_to(f, samples: np.ndarray, sample_rate: int) -> None:
    pcm = (np.clip(np.asarray(samples, np.float32), -1.0, 1.0) * 32767.0).round().astype("<i2")
    with wave.open(f, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm.tobytes())


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """A PCM16 WAV file (as :func:`write_wav` makes) as mono float32 samples and its sample rate."""
    try:
        with wave.open(str(path), "rb") as wav:
            if wav.getsampwidth() != 2:
                raise SplatPortraitError(f"{path} is not 16-bit PCM; decode it with load_audio instead")
            channels, rate = wav.getnchannels(), wav.getframerate()
            pcm = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
    except (wave.Error, EOFError) as err:
        raise SplatPortraitError(f"{path} is not a valid WAV file ({err})") from None
    except FileNotFoundError:
        raise SplatPortraitError(f"{path} does not exist") from None
    samples = pcm.reshape(-1, channels).mean(axis=1, dtype=np.float32) / 32767.0
    return samples.astype(np.float32), rate
