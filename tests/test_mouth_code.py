"""The mouth code: audio -> two mouth numbers -> offsets; its teacher forcing, its fitting, export and training."""

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate
from typer.testing import CliRunner

from splat_portrait import camera
from splat_portrait.cli.app import app
from splat_portrait.data.datasets import DynamicDataset
from splat_portrait.data.synthetic import SynthConfig, write_synthetic_dataset
from splat_portrait.errors import SplatPortraitError
from splat_portrait.export.graphs import export_model
from splat_portrait.models import TalkingHead, load_checkpoint, load_model, preset, save_checkpoint
from splat_portrait.models.mouth_code import CODE_SCALE, MouthPredictor, mouth_code
from splat_portrait.runtime.engines import OnnxEngine, TorchEngine
from splat_portrait.runtime.model_dir import open_model_dir
from splat_portrait.training import TrainConfig
from splat_portrait.training.mouth_code import coded_clips, concordance_loss, fit_mouth_predictor, sample
from splat_portrait.training.objective import predict, teacher_mouth_codes

from conftest import face

SIZE = 32
runner = CliRunner()


def coded_model(seed: int = 0, channels: int = 8) -> TalkingHead:
    torch.manual_seed(seed)
    model = TalkingHead(preset("tiny", image_size=SIZE, mouth_code_channels=channels))
    with torch.no_grad():
        model.dynamic.conv_out.weight.normal_(0, 0.1)
    return model


@pytest.fixture(scope="module")
def data_dir(landmark_data):
    return landmark_data


def test_mouth_code_known_answers_and_invariance_to_where_the_face_sits():
    # The schematic face is 0.5 high; its mouth corners (48, 54) are 0.2 apart.
    torch.testing.assert_close(mouth_code(face(0.0)), torch.tensor([0.0, 0.4]))
    torch.testing.assert_close(mouth_code(face(0.1)), torch.tensor([0.2, 0.4]))
    moved = (face(0.1) - 0.5) * 0.5 + 0.3  # half the size, elsewhere in the crop
    torch.testing.assert_close(mouth_code(moved), torch.tensor([0.2, 0.4]))
    # Upside down the lower lip is above the upper one in the image, still 0.2 below along the face.
    flipped = face(0.1) * torch.tensor([1.0, -1.0])
    torch.testing.assert_close(mouth_code(flipped), torch.tensor([0.2, 0.4]))
    assert mouth_code(torch.stack([face(0.0), face(0.1)])).shape == (2, 2)


def test_concordance_loss_known_answers():
    truth = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    truth = truth - truth.mean(0)  # so that scaling it keeps its mean
    assert concordance_loss(truth, truth).item() == pytest.approx(0.0, abs=1e-6)
    # Half the spread, perfectly correlated: 1 - 2 * 0.5 / (0.25 + 1).
    assert concordance_loss(0.5 * truth, truth).item() == pytest.approx(0.2, abs=1e-5)
    # A constant prediction (what mean-square regression tends to) earns no concordance at all.
    assert concordance_loss(torch.zeros_like(truth), truth).item() == pytest.approx(1.0)
    assert concordance_loss(-truth, truth).item() == pytest.approx(2.0, abs=1e-5)


def test_a_coded_decoder_hears_the_audio_only_through_the_code():
    model = coded_model()
    assert not hasattr(model.dynamic, "audio") and isinstance(model.dynamic.mouth, MouthPredictor)
    gen = torch.Generator().manual_seed(1)
    features = model.encode(torch.rand(2, 3, SIZE, SIZE, generator=gen) * 2 - 1, camera.default_c2w((2,)), camera.default_intrinsics((2,))).features
    windows = torch.randn(2, 8, 16, 80, generator=gen)
    delta_t = torch.tensor([0.4, 0.4])
    code = torch.tensor([[0.05, 0.0], [0.05, 0.0]])
    forced = model.dynamic_offsets(features, windows, delta_t, code)
    # Given a code, other audio changes nothing; without one, the predictor's code is used.
    torch.testing.assert_close(model.dynamic_offsets(features, torch.randn(2, 8, 16, 80, generator=gen), delta_t, code), forced)
    predicted = model.dynamic.mouth(windows)
    torch.testing.assert_close(model.dynamic_offsets(features, windows, delta_t), model.dynamic_offsets(features, windows, delta_t, predicted))
    torch.testing.assert_close(model.dynamic.heard(windows, code), CODE_SCALE * code)
    assert not torch.allclose(model.dynamic_offsets(features, windows, delta_t, -code), forced)
    # An untrained decoder (zero last layer) leaves the head static whatever the code.
    fresh = TalkingHead(preset("tiny", image_size=SIZE, mouth_code_channels=8))
    assert fresh.dynamic_offsets(features, windows, delta_t, code).abs().max() == 0


def test_teacher_forcing_uses_true_codes_where_landmarks_are_known(data_dir):
    dataset = DynamicDataset(data_dir, "train", SIZE, seed=0)
    clip = next(c for c, record in enumerate(dataset.clips) if np.isnan(record.landmarks[3].numpy()).any())
    batch = default_collate([dataset._sample(0, clip, 2, 5), dataset._sample(1, clip, 3, 5)])
    model = coded_model()
    codes = teacher_mouth_codes(model, batch)
    landmarks = dataset.clips[clip].landmarks
    torch.testing.assert_close(codes[0], mouth_code(landmarks[5]) - mouth_code(landmarks[2]))
    # Frame 3 has no face: its code comes from the audio.
    torch.testing.assert_close(codes[1], model.dynamic.mouth(batch["audio"][1:]).detach()[0])
    assert teacher_mouth_codes(TalkingHead(preset("tiny", image_size=SIZE)), batch) is None
    # predict() feeds the decoder exactly these codes.
    prediction = predict(model, batch, dynamic=True)
    torch.testing.assert_close(prediction.offsets, model.dynamic_offsets(prediction.encoded.features, batch["audio"], batch["delta_t"], codes))


