"""`splat-portrait evaluate` end to end on a tiny untrained checkpoint and synthetic clips, plus its pure parts."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from splat_portrait.cli.app import app
from splat_portrait.data.layout import ClipPaths, ManifestEntry, read_manifest, read_meta, write_manifest
from splat_portrait.data.synthetic import SynthConfig, write_synthetic_dataset
from splat_portrait.errors import SplatPortraitError
from splat_portrait.evaluation.protocol import cross_identity_sources, frames_to_score, plan_cases, protocol_metrics
from splat_portrait.evaluation.report import PAPER_TABLES
from splat_portrait.evaluation.scoring import ClipScores, weighted_mean
from splat_portrait.evaluation.sheet import contact_sheet
from splat_portrait.media.video import probe_video
from splat_portrait.models import TalkingHead, preset, save_checkpoint

from conftest import DATA

SIZE = 32
FRAMES = 15  # 0.6 s at 25 fps


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    data = root / "data"
    write_synthetic_dataset(data, 3, seed=1, config=SynthConfig(seconds=0.6, size=SIZE, speech="voiced"), test_fraction=0.67)
    torch.manual_seed(0)
    model = TalkingHead(preset("tiny", image_size=SIZE))
    with torch.no_grad():
        model.dynamic.conv_out.weight.normal_(0, 0.1)  # so the audio moves the splats
    checkpoint = root / "model.pt"
    spec = read_meta(ClipPaths.of(data, read_manifest(data)[0].id)).audio_features
    save_checkpoint(checkpoint, model, {"feature_spec": spec.to_json()})
    return root, data, checkpoint


def run(*args):
    # Wide enough that rich does not wrap the table's rows.
    return CliRunner().invoke(app, ["evaluate", *map(str, args)], env={"COLUMNS": "300"})


def test_same_identity_writes_every_output(setup):
    root, data, checkpoint = setup
    out = root / "same"
    result = run(data, "--checkpoint", checkpoint, "-o", out, "--videos", "1")
    assert result.exit_code == 0, result.output
    test_ids = sorted(e.id for e in read_manifest(data) if e.split == "test")
    assert len(test_ids) == 2

    report = json.loads((out / "metrics.json").read_text())
    assert report["protocol"] == "same-identity" and report["method"] == "model"
    assert report["checkpoint"]["path"] == str(checkpoint) and len(report["checkpoint"]["sha256"]) == 64
    assert report["data"]["clips_evaluated"] == 2 and report["recognizer"] == "dlib_face_recognition_resnet_model_v1"
    assert set(report["versions"]) >= {"python", "splat-portrait", "torch"}
    assert [c["id"] for c in report["clips"]] == test_ids
    assert [c["source"] for c in report["clips"]] == test_ids  # the clip's own first frame
    for clip in report["clips"]:
        assert clip["frames"] == FRAMES and clip["scored_frames"] == FRAMES - 1
        assert 5 < clip["psnr"] < 60 and 0 < clip["ssim"] < 1
    aggregate = report["aggregate"]
    assert aggregate["psnr"] == pytest.approx(np.mean([c["psnr"] for c in report["clips"]]))
    # No weights on this machine: every such metric says why, in the JSON and the table.
    for score, metric in (("lpips", "lpips"), ("fid", "fid"), ("lse_c", "lipsync"), ("lse_d", "lipsync")):
        value = aggregate[score]
        if isinstance(value, str):
            assert value.startswith("unavailable: ") and report["metrics"][metric] == value
    assert "unavailable: download syncnet_v2.model" not in result.output  # reasons are whole sentences
    assert "LipSync unavailable: LipSync (SyncNet) needs weights that are not given" in " ".join(result.output.split())
    assert "Splat-Portrait (paper, HDTF)" in result.output and "23.87" in result.output and "0.814" in result.output
    assert "model.pt (this run)" in result.output

    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["clip"] for r in rows] == [*test_ids, "aggregate"]
    assert float(rows[0]["psnr"]) == pytest.approx(report["clips"][0]["psnr"])
    assert float(rows[-1]["psnr"]) == pytest.approx(aggregate["psnr"])

    assert report["outputs"]["videos"] == [f"videos/{test_ids[0]}.mp4"]
    info = probe_video(out / "videos" / f"{test_ids[0]}.mp4")
    assert (info.width, info.height) == (SIZE, SIZE) and info.has_audio
    for clip_id in test_ids:
        with Image.open(out / "sheets" / f"{clip_id}.png") as sheet:
            assert sheet.size == (7 * 128, 128 + 14)  # 32 px tiles enlarged to 128, one label strip


def test_copy_source_baseline_scores_the_repeated_source(setup):
    root, data, checkpoint = setup
    out = root / "baseline"
    result = run(data, "--checkpoint", checkpoint, "-o", out, "--baseline", "copy-source", "--metrics", "psnr,ssim",
                 "--seconds", "0.2", "--clips", "1", "--videos", "0")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "metrics.json").read_text())
    assert report["method"] == "copy-source" and set(report["aggregate"]) == {"psnr", "ssim"}
    (clip,) = report["clips"]
    assert clip["frames"] == 5 and clip["scored_frames"] == 4
    # The baseline's PSNR is that of the source frame against real frames 1..4, computed here directly.
    frames = [np.asarray(Image.open(data / "clips" / clip["id"] / "frames" / f"{n:06d}.jpg"), np.float64) / 255 for n in range(5)]
    expected = np.mean([10 * math.log10(1 / np.mean((frames[0] - f) ** 2)) for f in frames[1:]])
    assert clip["psnr"] == pytest.approx(expected, abs=0.02)
    assert "copy-source baseline (this run)" in result.output
    assert not (out / "videos").exists()
    with Image.open(out / "sheets" / f"{clip['id']}.png") as sheet:  # depth and novel views are grey "n/a" tiles
        assert np.asarray(sheet)[64, 3 * 128 + 64].tolist() == [64, 64, 64]


def test_cross_identity_uses_another_clip_as_source(setup):
    root, data, checkpoint = setup
    out = root / "cross"
    result = run(data, "--checkpoint", checkpoint, "-o", out, "--protocol", "cross-identity", "--videos", "0")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "metrics.json").read_text())
    ids = [c["id"] for c in report["clips"]]
    assert [c["source"] for c in report["clips"]] == ids[::-1]
    assert set(report["aggregate"]) == {"csim", "fid", "lse_c", "lse_d", "mouth_r_audio", "sync_c", "sync_d", "sync_offset", "sync_in_sync",
                                        "views_face", "views_csim", "views_tearing"}  # fmt: skip
    assert "Tab. 2" in result.output and "0.726" in result.output and "PSNR" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--checkpoint", "{root}/missing.pt"], "checkpoint {root}/missing.pt does not exist (or is not a file)"),
        (["--protocol", "sideways"], "unknown protocol 'sideways'; choose one of same-identity, cross-identity"),
        (["--metrics", "psnr,bleu"], "unknown metric 'bleu'; choose from psnr, ssim, lpips, csim, fid, lipsync, mouth, sync, views"),
        (["--baseline", "mirror"], "unknown baseline 'mirror'; choose one of copy-source"),
        (["--protocol", "cross-identity", "--metrics", "ssim"],
         "metric 'ssim' compares with ground truth, which the cross-identity protocol has not; choose from csim, fid, lipsync, mouth, sync, views"),
    ],
)  # fmt: skip
def test_user_errors_are_one_clear_line(setup, args, message):
    root, data, checkpoint = setup
    args = [a.format(root=root) for a in args]
    if "--checkpoint" not in args:
        args += ["--checkpoint", str(checkpoint)]
    result = run(data, "-o", root / "errors", *args)
    assert result.exit_code == 1
    assert " ".join(result.output.split()) == f"error: {message.format(root=root)}"


def test_no_test_clips_is_an_error(setup, tmp_path):
    root, data, checkpoint = setup
    entries = [ManifestEntry(e.id, e.frames, e.duration, "train", e.source, e.synthetic) for e in read_manifest(data)]
    write_manifest(tmp_path, entries)
    result = run(tmp_path, "--checkpoint", checkpoint, "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert " ".join(result.output.split()) == f"error: no 'test' clips in {tmp_path / 'manifest.jsonl'} (it lists 3 train, 0 test)"


def test_cross_identity_pairing_is_deterministic_and_never_the_same_person():
    assert cross_identity_sources(["a", "b", "c"]) == [1, 2, 0]
    assert cross_identity_sources(["a", "a", "b"]) == [2, 2, 0]
    with pytest.raises(SplatPortraitError, match="at least two identities"):
        cross_identity_sources(["a", "a"])


def test_plan_takes_the_first_seconds_and_clips():
    entries = [ManifestEntry(f"c{k}", 200, 8.0, "test", f"video{k}.mp4") for k in range(3)]
    cases = plan_cases(entries, [200, 100, 60], "same-identity", 5.0, 2)
    assert [(c.clip, c.source, c.num_frames) for c in cases] == [(0, 0, 125), (1, 1, 100)]
    assert frames_to_score(0.01, 50) == 2
    with pytest.raises(SplatPortraitError, match=r"^--seconds must be positive, got 0.0$"):
        plan_cases(entries, [200] * 3, "same-identity", 0.0, None)


def test_protocol_metrics_default_to_what_applies():
    assert protocol_metrics("same-identity", None) == ("psnr", "ssim", "lpips", "csim", "fid", "lipsync", "mouth", "sync", "views")
    assert protocol_metrics("cross-identity", None) == ("csim", "fid", "lipsync", "mouth", "sync", "views")
    assert protocol_metrics("same-identity", ["fid", "psnr"]) == ("psnr", "fid")


def test_aggregate_weights_clips_by_pairs():
    clips = [ClipScores("a", "a", 3, 2, {"csim": 0.5}, {"csim": 1}), ClipScores("b", "b", 5, 4, {"csim": 0.8}, {"csim": 3}),
             ClipScores("c", "c", 5, 4, {"csim": None}, {"csim": 0})]  # fmt: skip
    assert weighted_mean(clips, "csim") == pytest.approx((0.5 + 3 * 0.8) / 4)
    assert weighted_mean(clips[2:], "csim") is None


def test_paper_reference_rows_match_the_paper():
    assert PAPER_TABLES["same-identity"][1]["Splat-Portrait"] == {
        "psnr": 23.87, "ssim": 0.814, "lpips": 0.128, "csim": 0.811, "fid": 25.58, "lse_c": 6.328,
    }  # fmt: skip
    assert PAPER_TABLES["cross-identity"][1]["Splat-Portrait"] == {"csim": 0.726, "fid": 28.62, "lse_c": 6.218}


def test_contact_sheet_lays_out_labelled_tiles():
    tile = np.full((16, 16, 3), 200, np.uint8)
    sheet = contact_sheet([tile, tile, tile, None, None, None, None])
    assert sheet.shape == (128 + 14, 7 * 128, 3)
    assert sheet[10, 10].tolist() == [200, 200, 200] and sheet[10, 3 * 128 + 10].tolist() == [64, 64, 64]
    with pytest.raises(ValueError, match="expected 7 tiles"):
        contact_sheet([tile])


def test_scorer_runs_set_and_sync_metrics_through_their_interfaces():
    from splat_portrait.evaluation.scoring import Scorer
    from splat_portrait.metrics import Metric, Unavailable
    from splat_portrait.metrics.fid import fid_from_features
    from splat_portrait.metrics.syncnet import SyncResult

    def features(images):  # a stand-in for Inception: per-image channel means
        return images.mean(dim=(1, 2)).double().numpy()

    metrics = {
        "fid": Metric("fid", "mean colour", features),
        "lipsync": Metric("lipsync", "fixed", lambda frames, samples: SyncResult(1, 7.5, 7.5, len(frames) - 5)),
        "lpips": Unavailable("lpips", "no weights"),
    }
    scorer = Scorer(metrics)
    gen = torch.Generator().manual_seed(0)
    clips = []
    for k, count in enumerate((6, 9)):
        generated, real = torch.rand(count, 16, 16, 3, generator=gen), torch.rand(count, 16, 16, 3, generator=gen)
        clips.append(scorer.score_clip(ClipScores(f"c{k}", f"c{k}", count, count - 1), generated, real, real[0], np.zeros(640 * count)))
        clips[-1].reference = (features(generated[1:]), features(real[1:]))
    aggregate = scorer.aggregate(clips)
    expected_fid = fid_from_features(*(np.concatenate([c.reference[i] for c in clips]) for i in (0, 1)))
    assert aggregate["fid"] == pytest.approx(expected_fid)
    assert aggregate["lse_c"] == pytest.approx(7.5) and aggregate["lse_d"] == pytest.approx(7.5)
    assert aggregate["lpips"] == "unavailable: no weights"


def test_an_exported_model_dir_scores_like_its_checkpoint_and_kinds_stay_apart(setup):
    from splat_portrait.export.graphs import export_model

    root, data, checkpoint = setup
    model_dir = root / "exported"
    export_model(checkpoint, model_dir)
    scored = {}
    for name, model in (("ckpt", checkpoint), ("onnx", model_dir)):
        result = run(data, "--model", model, "-o", root / f"kind-{name}", "--metrics", "psnr,ssim", "--videos", "0")
        assert result.exit_code == 0, result.output
        scored[name] = json.loads((root / f"kind-{name}" / "metrics.json").read_text())
    onnx = scored["onnx"]
    assert onnx["checkpoint"]["kind"] == "model directory (ONNX Runtime)" and scored["ckpt"]["checkpoint"]["kind"] == "checkpoint (PyTorch)"
    assert onnx["aggregate"]["psnr"] == pytest.approx(scored["ckpt"]["aggregate"]["psnr"], abs=0.05)
    assert set(onnx["aggregate_by_kind"]) == {"synthetic"}  # every clip here is synthetic
    assert onnx["aggregate_by_kind"]["synthetic"]["clips"] == 2
    assert onnx["aggregate_by_kind"]["synthetic"]["psnr"] == pytest.approx(onnx["aggregate"]["psnr"])
    assert onnx["record"]["commit"] and onnx["record"]["versions"]["torch"]


@pytest.mark.skipif(not (DATA / "videos").is_dir(), reason=f"sample data folder {DATA} is absent")
def test_mouth_tracks_on_a_real_clip_copy_source_does_not_move(setup, tmp_path):
    from splat_portrait.data.preprocess import ClipOptions, preprocess

    root, _, checkpoint = setup
    data = tmp_path / "real"
    preprocess([DATA / "videos" / "hdtf_wda_katiehill.mp4"], data, ClipOptions(size=SIZE * 4), workers=1, test_fraction=1.0)
    model = TalkingHead(preset("tiny", image_size=SIZE * 4))
    save_checkpoint(tmp_path / "m.pt", model)
    result = run(data, "--checkpoint", tmp_path / "m.pt", "-o", tmp_path / "eval", "--baseline", "copy-source",
                 "--metrics", "mouth,views", "--seconds", "2", "--videos", "0")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    clip = report["clips"][0]
    assert report["aggregate"]["mouth_amp"] == 0 and report["aggregate"]["mouth_r"] is None
    # With no 3D every bullet view is the source: the reference scores of a head that holds together.
    assert (clip["views_face"], clip["views_tearing"]) == (1.0, 0.0) and clip["views_csim"] == pytest.approx(1.0)
    assert clip["notes"]["mouth_r"] == "undefined: the generated mouth opening does not change"
    assert clip["pairs"]["mouth_r"] == 0 and clip["pairs"]["mouth_amp"] == 49 and clip["lmd"] > 0
    assert clip["pairs"]["mouth_no_face_generated"] == 0 and clip["pairs"]["mouth_no_face_real"] == 0
    assert "mouth amp→1" in result.output and "mouth r↑" in result.output
