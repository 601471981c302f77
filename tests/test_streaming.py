"""Live streaming: incremental features, windows, frames equal to animate's, audio input and the stream command."""

import io
import struct
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from splat_portrait.audio.features import MelExtractor, normalise_utterance
from splat_portrait.audio.streaming import (
    LOOKAHEAD_SECONDS, FeatureBuffer, RunningNormalised, StreamingMel, lookahead_features, streaming_extractor,
)  # fmt: skip
from splat_portrait.audio.features import FeatureSpec
from splat_portrait.audio.windows import LOOKAHEAD_FEATURES, audio_windows, frames_ready
from splat_portrait.errors import SplatPortraitError
from splat_portrait.export.graphs import export_model
from splat_portrait.media.audio import load_audio
from splat_portrait.media.live_audio import read_wav_header, stdin_chunks
from splat_portrait.media.mp4 import LiveVideoWriter
from splat_portrait.media.video import read_frames
from splat_portrait.models import TalkingHead, preset, save_checkpoint
from splat_portrait.runtime.inputs import load_portrait, load_speech
from splat_portrait.runtime.pipeline import AnimateOptions
from splat_portrait.runtime.streaming import LiveHead, run_stream
from splat_portrait.runtime.talking_head import TalkingHeadPipeline

DATA = Path(__file__).parents[1] / ".." / "shared" / "data"
PORTRAIT = DATA / "portraits" / "happy_256.png"
SPEECH = Path(__file__).parents[1] / "examples" / "speech.wav"


def random_chunks(samples: np.ndarray, seed: int = 0, low: int = 1, high: int = 1500):
    rng = np.random.default_rng(seed)
    i = 0
    while i < len(samples):
        k = int(rng.integers(low, high))
        yield samples[i : i + k]
        i += k


@pytest.mark.parametrize("length", [1, 319, 320, 640, 961, 16000, 23457])
def test_streamed_mel_features_equal_the_offline_extractor(length):
    samples = np.random.default_rng(length).standard_normal(length).astype(np.float32)
    stream = StreamingMel()
    parts = [stream.push(c) for c in random_chunks(samples)] + [stream.finish()]
    streamed = np.concatenate(parts)
    offline = MelExtractor()(samples)
    assert streamed.shape == offline.shape
    np.testing.assert_allclose(streamed, offline, atol=1e-5)


def test_a_feature_leaves_as_soon_as_its_window_is_complete_and_never_later():
    stream = StreamingMel()
    # Feature t covers samples [320 t - 320, 320 t + 320): feature 0 needs 320 samples, feature 1 needs 640.
    assert len(stream.push(np.zeros(319, np.float32))) == 0
    assert len(stream.push(np.zeros(1, np.float32))) == 1
    assert len(stream.push(np.zeros(319, np.float32))) == 0
    assert len(stream.push(np.zeros(1, np.float32))) == 1
    assert len(stream.push(np.zeros(3200, np.float32))) == 10


def test_running_normalisation_converges_to_the_utterance_statistics():
    samples = np.random.default_rng(3).standard_normal(16000 * 20).astype(np.float32) * np.linspace(0.2, 1, 16000 * 20, dtype=np.float32)
    stream = RunningNormalised(StreamingMel())
    live = np.concatenate([stream.push(c) for c in random_chunks(samples, high=4000)] + [stream.finish()])
    offline = normalise_utterance(MelExtractor()(samples))
    assert stream.spec.normalise == "utterance"
    # The first features see few statistics; by the end of the clip they are the clip's.
    assert np.abs(live[-50:] - offline[-50:]).mean() < 0.05
    assert np.abs(live[:5] - offline[:5]).mean() > 0.05


def test_the_running_loudness_gate_converges_to_the_offline_one():
    from splat_portrait.audio.features import make_extractor

    def live(samples, normalise):
        stream = streaming_extractor(FeatureSpec("mel", None, 80, normalise=normalise))
        assert isinstance(stream, RunningNormalised) and stream.spec.normalise == normalise
        return np.concatenate([stream.push(c) for c in random_chunks(samples, high=4000)] + [stream.finish()])

    # Steady noise: the running gate (and statistics) reach the offline ones, about 0.16.
    noise = (np.random.default_rng(4).standard_normal(16000 * 6) * 0.003).astype(np.float32)
    offline = make_extractor("mel", normalise="utterance-gated")(noise)
    gated = live(noise, "utterance-gated")
    assert np.abs(gated[-50:] - offline[-50:]).mean() < 0.05 * np.abs(offline[-50:]).mean()
    # Speech swings past the gate within its first syllables: from then on the gate is 1.
    speech = load_speech(SPEECH)
    np.testing.assert_array_equal(live(speech, "utterance-gated")[50:], live(speech, "utterance")[50:])


