import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_audio_features import tiny_wav2vec2  # noqa: F401  (fixture)
from typer.testing import CliRunner

from splat_portrait.audio.features import FeatureSpec
from splat_portrait.camera import default_intrinsics
from splat_portrait.cli.app import app
from splat_portrait.data import layout
from splat_portrait.data import preprocess as pp
from splat_portrait.data.layout import ClipPaths
from splat_portrait.errors import SplatPortraitError
from splat_portrait.media.ffmpeg import ffmpeg_exe

SHARED = Path(__file__).parents[1] / ".." / "shared" / "data"
SMALL = pp.ClipOptions(size=64)


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def make_video(path: Path, face: Path | None, seconds: float, fps: int = 30, audio: bool = True) -> Path:
    """A talking-head stand-in: the face image drifting over a grey canvas, with a 220 Hz tone."""
    inputs = ["-f", "lavfi", "-i", f"color=c=gray:s=288x288:r={fps}:d={seconds}"]
    if face is None:  # no face: moving noise instead
        inputs = ["-f", "lavfi", "-i", f"color=c=gray:s=288x288:r={fps}:d={seconds},noise=alls=80:allf=t"]
        video = ["-map", "0:v"]
    else:
        inputs += ["-loop", "1", "-i", str(face)]
        motion = "overlay=x='24+6*sin(2*t)':y='20+4*sin(3*t)':shortest=1[v]"
        video = ["-filter_complex", f"[0][1]{motion}", "-map", "[v]"]
    sound = ["-f", "lavfi", "-i", f"sine=frequency=220:sample_rate=44100:duration={seconds}"] if audio else []
    audio_map = ["-map", f"{2 if face else 1}:a", "-c:a", "aac"] if audio else []
    ffmpeg(*inputs, *sound, *video, *audio_map, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-t", str(seconds), str(path))
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image provides the public-domain test portrait")
    root = tmp_path_factory.mktemp("videos")
    face = root / "face.png"
    Image.fromarray(skimage_data.astronaut()[0:250, 100:350]).resize((240, 240)).save(face)
    return {
        "good": make_video(root / "good.mp4", face, 4.0),
        "other": make_video(root / "other.mp4", face, 2.0, fps=25),
        "silent": make_video(root / "silent.mp4", face, 2.0, audio=False),
        "short": make_video(root / "short.mp4", face, 0.6),
        "noise": make_video(root / "noise.mp4", None, 2.0),
    }


def test_clip_has_25fps_frames_matching_audio_and_features(videos, tmp_path):
    paths = ClipPaths.of(tmp_path, "good")
    result = pp.preprocess_clip(videos["good"], paths, SMALL)
    assert (result.status, result.frames, result.duration, result.face_fraction) == ("done", 100, 4.0, 1.0)
    frames = paths.frame_paths()
    assert len(frames) == 100 and frames[-1].name == "000099.jpg"
    assert Image.open(frames[0]).size == (64, 64)
    assert len(layout.read_audio(paths)) == 64000
    assert layout.read_features(paths).shape == (200, 80)
    cameras = layout.read_cameras(paths)
    assert (cameras.width, cameras.height, cameras.fps) == (64, 64, 25)
    np.testing.assert_allclose(cameras.intrinsics, default_intrinsics((100,)).numpy())
    # A frontal face framed like FFHQ: cameras close to the default one, 2.7 in front of the head.
    distance = np.linalg.norm(cameras.c2w[:, :3, 3], axis=1)
    assert np.abs(distance - 2.7).max() < 0.3
    forward = cameras.c2w[:, :3, 2]
    assert np.degrees(np.arccos(np.clip(forward[:, 2], -1, 1))).max() < 20
    meta = layout.read_meta(paths)
    assert (meta.id, meta.num_frames, meta.duration, meta.source) == ("good", 100, 4.0, str(videos["good"]))
    assert meta.audio_features == FeatureSpec("mel", None, 80, normalise="utterance-gated")
    features = layout.read_features(paths)
    np.testing.assert_allclose(features.mean(0), 0, atol=1e-2)
    assert meta.extra == {"face_fraction": 1.0, "crop_size": 64}
    # Landmarks in crop coordinates: the FFHQ framing puts the eyes above the centre, the mouth below.
    landmarks = layout.read_landmarks(paths)
    assert landmarks.shape == (100, 68, 2) and landmarks.dtype == np.float32
    assert np.isfinite(landmarks).all() and ((landmarks > 0) & (landmarks < 1)).all()
    eyes_y, mouth_y = landmarks[:, 36:48, 1].mean(), landmarks[:, 48:68, 1].mean()
    assert 0.3 < eyes_y < 0.5 < mouth_y < 0.75, (eyes_y, mouth_y)
    assert layout.is_complete(paths)


def test_wav2vec2_features_through_preprocess(videos, tmp_path, tiny_wav2vec2):  # noqa: F811
    options = pp.ClipOptions(size=64, audio_features="wav2vec2", audio_model=str(tiny_wav2vec2))
    paths = ClipPaths.of(tmp_path, "other")
    pp.preprocess_clip(videos["other"], paths, options)
    assert layout.read_features(paths).shape == (100, 32)
    assert layout.read_meta(paths).audio_features == FeatureSpec("wav2vec2", str(tiny_wav2vec2), 32, normalise="utterance-gated")


def test_bad_clips_are_skipped_with_their_reason(videos, tmp_path):
    notes = tmp_path / "notes.mp4"
    notes.write_text("this is not a video")
    inputs = [videos[k] for k in ("good", "silent", "short", "noise")] + [notes]
    data = tmp_path / "data"
    result = CliRunner().invoke(app, ["preprocess", *map(str, inputs), "-o", str(data), "--size", "64", "--workers", "2"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    report = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.startswith("│ ")}
    assert "done" in report["good"]
    assert "skipped" in report["silent"] and "has no audio track" in result.output
    assert "too short (0.60 s; the minimum is 1 s)" in result.output
    assert "no face found in noise.mp4 (a face on 0% of frames; at least 80% needed)" in result.output
    assert "is not a readable audio/video file" in result.output
    assert [e.id for e in layout.read_manifest(data)] == ["good"]
    assert sorted(p.name for p in (data / "clips").iterdir()) == ["good"]


def test_reasons_are_exact(videos, tmp_path):
    def reason(video: Path) -> str:
        with pytest.raises(SplatPortraitError) as err:
            pp.preprocess_clip(video, ClipPaths.of(tmp_path, "x"), SMALL)
        return str(err.value)

    assert reason(videos["silent"]) == "silent.mp4 has no audio track"
    assert reason(videos["short"]) == "short.mp4 is too short (0.60 s; the minimum is 1 s)"
    assert reason(videos["noise"]) == "no face found in noise.mp4 (a face on 0% of frames; at least 80% needed)"
    assert not (tmp_path / "clips").exists()


def test_all_bad_inputs_fail_the_command(videos, tmp_path):
    result = CliRunner().invoke(app, ["preprocess", str(videos["noise"]), "-o", str(tmp_path)])
    assert result.exit_code == 1
    assert "error: no clip could be preprocessed; see the reasons in the table above" in result.output
    missing = CliRunner().invoke(app, ["preprocess", str(tmp_path / "nope.mp4"), "-o", str(tmp_path)])
    assert missing.exit_code == 1 and "nope.mp4 does not exist" in missing.output
    no_model = CliRunner().invoke(
        app, ["preprocess", str(videos["good"]), "-o", str(tmp_path), "--audio-features", "wav2vec2", "--audio-model", str(tmp_path / "w2v")],
        env={"COLUMNS": "300"},
    )  # fmt: skip
    assert no_model.exit_code == 1 and "error: wav2vec2 model folder" in no_model.output
    bad = tmp_path / "who.json"
    for content, reason in (
        (None, "does not exist"),
        ("{oops", "is not readable JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"),
        ('["a.mp4"]', "must hold one JSON object of video file name -> identity (non-empty strings)"),
        ('{"a.mp4": ""}', "must hold one JSON object of video file name -> identity (non-empty strings)"),
    ):
        bad.unlink(missing_ok=True)
        if content is not None:
            bad.write_text(content)
        result = CliRunner().invoke(app, ["preprocess", str(videos["good"]), "-o", str(tmp_path), "--identities", str(bad)], env={"COLUMNS": "300"})
        assert result.exit_code == 1 and result.output.strip() == f"error: --identities file {bad} {reason}", result.output
    assert not (tmp_path / "clips").exists()


class Interrupted(BaseException):
    """Stands in for Ctrl-C or a kill: not an error a clip can be skipped for."""


def test_resume_after_an_interrupted_run(videos, tmp_path, monkeypatch):
    real = layout.write_features
    calls = []

    def interrupt_second_clip(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise Interrupted
        return real(*args, **kwargs)

    monkeypatch.setattr(layout, "write_features", interrupt_second_clip)
    inputs = [videos["good"], videos["other"]]
    with pytest.raises(Interrupted):
        pp.preprocess(inputs, tmp_path, SMALL, workers=1)
    finished, partial = ClipPaths.of(tmp_path, "good"), ClipPaths.of(tmp_path, "other")
    assert layout.is_complete(finished)
    assert partial.frame_paths() and not layout.is_complete(partial)  # frames written, no marker
    stamp = finished.frame(0).stat().st_mtime_ns

    monkeypatch.setattr(layout, "write_features", real)
    report = pp.preprocess(inputs, tmp_path, SMALL, workers=1, test_fraction=0.5)
    assert [(r.id, r.status, r.frames) for r in report.results] == [("good", "already done", 100), ("other", "done", 50)]
    assert finished.frame(0).stat().st_mtime_ns == stamp
    assert layout.is_complete(partial) and len(partial.frame_paths()) == 50

    lines = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    splits = layout.assign_splits(["good", "other"], 0.5)
    assert lines == [
        {"id": "good", "frames": 100, "duration": 4.0, "split": splits["good"], "source": str(videos["good"]), "synthetic": False},
        {"id": "other", "frames": 50, "duration": 2.0, "split": splits["other"], "source": str(videos["other"]), "synthetic": False},
    ]
    assert sorted(splits.values()) == ["test", "train"]

    # Naming who speaks relabels finished clips without redoing them; one person's clips share a split.
    report = pp.preprocess(inputs, tmp_path, SMALL, workers=1, test_fraction=0.5, identities={"good.mp4": "ann", "other.mp4": "ann"})
    assert [r.status for r in report.results] == ["already done", "already done"]
    assert layout.read_meta(finished).extra["identity"] == "ann"
    assert len({e.split for e in report.manifest}) == 1

    with pytest.raises(SplatPortraitError, match=r"clips/good was made with --size 64 and mel \(80-d, 50 Hz, utterance-normalised, loudness-gated\) audio features, not --size 128"):
        pp.preprocess(inputs, tmp_path, pp.ClipOptions(size=128), workers=1)
    renamed = tmp_path / "elsewhere" / "good.mp4"
    renamed.parent.mkdir()
    renamed.symlink_to(videos["other"])
    clash = pp.preprocess([renamed], tmp_path, SMALL, workers=1).results[0]
    assert clash.status == "skipped" and clash.reason.startswith("clip id 'good' already holds ")


def test_inputs_and_clip_ids(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    for name in ("a/talk.mp4", "a/deep/x y.MOV", "a/readme.txt", "b/talk.mp4"):
        (tmp_path / name).write_bytes(b"")
    found = pp.find_videos([tmp_path / "a", tmp_path / "b"])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a/deep/x y.MOV", "a/talk.mp4", "b/talk.mp4"]
    ids = pp.clip_ids(found)
    assert ids[0] == "x_y" and ids[1].startswith("talk-") and ids[2].startswith("talk-") and ids[1] != ids[2]
    assert ids == pp.clip_ids(found)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SplatPortraitError, match=r"no video files \(.mp4, .mov, .mkv, .webm\) found in .*empty$"):
        pp.find_videos([tmp_path / "empty"])
    with pytest.raises(SplatPortraitError, match="--workers must be at least 1, got 0"):
        pp.preprocess([tmp_path / "a"], tmp_path / "out", workers=0)


@pytest.mark.skipif(not (SHARED / "videos").is_dir(), reason="the shared sample videos (../shared/data/videos) are absent")
def test_real_clips(tmp_path):
    # talk_1 is variable frame rate (30 tbr) with 44.1 kHz stereo; talk_3 is 25 fps.
    inputs = [SHARED / "videos" / "talk_1.mp4", SHARED / "videos" / "talk_3.mp4"]
    report = pp.preprocess(inputs, tmp_path, SMALL, workers=1)
    assert [(r.id, r.status, r.frames) for r in report.results] == [("talk_1", "done", 153), ("talk_3", "done", 125)]
    assert all(r.face_fraction >= 0.95 for r in report.results)
    for entry in report.manifest:
        paths = ClipPaths.of(tmp_path, entry.id)
        assert len(paths.frame_paths()) == entry.frames == len(layout.read_cameras(paths).c2w)
        assert layout.read_features(paths).shape == (2 * entry.frames, 80)
