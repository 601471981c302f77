"""Our sync expert: window indexing, the contrastive objective, training, the offset search and the evaluate metric."""

import dataclasses

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from splat_portrait.cli.app import app
from splat_portrait.data.synthetic import SynthConfig, write_synthetic_dataset
from splat_portrait.errors import SplatPortraitError
from splat_portrait.metrics import MetricOptions, Unavailable, build_metric
from splat_portrait.metrics.sync_expert import audio_windows, expert_sync_mouths, load_sync_expert, mouth_crops, video_windows
from splat_portrait.models.sync_expert import SyncExpert, SyncExpertConfig
from splat_portrait.training import sync
from splat_portrait.training.sync import SyncTrainConfig, augment, contrastive_loss, held_out_figures, load_windows, train_sync

SMALL = SyncExpertConfig(crop_size=(16, 24), channels=8, embedding_dim=16)


def test_mouth_crops_cut_the_fixed_region_in_greyscale():
    frames = torch.zeros(2, 3, 40, 40, dtype=torch.uint8)
    frames[:, 0, 20:36, 10:30] = 255  # pure red exactly over the region (0.25, 0.5, 0.75, 0.9)
    mouths = mouth_crops(frames, SyncExpertConfig(crop_size=(8, 10)))
    assert mouths.shape == (2, 8, 10)
    torch.testing.assert_close(mouths, torch.full((2, 8, 10), 0.299))


def test_windows_index_frames_and_their_audio():
    mouths = torch.arange(8.0)[:, None, None].expand(8, 2, 2)
    windows = video_windows(mouths)
    assert windows.shape == (4, 5, 2, 2) and windows[3, :, 0, 0].tolist() == [3, 4, 5, 6, 7]
    features = torch.arange(12.0)[:, None]
    audio = audio_windows(features, torch.tensor([0, 1]))
    assert audio.shape == (2, 10, 1)
    assert audio[1, :, 0].tolist() == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    # Past the end: zeros, as the official metric pads.
    assert audio_windows(features, torch.tensor([2]))[0, :, 0].tolist() == [4, 5, 6, 7, 8, 9, 10, 11, 0, 0]


def test_contrastive_loss_prefers_the_true_pair():
    torch.manual_seed(0)
    expert = SyncExpert(SMALL)
    videos, audios = torch.rand(4, 5, 16, 24), torch.randn(4, 3, 10, 80)
    # 3 own candidates + 3 other windows; at a high temperature every score is alike: log 6.
    loss, _ = contrastive_loss(expert, videos, audios, 1e4)
    assert loss.item() == pytest.approx(np.log(6), abs=1e-3)
    loss, accuracy = contrastive_loss(expert, videos, audios, 0.1)
    assert 0 <= accuracy <= 1
    loss.backward()
    assert all(p.grad is not None for p in expert.parameters())


def test_the_motion_input_ignores_what_does_not_move():
    torch.manual_seed(0)
    expert = SyncExpert(SyncExpertConfig(crop_size=(16, 24), channels=8, embedding_dim=16, video_input="motion"))
    mouths = torch.rand(3, 5, 16, 24) * 0.5
    face = torch.rand(16, 24) * 0.5  # another person's look, the same movement
    torch.testing.assert_close(expert.embed_video(mouths + face), expert.embed_video(mouths), atol=1e-5, rtol=0)
    frames = SyncExpert(SMALL)
    assert not torch.allclose(frames.embed_video(mouths + face), frames.embed_video(mouths), atol=1e-3)
    with pytest.raises(ValueError, match="video_input must be one of frames, motion, got 'edges'"):
        SyncExpertConfig(video_input="edges")


def test_augmentation_keeps_shapes_ranges_and_a_shared_audio_mask(monkeypatch):
    monkeypatch.setattr(sync, "NOISE", 0.0)
    gen = torch.Generator().manual_seed(0)
    flat = torch.full((6, 5, 16, 24), 0.4)
    audios = torch.ones(6, 3, 10, 80)
    videos, masked = augment(flat, audios, gen)
    assert videos.shape == flat.shape and masked.shape == audios.shape
    # Mirroring and shifting cannot change a flat window; its brightness and contrast can, inside [0, 1].
    assert torch.allclose(videos, videos[:, :1, :1, :1].expand_as(videos)) and 0 <= videos.min() <= videos.max() <= 1
    for row in masked:
        band = row[0, 0] == 0
        assert band.sum() <= sync.MASKED_BINS
        assert all(torch.equal(candidate[0] == 0, band) for candidate in row)
        if band.any():  # one contiguous band
            where = band.nonzero()[:, 0]
            assert where.tolist() == list(range(where[0], where[-1] + 1))
    # A ramp stays a ramp (mirrored or shifted, with positive contrast), and one seed gives one change.
    ramp = torch.arange(24.0).expand(1, 5, 16, 24) / 23
    shifted, _ = augment(ramp, torch.ones(1, 1, 10, 80), torch.Generator().manual_seed(3))
    steps = shifted[0, 0, 0].diff()
    assert (steps >= 0).all() or (steps <= 0).all()
    again, _ = augment(ramp, torch.ones(1, 1, 10, 80), torch.Generator().manual_seed(3))
    assert torch.equal(shifted, again)