def test_models_on_wav2vec2_features_are_refused_for_streaming_with_the_reason():
    spec = FeatureSpec("wav2vec2", "facebook/wav2vec2-base", 768)
    with pytest.raises(SplatPortraitError, match="live streaming needs a model trained on mel features"):
        streaming_extractor(spec)


def test_lookahead_arithmetic():
    assert LOOKAHEAD_FEATURES == 13
    assert LOOKAHEAD_SECONDS == pytest.approx(0.28)
    # Frame n reaches feature 2n + 13: frame 0 needs 14 features, frame 1 needs 16.
    assert [frames_ready(t) for t in (0, 13, 14, 15, 16, 17, 18)] == [0, 0, 1, 1, 2, 2, 3]
    assert lookahead_features(None) == lookahead_features(LOOKAHEAD_SECONDS) == 13
    assert lookahead_features(0.1) == 4
    with pytest.raises(SplatPortraitError, match="the look-ahead must be 0 to 280 ms, got 300 ms"):
        lookahead_features(0.3)


def test_buffered_windows_equal_the_offline_windows_and_the_buffer_stays_small():
    features = torch.randn(1000, 5)
    buffer = FeatureBuffer(5)
    got, peak = [], 0
    rng = np.random.default_rng(0)
    at = 0
    while at < len(features):
        k = int(rng.integers(1, 30))
        buffer.append(features[at : at + k].numpy(), finished=at + k >= len(features))
        at += k
        available = buffer.frames_available(500) if buffer.finished else buffer.frames_available()
        while buffer.frames_done < available:
            index, windows = buffer.take(min(3, available - buffer.frames_done))
            got.append((index, windows))
            peak = max(peak, len(buffer._features))
    index = torch.cat([i for i, _ in got])
    assert torch.equal(index, torch.arange(500))
    torch.testing.assert_close(torch.cat([w for _, w in got]), audio_windows(features, index))
    assert peak < 100  # the tail windows still need, not the whole clip


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    """A tiny exported model that reads un-normalised features, so its stream must equal `animate` to
    the level. (The bundled model normalises per utterance: its stream's running statistics only
    converge to the clip's, which the test above checks.)"""
    root = tmp_path_factory.mktemp("stream-model")
    torch.manual_seed(0)
    model = TalkingHead(preset("tiny"))
    with torch.no_grad():
        model.dynamic.conv_out.weight.normal_(0, 0.1)  # it starts at zero: give the speech something to move
    save_checkpoint(root / "tiny.ckpt", model, {"feature_spec": {"extractor": "mel", "model": None, "dim": 80, "normalise": "none"}})
    export_model(root / "tiny.ckpt", root / "model")
    return TalkingHeadPipeline.from_pretrained(root / "model", options=AnimateOptions(batch_frames=3))


@pytest.fixture(scope="module")
def speech():
    return load_speech(SPEECH)[: 16000 * 2 + 123]


@pytest.mark.parametrize("camera", ["static", "orbit"])
def test_live_frames_are_the_frames_animate_makes(pipe, speech, camera):
    offline = pipe(PORTRAIT, speech, camera=camera).frames
    live = LiveHead(pipe.animator(camera), load_portrait(PORTRAIT, pipe.card.image_size), with_offsets=True)
    frames = [f for chunk in random_chunks(speech, high=2000) for f in live.push(chunk)] + list(live.finish())
    assert [f.index for f in frames] == list(range(len(offline)))
    rgb = np.stack([f.rgb for f in frames]).astype(int)
    # Features equal up to float rounding, frames up to one level of 255.
    assert np.abs(rgb - offline).max() <= 1
    assert frames[0].offsets.shape == (pipe.card.image_size**2, 3)


