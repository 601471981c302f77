import pickle
import shutil

import numpy as np
import pytest
import torch

from splat_portrait.audio.features import FeatureSpec
from splat_portrait.audio.windows import audio_windows
from splat_portrait.data import layout
from splat_portrait.data.datasets import DynamicDataset, FrameCache, StaticPairDataset, make_loader
from splat_portrait.data.layout import ClipPaths
from splat_portrait.data.synthetic import SynthConfig, write_synthetic_dataset
from splat_portrait.errors import SplatPortraitError

SIZE = 32


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    # 3 clips of 24 frames: two train and one test with this seed.
    write_synthetic_dataset(root, 3, seed=1, config=SynthConfig(seconds=0.96, size=SIZE, speech="voiced"), test_fraction=0.34)
    assert sorted(e.split for e in layout.read_manifest(root)) == ["test", "train", "train"]
    return root


@pytest.fixture
def data_dir(source_dir, tmp_path):
    """A private copy for tests that break it."""
    return shutil.copytree(source_dir, tmp_path / "data")


def _train_ids(root):
    return [e.id for e in layout.read_manifest(root) if e.split == "train"]


def test_static_samples_hold_the_pair_and_its_cameras(source_dir):
    dataset = StaticPairDataset(source_dir, "train", SIZE, seed=0)
    assert len(dataset) == 48
    for k in range(20):
        sample = dataset[k]
        i, n, clip = sample["frame_i"], sample["frame_n"], sample["clip"]
        assert clip in _train_ids(source_dir) and i != n and 0 <= i < 24 and 0 <= n < 24
        paths = ClipPaths.of(source_dir, clip)
        cameras = layout.read_cameras(paths)
        for name, frame in (("i", i), ("n", n)):
            image = sample[f"image_{name}"]
            assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32
            assert image.min() >= -1 and image.max() <= 1
            expected = torch.from_numpy(layout.read_frame(paths, frame).copy()).permute(2, 0, 1).float() / 127.5 - 1
            torch.testing.assert_close(image, expected)
            torch.testing.assert_close(sample[f"intrinsics_{name}"], torch.from_numpy(cameras.intrinsics[frame]))
            torch.testing.assert_close(sample[f"c2w_{name}"], torch.from_numpy(cameras.c2w[frame]))