@pytest.fixture(scope="module")
def talking(tmp_path_factory):
    """Synthetic clips whose mouths follow their sound: a stand-in the expert can learn in seconds."""
    root = tmp_path_factory.mktemp("sync-data")
    write_synthetic_dataset(root, 4, seed=2, config=SynthConfig(seconds=3.0, size=32, speech="voiced"), test_fraction=0.0)
    return root


def test_real_clips_only_by_default(talking):
    with pytest.raises(SplatPortraitError, match="the sync expert learns from real talking clips"):
        load_windows(talking, "train", SMALL, 32)


def test_training_learns_sync_and_the_search_finds_the_offset(talking, tmp_path):
    config = SyncTrainConfig(str(talking), steps=100, batch_size=16, shifts=3, lr=3e-3, resolution=32, include_synthetic=True)
    record = train_sync(config, tmp_path / "sync.ckpt", SMALL)
    # The true pair is one of 1 + 3 + 15 candidates: chance is 5 %.
    assert record["final_accuracy"] > 0.3, record
    expert, saved = load_sync_expert(tmp_path / "sync.ckpt")
    assert saved["clips"] == record["clips"] and expert.config == SMALL
    clips, _ = load_windows(talking, "train", SMALL, 32, include_synthetic=True)
    figures = held_out_figures(expert, clips, seconds=3.0)
    assert figures["windows"] == 4 and figures["pairs_ranked"] > 0.7, figures
    # The motion input with augmentation learns the same synthetic sync.
    motion = dataclasses.replace(SMALL, video_input="motion")
    record = train_sync(dataclasses.replace(config, augment=True), tmp_path / "motion.ckpt", motion)
    expert = load_sync_expert(tmp_path / "motion.ckpt")[0]
    assert record["config"]["augment"] and expert.config.video_input == "motion"
    figures = held_out_figures(expert, clips, seconds=3.0)
    assert figures["pairs_ranked"] > 0.7 and figures["offsets"] == [0, 0, 0, 0], figures
    # Video running 4 frames ahead of its sound (window t matches audio window t + 4): offset -4.
    clip = clips[0]
    mouths = clip.mouths.float() / 255
    aligned = expert_sync_mouths(expert, mouths[4:], clip.features[8:])
    leading = expert_sync_mouths(expert, mouths[4:], clip.features)
    assert (aligned.offset, leading.offset) == (0, -4), (aligned, leading)


def test_train_sync_cli_and_the_evaluate_metric(talking, tmp_path):
    result = CliRunner().invoke(app, ["train-sync", str(talking), "-o", str(tmp_path / "s.ckpt"), "--steps", "2"])
    assert result.exit_code == 1 and "the sync expert learns from real talking clips" in result.output
    result = CliRunner().invoke(app, ["train-sync", str(talking), "-o", str(tmp_path / "s.ckpt"), "--video-input", "edges"])
    assert result.exit_code == 1 and "video_input must be one of frames, motion, got 'edges'" in result.output
    assert isinstance(build_metric("sync"), Unavailable)
    assert "no sync expert given" in str(build_metric("sync"))
    with pytest.raises(SplatPortraitError, match="sync expert .*nope.ckpt does not exist; train one with `splat-portrait train-sync"):
        build_metric("sync", MetricOptions(sync_expert=tmp_path / "nope.ckpt"))
    from splat_portrait.models import TalkingHead, preset, save_checkpoint

    save_checkpoint(tmp_path / "head.ckpt", TalkingHead(preset("tiny", image_size=32)))
    with pytest.raises(SplatPortraitError):
        build_metric("sync", MetricOptions(sync_expert=tmp_path / "head.ckpt"))


def test_evaluate_scores_sync_with_a_given_expert(talking, tmp_path):
    """The metric runs inside evaluate and names the expert and its data; its values are the expert's, untrained here."""
    import json

    from splat_portrait.audio.features import FeatureSpec
    from splat_portrait.data import layout
    from splat_portrait.models import TalkingHead, preset, save_checkpoint
    from splat_portrait.models.sync_expert import SYNC_KINDS

    spec = layout.read_meta(layout.complete_clips(talking)[0]).audio_features
    record = {"config": {"data_dir": "somewhere", "resolution": 32}, "feature_spec": spec.to_json(), "clips": ["a", "b"], "frames": 300}
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "sync.ckpt", SyncExpert(SMALL), {"sync_training": record}, kinds=SYNC_KINDS)
    head = tmp_path / "head.ckpt"
    save_checkpoint(head, TalkingHead(preset("tiny", image_size=32)), {"feature_spec": FeatureSpec.from_json(spec.to_json()).to_json()})
    test = tmp_path / "data"
    write_synthetic_dataset(test, 2, seed=2, config=SynthConfig(seconds=1.0, size=32, speech="voiced"), test_fraction=1.0)
    out = tmp_path / "eval"
    args = ["evaluate", str(test), "--checkpoint", str(head), "-o", str(out), "--metrics", "sync", "--sync", str(tmp_path / "sync.ckpt"), "--videos", "0"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    report = json.loads((out / "metrics.json").read_text())
    aggregate = report["aggregate"]
    assert set(aggregate) >= {"sync_c", "sync_d", "sync_offset", "sync_in_sync"}
    assert 0 <= aggregate["sync_in_sync"] <= 1 and 0 <= aggregate["sync_d"] <= 2
    assert "our sync expert (sync.ckpt: trained on 2 real clips, 300 frames, of somewhere)" in json.dumps(report)
