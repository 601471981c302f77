import subprocess
import wave

import numpy as np
import pytest

from splat_portrait.errors import SplatPortraitError
from splat_portrait.media.audio import load_audio, read_wav, write_wav
from splat_portrait.media.ffmpeg import ffmpeg_exe, probe
from splat_portrait.media.video import probe_video, read_frames


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def clip_30fps(tmp_path_factory):
    """4.00 s at 30 fps with 44.1 kHz stereo sound; frame n has grey level 2n (frames 0-119)."""
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "color=black:size=64x48:rate=30:duration=4,format=gray,geq=lum='2*N'",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=4", "-ac", "2",
        "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p", "-c:a", "aac", "-shortest", str(path),
    )  # fmt: skip
    return path


def test_probe_reports_streams(clip_30fps):
    info = probe_video(clip_30fps)
    assert (info.width, info.height, info.fps, info.has_audio) == (64, 48, 30.0, True)
    assert info.duration == pytest.approx(4.0, abs=0.05)


def test_4s_at_30fps_gives_100_frames_at_25fps_and_64000_samples(clip_30fps):
    frames = list(read_frames(clip_30fps))
    assert len(frames) == 100
    assert frames[0].shape == (48, 64, 3) and frames[0].dtype == np.uint8
    # Output frame k shows the source frame nearest to time k / 25 s, i.e. frame 1.2 k.
    source_index = np.array([f.mean() for f in frames]) / 2
    np.testing.assert_allclose(source_index, np.arange(100) * 1.2, atol=1.01)
    assert (np.diff(source_index) > 0).all()
    audio = load_audio(clip_30fps)
    assert audio.shape == (64000,) and audio.dtype == np.float32
    # A 440 Hz sine survives the downmix and resampling.
    spectrum = np.abs(np.fft.rfft(audio[8000:24000]))
    assert np.argmax(spectrum) == 440


def test_stopping_early_ends_ffmpeg(clip_30fps):
    frames = read_frames(clip_30fps)
    first = [next(frames) for _ in range(3)]
    frames.close()
    assert len(first) == 3


@pytest.mark.parametrize(
    "suffix,codec,rate,channels",
    [(".wav", "pcm_s16le", 48000, 2), (".flac", "flac", 22050, 1), (".mp3", "libmp3lame", 44100, 2), (".ogg", "libvorbis", 8000, 1)],
)
def test_any_audio_format_decodes_to_16k_mono(tmp_path, suffix, codec, rate, channels):
    path = tmp_path / f"speech{suffix}"
    ffmpeg(
        "-f", "lavfi", "-i", f"sine=frequency=300:sample_rate={rate}:duration=1.5",
        "-ac", str(channels), "-c:a", codec, str(path),
    )  # fmt: skip
    audio = load_audio(path)
    assert audio.dtype == np.float32 and abs(len(audio) - 24000) < 1200  # lossy codecs pad a frame
    assert np.argmax(np.abs(np.fft.rfft(audio[4000:20000]))) == 300


def test_wav_round_trip_is_pcm16_mono_and_atomic(tmp_path):
    samples = np.linspace(-1.2, 1.2, 16000, dtype=np.float32)
    write_wav(tmp_path / "a.wav", samples)
    assert [p.name for p in tmp_path.iterdir()] == ["a.wav"]
    with wave.open(str(tmp_path / "a.wav")) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes()) == (1, 2, 16000, 16000)
    back, rate = read_wav(tmp_path / "a.wav")
    assert rate == 16000
    np.testing.assert_allclose(back, np.clip(samples, -1, 1), atol=1 / 32767)
    np.testing.assert_allclose(load_audio(tmp_path / "a.wav"), back, atol=1e-4)


def test_audio_errors_are_clear(tmp_path, clip_30fps):
    with pytest.raises(SplatPortraitError, match=r"^.*nothing\.wav does not exist$"):
        load_audio(tmp_path / "nothing.wav")
    (tmp_path / "notes.mp3").write_text("not audio at all")
    with pytest.raises(SplatPortraitError, match=r"notes\.mp3 is not a readable audio/video file \(ffmpeg: .*Invalid data"):
        load_audio(tmp_path / "notes.mp3")
    silent = tmp_path / "silent.mp4"
    ffmpeg("-i", str(clip_30fps), "-an", "-c:v", "copy", str(silent))
    with pytest.raises(SplatPortraitError, match=r"silent\.mp4 has no audio track$"):
        load_audio(silent)
    with wave.open(str(tmp_path / "empty.wav"), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
    with pytest.raises(SplatPortraitError, match=r"empty\.wav has an empty audio track$"):
        load_audio(tmp_path / "empty.wav")
    with pytest.raises(SplatPortraitError, match=r"notes\.mp3 is not a valid WAV file"):
        read_wav(tmp_path / "notes.mp3")
    with pytest.raises(SplatPortraitError, match=r"is a directory|is not a file"):
        probe(tmp_path)


def test_video_errors_are_clear(tmp_path):
    audio_only = tmp_path / "voice.wav"
    write_wav(audio_only, np.zeros(1600, np.float32))
    with pytest.raises(SplatPortraitError, match=r"voice\.wav has no video stream$"):
        list(read_frames(audio_only))
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(SplatPortraitError, match=r"clip\.mp4 is not a readable audio/video file"):
        probe_video(tmp_path / "clip.mp4")
