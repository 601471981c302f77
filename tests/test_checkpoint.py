import os
import re

import pytest
import torch

from splat_portrait import camera
from splat_portrait.errors import SplatPortraitError
from splat_portrait.models import ModelConfig, TalkingHead, load_checkpoint, load_model, preset, save_checkpoint


class NotOurs:
    """A picklable object of a class no weights-only loader knows."""

    def __init__(self):
        self.payload = 42


def trained_like_model(seed: int = 0) -> TalkingHead:
    torch.manual_seed(seed)
    model = TalkingHead(preset("tiny"))
    with torch.no_grad():
        model.dynamic.conv_out.weight.normal_(0, 0.1)  # so the dynamic path's weights matter too
    return model


def outputs(model: TalkingHead):
    gen = torch.Generator().manual_seed(5)
    image = torch.rand(1, 3, 64, 64, generator=gen) * 2 - 1
    windows = torch.randn(2, 8, 16, 80, generator=gen)
    with torch.no_grad():
        enc = model.encode(image, camera.default_c2w((1,)), camera.default_intrinsics((1,)))
        offsets = model.dynamic_offsets(enc.features, windows, torch.tensor([0.2, 1.4]))
    return [enc.attributes, enc.background, *enc.features, offsets]


def error_message(path) -> str:
    with pytest.raises(SplatPortraitError) as info:
        load_model(path)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture
def saved(tmp_path):
    model = trained_like_model()
    path = tmp_path / "model.pt"
    save_checkpoint(path, model)
    return model, path


def test_save_then_load_gives_identical_outputs(saved):
    model, path = saved
    loaded = load_model(path)
    assert isinstance(loaded, TalkingHead)
    assert loaded.config == model.config
    assert not loaded.training
    for a, b in zip(outputs(model), outputs(loaded), strict=True):
        assert torch.equal(a, b)


def test_training_state_round_trips_and_resumes_an_optimizer(tmp_path):
    model = trained_like_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2.5e-5, weight_decay=1e-5)
    image = torch.zeros(1, 3, 64, 64)
    model.encode(image, camera.default_c2w((1,)), camera.default_intrinsics((1,))).attributes.sum().backward()
    optimizer.step()
    state = {"optimizer": optimizer.state_dict(), "step": 17, "stage": "static"}
    path = tmp_path / "train.pt"
    save_checkpoint(path, model, training_state=state)
    loaded, training = load_checkpoint(path)
    assert training["step"] == 17 and training["stage"] == "static"
    resumed = torch.optim.AdamW(loaded.parameters(), lr=2.5e-5, weight_decay=1e-5)
    resumed.load_state_dict(training["optimizer"])
    for key, value in optimizer.state_dict()["state"][0].items():
        assert torch.equal(resumed.state_dict()["state"][0][key], value)
    save_checkpoint(tmp_path / "plain.pt", model)
    assert load_checkpoint(tmp_path / "plain.pt")[1] is None


def test_file_holds_a_plain_marked_dict(saved):
    _, path = saved
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "splat-portrait/checkpoint"
    assert payload["version"] == 1
    assert payload["kind"] == "talking-head"
    assert payload["config"]["generator"]["unet"]["image_size"] == 64


def test_saving_is_atomic_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    save_checkpoint(path, trained_like_model(0))
    before = path.read_bytes()

    def crash(obj, f, *args, **kwargs):
        with open(f, "wb") as out:
            out.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, trained_like_model(1))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.pt"]
    # A training state that a weights-only load could not read is refused before anything is written.
    with pytest.raises(TypeError, match=r"checkpoint\['training'\]\['extra'\] is a NotOurs"):
        save_checkpoint(path, trained_like_model(1), training_state={"extra": NotOurs()})
    assert path.read_bytes() == before
    save_checkpoint(path, trained_like_model(1))
    assert path.read_bytes() != before and os.listdir(tmp_path) == ["model.pt"]


