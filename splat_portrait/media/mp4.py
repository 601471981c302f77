"""Streaming H.264 MP4 writer with the speech muxed in, through the ffmpeg binary of imageio-ffmpeg.

Frames are piped to ffmpeg one at a time, so memory stays bounded however long the video is. The
file appears under its final name only when ffmpeg finished cleanly (atomic rename).

ffmpeg reads the speech from its file, so if we died without closing it (SIGKILL runs no cleanup),
the end of our frame pipe would look like a normal end of video and ffmpeg would go on encoding the
rest of the audio into a playable temporary file. On Linux the kernel kills it with us
(``PR_SET_PDEATHSIG``); the temporary it leaves is removed by the next run
(:func:`splat_portrait.atomic.remove_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType

import numpy as np

from splat_portrait.atomic import atomic_path
from splat_portrait.errors import SplatPortraitError
from splat_portrait.media.ffmpeg import ffmpeg_exe


_PR_SET_PDEATHSIG = 1


def _die_with_parent_options() -> dict:
    """``Popen`` keyword arguments that make the child receive SIGKILL when this process dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return {}
    # Looked up here, in the parent: between fork and exec the child should do as little as possible.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return {"preexec_fn": lambda: prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)}


class Mp4Writer:
    """Write RGB frames (H, W, 3) uint8 as H.264/yuv420p at ``fps``, with ``audio`` muxed in as AAC.

    Use as a context manager; an exception inside the block discards the partial file. H.264 in
    yuv420p needs even sizes, so odd widths/heights are padded by one edge pixel. ``name`` is the
    path errors mention (default ``path``; the final name when ``path`` is itself a staging name).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        width: int,
        height: int,
        fps: float = 25.0,
        audio: str | os.PathLike | None = None,
        crf: int = 18,
        name: str | os.PathLike | None = None,
    ) -> None:
        self.path = Path(path)
        self.name = Path(name) if name is not None else self.path
        self.width, self.height, self.fps = width, height, fps
        self.audio = Path(audio) if audio is not None else None
        self.crf = crf
        self.frames_written = 0
        self._stack: contextlib.ExitStack | None = None
        self._tmp: Path | None = None
        self._proc: subprocess.Popen | None = None

    def _command(self, output: Path) -> list[str]:
        cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24"]
        cmd += ["-s", f"{self.width}x{self.height}", "-r", f"{self.fps}", "-i", "-"]
        if self.audio is not None:
            cmd += ["-i", str(self.audio), "-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac", "-b:a", "128k"]
        pad = "pad=ceil(iw/2)*2:ceil(ih/2)*2"
        cmd += ["-vf", pad, "-c:v", "libx264", "-preset", "veryfast", "-crf", str(self.crf), "-pix_fmt", "yuv420p"]
        cmd += ["-movflags", "+faststart", "-f", "mp4", str(output)]
        return cmd

    def __enter__(self) -> Mp4Writer:
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_path(self.path))
        self._tmp = tmp
        self._proc = subprocess.Popen(
            self._command(tmp), stdin=subprocess.PIPE, stderr=subprocess.PIPE, **self._popen_options()
        )
        return self

    def _popen_options(self) -> dict:
        return _die_with_parent_options()

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"expected a ({self.height}, {self.width}, 3) uint8 frame, got {frame.shape} {frame.dtype}")
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except BrokenPipeError:
            raise self._failure(self._finish_ffmpeg()[1]) from None
        self.frames_written += 1

    def _finish_ffmpeg(self) -> tuple[int, str]:
        """Close ffmpeg's input and wait: (exit code, its last error line)."""
        if not self._proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self._proc.stdin.close()
        err = self._proc.stderr.read().decode(errors="replace").strip()
        return self._proc.wait(), (err.splitlines()[-1] if err else "")

    def _failure(self, reason: str) -> SplatPortraitError:
        # ffmpeg names the file it was given, a temporary one: name the file the user asked for.
        for staging in (p for p in (self._tmp, self.path) if p is not None):
            reason = reason.replace(str(staging), str(self.name))
        return SplatPortraitError(f"could not write {self.name}: {reason}")

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is not None:
            self._proc.kill()
            self._finish_ffmpeg()
            self._stack.__exit__(exc_type, exc, tb)
            return
        code, err = self._finish_ffmpeg()
        if code != 0 or self.frames_written == 0:
            reason = err or (f"ffmpeg exit code {code}" if code else "no frames were written")
            failure = self._failure(reason)
            self._stack.__exit__(type(failure), failure, None)
            raise failure
        self._stack.__exit__(None, None, None)


class LiveVideoWriter(Mp4Writer):
    """A video whose speech arrives with its frames (a live stream): ``write`` frames, ``write_audio`` samples.

    The file is written progressively (Matroska for ``.mkv``, fragmented MP4 otherwise, x264 without
    look-ahead), so what is on disk under the temporary name plays up to the last fragment, and it
    moves to its final name when the stream ends. ffmpeg reads the audio from a second pipe that a
    thread of ours fills, so neither pipe can block the other.
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: float = 25.0, sample_rate: int = 16000,
                 crf: int = 18, name: str | os.PathLike | None = None) -> None:  # fmt: skip
        super().__init__(path, width, height, fps, None, crf, name)
        self.sample_rate = sample_rate
        self._audio_queue: queue.Queue[bytes | None] = queue.Queue()
        self._audio_fds: tuple[int, int] | None = None
        self._audio_thread: threading.Thread | None = None

    def _command(self, output: Path) -> list[str]:
        read_fd = self._audio_fds[0]
        cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24"]
        cmd += ["-s", f"{self.width}x{self.height}", "-r", f"{self.fps}", "-i", "-"]
        cmd += ["-f", "f32le", "-ar", str(self.sample_rate), "-ac", "1", "-i", f"pipe:{read_fd}"]
        cmd += ["-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac", "-b:a", "128k"]
        cmd += ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency"]
        cmd += ["-crf", str(self.crf), "-pix_fmt", "yuv420p"]
        if self.name.suffix.lower() == ".mkv":
            cmd += ["-f", "matroska"]
        else:
            cmd += ["-movflags", "frag_keyframe+empty_moov+default_base_moof", "-f", "mp4"]
        return cmd + [str(output)]

    def _popen_options(self) -> dict:
        return {**super()._popen_options(), "pass_fds": (self._audio_fds[0],)}

    def __enter__(self) -> LiveVideoWriter:
        self._audio_fds = os.pipe()
        try:
            super().__enter__()
        finally:
            os.close(self._audio_fds[0])
        self._audio_thread = threading.Thread(target=self._feed_audio, name="live-audio", daemon=True)
        self._audio_thread.start()
        return self

    def _feed_audio(self) -> None:
        with open(self._audio_fds[1], "wb", buffering=0) as pipe:
            while (data := self._audio_queue.get()) is not None:
                try:
                    pipe.write(data)
                except BrokenPipeError:
                    return  # ffmpeg died: its exit code and message come out of close

    def write_audio(self, samples: np.ndarray) -> None:
        """Append (N,) float samples at ``sample_rate``."""
        self._audio_queue.put(np.ascontiguousarray(samples, np.float32).tobytes())

    def _finish_ffmpeg(self) -> tuple[int, str]:
        if self._audio_thread is not None:
            self._audio_queue.put(None)
            self._audio_thread.join()
            self._audio_thread = None
        return super()._finish_ffmpeg()
