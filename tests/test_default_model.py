"""The bundled default model and example: what `make demo` runs right after install."""

import json
import math
import wave
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from splat_portrait.cli.app import app
from splat_portrait.media.audio import load_audio, write_wav
from splat_portrait.media.ffmpeg import probe
from splat_portrait.media.video import read_frames
from splat_portrait.metrics.motion import MOUTH_BOX, UPPER_FACE_BOX, region_motion
from splat_portrait.models.config import ModelConfig, preset
from splat_portrait.runtime.model_dir import DEFAULT_MODEL_DIR, open_model_dir
from splat_portrait.splats import read_ply

REPO = Path(__file__).parents[1]
SPEECH = REPO / "examples" / "speech.wav"


def test_bundled_model_is_small_and_verified():
    model = open_model_dir(None)
    files = [p for p in DEFAULT_MODEL_DIR.iterdir() if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 25 * 2**20
    card = json.loads((DEFAULT_MODEL_DIR / "model.json").read_text())
    # The small preset with a mouth predictor in place of the decoder's own audio encoder.
    assert ModelConfig.from_dict(card["config"]) == preset("small", mouth_code_channels=16)
    assert model.card.image_size == card["image_size"] == 128


def test_bundled_example_speech_is_16k_mono():
    with wave.open(str(SPEECH), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
    assert 2.0 < len(load_audio(SPEECH)) / 16000 < 10.0


def test_bundled_model_animates_two_seconds_of_the_bundled_example(tmp_path):
    from skimage import data

    portrait = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(portrait)
    speech = tmp_path / "speech_2s.wav"
    write_wav(speech, load_audio(SPEECH)[: 2 * 16000])
    out, ply = tmp_path / "astronaut.mp4", tmp_path / "astronaut.ply"

    result = CliRunner().invoke(app, ["-q", "animate", str(portrait), str(speech), "-o", str(out), "--ply", str(ply)])

    assert result.exit_code == 0, result.output
    frames = list(read_frames(out))
    assert len(frames) == math.ceil(25 * 2.0)
    assert frames[0].shape == (128, 128, 3)
    # A trained model draws a head, not a flat background: the frame has structure.
    assert frames[0].std() > 20
    assert probe(out).has_audio
    assert len(read_ply(ply).means) == 128 * 128


def test_the_bundled_model_moves_the_lips_with_speech_not_the_whole_face():
    """Frame 0 is the source view, which even an untrained generator reproduces; this asks for talking."""
    from skimage import data

    from splat_portrait import TalkingHeadPipeline

    pipe = TalkingHeadPipeline.from_pretrained(None)
    portrait = data.astronaut()
    speech = load_audio(SPEECH)[: 4 * 16000]
    # Room tone at -50 dBFS: what a microphone records when nobody speaks.
    quiet = (np.random.default_rng(0).standard_normal(4 * 16000) * 10 ** (-50 / 20)).astype(np.float32)
    talking = pipe(portrait, speech).frames
    silent = pipe(portrait, quiet).frames
    mouth, upper = region_motion(talking, MOUTH_BOX), region_motion(talking, UPPER_FACE_BOX)
    assert mouth > 3 * upper, (mouth, upper)
    assert mouth > 2 * region_motion(silent, MOUTH_BOX), (mouth, region_motion(silent, MOUTH_BOX))
