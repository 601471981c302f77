"""Speech that arrives while it is being animated: 16 kHz mono float32 chunks from stdin, a growing file or a microphone.

* ``-`` (stdin): a WAV stream (recognised by its ``RIFF`` header; 16-bit PCM or 32-bit float at
  16 kHz, any number of channels, averaged to mono; the data size may be a placeholder, as live
  writers leave it) or headerless PCM, ``s16le`` unless ``fmt`` says ``f32le``, mono at 16 kHz.
* a file path: read as it grows, through ffmpeg (any format it decodes; ``-follow``), until no
  new bytes have come for ``idle_seconds``.
* ``mic``: the default PulseAudio (else ALSA) capture device, through ffmpeg.

Chunks are whatever has arrived, at most ``chunk_samples`` long: a pipe that delivers 20 ms at a
time yields 20 ms chunks, so nothing waits for a buffer to fill.
"""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from splat_portrait.errors import SplatPortraitError
from splat_portrait.media.ffmpeg import ffmpeg_exe

SAMPLE_RATE = 16000
RAW_FORMATS = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}
FORMATS = ("auto", "wav", *RAW_FORMATS)
CHUNK_SAMPLES = 320  # 20 ms
_WAVE_PCM, _WAVE_FLOAT, _WAVE_EXTENSIBLE = 1, 3, 0xFFFE


def pcm_chunks(stream: BinaryIO, dtype: np.dtype, channels: int = 1, chunk_samples: int = CHUNK_SAMPLES) -> Iterator[np.ndarray]:
    """Interleaved PCM from ``stream`` as (n,) float32 mono chunks in [-1, 1], as it arrives."""
    frame_bytes = dtype.itemsize * channels
    scale = 1.0 / 32768.0 if dtype.kind == "i" else 1.0
    leftover = b""
    while True:
        data = _read_some(stream, chunk_samples * frame_bytes - len(leftover))
        if not data:
            return
        data = leftover + data
        whole = len(data) - len(data) % frame_bytes
        leftover = data[whole:]
        if whole:
            samples = np.frombuffer(data[:whole], dtype).reshape(-1, channels).astype(np.float32) * scale
            yield samples.mean(1) if channels > 1 else samples[:, 0]


def _read_some(stream: BinaryIO, size: int) -> bytes:
    # read1 returns what has arrived (at least one byte) instead of waiting for ``size`` bytes.
    read = getattr(stream, "read1", stream.read)
    return read(max(1, size))


def _read_exactly(stream: BinaryIO, size: int, what: str) -> bytes:
    data = b""
    while len(data) < size:
        more = stream.read(size - len(data))
        if not more:
            raise SplatPortraitError(f"{what} ended inside its WAV header; send a complete WAV stream or raw PCM")
        data += more
    return data


def read_wav_header(stream: BinaryIO, what: str, after_riff: bytes = b"") -> tuple[np.dtype, int]:
    """Consume a WAV header up to the first sample; return the sample type and channel count.

    ``after_riff``: bytes already read from the start of the stream (at most the 4 of ``RIFF``).
    """
    head = after_riff + _read_exactly(stream, 12 - len(after_riff), what)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise SplatPortraitError(f"{what} is not a WAV stream (no RIFF/WAVE header)")
    fmt = None
    while True:
        chunk_id, size = struct.unpack("<4sI", _read_exactly(stream, 8, what))
        if chunk_id == b"data":
            break
        body = _read_exactly(stream, size + size % 2, what)
        if chunk_id == b"fmt ":
            fmt = body
    if fmt is None:
        raise SplatPortraitError(f"{what} has no fmt chunk before its samples; it is not a valid WAV stream")
    tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == _WAVE_EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack("<H", fmt[24:26])[0]
    if (tag, bits) == (_WAVE_PCM, 16):
        dtype = RAW_FORMATS["s16le"]
    elif (tag, bits) == (_WAVE_FLOAT, 32):
        dtype = RAW_FORMATS["f32le"]
    else:
        raise SplatPortraitError(f"{what} holds {bits}-bit samples of WAV format {tag}; live streaming reads 16-bit PCM or 32-bit float WAV")
    if rate != SAMPLE_RATE or channels < 1:
        raise SplatPortraitError(
            f"{what} is {rate} Hz with {channels} channel(s); live streaming reads {SAMPLE_RATE} Hz: "
            f"resample on the way in, e.g. ffmpeg -i IN -ar {SAMPLE_RATE} -ac 1 -f wav - | splat-portrait stream ..."
        )
    return dtype, channels


