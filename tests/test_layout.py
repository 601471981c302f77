import json

import numpy as np
import pytest

from splat_portrait.audio.features import FeatureSpec
from splat_portrait.data import layout
from splat_portrait.data.layout import Cameras, ClipMeta, ClipPaths, ManifestEntry
from splat_portrait.errors import SplatPortraitError

MEL = FeatureSpec("mel", None, 80)


def _write_clip(data_dir, clip_id, frames=3, synthetic=False):
    paths = ClipPaths.of(data_dir, clip_id)
    layout.start_clip(paths)
    for i in range(frames):
        layout.write_frame(paths, i, np.full((8, 8, 3), 10 * i, np.uint8))
    layout.write_meta(paths, ClipMeta(clip_id, frames, frames / 25, f"/videos/{clip_id}.mp4", MEL, synthetic))
    layout.mark_complete(paths)
    return paths


def test_clip_paths_follow_the_layout(tmp_path):
    paths = ClipPaths.of(tmp_path, "abc")
    assert paths.root == tmp_path / "clips" / "abc"
    assert paths.id == "abc"
    assert paths.frame(12) == tmp_path / "clips/abc/frames/000012.jpg"
    names = [p.name for p in (paths.audio, paths.audio_features, paths.cameras, paths.meta, paths.complete)]
    assert names == ["audio.wav", "audio_features.npy", "cameras.json", "meta.json", "COMPLETE"]
    assert (paths.depth.name, paths.mouth_open.name) == ("depth.npy", "mouth_open.npy")


def test_cameras_round_trip_and_json_shape(tmp_path):
    paths = ClipPaths.of(tmp_path, "c")
    layout.start_clip(paths)
    rng = np.random.default_rng(0)
    cams = Cameras(rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=(5, 4, 4)).astype(np.float32), 64, 64)
    layout.write_cameras(paths, cams)
    data = json.loads(paths.cameras.read_text())
    assert (data["width"], data["height"], data["fps"]) == (64, 64, 25)
    assert np.array(data["intrinsics"]).shape == (5, 4) and np.array(data["c2w"]).shape == (5, 4, 4)
    back = layout.read_cameras(paths)
    np.testing.assert_allclose(back.intrinsics, cams.intrinsics, atol=1e-6)
    np.testing.assert_allclose(back.c2w, cams.c2w, atol=1e-6)
    with pytest.raises(ValueError, match="intrinsics"):
        Cameras(np.zeros((2, 4)), np.zeros((3, 4, 4)), 8, 8)


def test_meta_keeps_feature_spec_and_extra_keys(tmp_path):
    paths = ClipPaths.of(tmp_path, "m")
    layout.start_clip(paths)
    spec = FeatureSpec("wav2vec2", "facebook/wav2vec2-large-xlsr-53", 1024)
    meta = ClipMeta("m", 10, 0.4, "src.mp4", spec, extra={"crop_size": 256})
    layout.write_meta(paths, meta)
    data = json.loads(paths.meta.read_text())
    assert data["audio_features"] == {"extractor": "wav2vec2", "model": "facebook/wav2vec2-large-xlsr-53", "dim": 1024, "rate_hz": 50, "normalise": "none"}
    assert (data["fps"], data["sample_rate"], data["crop_size"]) == (25, 16000, 256)
    assert layout.read_meta(paths) == meta


def test_frames_audio_features_round_trip(tmp_path):
    paths = ClipPaths.of(tmp_path, "f")
    layout.start_clip(paths)
    image = np.zeros((16, 16, 3), np.uint8)
    image[:, 8:] = (200, 100, 50)
    layout.write_frame(paths, 1, image)
    layout.write_frame(paths, 0, image)
    assert [p.name for p in paths.frame_paths()] == ["000000.jpg", "000001.jpg"]
    assert np.abs(layout.read_frame(paths, 1).astype(int) - image).mean() < 3
    samples = np.sin(np.arange(1600) / 10).astype(np.float32) * 0.5
    layout.write_audio(paths, samples)
    np.testing.assert_allclose(layout.read_audio(paths), samples, atol=1 / 32767)
    features = np.arange(12, dtype=np.float32).reshape(3, 4)
    layout.write_features(paths, features)
    np.testing.assert_array_equal(layout.read_features(paths), features)


