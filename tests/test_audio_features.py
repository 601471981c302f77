from pathlib import Path

import numpy as np
import pytest
import torch

from splat_portrait.audio import features as F
from splat_portrait.audio.features import FeatureSpec
from splat_portrait.errors import SplatPortraitError


def _tone(hz: float, seconds: float, rate: int = 16000) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


@pytest.mark.parametrize("num", [1, 319, 320, 321, 640, 16000, 64000])
def test_mel_shape_is_ceil_of_samples_over_320(num):
    out = F.make_extractor("mel")(np.zeros(num, np.float32))
    assert out.shape == (F.num_feature_frames(num), 80) == (-(-num // 320), 80)
    assert out.dtype == np.float32 and np.isfinite(out).all()


def test_mel_puts_a_tone_in_the_right_band_at_the_right_time():
    extractor = F.MelExtractor()
    audio = np.concatenate([np.zeros(16000, np.float32), _tone(1000, 1.0)])
    out = extractor(audio)
    assert out.shape == (100, 80)
    # Silence before 1 s (beyond the half-window of overlap), the tone after it.
    assert out[:48].max() < -13 and out[52:].max() > 0
    band = out[60:90].mean(0).argmax()
    filters = F.mel_filterbank(80, 640)
    bin_1k = round(1000 / (16000 / 640))
    assert band == int(filters[bin_1k].argmax())


def test_mel_filterbank_is_triangular_and_covers_the_spectrum():
    filters = F.mel_filterbank(80, 640).numpy()
    assert filters.shape == (321, 80) and (filters >= 0).all()
    assert (filters[1:-1].sum(1) > 0).all()
    peaks = filters.argmax(0)
    assert (np.diff(peaks) >= 0).all()


def test_mel_chunking_matches_one_pass(monkeypatch):
    audio = np.random.default_rng(0).normal(0, 0.1, 16000 * 3 + 123).astype(np.float32)
    whole = F.MelExtractor()(audio)
    chunked = F.MelExtractor()
    monkeypatch.setattr(chunked, "chunk_seconds", 1)
    np.testing.assert_allclose(chunked(audio), whole, atol=1e-4)


def _room_tone(seconds: float, dbfs: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * 16000)) * 10 ** (dbfs / 20)).astype(np.float32)


def test_hop_energy_and_the_gate_known_answers():
    # Two whole 20 ms hops at a mean square of 0.25; the 60 samples past them are no whole hop.
    np.testing.assert_allclose(F.hop_log_energy(np.full(700, 0.5, np.float32)), [np.log(0.25 + 1e-10)] * 2)
    assert F.hop_log_energy(np.zeros(100, np.float32)).shape == (0,)
    assert F.loudness_gate(0.0) == 0.0
    assert F.loudness_gate(F.SPEECH_SWING / 2) == 0.5
    assert F.loudness_gate(3.0) == 1.0


def test_the_loudness_gate_keeps_speech_and_quietens_steady_noise_at_any_level():
    from splat_portrait.media.audio import load_audio

    plain = F.make_extractor("mel", normalise="utterance")
    gated = F.make_extractor("mel", normalise="utterance-gated")
    speech = load_audio(Path(__file__).resolve().parents[1] / "examples" / "speech.wav")
    np.testing.assert_array_equal(gated(speech), plain(speech))
    for dbfs in (-60.0, -30.0):
        noise = _room_tone(4.0, dbfs)
        ratio = gated(noise) / plain(noise)
        # The log of a mean of 320 squared Gaussians spreads by sqrt(2 / 320): a gate of about 0.16.
        np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-4)
        assert abs(ratio.flat[0] - np.sqrt(2 / 320) / F.SPEECH_SWING) < 0.02, ratio.flat[0]
    silence = gated(np.zeros(16000, np.float32))
    assert np.isfinite(silence).all() and np.abs(silence).max() < 1e-6
    assert gated.spec == FeatureSpec("mel", None, 80, normalise="utterance-gated")
    assert gated.spec.describe() == "mel (80-d, 50 Hz, utterance-normalised, loudness-gated)"
    with pytest.raises(SplatPortraitError) as info:
        F.check_compatible(plain.spec, gated.spec)
    assert str(info.value).endswith("recompute them with --audio-features mel --audio-norm utterance")


def test_check_compatible():
    mel = FeatureSpec("mel", None, 80)
    xlsr = FeatureSpec("wav2vec2", "facebook/wav2vec2-large-xlsr-53", 1024)
    F.check_compatible(mel, FeatureSpec("mel", None, 80))
    # A local copy of the same hub model is the same model.
    F.check_compatible(xlsr, FeatureSpec("wav2vec2", "/models/wav2vec2-large-xlsr-53/", 1024))
    with pytest.raises(SplatPortraitError) as err:
        F.check_compatible(xlsr, mel)
    assert str(err.value) == (
        "audio features come from mel (80-d, 50 Hz) but the checkpoint was trained with wav2vec2 "
        "'facebook/wav2vec2-large-xlsr-53' (1024-d, 50 Hz); recompute them with --audio-features wav2vec2 "
        "--audio-model facebook/wav2vec2-large-xlsr-53"
    )
    with pytest.raises(SplatPortraitError, match="recompute them with --audio-features mel$"):
        F.check_compatible(mel, FeatureSpec("mel", None, 64))


