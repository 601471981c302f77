import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from splat_portrait import camera
from splat_portrait.cli.app import app
from splat_portrait.errors import SplatPortraitError
from splat_portrait.media.audio import load_audio, write_wav
from splat_portrait.media.ffmpeg import ffmpeg_exe, probe
from splat_portrait.media.video import read_frames
from splat_portrait.models import preset
from splat_portrait.render.projection import quat_to_rotmat
from splat_portrait.runtime import model_dir as model_dir_module
from splat_portrait.runtime.batch import read_jobs
from splat_portrait.runtime.cameras import CameraOptions, camera_path, ping_pong
from splat_portrait.runtime.compose import PasteBack
from splat_portrait.runtime.engines import OnnxEngine
from splat_portrait.runtime.inputs import load_image, load_portrait
from splat_portrait.runtime.model_dir import open_model_dir
from splat_portrait.runtime.outputs import OutputPaths, splats_in_world, staged
from splat_portrait.runtime.pipeline import AnimateOptions, Animator
from splat_portrait.splats import Splats, read_ply

DATA = Path(__file__).parents[1] / ".." / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"sample data folder {DATA} is absent")
PORTRAIT = DATA / "portraits" / "happy_256.png"
SPEECH = DATA / "audio" / "speech_44k_stereo.wav"
VIDEO = DATA / "videos" / "hdtf_wda_aoc.mp4"
MAX_OFFSET = preset("tiny").dynamic.max_offset

runner = CliRunner()


def cli(*args: str):
    # -q: only warnings and errors, so an error is the command's whole output.
    return runner.invoke(app, ["-q", *map(str, args)], env={"COLUMNS": "250"})


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *map(str, args)], check=True)


@pytest.fixture(scope="module")
def speech_2s(tmp_path_factory):
    """The first 2 s of a real 44.1 kHz stereo speech file (decoding and resampling stay exercised)."""
    if not DATA.is_dir():
        pytest.skip(f"sample data folder {DATA} is absent")
    path = tmp_path_factory.mktemp("audio") / "speech_2s.wav"
    ffmpeg("-i", SPEECH, "-t", "2", path)
    return path


def mp4_report(path: Path) -> str:
    return subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr


def expected_frames(audio: Path) -> tuple[int, float]:
    duration = len(load_audio(audio)) / 16000
    return math.ceil(25 * duration), duration


def assert_video_matches_speech(video: Path, audio: Path, size: tuple[int, int]) -> int:
    """Decode the MP4: frame count, streams and durations as the issue specifies; returns the frame count."""
    frames, duration = expected_frames(audio)
    decoded = list(read_frames(video))
    assert len(decoded) == frames
    assert decoded[0].shape == (size[1], size[0], 3)
    report = mp4_report(video)
    assert re.search(r"Video: h264 .*yuv420p.*25 fps", report), report
    assert re.search(r"Audio: aac", report), report
    muxed = len(load_audio(video)) / 16000
    assert abs(muxed - duration) < 1e-3
    assert 0 <= frames / 25 - duration < 1 / 25
    assert abs(probe(video).duration - duration) <= 1 / 25
    return frames


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(255**2 / mse)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- end to end -----------------------------------------------------------------------------------


@needs_data
def test_animate_writes_video_depth_and_ply_files(model_dir, speech_2s, tmp_path):
    out = tmp_path / "talk.mp4"
    result = cli("animate", PORTRAIT, speech_2s, "-o", out, "--model", model_dir, "--ply", tmp_path / "head.ply",
                 "--ply-frames", tmp_path / "frames", "--depth", tmp_path / "talk_depth.mp4")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert re.search(r"talk.mp4: 50 frames \(2.00 s of speech\) in [0-9.]+ s, [0-9.]+ frames/s; seconds per stage: image", result.output)
    frames = assert_video_matches_speech(out, speech_2s, (64, 64))
    assert frames == 50
    assert_video_matches_speech(tmp_path / "talk_depth.mp4", speech_2s, (64, 64))

    # The untrained generator reproduces its input at the source camera: frame 0 is the aligned crop.
    crop = load_portrait(PORTRAIT, 64).crop
    assert psnr(next(read_frames(out)), crop) > 26

    head = read_ply(tmp_path / "head.ply")
    assert head.num_splats == 64 * 64  # none dropped: every splat of a fresh model is finite
    # World space: the head sits at the origin, the camera 2.7 units in front of it.
    assert abs(head.means[:, 2].median()) < 0.3
    per_frame = sorted((tmp_path / "frames").iterdir())
    assert [p.name for p in per_frame[:2]] == ["frame_000000.ply", "frame_000001.ply"] and len(per_frame) == frames
    moved = [read_ply(per_frame[i]) for i in (0, 25)]
    for cloud in moved:
        displacement = (cloud.means - head.means).norm(dim=-1)
        assert 1e-4 < displacement.max() <= MAX_OFFSET * math.sqrt(3) + 1e-4  # offsets applied, and bounded
        assert torch.allclose(cloud.colors, head.colors, atol=1e-6) and torch.allclose(cloud.scales, head.scales)
    assert not torch.allclose(moved[0].means, moved[1].means)  # different speech, different shape
    assert leftovers(tmp_path) == ["frames", "head.ply", "talk.mp4", "talk_depth.mp4"]


