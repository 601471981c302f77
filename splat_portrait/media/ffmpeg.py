"""The ffmpeg binary (shipped by imageio-ffmpeg) and what it says about a media file."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from splat_portrait.errors import SplatPortraitError


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary: imageio-ffmpeg's own, else one on PATH."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        exe = shutil.which("ffmpeg")
        if exe is None:
            raise SplatPortraitError("no ffmpeg binary found; reinstall imageio-ffmpeg (pip install imageio-ffmpeg)") from None
        return exe


@dataclass(frozen=True)
class MediaInfo:
    """What a media file holds; video fields are None when it has no video stream."""

    duration: float | None
    has_audio: bool
    width: int | None = None
    height: int | None = None
    fps: float | None = None

    @property
    def has_video(self) -> bool:
        return self.width is not None


_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
# The size follows a comma; codec tags such as "(avc1 / 0x31637661)" must not match.
_VIDEO = re.compile(r"Stream #\S+.*?: Video: .*?, (\d{1,5})x(\d{1,5})\b")
_RATE = re.compile(r"([\d.]+)(k?) (?:fps|tbr)")


def check_input(path: str | os.PathLike) -> Path:
    """``path`` as a Path, or a clear error when it is not an existing file."""
    path = Path(path)
    if not path.exists():
        raise SplatPortraitError(f"{path} does not exist")
    if not path.is_file():
        raise SplatPortraitError(f"{path} is not a file")
    return path


def failure_reason(stderr: str) -> str:
    """ffmpeg's own explanation: the last non-empty line of its log."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def probe(path: str | os.PathLike) -> MediaInfo:
    """Streams and duration of a media file, from ``ffmpeg -i``'s header report."""
    path = check_input(path)
    result = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True)
    log = result.stderr.decode("utf-8", "replace")
    # Without an output file ffmpeg always exits non-zero; an unreadable input shows no "Input #".
    if "Input #0" not in log:
        raise SplatPortraitError(f"{path} is not a readable audio/video file (ffmpeg: {failure_reason(log)})")
    duration_match = _DURATION.search(log)
    duration = None
    if duration_match:
        h, m, s = duration_match.groups()
        duration = int(h) * 3600 + int(m) * 60 + float(s)
    has_audio = re.search(r"Stream #\S+.*?: Audio: ", log) is not None
    video = _VIDEO.search(log)
    if video is None:
        return MediaInfo(duration, has_audio)
    rate = None
    stream_line = log[video.start() : log.find("\n", video.start())]
    rates = _RATE.findall(stream_line)
    if rates:
        value, kilo = rates[0]
        rate = float(value) * (1000 if kilo else 1)
    return MediaInfo(duration, has_audio, int(video.group(1)), int(video.group(2)), rate)