def test_frames_are_resized_with_antialiasing(source_dir):
    full = StaticPairDataset(source_dir, "train", SIZE, seed=0)[3]["image_i"]
    half = StaticPairDataset(source_dir, "train", SIZE // 2, seed=0)[3]["image_i"]
    assert half.shape == (3, SIZE // 2, SIZE // 2)
    box = torch.nn.functional.avg_pool2d(full[None], 2)[0]
    assert (half - box).abs().mean() < 0.03


def test_fixed_seed_sampling_is_reproducible_and_covers_the_split(source_dir):
    a, b = (StaticPairDataset(source_dir, "train", SIZE, seed=7) for _ in range(2))
    pairs = [a.pair(k) for k in range(1000)]
    assert pairs == [b.pair(k) for k in reversed(range(1000))][::-1]
    assert pairs != [StaticPairDataset(source_dir, "train", SIZE, seed=8).pair(k) for k in range(1000)]
    every_frame = {(c, i) for c in range(2) for i in range(24)}
    assert {(c, i) for c, i, _ in pairs} == every_frame and {(c, n) for c, _, n in pairs} == every_frame
    fresh = StaticPairDataset(source_dir, "train", SIZE)
    assert isinstance(fresh.seed, int) and fresh.seed != StaticPairDataset(source_dir, "train", SIZE).seed
    assert [fresh.pair(k) for k in range(10)] == [StaticPairDataset(source_dir, "train", SIZE, seed=fresh.seed).pair(k) for k in range(10)]


def test_dynamic_samples_add_audio_windows_and_delta_t(source_dir):
    dataset = DynamicDataset(source_dir, "test", SIZE, seed=3)
    assert dataset.feature_spec == FeatureSpec("mel", None, 80, normalise="utterance-gated")
    (clip_id,) = [e.id for e in layout.read_manifest(source_dir) if e.split == "test"]
    features = torch.from_numpy(np.load(ClipPaths.of(source_dir, clip_id).audio_features))
    for k in (0, 5, 17):
        sample = dataset[k]
        i, n = sample["frame_i"], sample["frame_n"]
        assert sample["clip"] == clip_id
        assert sample["audio"].shape == (8, 16, 80) and sample["audio"].dtype == torch.float32
        torch.testing.assert_close(sample["audio"], audio_windows(features, n))
        assert sample["delta_t"].dtype == torch.float32 and sample["delta_t"].item() == pytest.approx((n - i) / 25)
        static = StaticPairDataset(source_dir, "test", SIZE, seed=3)[k]
        torch.testing.assert_close(sample["image_n"], static["image_n"])


def test_loader_with_workers_gives_the_same_batches_and_resumes(source_dir):
    dataset = DynamicDataset(source_dir, "train", SIZE, seed=4)
    serial = list(make_loader(dataset, 4, workers=0, count=12))
    parallel = list(make_loader(dataset, 4, workers=2, count=12))
    assert len(parallel) == 3
    for x, y in zip(serial, parallel):
        assert x["clip"] == y["clip"]
        for key in ("image_i", "image_n", "c2w_n", "audio", "delta_t", "frame_i", "index"):
            torch.testing.assert_close(x[key], y[key])
    assert parallel[0]["image_i"].shape == (4, 3, SIZE, SIZE) and parallel[0]["audio"].shape == (4, 8, 16, 80)
    resumed = next(iter(make_loader(dataset, 4, start=8, count=4)))
    torch.testing.assert_close(resumed["image_n"], serial[2]["image_n"])
    assert resumed["index"].tolist() == [8, 9, 10, 11]


def test_endless_loader_keeps_going(source_dir):
    batches = iter(make_loader(StaticPairDataset(source_dir, "train", SIZE, seed=0), 16))
    assert [next(batches)["index"][-1].item() for _ in range(5)] == [15, 31, 47, 63, 79]


def test_frame_cache_is_a_bounded_lru():
    cache = FrameCache(max_bytes=3 * 12)
    frames = {k: torch.full((3, 2, 2), k, dtype=torch.uint8) for k in range(4)}
    for k in range(3):
        cache.put(("c", k), frames[k])
    assert cache.get(("c", 0)) is frames[0]  # 0 is now the most recently used
    cache.put(("c", 3), frames[3])
    assert cache.get(("c", 1)) is None and cache.get(("c", 0)) is frames[0]
    assert (len(cache), cache.bytes) == (3, 36)


def test_dataset_caches_decoded_frames(source_dir):
    dataset = StaticPairDataset(source_dir, "train", SIZE, seed=0, cache_bytes=10 * 3 * SIZE * SIZE)
    for k in range(40):
        dataset[k]
    assert len(dataset.cache) == 10
    assert dataset.frame_uint8(0, 0) is dataset.frame_uint8(0, 0)


def _error(make) -> str:
    with pytest.raises(SplatPortraitError) as err:
        make()
    return str(err.value)


def test_missing_data_dir(tmp_path):
    missing = tmp_path / "nope"
    assert _error(lambda: StaticPairDataset(missing)) == (
        f"data directory {missing} does not exist; create it with `splat-portrait preprocess` or `splat-portrait synth -o {missing}`"
    )


def test_missing_manifest(tmp_path):
    assert _error(lambda: StaticPairDataset(tmp_path)) == (
        f"{tmp_path / 'manifest.jsonl'} not found; run `splat-portrait preprocess` (or `synth`) into {tmp_path} first"
    )


def test_no_clips_in_split(data_dir):
    layout.write_manifest(data_dir, [e for e in layout.read_manifest(data_dir) if e.split == "train"])
    assert _error(lambda: StaticPairDataset(data_dir, "test")) == (
        f"no 'test' clips in {data_dir / 'manifest.jsonl'} (it lists 2 train, 0 test)"
    )


def test_unfinished_clip(data_dir):
    clip = _train_ids(data_dir)[1]
    paths = ClipPaths.of(data_dir, clip)
    paths.complete.unlink()
    assert _error(lambda: StaticPairDataset(data_dir)) == (
        f"clip {clip} is unfinished: {paths.root} has no COMPLETE marker; rerun `splat-portrait preprocess` (or `synth`) to finish it"
    )


def test_missing_frames(data_dir):
    clip = _train_ids(data_dir)[0]
    paths = ClipPaths.of(data_dir, clip)
    paths.frame(5).unlink()
    assert _error(lambda: StaticPairDataset(data_dir)) == (
        f"clip {clip} has 23 of its 24 frames in {paths.frames_dir}; rerun `splat-portrait preprocess` (or `synth`) to finish it"
    )


def test_unreadable_frame(data_dir):
    clip = _train_ids(data_dir)[0]
    paths = ClipPaths.of(data_dir, clip)
    paths.frame(0).write_bytes(b"not a jpeg")
    dataset = StaticPairDataset(data_dir, seed=0)
    message = _error(lambda: dataset.frame_uint8(0, 0))
    assert message.startswith(f"cannot read frame {paths.frame(0)} (") and message.endswith(f"); rerun preprocessing for clip {clip}")


def test_feature_dim_mismatch_between_clips(data_dir):
    first, second = _train_ids(data_dir)
    paths = ClipPaths.of(data_dir, second)
    meta = layout.read_meta(paths)
    layout.write_meta(paths, layout.ClipMeta(**{**meta.__dict__, "audio_features": FeatureSpec("wav2vec2", "tiny", 32)}))
    layout.write_features(paths, np.zeros((48, 32), np.float32))
    assert _error(lambda: DynamicDataset(data_dir)) == (
        f"audio features differ between clips: {first} has mel (80-d, 50 Hz, utterance-normalised, loudness-gated) but {second} has "
        "wav2vec2 'tiny' (32-d, 50 Hz); recompute them all with one extractor"
    )
    StaticPairDataset(data_dir)  # stage I does not need audio


def test_features_not_matching_their_spec(data_dir):
    clip = _train_ids(data_dir)[0]
    paths = ClipPaths.of(data_dir, clip)
    layout.write_features(paths, np.zeros((48, 64), np.float32))
    assert _error(lambda: DynamicDataset(data_dir)) == (
        f"clip {clip}: {paths.audio_features} has shape (48, 64), expected (T, 80) for mel (80-d, 50 Hz, utterance-normalised, loudness-gated); rerun preprocessing for it"
    )


def test_pickled_copies_start_with_empty_caches(source_dir):
    dataset = DynamicDataset(source_dir, "train", SIZE, seed=0)
    first = dataset[0]
    copy = pickle.loads(pickle.dumps(dataset))
    assert len(dataset.cache) == 2 and len(copy.cache) == 0 and copy.cache.max_bytes == dataset.cache.max_bytes
    torch.testing.assert_close(copy[0]["audio"], first["audio"])
    torch.testing.assert_close(copy[0]["image_n"], first["image_n"])