@needs_data
def test_size_camera_and_paste_back(model_dir, speech_2s, tmp_path):
    out = tmp_path / "orbit.mp4"
    result = cli("animate", PORTRAIT, speech_2s, "-o", out, "--model", model_dir, "--size", 96, "--camera", "orbit", "--yaw", 5)
    assert result.exit_code == 0, result.output
    assert_video_matches_speech(out, speech_2s, (96, 96))

    people = DATA / "portraits" / "people_474.png"
    pasted = tmp_path / "pasted.mp4"
    result = cli("animate", people, speech_2s, "-o", pasted, "--model", model_dir, "--paste-back")
    assert result.exit_code == 0, result.output
    frame = next(read_frames(pasted))
    original = load_image(people)
    assert frame.shape == original.shape  # the full picture, not the crop
    # Far from the face box the picture is untouched; over the face it is the generated head.
    assert np.abs(frame[-40:, :40].astype(int) - original[-40:, :40]).mean() < 3
    cx, cy, side = load_portrait(people, 64).box
    inner = (slice(int(cy - side / 4), int(cy + side / 4)), slice(int(cx - side / 4), int(cx + side / 4)))
    assert psnr(frame[inner], original[inner]) > 18


@needs_data
def test_greyscale_turned_jpeg_and_mp3_speech(model_dir, speech_2s, tmp_path):
    """Input handling end to end: EXIF-rotated greyscale JPEG, 22.05 kHz mono MP3."""
    upright = Image.open(PORTRAIT).convert("L")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned 90 degrees anticlockwise; viewers turn it back clockwise
    portrait = tmp_path / "turned_grey.jpg"
    upright.rotate(90, expand=True).save(portrait, exif=exif, quality=95)
    mp3 = tmp_path / "speech.mp3"
    ffmpeg("-i", speech_2s, "-t", "1.5", "-ar", "22050", "-ac", "1", mp3)
    out = tmp_path / "grey.mp4"
    result = cli("animate", portrait, mp3, "-o", out, "--model", model_dir)
    assert result.exit_code == 0, result.output
    assert_video_matches_speech(out, mp3, (64, 64))
    # The untrained generator reproduces the upright crop, so the video is grey too.
    first = next(read_frames(out)).astype(int)
    assert np.abs(first - first.mean(-1, keepdims=True)).mean() < 3
    assert psnr(first, np.repeat(load_portrait(portrait, 64).crop[..., :1], 3, -1)) > 26


class CountingEngine:
    """An engine that records how many frames each audio-decoder call gets."""

    def __init__(self, engine) -> None:
        self.engine, self.name, self.device, self.calls = engine, engine.name, engine.device, []

    def encode(self, *args):
        return self.engine.encode(*args)

    def dynamic_offsets(self, encoded, windows, delta_t):
        self.calls.append(len(windows))
        return self.engine.dynamic_offsets(encoded, windows, delta_t)


@needs_data
def test_frames_stream_through_in_bounded_batches(model_dir, speech_2s, tmp_path):
    # Memory per step is one batch of windows, offsets and images, however long the speech is.
    engine = CountingEngine(OnnxEngine(open_model_dir(model_dir), "cpu"))
    animator = Animator(engine, open_model_dir(model_dir).card, AnimateOptions(batch_frames=16))
    result = animator.animate(PORTRAIT, speech_2s, OutputPaths(tmp_path / "b.mp4"))
    assert result.frames == 50 and engine.calls == [16, 16, 16, 2]
    assert list(result.seconds) == ["image", "audio", "features", "camera", "generator", "audio decoder", "render", "encode"]