def test_coded_clips_are_centred_and_skip_faceless_frames(data_dir):
    clips = coded_clips(DynamicDataset(data_dir, "train", SIZE, seed=0))
    assert len(clips) == 2
    for clip in clips:
        torch.testing.assert_close(clip.codes.mean(0), torch.zeros(2), atol=1e-6, rtol=0)
    assert sorted(len(c.frames) for c in clips) == [14, 15]
    assert 3 not in min(clips, key=lambda c: len(c.frames)).frames.tolist()
    windows, codes = sample(clips, 10, np.random.default_rng(0))
    assert windows.shape == (10, 8, 16, 80) and codes.shape == (10, 2)


def test_fitting_the_predictor_lowers_its_loss_and_needs_landmarks(data_dir, tmp_path):
    dataset = DynamicDataset(data_dir, "train", SIZE, seed=0)
    torch.manual_seed(0)
    predictor = MouthPredictor(80, 8)
    windows, codes = sample(coded_clips(dataset), 256, np.random.default_rng(1))
    with torch.no_grad():
        before = concordance_loss(predictor(windows), codes).item()
    record = fit_mouth_predictor(predictor, dataset, steps=100, lr=3e-3, batch_size=64)
    with torch.no_grad():
        after = concordance_loss(predictor(windows), codes).item()
    assert after < 0.6 * before, (before, after)
    assert record["steps"] == 100 and record["clips"] == 2 and record["frames"] == 29 and record["noise"] == 0.3
    bare = tmp_path / "bare"
    write_synthetic_dataset(bare, 1, seed=5, config=SynthConfig(seconds=0.6, size=SIZE, speech="voiced"), test_fraction=0.0)
    with pytest.raises(SplatPortraitError, match="has face landmarks; the mouth predictor learns from preprocessed real clips"):
        fit_mouth_predictor(predictor, DynamicDataset(bare, "train", SIZE), steps=1)


def test_mouth_code_settings_are_checked():
    with pytest.raises(ValueError, match=r"the mouth code belongs to stage II \(dynamic\)"):
        TrainConfig("static", "d", mouth_code_channels=8)
    with pytest.raises(ValueError, match="mouth_code_channels and mouth_code_steps must not be negative"):
        TrainConfig("dynamic", "d", init="x", mouth_code_steps=-1)
    with pytest.raises(ValueError, match="mouth_code_noise must not be negative, got -0.1"):
        TrainConfig("dynamic", "d", init="x", mouth_code_noise=-0.1)


def test_train_dynamic_builds_fits_and_freezes_the_predictor(data_dir, tmp_path):
    static = tmp_path / "static.ckpt"
    torch.manual_seed(0)
    save_checkpoint(static, TalkingHead(preset("tiny", image_size=SIZE)), {})
    common = ["train-dynamic", str(data_dir), "--init", str(static), "--steps", "2", "--batch-size", "2", "--lpips-weight", "0", "--lip-weight", "1", "--freeze-static"]
    result = runner.invoke(app, [*common, "-o", str(tmp_path / "none"), "--mouth-code-steps", "5"])
    assert result.exit_code == 1 and "this decoder has none; add --mouth-code-channels" in result.output
    result = runner.invoke(app, [*common, "-o", str(tmp_path / "run"), "--mouth-code-channels", "8", "--mouth-code-steps", "20", "--mouth-code-noise", "0.2"])
    assert result.exit_code == 0, result.output
    model, meta = load_checkpoint(tmp_path / "run" / "dynamic.ckpt")
    assert model.config.dynamic.mouth_code_channels == 8
    assert meta["mouth_code_fit"]["steps"] == 20 and meta["mouth_code_fit"]["frames"] == 29 and meta["mouth_code_fit"]["noise"] == 0.2
    # The generator was frozen; the predictor was fitted, then left alone by the render steps.
    torch.testing.assert_close(model.generator.state_dict(), load_model(static).generator.state_dict())
    result = runner.invoke(app, [*common[:5], "1", *common[6:], "-o", str(tmp_path / "again"), "--mouth-code-channels", "8", "--mouth-code-steps", "20", "--mouth-code-noise", "0.2"])
    assert result.exit_code == 0, result.output
    once = load_model(tmp_path / "again" / "dynamic.ckpt")
    torch.testing.assert_close(once.dynamic.mouth.state_dict(), model.dynamic.mouth.state_dict())


def test_a_coded_model_exports_and_onnx_matches_eager(tmp_path):
    ckpt = tmp_path / "coded.ckpt"
    save_checkpoint(ckpt, coded_model(), {"feature_spec": {"extractor": "mel", "model": None, "dim": 80}})
    export_model(ckpt, tmp_path / "model")
    onnx_engine, torch_engine = OnnxEngine(open_model_dir(tmp_path / "model"), "cpu"), TorchEngine(load_model(ckpt))
    gen = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, SIZE, SIZE, generator=gen) * 2 - 1
    a = onnx_engine.encode(image, camera.default_c2w((1,)), camera.default_intrinsics((1,)))
    b = torch_engine.encode(image, camera.default_c2w((1,)), camera.default_intrinsics((1,)))
    windows, delta_t = torch.randn(5, 8, 16, 80, generator=gen), torch.rand(5, generator=gen)
    expected = torch_engine.dynamic_offsets(b, windows, delta_t)
    assert expected.abs().max() > 1e-3
    assert (onnx_engine.dynamic_offsets(a, windows, delta_t) - expected).abs().max() <= 1e-4