def test_frames_leave_only_once_their_lookahead_has_arrived(pipe, speech):
    live = LiveHead(pipe.animator(), load_portrait(PORTRAIT, pipe.card.image_size))
    # Frame n (at 640 n samples) needs 640 n + 4480 samples.
    assert list(live.push(speech[:4479])) == []
    assert [f.index for f in live.push(speech[4479:4480])] == [0]
    assert [f.index for f in live.push(speech[4480 : 4480 + 640 * 3])] == [1, 2, 3]
    shorter = LiveHead(pipe.animator(), load_portrait(PORTRAIT, pipe.card.image_size), lookahead_s=0.1)
    # A 100 ms look-ahead: frame n waits for 640 n + 1600 samples (feature 2n + 4 and half its window).
    assert list(shorter.push(speech[:1599])) == []
    assert [f.index for f in shorter.push(speech[1599:1600])] == [0]


def test_world_offsets_move_the_static_head_to_each_frame(pipe, speech):
    from splat_portrait.models import to_splats
    from splat_portrait.runtime.outputs import splats_in_world

    live = LiveHead(pipe.animator(), load_portrait(PORTRAIT, pipe.card.image_size), with_offsets=True)
    frame = next(iter(live.push(speech[:8000])))
    static = live.static_splats()
    windows = audio_windows(torch.from_numpy(MelExtractor()(speech[:8000])), torch.tensor([0]))
    offsets = pipe.engine.dynamic_offsets(live.encoded, windows, torch.zeros(1))
    moved = splats_in_world(to_splats(live.encoded.attributes, live.encoded.intrinsics, offsets)[0], live.portrait.c2w)
    np.testing.assert_allclose(static.means.numpy() + frame.offsets, moved.means.numpy(), atol=1e-5)


def wav_stream(samples: np.ndarray, rate: int = 16000, channels: int = 1, placeholder_size: bool = True) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.repeat(samples[:, None], channels, 1) * 32767).astype("<i2").tobytes())
    data = bytearray(buffer.getvalue())
    if placeholder_size:  # what a live writer leaves: sizes it cannot know yet
        data[4:8] = data[40:44] = struct.pack("<I", 0xFFFFFFFF)
    return bytes(data)


def test_wav_and_raw_pcm_streams_decode_to_the_samples():
    samples = np.round(np.sin(np.arange(5000) / 7) * 0.5 * 32767) / 32767
    for blob in (wav_stream(samples), wav_stream(samples, channels=2)):
        got = np.concatenate(list(stdin_chunks(io.BufferedReader(io.BytesIO(blob)))))
        np.testing.assert_allclose(got, samples, atol=1e-4)
    raw = (samples * 32767).astype("<i2").tobytes()
    got = np.concatenate(list(stdin_chunks(io.BufferedReader(io.BytesIO(raw)))))
    np.testing.assert_allclose(got, samples, atol=1e-4)
    floats = samples.astype("<f4").tobytes()
    got = np.concatenate(list(stdin_chunks(io.BufferedReader(io.BytesIO(floats)), "f32le")))
    np.testing.assert_allclose(got, samples, atol=1e-6)


def test_bad_wav_streams_get_one_clear_error():
    samples = np.zeros(100)
    with pytest.raises(SplatPortraitError, match="the audio on stdin is 44100 Hz with 1 channel"):
        read_wav_header(io.BytesIO(wav_stream(samples, rate=44100)), "the audio on stdin")
    with pytest.raises(SplatPortraitError, match="ended inside its WAV header"):
        read_wav_header(io.BytesIO(wav_stream(samples)[:30]), "the audio on stdin")
    with pytest.raises(SplatPortraitError, match="is not a WAV stream"):
        list(stdin_chunks(io.BytesIO(b"RIFX" + bytes(40)), "wav"))


def test_a_stream_with_no_audio_is_refused(pipe):
    live = LiveHead(pipe.animator(), load_portrait(PORTRAIT, pipe.card.image_size))
    with pytest.raises(SplatPortraitError, match="no audio arrived"):
        run_stream(live, iter([]), [])


def test_live_video_keeps_picture_and_sound_together(pipe, speech, tmp_path):
    live = LiveHead(pipe.animator(), load_portrait(PORTRAIT, pipe.card.image_size))
    path = tmp_path / "live.mkv"
    from splat_portrait.runtime.streaming import VideoSink

    size = pipe.card.image_size
    with LiveVideoWriter(path, size, size, 25, 16000) as writer:
        stats = run_stream(live, random_chunks(speech, high=700), [VideoSink(writer)])
    frames = sum(1 for _ in read_frames(path))
    audio = load_audio(path, 16000)
    assert frames == stats.frames == pipe.animator().num_frames(len(speech))
    duration = len(speech) / 16000
    assert abs(frames / 25 - duration) <= 1 / 25
    # AAC pads to whole 1024-sample frames.
    assert abs(len(audio) / 16000 - duration) <= 1024 / 16000
    assert len(stats.latencies) == stats.frames