def stdin_chunks(stream: BinaryIO, fmt: str = "auto", chunk_samples: int = CHUNK_SAMPLES) -> Iterator[np.ndarray]:
    """Chunks of a WAV or raw PCM stream (``fmt``: auto, wav, s16le or f32le)."""
    what = "the audio on stdin"
    if fmt in RAW_FORMATS:
        yield from pcm_chunks(stream, RAW_FORMATS[fmt], 1, chunk_samples)
        return
    start = stream.read(4)
    if not start:
        return
    if start == b"RIFF" or fmt == "wav":
        dtype, channels = read_wav_header(stream, what, start)
        yield from pcm_chunks(stream, dtype, channels, chunk_samples)
        return
    # Headerless: the bytes already read are samples. 4 bytes are two s16 samples.
    yield np.frombuffer(start, RAW_FORMATS["s16le"]).astype(np.float32) / 32768.0
    yield from pcm_chunks(stream, RAW_FORMATS["s16le"], 1, chunk_samples)


def _ffmpeg_chunks(input_args: list[str], what: str, chunk_samples: int) -> Iterator[np.ndarray]:
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", *input_args,
           "-f", "s16le", "-ac", "1", "-ar", str(SAMPLE_RATE), "-flush_packets", "1", "pipe:1"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    got_any = False
    try:
        for chunk in pcm_chunks(proc.stdout, RAW_FORMATS["s16le"], 1, chunk_samples):
            got_any = True
            yield chunk
    finally:
        if proc.poll() is None:
            proc.kill()
        err = proc.stderr.read().decode(errors="replace").strip()
        code = proc.wait()
    if code != 0 and not got_any:
        reason = err.splitlines()[-1] if err else f"ffmpeg exit code {code}"
        raise SplatPortraitError(f"could not read {what}: {reason}")


def file_chunks(path: Path, fmt: str = "auto", idle_seconds: float = 2.0, chunk_samples: int = CHUNK_SAMPLES) -> Iterator[np.ndarray]:
    """A (possibly still growing) audio file, decoded by ffmpeg as it grows: any format it reads, or raw ``fmt`` PCM."""
    if not path.is_file():
        raise SplatPortraitError(f"audio file {path} not found")
    raw = ["-f", fmt, "-ar", str(SAMPLE_RATE), "-ac", "1"] if fmt in RAW_FORMATS else []
    follow = ["-follow", "1", "-rw_timeout", str(int(idle_seconds * 1e6))]
    yield from _ffmpeg_chunks([*raw, *follow, "-i", f"file:{path}"], str(path), chunk_samples)


def microphone_chunks(chunk_samples: int = CHUNK_SAMPLES) -> Iterator[np.ndarray]:
    """The default capture device (PulseAudio, else ALSA)."""
    errors = []
    for device in ("pulse", "alsa"):
        try:
            yield from _ffmpeg_chunks(["-f", device, "-i", "default"], f"the microphone ({device})", chunk_samples)
            return
        except SplatPortraitError as err:
            errors.append(str(err))
    raise SplatPortraitError(f"no microphone could be opened on this machine ({'; '.join(errors)})")


@contextlib.contextmanager
def live_audio(source: str, fmt: str = "auto", idle_seconds: float = 2.0, chunk_samples: int = CHUNK_SAMPLES) -> Iterator[Iterator[np.ndarray]]:
    """The chunks of ``source``: ``-`` (stdin), ``mic``, or a file path."""
    if fmt not in FORMATS:
        raise SplatPortraitError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if source == "-":
        yield stdin_chunks(sys.stdin.buffer, fmt, chunk_samples)
    elif source == "mic":
        yield microphone_chunks(chunk_samples)
    else:
        yield file_chunks(Path(os.path.expanduser(source)), fmt, idle_seconds, chunk_samples)