@needs_data
def test_pose_from_a_reference_video(model_dir, speech_2s, tmp_path):
    reference = tmp_path / "ref.mp4"
    ffmpeg("-i", VIDEO, "-t", "0.6", "-an", reference)
    out = tmp_path / "posed.mp4"
    result = cli("animate", PORTRAIT, speech_2s, "-o", out, "--model", model_dir, "--pose-from", reference)
    assert result.exit_code == 0, result.output
    assert len(list(read_frames(out))) == 50
    conflict = cli("animate", PORTRAIT, speech_2s, "-o", out, "--model", model_dir, "--pose-from", reference, "--camera", "nod")
    assert conflict.exit_code == 1
    assert conflict.output == "error: --pose-from sets the camera path itself; leave out --camera nod\n"


@needs_data
def test_batch_reuses_the_model_keeps_going_and_reports_every_row(model_dir, tmp_path):
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128, 3), np.uint8)).save(noise)
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"image,audio,output\n{PORTRAIT},{SPEECH},full.mp4\nnoise.png,{SPEECH},bad.mp4\n")
    result = cli("animate", "--batch", jobs, "--model", model_dir)
    assert result.exit_code == 1
    assert re.search(r"│ +2 │ \S*full.mp4 +│ +126 │ +[0-9.]+ │ ok", result.output), result.output
    assert re.search(r"│ +3 │ \S*bad.mp4 +│ +- │ +- │ failed: no face found in \S*noise.png", result.output), result.output
    assert result.output.rstrip().endswith("error: 1 of 2 batch jobs failed; see the table above")
    # A whole 5.0 s file: ceil(25 * 5.0155) = 126 frames.
    assert_video_matches_speech(tmp_path / "full.mp4", SPEECH, (64, 64))
    assert not (tmp_path / "bad.mp4").exists()


def test_batch_file_must_name_its_columns(tmp_path):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("picture,audio,output\na.png,b.wav,c.mp4\n")
    with pytest.raises(SplatPortraitError, match=r"needs a header row with columns image, audio, output; missing image$"):
        read_jobs(jobs)
    jobs.write_text("audio,output,image\nb.wav,c.mp4,sub/a.png\n\n")
    (job,) = read_jobs(jobs)
    assert (job.image, job.audio, job.output, job.row) == (tmp_path / "sub/a.png", tmp_path / "b.wav", tmp_path / "c.mp4", 2)


# --- bad inputs: one line, exit code 1, nothing written ------------------------------------------


def write_pcm(path: Path, samples: np.ndarray) -> Path:
    write_wav(path, samples)
    return path


def bad_input_cases(tmp: Path) -> dict[str, tuple[list, str]]:
    text = tmp / "not_an_image.png"
    text.write_text("hello")
    noise = tmp / "noise.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (96, 96, 3), np.uint8)).save(noise)
    corrupt = tmp / "corrupt.wav"
    corrupt.write_bytes(np.random.default_rng(2).bytes(4000))
    empty = write_pcm(tmp / "empty.wav", np.zeros(0, np.float32))
    silent = write_pcm(tmp / "silent.wav", np.zeros(16000, np.float32))
    return {
        "not an image": ([text, SPEECH], rf"{re.escape(str(text))} is not an image \(or not in a format Pillow reads"),
        "no face": ([noise, SPEECH], rf"no face found in {re.escape(str(noise))}; use a photo"),
        "corrupt audio": ([PORTRAIT, corrupt], rf"{re.escape(str(corrupt))} is not a readable audio/video file \(ffmpeg: "),
        "empty audio": ([PORTRAIT, empty], rf"{re.escape(str(empty))} has an empty audio track"),
        "silent audio": ([PORTRAIT, silent], rf"{re.escape(str(silent))} contains only silence \(peak level -inf dBFS\)"),
    }


@needs_data
@pytest.mark.parametrize("case", ["not an image", "no face", "corrupt audio", "empty audio", "silent audio"])
def test_bad_inputs_fail_cleanly(model_dir, tmp_path, case):
    inputs, message = bad_input_cases(tmp_path)[case]
    before = leftovers(tmp_path)
    out = tmp_path / "out.mp4"
    result = cli("animate", *inputs, "-o", out, "--model", model_dir, "--ply", tmp_path / "out.ply", "--depth", tmp_path / "d.mp4")
    assert result.exit_code == 1
    assert re.fullmatch(rf"error: {message}.*\n", result.output), result.output
    assert leftovers(tmp_path) == before  # no output, no temporary file


def broken_copy(model_dir: Path, tmp_path: Path, edit) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    edit(copy)
    return copy


