import hashlib
import json
import re

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from splat_portrait import camera
from splat_portrait.cli.app import app
from splat_portrait.errors import SplatPortraitError
from splat_portrait.export import graphs
from splat_portrait.export.graphs import FP16_RELATIVE_TOLERANCE, export_model, feature_spec_of
from splat_portrait.models import TalkingHead, load_model, preset, save_checkpoint
from splat_portrait.runtime.engines import OnnxEngine, TorchEngine
from splat_portrait.runtime.model_dir import open_model_dir

runner = CliRunner()


def trained_like_model(seed: int = 0, **overrides) -> TalkingHead:
    torch.manual_seed(seed)
    model = TalkingHead(preset("tiny", **overrides))
    with torch.no_grad():
        # The decoder's last layer starts at zero; give it weights so parity covers the whole path.
        model.dynamic.conv_out.weight.normal_(0, 0.1)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny checkpoint exported once through the CLI."""
    root = tmp_path_factory.mktemp("export")
    ckpt = root / "tiny.ckpt"
    save_checkpoint(ckpt, trained_like_model(), {"feature_spec": {"extractor": "mel", "model": None, "dim": 80}})
    result = runner.invoke(app, ["export", str(ckpt), "-o", str(root / "model")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return ckpt, root / "model", result.output


def random_inputs(seed: int, frames: int):
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, 64, 64, generator=gen) * 2 - 1
    c2w = camera.orbit_around(camera.default_c2w((1,)), 0.3, -0.1)
    windows = torch.randn(frames, 8, 16, 80, generator=gen)
    return image, c2w, camera.default_intrinsics((1,)), windows, torch.rand(frames, generator=gen) * 20


def test_model_dir_holds_checked_graphs_and_a_complete_card(exported):
    ckpt, model_dir, output = exported
    card = json.loads((model_dir / "model.json").read_text())
    assert card["format"] == "splat-portrait/onnx-model" and card["version"] == 1
    assert card["preset"] == "tiny" and card["image_size"] == 64 and card["opset"] == 17
    assert card["audio_features"] == {"extractor": "mel", "model": None, "dim": 80, "rate_hz": 50, "normalise": "none"}
    assert card["camera"]["intrinsics"] == [camera.DEFAULT_FOCAL, camera.DEFAULT_FOCAL, 0.5, 0.5]
    assert card["camera"]["c2w"][2][3] == -camera.DEFAULT_RADIUS
    assert set(card["versions"]) == {"splat_portrait", "torch", "onnx", "onnxruntime"}
    assert card["source_checkpoint"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert card["config"] == preset("tiny").to_dict()
    assert set(card["graphs"]) == {"generator", "audio_decoder"}
    for info in card["graphs"].values():
        path = model_dir / info["file"]
        assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        onnx.checker.check_model(str(path), full_check=True)
        assert info["precision"] == "fp32" and 0 <= info["parity_max_abs_diff"] <= 1e-4
        assert 0 <= info["parity_max_rotation_rad"] <= graphs.ROTATION_TOLERANCE_RAD
    assert card["graphs"]["generator"]["outputs"] == ["attributes", "background", "features_0", "features_1", "features_2"]
    assert card["graphs"]["audio_decoder"]["inputs"] == ["features_0", "features_1", "features_2", "windows", "delta_t"]
    assert sorted(p.name for p in model_dir.iterdir()) == sorted([*(i["file"] for i in card["graphs"].values()), "model.json"])
    assert "generator.onnx" in output and "parity" in output


def test_audio_decoder_graph_has_a_dynamic_frame_axis(exported):
    graph = onnx.load(str(exported[1] / "audio_decoder.onnx"), load_external_data=False)
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.graph.input}
    assert dims["windows"] == ["frames", 8, 16, 80] and dims["delta_t"] == ["frames"]
    assert dims["features_0"][0] == 1


@pytest.mark.parametrize("frames", [1, 7])
def test_onnx_runtime_matches_pytorch_eager_on_fresh_inputs(exported, frames):
    ckpt, model_dir, _ = exported
    onnx_engine, torch_engine = OnnxEngine(open_model_dir(model_dir), "cpu"), TorchEngine(load_model(ckpt))
    image, c2w, intrinsics, windows, delta_t = random_inputs(seed=frames, frames=frames)
    a, b = onnx_engine.encode(image, c2w, intrinsics), torch_engine.encode(image, c2w, intrinsics)
    for got, want in zip([a.attributes, a.background, *a.features], [b.attributes, b.background, *b.features], strict=True):
        assert (got - want).abs().max() <= 1e-4
    offsets = onnx_engine.dynamic_offsets(a, windows, delta_t)
    expected = torch_engine.dynamic_offsets(b, windows, delta_t)
    assert offsets.shape == (frames, 3, 64, 64)
    assert expected.abs().max() > 1e-3  # the offsets are not trivially zero
    assert (offsets - expected).abs().max() <= 1e-4


def test_fp16_graphs_stay_within_their_documented_tolerance(exported, tmp_path):
    ckpt = exported[0]
    card = export_model(ckpt, tmp_path, fp16=True)
    assert {n: i.precision for n, i in card.graphs.items()} == {
        "generator": "fp32", "audio_decoder": "fp32", "generator_fp16": "fp16", "audio_decoder_fp16": "fp16",
    }  # fmt: skip
    fp16, reference = OnnxEngine(open_model_dir(tmp_path), "cpu", precision="fp16"), TorchEngine(load_model(ckpt))
    assert fp16.precision == "fp16"
    image, c2w, intrinsics, windows, delta_t = random_inputs(seed=3, frames=4)
    a, b = fp16.encode(image, c2w, intrinsics), reference.encode(image, c2w, intrinsics)
    pairs = [(a.attributes, b.attributes), *zip(a.features, b.features),
             (fp16.dynamic_offsets(a, windows, delta_t), reference.dynamic_offsets(b, windows, delta_t))]  # fmt: skip
    for got, want in pairs:
        assert got.dtype == torch.float32  # fp32 in and out, fp16 inside
        assert (got - want).abs().max() <= FP16_RELATIVE_TOLERANCE * max(1.0, want.abs().max().item())
    # Long time deltas stay accurate: the time embedding is computed in fp32.
    late = torch.full((4,), 590.0)
    got, want = fp16.dynamic_offsets(a, windows, late), reference.dynamic_offsets(b, windows, late)
    assert (got - want).abs().max() <= FP16_RELATIVE_TOLERANCE * max(1.0, want.abs().max().item())


def test_a_parity_failure_names_the_graph_and_writes_nothing(tmp_path, monkeypatch):
    ckpt = tmp_path / "tiny.ckpt"
    save_checkpoint(ckpt, trained_like_model())
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.json").write_text("{}")
    monkeypatch.setattr(graphs, "FP32_TOLERANCE", 0.0)
    with pytest.raises(SplatPortraitError, match=r"^ONNX parity check failed for generator: max abs difference from PyTorch [0-9.e-]+ > 0;"):
        export_model(ckpt, tmp_path / "model")
    assert [p.name for p in (tmp_path / "model").iterdir()] == ["model.json"]
    assert (tmp_path / "model" / "model.json").read_text() == "{}"


def test_rotations_are_compared_by_the_angle_between_them():
    half = np.sqrt(0.5)
    q = np.array([[1.0, 0.0, 0.0, 0.0], [half, 0.0, 0.0, half], [0.0, 1.0, 0.0, 0.0]])[:, :, None]
    # q and -q are one rotation; a quarter turn about z is pi/2 from the identity, a half turn about x is pi.
    np.testing.assert_allclose(graphs.rotation_angles(q, -q)[:, 0], 0.0, atol=1e-7)
    np.testing.assert_allclose(graphs.rotation_angles(q[:1].repeat(3, 0), q)[:, 0], [0.0, np.pi / 2, np.pi], atol=1e-7)


def test_a_rotation_parity_failure_is_named(tmp_path, monkeypatch):
    ckpt = tmp_path / "tiny.ckpt"
    save_checkpoint(ckpt, trained_like_model())
    monkeypatch.setattr(graphs, "ROTATION_TOLERANCE_RAD", -1.0)
    with pytest.raises(SplatPortraitError, match=r"^ONNX parity check failed for generator: splat rotations differ from PyTorch's by up to "):
        export_model(ckpt, tmp_path / "model")
    assert not (tmp_path / "model" / "model.json").exists()


def test_feature_spec_comes_from_the_checkpoint_or_the_command_line():
    model = trained_like_model(feature_dim=32)
    recorded = {"feature_spec": {"extractor": "wav2vec2", "model": "/models/tiny-w2v", "dim": 32, "rate_hz": 50}}
    assert feature_spec_of(model, recorded).model == "/models/tiny-w2v"
    # A local copy of the same wav2vec2 model is accepted; other features are not.
    assert feature_spec_of(model, recorded, "wav2vec2", "/elsewhere/tiny-w2v").model == "/elsewhere/tiny-w2v"
    with pytest.raises(SplatPortraitError, match="but the checkpoint was trained with wav2vec2"):
        feature_spec_of(model, recorded, "wav2vec2", "/elsewhere/other-model")
    with pytest.raises(SplatPortraitError, match=r"do not fit the model, which reads 32-d features; the checkpoint does not record"):
        feature_spec_of(model, None)
    assert feature_spec_of(model, None, "wav2vec2", "/models/tiny-w2v").dim == 32
    assert feature_spec_of(trained_like_model(), None).extractor == "mel"


def test_export_errors_are_one_line_and_exit_1(tmp_path):
    missing = runner.invoke(app, ["export", str(tmp_path / "nope.ckpt"), "-o", str(tmp_path / "m")])
    assert missing.exit_code == 1
    assert re.fullmatch(r"error: checkpoint \S+nope.ckpt does not exist \(or is not a file\)\n", missing.output)
    (tmp_path / "file").write_text("x")
    ckpt = tmp_path / "tiny.ckpt"
    save_checkpoint(ckpt, trained_like_model())
    clash = runner.invoke(app, ["export", str(ckpt), "-o", str(tmp_path / "file")])
    assert clash.exit_code == 1 and "is a file, not a folder" in clash.output
    assert not np.any([p.suffix == ".onnx" for p in tmp_path.rglob("*")])