def test_only_known_models_are_saved(tmp_path):
    with pytest.raises(TypeError, match="cannot checkpoint a Linear; known kinds: talking-head"):
        save_checkpoint(tmp_path / "x.pt", torch.nn.Linear(2, 2))


def test_missing_file_and_directory(tmp_path):
    assert error_message(tmp_path / "nope.pt") == f"checkpoint {tmp_path / 'nope.pt'} does not exist (or is not a file)"
    assert error_message(tmp_path) == f"checkpoint {tmp_path} does not exist (or is not a file)"


def test_empty_and_non_torch_files(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert error_message(empty) == f"checkpoint {empty} is empty"
    text = tmp_path / "notes.pt"
    text.write_text("hello, this is not a model\n")
    assert error_message(text) == f"{text} is not a splat-portrait checkpoint (not a readable PyTorch file)"


def test_foreign_pickle_is_refused_without_running_it(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save(NotOurs(), path)
    assert error_message(path) == (
        f"{path} is not a splat-portrait checkpoint: it holds arbitrary Python objects, which are not loaded for safety"
    )


def test_torch_file_that_is_not_ours(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, path)
    assert error_message(path) == (
        f"{path} is a PyTorch file but not a splat-portrait checkpoint (no 'splat-portrait/checkpoint' marker)"
    )
    torch.save([torch.ones(2)], path)
    assert "not a splat-portrait checkpoint (no 'splat-portrait/checkpoint' marker)" in error_message(path)


def test_truncated_checkpoint(saved):
    _, path = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert error_message(path) == f"checkpoint {path} is truncated or corrupted; save or download it again"


def edit_payload(path, edit) -> None:
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, path)


def test_newer_format_and_unknown_kind(saved):
    _, path = saved
    edit_payload(path, lambda p: p.update(version=2))
    assert error_message(path) == (
        f"checkpoint {path} has format version 2, newer than this splat-portrait reads (1); upgrade splat-portrait"
    )
    edit_payload(path, lambda p: p.update(version=1, kind="diffusion-prior-v9"))
    assert error_message(path) == (
        f"{path} holds a model of kind 'diffusion-prior-v9', but this needs a checkpoint of kind 'talking-head'"
    )


def test_config_that_no_longer_matches(saved):
    _, path = saved
    edit_payload(path, lambda p: p["config"]["generator"].update(num_eyes=3))
    assert error_message(path) == (
        f"{path}: its model config does not match this splat-portrait version "
        "(unknown GeneratorConfig field(s): num_eyes); use the version that wrote it or retrain"
    )


def test_weights_that_do_not_match_the_config(saved):
    _, path = saved

    def narrow_conditioning(payload):
        payload["config"]["generator"]["unet"]["embedding_dim"] = 32

    edit_payload(path, narrow_conditioning)
    message = error_message(path)
    assert re.fullmatch(
        re.escape(f"{path}: its weights do not match the model its config describes (")
        + r"0 missing, 0 unexpected, \d+ mis-shaped tensors, e\.g\. generator\.camera_mlp\.0\.weight\); "
        + "use the version that wrote it or retrain",
        message,
    ), message

    def drop_one(payload):
        payload["config"]["generator"]["unet"]["embedding_dim"] = 64
        del payload["state_dict"]["dynamic.conv_out.bias"]
        payload["state_dict"]["extra.weight"] = torch.zeros(1)

    edit_payload(path, drop_one)
    assert error_message(path) == (
        f"{path}: its weights do not match the model its config describes (1 missing, 1 unexpected, "
        "0 mis-shaped tensors, e.g. dynamic.conv_out.bias); use the version that wrote it or retrain"
    )



def test_callers_can_ask_for_other_model_kinds(saved):
    _, path = saved
    with pytest.raises(SplatPortraitError) as info:
        load_checkpoint(path, kinds={"edm-denoiser": (TalkingHead, ModelConfig)})
    assert str(info.value) == f"{path} holds a model of kind 'talking-head', but this needs a checkpoint of kind 'edm-denoiser'"
