import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from splat_portrait import camera
from splat_portrait.cli.app import app
from splat_portrait.data import layout, synthetic
from splat_portrait.data.synthetic import head, speech
from splat_portrait.data.layout import ClipPaths
from splat_portrait.data.synthetic import SynthConfig, synthesize_clip, write_synthetic_dataset
from splat_portrait.errors import SplatPortraitError
from splat_portrait.media.audio import read_wav

SECONDS, SIZE, SEED = 1.6, 64, 3
CONFIG = SynthConfig(seconds=SECONDS, size=SIZE, speech="voiced")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(root, 2, seed=SEED, config=CONFIG, test_fraction=0.5)
    return root


@pytest.fixture(scope="module")
def clip():
    return synthesize_clip(synthetic.clip_seed(SEED, 0), CONFIG)


def _frame_rms(audio, num_frames):
    hop = 640
    padded = np.pad(audio, (hop // 2, hop * num_frames))
    return np.sqrt((padded[: num_frames * hop].reshape(num_frames, hop) ** 2).mean(1))


def test_manifest_lists_both_clips_with_a_split_each(data_dir):
    entries = layout.read_manifest(data_dir)
    assert [e.id for e in entries] == ["synth-s3-00000", "synth-s3-00001"]
    assert sorted(e.split for e in entries) == ["test", "train"]
    for entry in entries:
        assert (entry.frames, entry.duration, entry.source, entry.synthetic) == (40, SECONDS, "synthetic", True)


def test_clip_folder_holds_exactly_the_layout(data_dir):
    paths = ClipPaths.of(data_dir, "synth-s3-00001")
    names = sorted(p.name for p in paths.root.iterdir())
    assert names == sorted(["frames", "audio.wav", "audio_features.npy", "cameras.json", "meta.json", "depth.npy", "mouth_open.npy", "COMPLETE"])
    assert [p.name for p in paths.frame_paths()] == [f"{i:06d}.jpg" for i in range(40)]
    with Image.open(paths.frame(39)) as image:
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (SIZE, SIZE))
    audio, rate = read_wav(paths.audio)
    assert (rate, audio.shape) == (16000, (int(SECONDS * 16000),))
    features = np.load(paths.audio_features)
    assert (features.dtype, features.shape) == (np.float32, (math.ceil(len(audio) / 320), 80))
    cameras = json.loads(paths.cameras.read_text())
    assert (cameras["width"], cameras["height"], cameras["fps"]) == (SIZE, SIZE, 25)
    assert np.array(cameras["intrinsics"]).shape == (40, 4) and np.array(cameras["c2w"]).shape == (40, 4, 4)
    meta = json.loads(paths.meta.read_text())
    assert (meta["id"], meta["num_frames"], meta["duration"], meta["synthetic"]) == (paths.id, 40, SECONDS, True)
    assert meta["audio_features"] == {"extractor": "mel", "model": None, "dim": 80, "rate_hz": 50, "normalise": "utterance-gated"}
    assert (meta["synth"]["seed"], meta["synth"]["index"], meta["synth"]["speech"]) == (SEED, 1, "voiced")
    depth, mouth = np.load(paths.depth), np.load(paths.mouth_open)
    assert (depth.dtype, depth.shape, mouth.dtype, mouth.shape) == (np.float16, (40, SIZE, SIZE), np.float32, (40,))
    # The marker comes last: nothing in the folder is newer than it.
    newest = max(p.stat().st_mtime_ns for p in paths.root.rglob("*") if p.is_file() and p.name != "COMPLETE")
    assert paths.complete.stat().st_mtime_ns >= newest


def test_files_hold_the_rendered_clip(data_dir, clip):
    paths = ClipPaths.of(data_dir, "synth-s3-00000")
    truth = synthetic.read_ground_truth(paths)
    np.testing.assert_allclose(truth.depth, clip.depth, atol=2e-3)
    np.testing.assert_array_equal(truth.mouth_open, clip.mouth_open)
    cameras = layout.read_cameras(paths)
    np.testing.assert_allclose(cameras.c2w, clip.c2w, atol=1e-6)
    frame = layout.read_frame(paths, 7).astype(float)
    assert np.abs(frame - clip.frames[7]).mean() < 3.0  # JPEG at quality 95
    audio, _ = read_wav(paths.audio)
    np.testing.assert_allclose(audio, clip.audio, atol=1 / 32767)


def test_cameras_move_like_a_talking_head_around_the_head(clip):
    c2w = torch.from_numpy(clip.c2w).double()
    rotation = c2w[:, :3, :3]
    torch.testing.assert_close(rotation.transpose(1, 2) @ rotation, torch.eye(3, dtype=torch.float64).expand(40, 3, 3), atol=1e-5, rtol=0)
    distance = c2w[:, :3, 3].norm(dim=-1)
    assert ((distance - 2.7).abs() < 0.05).all()
    # The head's centre projects near the image centre; the camera never looks far from it.
    origin = camera.transform_points(camera.world_to_view(c2w), torch.zeros(40, 1, 3, dtype=torch.float64))[:, 0]
    intr = torch.from_numpy(clip.intrinsics).double()
    u = intr[:, 0] * origin[:, 0] / origin[:, 2] + intr[:, 2]
    v = intr[:, 1] * origin[:, 1] / origin[:, 2] + intr[:, 3]
    assert ((u - 0.5).abs() < 0.05).all() and ((v - 0.5).abs() < 0.05).all()
    yaw = torch.rad2deg(torch.atan2(-c2w[:, 0, 3], -c2w[:, 2, 3]))
    assert yaw.abs().max() < 9.0 and yaw.max() - yaw.min() > 0.5
    np.testing.assert_allclose(clip.intrinsics, np.tile([camera.DEFAULT_FOCAL, camera.DEFAULT_FOCAL, 0.5, 0.5], (40, 1)), atol=1e-6)


def test_depth_is_the_z_depth_of_the_head_surface(clip):
    identity = synthetic.random_identity(np.random.default_rng(synthetic.clip_seed(SEED, 0)))
    c2w = torch.from_numpy(clip.c2w)
    rays = camera.pixel_rays(torch.from_numpy(clip.intrinsics), SIZE, SIZE)
    depth = torch.from_numpy(clip.depth)
    hit = depth > 0
    points = camera.transform_points(c2w, (rays * depth[..., None]).reshape(40, -1, 3)).reshape(40, SIZE, SIZE, 3)
    centres = torch.from_numpy(identity.parts[:, 0]).expand(40, -1, -1).clone()
    centres[:, head.JAW, 1] += head._JAW_DROP * torch.from_numpy(clip.mouth_open)
    radii = torch.from_numpy(identity.parts[:, 1])
    # Scaled radius of every point w.r.t. every ellipsoid: 1 on its surface, < 1 inside.
    rho = (((points[:, :, :, None] - centres[:, None, None]) / radii) ** 2).sum(-1).sqrt()
    nearest = rho.min(-1).values[hit]
    assert (nearest - 1).abs().max() < 1e-3  # on the surface of the union, inside none of the parts
    # The face fills the middle of the frame, the corners show the background (depth 0).
    assert hit[:, SIZE // 2, SIZE // 2].all() and not hit[:, :3, :3].any()
    assert 0.35 < hit.float().mean() < 0.7
    front = depth[:, SIZE // 2, SIZE // 2]
    assert ((front > 2.7 - 0.3) & (front < 2.7 - 0.15)).all()


def test_mouth_opening_follows_the_loudness(clip):
    rms = _frame_rms(clip.audio, 40)
    assert np.corrcoef(clip.mouth_open, rms)[0, 1] > 0.9
    assert clip.mouth_open.min() == 0.0 and clip.mouth_open.max() > 0.9
    # Smoothing lets the lips move a frame early or late, but a pause (only room tone, at most
    # -45 dB) keeps them shut.
    silent = np.convolve(rms < 0.01, np.ones(3), mode="same") == 3
    assert silent.any() and clip.mouth_open[silent].max() < 0.01


def _cavity_pixels(frames, depth):
    # The open mouth's inside is a dark red no skin, lip or hair colour comes close to.
    r, g = frames[..., 0].astype(float), frames[..., 1].astype(float)
    return ((g < 0.35 * r) & (depth > 0)).sum((1, 2))


def test_rendered_mouth_opens_with_the_ground_truth(clip):
    assert np.corrcoef(_cavity_pixels(clip.frames, clip.depth), clip.mouth_open)[0, 1] > 0.9


def test_mouth_ramp_opens_the_mouth_and_drops_the_jaw():
    identity = synthetic.random_identity(np.random.default_rng(5))
    opening = np.linspace(0, 1, 5, dtype=np.float32)
    frames, depth = synthetic.render_head(identity, camera.default_c2w((5,)), camera.default_intrinsics((5,)), opening, np.zeros(5, np.float32), SIZE)
    cavity = _cavity_pixels(frames, depth)
    assert cavity[0] == 0 and (np.diff(cavity) > 0).all()
    changed = np.abs(depth - depth[0]) > 1e-3
    assert not changed[:, : SIZE // 2].any() and changed[-1, SIZE // 2 :].sum() > 20


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_espeak_speech_drives_the_mouth():
    spoken = synthesize_clip(11, SynthConfig(seconds=2.0, size=32, speech="espeak"))
    assert spoken.speech == "espeak" and spoken.audio.shape == (32000,)
    assert np.abs(spoken.audio).max() > 0.1
    assert np.corrcoef(spoken.mouth_open, _frame_rms(spoken.audio, 50))[0, 1] > 0.8


def test_without_espeak_auto_falls_back_and_espeak_is_refused(monkeypatch):
    monkeypatch.setattr(speech.shutil, "which", lambda name: None)
    quick = SynthConfig(seconds=0.4, size=16)
    assert synthesize_clip(1, quick).speech == "voiced"
    with pytest.raises(SplatPortraitError) as err:
        synthesize_clip(1, SynthConfig(seconds=0.4, size=16, speech="espeak"))
    assert str(err.value) == "espeak-ng not found; install it (apt-get install espeak-ng) or use --speech voiced"


def test_same_seed_same_clip_other_seed_other_person(clip):
    again = synthesize_clip(synthetic.clip_seed(SEED, 0), CONFIG)
    for name in ("frames", "depth", "mouth_open", "audio", "c2w"):
        np.testing.assert_array_equal(getattr(again, name), getattr(clip, name))
    other = synthesize_clip(synthetic.clip_seed(SEED, 1), CONFIG)
    a, b = (synthetic.random_identity(np.random.default_rng(synthetic.clip_seed(SEED, k))) for k in (0, 1))
    assert np.abs(a.skin - b.skin).max() > 0.02 and np.abs(a.background - b.background).max() > 0.05
    assert np.abs(other.frames.astype(float) - clip.frames).mean() > 10
    assert np.abs(other.audio[:8000] - clip.audio[:8000]).max() > 0.1


def test_rerun_keeps_finished_clips_and_redoes_changed_ones(tmp_path):
    small = SynthConfig(seconds=0.4, size=16, speech="voiced")
    write_synthetic_dataset(tmp_path, 1, seed=0, config=small)
    paths = ClipPaths.of(tmp_path, "synth-s0-00000")
    stamp = paths.complete.stat().st_mtime_ns
    write_synthetic_dataset(tmp_path, 1, seed=0, config=small)
    assert paths.complete.stat().st_mtime_ns == stamp
    entries = write_synthetic_dataset(tmp_path, 1, seed=0, config=SynthConfig(seconds=0.4, size=24, speech="voiced"))
    assert layout.read_cameras(paths).width == 24 and [e.id for e in entries] == ["synth-s0-00000"]


def test_ground_truth_of_a_real_clip_is_a_clear_error(tmp_path):
    paths = ClipPaths.of(tmp_path, "real")
    paths.root.mkdir(parents=True)
    with pytest.raises(SplatPortraitError) as err:
        synthetic.read_ground_truth(paths)
    assert str(err.value) == "clip real has no ground truth (depth.npy, mouth_open.npy); only synthetic clips do"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--clips", "1", "--test-fraction", "2"], "--test-fraction must be in [0, 1], got 2.0"),
        (["--clips", "1", "--speech", "opera"], "--speech must be one of auto, espeak, voiced, got 'opera'"),
        (["--clips", "1", "--seconds", "0.01"], "--seconds must give at least one frame at 25 fps, got 0.01"),
    ],
)
def test_cli_rejects_bad_settings(tmp_path, args, message):
    result = CliRunner().invoke(app, ["synth", "-o", str(tmp_path), *args], terminal_width=200)
    assert result.exit_code == 1
    assert f"error: {message}" in result.output


def test_cli_writes_a_dataset(tmp_path):
    args = ["synth", "-o", str(tmp_path), "--clips", "2", "--seconds", "0.4", "--size", "16", "--seed", "9", "--speech", "voiced"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert [e.id for e in layout.read_manifest(tmp_path)] == ["synth-s9-00000", "synth-s9-00001"]
    assert layout.read_cameras(ClipPaths.of(tmp_path, "synth-s9-00001")).width == 16
