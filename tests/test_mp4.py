import subprocess
import wave

import numpy as np
import pytest

from splat_portrait.errors import SplatPortraitError
from splat_portrait.media.ffmpeg import ffmpeg_exe
from splat_portrait.media.mp4 import Mp4Writer


def write_tone(path, seconds, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    samples = (np.sin(2 * np.pi * 220 * t) * 0.3 * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())


def probe(path):
    """(decoded frames as (N, H, W, 3) uint8, ffmpeg's stream description lines)."""
    info = subprocess.run([ffmpeg_exe(), "-i", str(path)], capture_output=True, text=True).stderr
    raw = subprocess.run(
        [ffmpeg_exe(), "-loglevel", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True,
    ).stdout
    streams = [line.strip() for line in info.splitlines() if "Stream #" in line or "Duration" in line]
    return raw, streams


def test_writes_h264_with_aac_audio_and_every_frame(tmp_path):
    audio = tmp_path / "tone.wav"
    write_tone(audio, 2.03)
    frames = int(np.ceil(25 * 2.03))
    path = tmp_path / "out.mp4"
    with Mp4Writer(path, 64, 48, audio=audio) as writer:
        for i in range(frames):
            writer.write(np.full((48, 64, 3), 5 * i, np.uint8))
    raw, streams = probe(path)
    assert len(raw) == frames * 48 * 64 * 3
    video = next(s for s in streams if "Video:" in s)
    assert "h264" in video and "yuv420p" in video and "25 fps" in video and "64x48" in video
    assert any("Audio: aac" in s for s in streams)
    decoded = np.frombuffer(raw, np.uint8).reshape(frames, 48, 64, 3)
    assert abs(int(decoded[10].mean()) - 50) <= 2


def test_odd_sizes_are_padded_to_even(tmp_path):
    path = tmp_path / "odd.mp4"
    with Mp4Writer(path, 33, 17) as writer:
        writer.write(np.zeros((17, 33, 3), np.uint8))
    _, streams = probe(path)
    assert "34x18" in next(s for s in streams if "Video:" in s)


def test_crash_while_writing_leaves_no_file(tmp_path):
    path = tmp_path / "crash.mp4"
    with pytest.raises(RuntimeError, match="renderer died"):
        with Mp4Writer(path, 16, 16) as writer:
            writer.write(np.zeros((16, 16, 3), np.uint8))
            raise RuntimeError("renderer died")
    assert list(tmp_path.iterdir()) == []


def test_no_frames_is_an_error_and_leaves_no_file(tmp_path):
    path = tmp_path / "empty.mp4"
    with pytest.raises(SplatPortraitError, match="could not write .*empty.mp4"):
        with Mp4Writer(path, 16, 16):
            pass
    assert list(tmp_path.iterdir()) == []


def test_wrong_frame_shape_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"expected a \(16, 16, 3\) uint8 frame"):
        with Mp4Writer(tmp_path / "x.mp4", 16, 16) as writer:
            writer.write(np.zeros((8, 8, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []
