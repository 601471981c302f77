"""LipSync: SyncNet's published layout, the reference offset search, crops, MFCCs and the full pipeline."""

from pathlib import Path

import numpy as np
import pytest
import torch

from splat_portrait.errors import SplatPortraitError
from splat_portrait.metrics import MetricOptions, build_metric
from splat_portrait.metrics.availability import MetricUnavailable
from splat_portrait.metrics.syncnet import (
    LipSync,
    SyncNet,
    crop_face,
    crop_windows,
    load_syncnet,
    mfcc,
    offset_distances,
    sync_offset,
    window_count,
)

DATA = Path(__file__).parents[1] / ".." / "shared" / "data"


@pytest.fixture(scope="module")
def syncnet_file(tmp_path_factory):
    """Random SyncNet weights saved like the published file, which predates BatchNorm's batch counter."""
    torch.manual_seed(0)
    state = {k: v for k, v in SyncNet().state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path_factory.mktemp("syncnet") / "syncnet_v2.model"
    torch.save(state, path)
    return path


def test_syncnet_layout_matches_the_published_state_dict():
    shapes = {k: tuple(v.shape) for k, v in SyncNet().state_dict().items() if not k.endswith("num_batches_tracked")}
    # Two streams of 6 conv + BN layers (6 tensors each) and two heads of 2 Linear + 1 BN (8 tensors).
    assert len(shapes) == 2 * 6 * 6 + 2 * 8
    assert shapes["netcnnaud.0.weight"] == (64, 1, 3, 3)
    assert shapes["netcnnaud.18.weight"] == (512, 256, 5, 4)
    assert shapes["netcnnaud.19.running_var"] == (512,)
    assert shapes["netcnnlip.0.weight"] == (96, 3, 5, 7, 7)
    assert shapes["netcnnlip.4.weight"] == (256, 96, 1, 5, 5)
    assert shapes["netcnnlip.18.weight"] == (512, 256, 1, 6, 6)
    assert shapes["netfcaud.1.running_mean"] == (512,)
    assert shapes["netfclip.3.weight"] == (1024, 512)


def test_syncnet_embeds_mfcc_and_crop_windows():
    model = SyncNet().eval()
    with torch.no_grad():
        audio = model.embed_audio(torch.randn(2, 1, 13, 20))
        video = model.embed_video(torch.rand(2, 3, 5, 224, 224) * 255)
    assert audio.shape == video.shape == (2, 1024)


def test_load_syncnet_restores_every_tensor(syncnet_file):
    model = load_syncnet(syncnet_file)
    saved = torch.load(syncnet_file, weights_only=True)
    assert not model.training
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())


def test_load_syncnet_reports_missing_and_foreign_files(tmp_path):
    with pytest.raises(MetricUnavailable, match="LipSync \\(SyncNet\\) needs weights that are not given"):
        load_syncnet(None)
    with pytest.raises(MetricUnavailable, match="weights .*nowhere.model do not exist: download syncnet_v2.model"):
        load_syncnet(tmp_path / "nowhere.model")
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.model")
    with pytest.raises(SplatPortraitError, match=r"not a syncnet_v2 state dict \(missing \['netcnnaud.0.weight'"):
        load_syncnet(tmp_path / "other.model")
    torch.save([1, 2], tmp_path / "list.model")
    with pytest.raises(SplatPortraitError, match="holds a list, not a SyncNet state dict"):
        load_syncnet(tmp_path / "list.model")


# ---------------------------------------------------------------- offset search


def test_offset_search_by_hand():
    # Offsets -1, 0, +1 compare video t with audio t-1, t, t+1 (zeros beyond the ends):
    # mean distances 1, 2, 5/3 -> offset +1, LSE-D 1, LSE-C median - min = 5/3 - 1.
    video = torch.zeros(3, 1)
    audio = torch.tensor([[1.0], [2.0], [3.0]])
    expected = torch.tensor([[0, 1, 2], [1, 2, 3], [2, 3, 0.0]])
    assert torch.allclose(offset_distances(video, audio, 1), expected, atol=1e-5)
    result = sync_offset(video, audio, max_offset=1)
    assert result.offset == 1
    assert result.min_dist == pytest.approx(1.0, abs=1e-5)
    assert result.confidence == pytest.approx(2 / 3, abs=1e-5)