def test_feature_spec_json_round_trip():
    spec = FeatureSpec("wav2vec2", "x/y", 32)
    assert FeatureSpec.from_json(spec.to_json()) == spec
    assert spec.to_json() == {"extractor": "wav2vec2", "model": "x/y", "dim": 32, "rate_hz": 50, "normalise": "none"}


def test_extractor_choice_errors():
    with pytest.raises(SplatPortraitError, match="unknown audio feature extractor 'hubert'; choose one of mel, wav2vec2"):
        F.make_extractor("hubert")
    with pytest.raises(SplatPortraitError, match="needs --audio-model PATH_OR_HUB_ID"):
        F.make_extractor("wav2vec2")
    with pytest.raises(SplatPortraitError, match="--audio-model applies only to --audio-features wav2vec2"):
        F.make_extractor("mel", "some/model")


def test_missing_local_wav2vec2_folder_says_what_to_do(tmp_path):
    with pytest.raises(SplatPortraitError) as err:
        F.make_extractor("wav2vec2", str(tmp_path / "nowhere"))
    assert str(err.value) == (
        f"wav2vec2 model folder '{tmp_path / 'nowhere'}' not found or has no config.json; pass --audio-model "
        "a folder written by save_pretrained (or a hub id), or use --audio-features mel"
    )


def test_unknown_hub_id_offline_says_how_to_get_it(monkeypatch):
    import huggingface_hub.constants

    # Offline mode makes the hub lookup fail at once, as on a machine without internet.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SplatPortraitError) as err:
        F.Wav2Vec2Extractor("splat-portrait-tests/no-such-model")
    assert "not found locally and the hub is unreachable" in str(err.value)
    assert "(huggingface-cli download splat-portrait-tests/no-such-model --local-dir DIR) and pass --audio-model DIR" in str(err.value)
    assert str(err.value).endswith("or use --audio-features mel")


@pytest.fixture(scope="module")
def tiny_wav2vec2(tmp_path_factory):
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
        conv_dim=(8,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("tiny-wav2vec2")
    Wav2Vec2Model(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("num", [100, 400, 16000, 16321])
def test_wav2vec2_shape_and_spec(tiny_wav2vec2, num):
    extractor = F.make_extractor("wav2vec2", str(tiny_wav2vec2))
    assert extractor.spec == FeatureSpec("wav2vec2", str(tiny_wav2vec2), 32)
    out = extractor(np.random.default_rng(1).normal(0, 0.1, num).astype(np.float32))
    assert out.shape == (F.num_feature_frames(num), 32) and out.dtype == np.float32
    assert np.isfinite(out).all()


def test_wav2vec2_matches_the_model_and_chunks_closely(tiny_wav2vec2, monkeypatch):
    from transformers import Wav2Vec2Model

    audio = np.random.default_rng(2).normal(0, 0.2, 16000 * 3).astype(np.float32)
    extractor = F.Wav2Vec2Extractor(str(tiny_wav2vec2))
    out = extractor(audio)
    # Reference: the model on the normalised waveform shifted by 200 samples (frame t centred on
    # sample 320 t) and cut to the 149 * 320 + 400 samples that 150 frames need.
    model = Wav2Vec2Model.from_pretrained(tiny_wav2vec2).eval()
    norm = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
    padded = np.concatenate([np.zeros(200, np.float32), norm])[: 149 * 320 + 400]
    with torch.no_grad():
        reference = model(torch.from_numpy(padded)[None]).last_hidden_state[0].numpy()
    assert reference.shape == (150, 32)
    np.testing.assert_allclose(out, reference, atol=1e-4)
    monkeypatch.setattr(extractor, "chunk_seconds", 1)
    chunked = extractor(audio)
    assert chunked.shape == out.shape
    # Attention is global, so chunks differ a little; the conv front end keeps them close.
    assert np.abs(chunked - out).mean() < 0.1 * np.abs(out).mean()


def test_extractor_for_checks_the_spec(tiny_wav2vec2):
    spec = FeatureSpec("wav2vec2", str(tiny_wav2vec2), 32)
    assert F.extractor_for(spec).spec == spec
    with pytest.raises(SplatPortraitError, match="checkpoint was trained with wav2vec2"):
        F.extractor_for(FeatureSpec("wav2vec2", str(tiny_wav2vec2), 1024))


def test_check_model_reads_names_the_width_and_the_features_it_got():
    mel = FeatureSpec("mel", None, 80)
    F.check_model_reads(mel, 80, mel, "data")
    F.check_model_reads(None, 80, mel, "data")  # nothing recorded: only the width is checked
    wav2vec = FeatureSpec("wav2vec2", "facebook/w", 1024)
    with pytest.raises(SplatPortraitError) as err:
        F.check_model_reads(None, 80, wav2vec, "data")
    assert str(err.value) == (
        "the model reads 80-d audio features but data has wav2vec2 'facebook/w' (1024-d, 50 Hz); "
        "recompute the features with the extractor the model was trained with"
    )
    with pytest.raises(SplatPortraitError, match="checkpoint was trained with mel"):
        F.check_model_reads(mel, 80, FeatureSpec("wav2vec2", "facebook/w", 80), "data")
