"""TalkingHeadPipeline: the public Python API that animate, batch and evaluate run through."""

import math

import numpy as np
import pytest
from PIL import Image

from splat_portrait import TalkingHeadPipeline
from splat_portrait.errors import SplatPortraitError
from splat_portrait.media.audio import load_audio
from splat_portrait.media.video import read_frames
from splat_portrait.splats import read_ply

from conftest import DATA

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"sample data folder {DATA} is absent")
PORTRAIT = DATA / "portraits" / "happy_256.png"
SPEECH = DATA / "audio" / "speech_44k_stereo.wav"


@pytest.fixture(scope="module")
def speech():
    return load_audio(SPEECH)[:16000]  # 1 s at 16 kHz


@pytest.fixture(scope="module")
def pipe(model_dir):
    return TalkingHeadPipeline.from_pretrained(model_dir, device="cpu")


def test_call_returns_every_frame_and_the_static_head(pipe, speech):
    frames, splats = pipe(PORTRAIT, speech)
    assert frames.shape == (math.ceil(25 * len(speech) / 16000), 64, 64, 3) and frames.dtype == np.uint8
    assert splats.batch_shape == () and splats.num_splats == 64 * 64
    assert abs(float(splats.means[:, 2].median())) < 0.5  # world space: the head sits at the origin
    assert frames.std(0).mean() > 0  # the speech moves something


def test_paths_arrays_and_pil_images_give_the_same_frames(pipe, speech, tmp_path):
    from splat_portrait.media.audio import write_wav

    wav = tmp_path / "speech.wav"
    write_wav(wav, speech)
    image = np.asarray(Image.open(PORTRAIT).convert("RGB"))
    from_files = pipe(PORTRAIT, wav).frames
    np.testing.assert_array_equal(pipe(image, load_audio(wav)).frames, from_files)
    np.testing.assert_array_equal(pipe(Image.open(PORTRAIT), load_audio(wav)).frames, from_files)


def test_a_checkpoint_runs_in_pytorch_like_its_export_in_onnx_runtime(pipe, model_dir, speech):
    eager = TalkingHeadPipeline.from_pretrained(model_dir.parent / "tiny.ckpt")  # device "auto": the CPU here
    assert eager.engine.name.startswith("pytorch") and pipe.engine.name.startswith("onnxruntime")
    difference = np.abs(eager(PORTRAIT, speech).frames.astype(int) - pipe(PORTRAIT, speech).frames.astype(int))
    # ONNX parity is 1e-4: a splat edge may cross a pixel boundary, nothing more.
    assert (difference <= 1).mean() > 0.999 and difference.mean() < 0.01


def test_camera_and_size_per_call(pipe, speech):
    static = pipe(PORTRAIT, speech).frames
    orbit = pipe(PORTRAIT, speech, camera="orbit").frames
    assert np.abs(orbit[-1].astype(int) - static[-1]).mean() > 1 and orbit.shape == static.shape
    assert pipe(PORTRAIT, speech, yaw=20.0, size=48).frames.shape[1:] == (48, 48, 3)


def test_save_writes_the_files_from_samples_in_memory(pipe, speech, tmp_path):
    result = pipe.save(PORTRAIT, speech, tmp_path / "talk.mp4", ply=tmp_path / "head.ply", camera="nod")
    assert result.frames == 25 and len(list(read_frames(tmp_path / "talk.mp4"))) == 25
    assert abs(len(load_audio(tmp_path / "talk.mp4")) - len(speech)) < 400
    assert read_ply(tmp_path / "head.ply").num_splats == 64 * 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head.ply", "talk.mp4"]


def test_bad_in_memory_inputs_are_one_line_errors(pipe, speech):
    with pytest.raises(SplatPortraitError, match=r"an in-memory portrait must be an \(H, W, 3\) uint8 RGB array or a PIL image, got an array of float32 \(8, 8\)"):
        pipe(np.zeros((8, 8), np.float32), speech)
    with pytest.raises(SplatPortraitError, match=r"speech samples must be a non-empty \(N,\) float array at 16000 Hz, got int16 \(2, 5\)"):
        pipe(PORTRAIT, np.zeros((2, 5), np.int16))
    with pytest.raises(SplatPortraitError, match=r"the speech samples contains only silence"):
        pipe(PORTRAIT, np.zeros(1600, np.float32))
    with pytest.raises(SplatPortraitError, match=r"no face found in the image"):
        pipe(np.full((96, 96, 3), 128, np.uint8), speech)
    with pytest.raises(SplatPortraitError, match="unknown device 'tpu'; choose auto, cpu or cuda"):
        TalkingHeadPipeline.from_pretrained(None, device="tpu")