def test_complete_marker_and_restart(tmp_path):
    paths = _write_clip(tmp_path, "done")
    assert layout.is_complete(paths)
    partial = ClipPaths.of(tmp_path, "partial")
    layout.start_clip(partial)
    layout.write_frame(partial, 0, np.zeros((8, 8, 3), np.uint8))
    assert not layout.is_complete(partial)
    assert [p.id for p in layout.complete_clips(tmp_path)] == ["done"]
    layout.start_clip(partial)  # a restart clears the unfinished attempt
    assert list(partial.root.iterdir()) == []
    assert layout.complete_clips(tmp_path / "nothing") == []


def test_splits_are_deterministic_hash_based_and_never_empty():
    ids = [f"clip{i:03d}" for i in range(200)]
    splits = layout.assign_splits(ids, 0.1)
    assert splits == layout.assign_splits(list(reversed(ids)), 0.1)
    assert 10 <= sum(s == "test" for s in splits.values()) <= 30
    # Adding clips does not move existing ones.
    more = layout.assign_splits(ids + [f"new{i}" for i in range(50)], 0.1)
    assert all(more[i] == splits[i] for i in ids)
    for pair in (["a", "b"], ["x", "y"]):
        assert sorted(layout.assign_splits(pair, 0.1).values()) == ["test", "train"]
        assert sorted(layout.assign_splits(pair, 0.99).values()) == ["test", "train"]
    assert layout.assign_splits(["solo"], 0.1) == {"solo": "train"} or layout.assign_splits(["solo"], 0.1) == {"solo": "test"}
    assert set(layout.assign_splits(ids, 0.0).values()) == {"train"}
    with pytest.raises(SplatPortraitError, match=r"test fraction must be in \[0, 1\], got 1.5"):
        layout.assign_splits(ids, 1.5)


def test_clips_of_one_identity_share_their_split():
    ids = [f"clip{i:03d}" for i in range(200)]
    groups = {i: f"person{int(i[4:]) // 5}" for i in ids}  # 40 people, 5 clips each
    splits = layout.assign_splits(ids, 0.25, groups)
    by_person = {}
    for clip, split in splits.items():
        by_person.setdefault(groups[clip], set()).add(split)
    assert all(len(s) == 1 for s in by_person.values())
    assert 4 <= sum(s == {"test"} for s in by_person.values()) <= 18
    # A clip without a group is its own group, as before.
    assert layout.assign_splits(ids[:3], 0.25, {}) == layout.assign_splits(ids[:3], 0.25)


def test_manifest_round_trip_and_rebuild(tmp_path):
    _write_clip(tmp_path, "a", frames=3)
    _write_clip(tmp_path, "b", frames=5, synthetic=True)
    layout.start_clip(ClipPaths.of(tmp_path, "unfinished"))
    entries = layout.rebuild_manifest(tmp_path, test_fraction=0.5)
    assert [e.id for e in entries] == ["a", "b"]
    assert sorted(e.split for e in entries) == ["test", "train"]
    lines = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert lines[1] == {"id": "b", "frames": 5, "duration": 0.2, "split": entries[1].split, "source": "/videos/b.mp4", "synthetic": True}
    assert layout.read_manifest(tmp_path) == entries


def test_manifest_errors_are_clear(tmp_path):
    with pytest.raises(SplatPortraitError, match="manifest.jsonl not found; run `splat-portrait preprocess`"):
        layout.read_manifest(tmp_path)
    layout.write_manifest(tmp_path, [ManifestEntry("a", 1, 0.04, "valid", "s")])
    with pytest.raises(SplatPortraitError, match="line 1: split must be train or test, got 'valid'"):
        layout.read_manifest(tmp_path)
    (tmp_path / "manifest.jsonl").write_text('{"id": "a"}\n')
    with pytest.raises(SplatPortraitError, match="line 1 is not a valid manifest entry"):
        layout.read_manifest(tmp_path)
    with pytest.raises(SplatPortraitError, match="meta.json is missing; preprocess the clip again"):
        layout.read_meta(ClipPaths.of(tmp_path, "ghost"))