def run_cli(*args, stdin=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "splat_portrait.cli", *args], input=stdin, capture_output=True, timeout=timeout)


@pytest.mark.slow
def test_stream_command_reads_a_wav_on_stdin_and_writes_a_progressive_mkv(tmp_path):
    speech = load_speech(SPEECH)[:16000 * 2]
    out = tmp_path / "live.mkv"
    done = run_cli("stream", str(PORTRAIT), "--audio", "-", "-o", str(out), stdin=wav_stream(speech))
    assert done.returncode == 0, done.stderr.decode()
    assert sum(1 for _ in read_frames(out)) == 50
    assert b"50 frames (2.00 s of speech)" in done.stderr and b"plus 280 ms look-ahead" in done.stderr


@pytest.mark.slow
def test_stream_command_pipes_raw_frames_from_a_file(tmp_path):
    done = run_cli("stream", str(PORTRAIT), "--audio", str(SPEECH), "-o", "-")
    assert done.returncode == 0, done.stderr.decode()
    frames = np.frombuffer(done.stdout, np.uint8).reshape(-1, 128, 128, 3)
    assert len(frames) == TalkingHeadPipeline.from_pretrained().animator().num_frames(len(load_speech(SPEECH)))
    assert frames.std() > 10


def test_stream_command_errors_are_one_line(tmp_path):
    done = run_cli("stream", str(PORTRAIT), "--audio", "-", "-o", "-")
    assert done.returncode == 1
    assert done.stderr.decode().strip() == "error: stdin cannot carry both the speech and the frames: with -o -, give --audio FILE or mic"
    done = run_cli("stream", str(PORTRAIT), "--audio", "-", "-o", str(tmp_path / "x.avi"), stdin=b"")
    assert done.stderr.decode().strip().startswith("error: -o ") and done.returncode == 1
    done = run_cli("stream", str(PORTRAIT), "--audio", "-", "-o", str(tmp_path / "x.mkv"), stdin=wav_stream(np.zeros(10), rate=8000))
    assert done.returncode == 1 and "live streaming reads 16000 Hz" in done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()
    assert not (tmp_path / "x.mkv").exists()


def test_a_growing_file_is_read_as_it_grows_until_it_stops_growing(tmp_path):
    import threading
    import time

    from splat_portrait.media.live_audio import file_chunks

    samples = np.round(np.sin(np.arange(16000) / 5) * 0.3 * 32767) / 32767
    blob = wav_stream(samples)
    path = tmp_path / "growing.wav"
    path.write_bytes(blob[:2000])

    def keep_writing():
        with open(path, "ab") as f:
            for start in range(2000, len(blob), 4000):
                time.sleep(0.1)
                f.write(blob[start : start + 4000])
                f.flush()

    writer = threading.Thread(target=keep_writing)
    started = time.perf_counter()
    writer.start()
    got = np.concatenate(list(file_chunks(path, idle_seconds=0.5)))
    writer.join()
    # Everything written arrived, and reading ended about idle_seconds after the last write.
    np.testing.assert_allclose(got, samples, atol=1e-4)
    assert time.perf_counter() - started >= 0.8


def test_the_live_video_is_playable_while_it_is_written_and_appears_under_its_name_at_the_end(tmp_path):
    import time

    path = tmp_path / "live.mkv"
    rng = np.random.default_rng(0)
    with LiveVideoWriter(path, 128, 128, 25, 16000) as writer:
        for _ in range(75):
            writer.write_audio(np.full(640, 0.01, np.float32))
            writer.write(rng.integers(0, 4, (128, 128, 3), dtype=np.uint8) * 64)  # noise: fragments fill fast
        time.sleep(1.5)
        # Mid-stream: frames already play from the temporary file, the final name does not exist yet.
        assert sum(1 for _ in read_frames(writer._tmp)) > 0
        assert not path.exists()
    assert sum(1 for _ in read_frames(path)) == 75