@pytest.mark.parametrize("lag", [-15, -6, 0, 3, 11])
def test_offset_search_finds_a_planted_shift(lag):
    generator = torch.Generator().manual_seed(lag + 100)
    frames, dim = 60, 64
    speech = torch.randn(frames + 40, dim, generator=generator)
    audio = speech[20 : 20 + frames]
    video = speech[20 - lag : 20 - lag + frames] + 0.3 * torch.randn(frames, dim, generator=generator)
    result = sync_offset(video, audio)
    assert result.offset == lag
    assert result.confidence > result.min_dist  # a clear minimum, far below the median
    unsynced = sync_offset(torch.randn(frames, dim, generator=generator), audio)
    assert unsynced.confidence < result.confidence / 3


def test_offset_search_needs_matching_embeddings():
    with pytest.raises(ValueError, match="two \\(N, D\\) embeddings of one shape"):
        sync_offset(torch.zeros(4, 8), torch.zeros(5, 8))


# ---------------------------------------------------------------- inputs


def test_window_count_follows_the_reference():
    assert window_count(125, 5 * 16000) == 120
    assert window_count(200, 5 * 16000 + 639) == 120  # audio decides: whole 40 ms frames only
    with pytest.raises(SplatPortraitError, match="needs more than 5 frames with audio, got 5"):
        window_count(5, 16000)


def test_crop_windows_pad_the_face_box_and_fill_gaps():
    boxes = np.tile([100.0, 100.0, 200.0, 200.0], (20, 1))
    boxes[[0, 7, 19]] = np.nan
    windows = crop_windows(boxes)
    # half side 50; 1.4 x half each side horizontally, from the centre - 50 down to the centre + 1.8 x 50.
    assert np.allclose(windows, np.tile([80.0, 100.0, 220.0, 240.0], (20, 1)))
    jittered = np.tile([100.0, 100.0, 200.0, 200.0], (20, 1))
    jittered[10] += 30  # one-frame detector glitch: the median filter removes it
    assert np.allclose(crop_windows(jittered)[10], [80.0, 100.0, 220.0, 240.0])
    with pytest.raises(SplatPortraitError, match="no face in any frame"):
        crop_windows(np.full((4, 4), np.nan))


def test_crop_face_is_bgr_and_grey_outside_the_frame():
    frame = np.zeros((100, 100, 3), np.uint8)
    frame[..., 0], frame[..., 2] = 200, 20  # red 200, blue 20
    crop = crop_face(frame, np.array([50.0, -50.0, 150.0, 50.0]))  # right half and the top lie outside
    assert crop.shape == (3, 224, 224)
    inside = torch.tensor([20.0, 0.0, 200.0])[:, None, None].expand(3, 74, 100)  # B, G, R
    assert torch.allclose(crop[:, 150:, :100], inside)
    grey = torch.tensor(110.0)
    assert torch.allclose(crop[:, :100, :], grey) and torch.allclose(crop[:, :, 130:], grey)


def test_mfcc_matches_the_reference_on_pcm16_samples():
    import python_speech_features

    pcm = (np.random.default_rng(0).standard_normal(16000) * 3000).astype(np.int16)
    features = mfcc(pcm / 32768.0)
    assert features.shape == (13, 99)  # 100 Hz, 25 ms windows
    assert np.allclose(features, python_speech_features.mfcc(pcm, 16000).T)


# ---------------------------------------------------------------- pipeline


def test_lipsync_runs_on_a_real_talking_face(syncnet_file):
    video = DATA / "videos" / "hdtf_wda_aoc.mp4"
    if not video.is_file():
        pytest.skip(f"real sample video not found at {video}")
    from splat_portrait.media.audio import load_audio
    from splat_portrait.media.video import read_frames

    frames = [frame for _, frame in zip(range(8), read_frames(video))]
    samples = load_audio(video)[: 8 * 640]
    metric = build_metric("lipsync", MetricOptions(syncnet_weights=syncnet_file))
    assert metric.implementation == "syncnet_v2 (syncnet_v2.model)"
    result = metric.compute(frames, samples)
    # Random weights: the numbers mean nothing, but all 8 - 5 windows were embedded and searched.
    assert result.windows == 3
    assert -15 <= result.offset <= 15 and result.min_dist > 0 and result.confidence >= 0
    assert isinstance(metric.compute, LipSync)