def rehash(copy: Path, name: str) -> None:
    card = json.loads((copy / "model.json").read_text())
    card["graphs"][name]["sha256"] = model_dir_module.sha256_of(copy / card["graphs"][name]["file"])
    (copy / "model.json").write_text(json.dumps(card))


def swap_graphs(copy: Path) -> None:
    shutil.copy(copy / "audio_decoder.onnx", copy / "generator.onnx")
    rehash(copy, "generator")


def garbage_graph(copy: Path) -> None:
    (copy / "generator.onnx").write_bytes(b"not a protobuf at all" * 10)
    rehash(copy, "generator")


def edited_graph(copy: Path) -> None:
    with open(copy / "generator.onnx", "ab") as f:
        f.write(b"\0")


@needs_data
@pytest.mark.parametrize(
    "edit, message",
    [
        (edited_graph, r"model.json says generator.onnx has SHA-256 [0-9a-f]{64} but the file has [0-9a-f]{64}: "
                       r"the model directory is corrupt or was edited; re-export it"),
        (swap_graphs, r"\S+generator.onnx has inputs \['features_0', .*\] and outputs \['offsets'\], not the "
                      r"\['image', 'c2w', 'intrinsics'\] -> .* that model.json describes; the model directory is inconsistent, re-export it"),
        (garbage_graph, r"\S+generator.onnx is not a valid ONNX model for this runtime \(.*\); re-export it"),
        (lambda copy: (copy / "audio_decoder.onnx").unlink(), r"\S+audio_decoder.onnx is missing \(listed in model.json\)"),
        (lambda copy: (copy / "model.json").write_text("{not json"), r"\S+model.json is not valid JSON"),
    ],
    ids=["hash mismatch", "swapped graph", "not onnx", "missing graph", "broken card"],
)
def test_broken_model_directories_are_refused(model_dir, speech_2s, tmp_path, edit, message):
    broken = broken_copy(model_dir, tmp_path, edit)
    result = cli("animate", PORTRAIT, speech_2s, "-o", tmp_path / "out.mp4", "--model", broken)
    assert result.exit_code == 1
    assert re.fullmatch(rf"error: {message}.*\n", result.output), result.output
    assert not (tmp_path / "out.mp4").exists()


def test_missing_and_default_model_dirs(tmp_path, monkeypatch):
    missing = cli("animate", "a.png", "b.wav", "-o", tmp_path / "o.mp4", "--model", tmp_path / "nope")
    assert missing.exit_code == 1
    assert missing.output == f"error: model directory {tmp_path / 'nope'} does not exist; create one with `splat-portrait export`\n"
    monkeypatch.setattr(model_dir_module, "DEFAULT_MODEL_DIR", tmp_path / "assets" / "default")
    default = cli("animate", "a.png", "b.wav", "-o", tmp_path / "o.mp4")
    assert default.exit_code == 1
    assert default.output == (
        "error: no bundled default model in this installation; pass --model MODEL_DIR (see `splat-portrait export`)\n"
    )
    assert leftovers(tmp_path) == []


def test_the_bundled_model_is_used_without_model_and_ships_in_the_package(model_dir, monkeypatch):
    import tomllib

    assert model_dir_module.DEFAULT_MODEL_DIR == Path(model_dir_module.__file__).parents[1] / "assets" / "default"
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "assets/default/*" in pyproject["tool"]["setuptools"]["package-data"]["splat_portrait"]
    monkeypatch.setattr(model_dir_module, "DEFAULT_MODEL_DIR", model_dir)
    assert model_dir_module.open_model_dir(None).root == model_dir


def test_command_line_mistakes(tmp_path):
    assert cli("animate", "a.png").output == "error: give IMAGE, AUDIO and -o OUT.mp4 (or --batch jobs.csv)\n"
    both = cli("animate", "a.png", "b.wav", "--batch", "jobs.csv")
    assert both.output == "error: --batch takes its inputs and outputs from the CSV file; leave out IMAGE, AUDIO\n"
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "old.ply").write_text("x")
    with pytest.raises(SplatPortraitError, match=r"--ply-frames folder \S+frames is not empty; name a new or empty folder"):
        OutputPaths(tmp_path / "o.mp4", ply_frames=tmp_path / "frames").check()
    with pytest.raises(SplatPortraitError, match="two outputs have the same path"):
        OutputPaths(tmp_path / "o.mp4", depth=tmp_path / "o.mp4").check()


# --- pieces ---------------------------------------------------------------------------------------


