"""Video frames through ffmpeg, resampled to 25 fps and streamed one RGB frame at a time."""

from __future__ import annotations

import os
import subprocess
import tempfile
from typing import Iterator

import numpy as np

from splat_portrait.errors import SplatPortraitError
from splat_portrait.media.ffmpeg import MediaInfo, failure_reason, ffmpeg_exe, probe

FPS = 25
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm")


def probe_video(path: str | os.PathLike) -> MediaInfo:
    """:func:`probe`, with a clear error when the file has no video stream."""
    info = probe(path)
    if not info.has_video:
        raise SplatPortraitError(f"{path} has no video stream")
    return info


def read_frames(path: str | os.PathLike, fps: int = FPS) -> Iterator[np.ndarray]:
    """Yield the video's frames as (H, W, 3) uint8 RGB arrays, resampled to ``fps``.

    Only one frame is in memory at a time, so clips of any length stream in bounded memory.
    """
    info = probe_video(path)
    width, height = info.width, info.height
    frame_bytes = width * height * 3
    command = [
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path), "-map", "0:v:0",
        "-an", "-vf", f"fps={fps}", "-pix_fmt", "rgb24", "-f", "rawvideo", "-",
    ]  # fmt: skip
    # ffmpeg's log goes to a file: a pipe nobody reads could fill up and stall the decoder.
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log)
        finished = False
        try:
            while len(data := process.stdout.read(frame_bytes)) == frame_bytes:
                yield np.frombuffer(data, np.uint8).reshape(height, width, 3)
            finished = True
        finally:
            process.stdout.close()
            if not finished:  # the caller stopped early; ending ffmpeg is expected then
                process.kill()
            code = process.wait()
        if code != 0:
            log.seek(0)
            reason = failure_reason(log.read().decode("utf-8", "replace"))
            raise SplatPortraitError(f"could not decode the video of {path} (ffmpeg: {reason})")