def test_staged_outputs_appear_together_or_not_at_all(tmp_path):
    outputs = OutputPaths(tmp_path / "v.mp4", tmp_path / "h.ply", tmp_path / "frames", tmp_path / "d.mp4")
    with pytest.raises(RuntimeError, match="render failed"):
        with staged(outputs) as tmp:
            for path in (tmp.video, tmp.ply, tmp.depth, tmp.ply_frames / "frame_000000.ply"):
                path.write_bytes(b"partial")
            raise RuntimeError("render failed")
    assert leftovers(tmp_path) == []
    (tmp_path / "frames").mkdir()  # an existing empty folder is fine
    with staged(outputs) as tmp:
        for path in (tmp.video, tmp.ply, tmp.depth, tmp.ply_frames / "frame_000000.ply"):
            path.write_bytes(b"done")
    assert leftovers(tmp_path) == ["d.mp4", "frames", "h.ply", "v.mp4"]
    assert (tmp_path / "frames" / "frame_000000.ply").read_bytes() == b"done"


def test_splats_in_world_rotate_positions_and_orientations_together():
    gen = torch.Generator().manual_seed(0)
    n = 50
    splats = Splats(torch.randn(n, 3, generator=gen), torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=-1),
                    torch.rand(n, 3, generator=gen), torch.rand(n, generator=gen), torch.rand(n, 3, generator=gen))  # fmt: skip
    c2w = camera.orbit_around(camera.default_c2w(), 0.4, -0.3)
    world = splats_in_world(splats, c2w)
    assert torch.allclose(world.means, splats.means @ c2w[:3, :3].T + c2w[:3, 3], atol=1e-6)
    assert torch.allclose(quat_to_rotmat(world.quats), c2w[:3, :3] @ quat_to_rotmat(splats.quats), atol=1e-5)


def test_camera_paths_and_reference_looping():
    assert ping_pong(4, 10).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert ping_pong(1, 3).tolist() == [0, 0, 0]
    source = camera.orbit_around(camera.default_c2w(), 0.1, 0.05)
    static = camera_path(CameraOptions(), source, 5)
    assert torch.allclose(static, source.expand(5, 4, 4), atol=1e-6)
    turned = camera_path(CameraOptions("orbit", yaw_deg=10, pitch_deg=-5), source, 30)
    expected = camera.orbit_around(camera.trajectory("orbit", source, 30), math.radians(10), math.radians(-5))
    assert torch.allclose(turned, expected, atol=1e-6)
    with pytest.raises(SplatPortraitError, match="unknown --camera 'spin'; choose one of static, orbit, bullet, nod"):
        CameraOptions("spin")


def test_paste_back_puts_the_crop_at_its_box_with_soft_edges():
    picture = np.zeros((100, 120, 3), np.uint8)
    paste = PasteBack(picture, np.array([60.0, 50.0, 40.0]))
    out = paste(np.full((16, 16, 3), 200, np.uint8))
    assert out.shape == (100, 120, 3) and paste.size == (120, 100)
    assert out[50, 60].tolist() == [200, 200, 200]  # the centre is the crop
    assert out[50, 41].max() < 100 and out[50, 30].max() == 0  # fading at the edge, untouched outside
    # A box reaching past the picture's border is clipped, not wrapped.
    assert PasteBack(picture, np.array([5.0, 5.0, 40.0]))(np.full((8, 8, 3), 255, np.uint8))[95, 115].max() == 0


def test_images_are_upright_rgb_with_transparency_on_white(tmp_path):
    rgba = np.zeros((8, 12, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, :6, 3] = 255  # left half opaque red, right half transparent
    Image.fromarray(rgba).save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert image.shape == (8, 12, 3) and image[0, 0].tolist() == [255, 0, 0] and image[0, 11].tolist() == [255, 255, 255]

    Image.fromarray(np.full((5, 7), 90, np.uint8)).save(tmp_path / "grey.jpg")
    assert load_image(tmp_path / "grey.jpg").shape == (5, 7, 3)
    Image.fromarray(np.full((4, 4), 65535 // 2, np.uint16)).save(tmp_path / "deep.png")
    assert abs(int(load_image(tmp_path / "deep.png")[0, 0, 0]) - 127) <= 1

    tall = Image.fromarray(np.zeros((30, 10, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the camera was turned; viewers rotate it 90 degrees clockwise
    tall.save(tmp_path / "turned.jpg", exif=exif)
    assert load_image(tmp_path / "turned.jpg").shape == (10, 30, 3)
