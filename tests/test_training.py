import dataclasses
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import default_collate
from typer.testing import CliRunner

from splat_portrait import camera
from splat_portrait.audio.features import FeatureSpec
from splat_portrait.cli.app import app
from splat_portrait.data import layout
from splat_portrait.data.datasets import DynamicDataset, StaticPairDataset
from splat_portrait.data.synthetic import SynthConfig, write_synthetic_dataset
from splat_portrait.errors import SplatPortraitError
from splat_portrait.models import TalkingHead, load_checkpoint, load_model, preset, save_checkpoint
from splat_portrait.models.config import UNetConfig
from splat_portrait.prior.edm import DENOISER_KINDS, EDMDenoiser, EDMDenoiserConfig, EDMSchedule
from splat_portrait.render import render
from splat_portrait.training import TrainConfig, train
from splat_portrait.training import distributed, loop, state
from splat_portrait.training.config import resume_differences
from splat_portrait.training.distributed import RankShard
from splat_portrait.training.objective import Critics, Objective, composite, reconstruction_terms, render_view

SIZE = 32
# Settings every run here shares: the tiny model at 32^2, no LPIPS (its VGG weights are absent).
FAST = dict(resolution=SIZE, batch_size=1, lpips_weight=0.0, lr=1e-3)
CLI_FAST = ["--resolution", str(SIZE), "--batch-size", "1", "--lpips-weight", "0", "--lr", "1e-3", "--device", "cpu"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_synthetic_dataset(root, 2, seed=3, config=SynthConfig(seconds=0.6, size=SIZE, speech="voiced"), test_fraction=0.0)
    return root


@pytest.fixture(scope="module")
def static_ckpt(data_dir, tmp_path_factory):
    """A stage-I checkpoint made by the CLI (also its end-to-end test)."""
    run = tmp_path_factory.mktemp("static-run")
    args = ["train-static", str(data_dir), "-o", str(run), "--steps", "2", "--checkpoint-every", "1", *CLI_FAST]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "2 of 2" in result.output and "s/step" in result.output
    return run / "static.ckpt"


def _batch(data_dir, count=2, dynamic=False):
    dataset = (DynamicDataset if dynamic else StaticPairDataset)(data_dir, "train", SIZE, seed=0)
    return default_collate([dataset[k] for k in range(count)])


def _weights(path):
    return load_model(path).state_dict()


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[0]}"


# ------------------------------------------------------------------------------- objective


def test_reconstruction_terms_sum_over_views_and_average_over_backgrounds():
    targets = torch.rand(2, 3, 3, 8, 8)
    perfect = targets[:, None].expand(2, 2, 3, 3, 8, 8)
    assert reconstruction_terms(perfect, targets, Critics()) == {"l2": 0.0}
    # Source view off by 0.1 everywhere on one background only, target view perfect.
    renders = perfect.clone()
    renders[0, 0] += 0.1
    # Eq. 1: ||I_i - I_i*||^2 + ||I_n - I_n*||^2 with per-pixel means, each averaged over 2 backgrounds.
    torch.testing.assert_close(reconstruction_terms(renders, targets, Critics())["l2"], torch.tensor(0.01 / 2))


def test_composite_over_a_background_matches_the_renderer():
    model = TalkingHead(preset("tiny", image_size=SIZE))
    image = torch.rand(1, 3, SIZE, SIZE) * 2 - 1
    c2w, intrinsics = camera.default_c2w((1,)), camera.default_intrinsics((1,))
    splats = model.splats(model.encode(image, c2w, intrinsics))
    target = camera.orbit_around(c2w, torch.tensor([0.2]), torch.tensor([0.1]))
    background = torch.rand(1, SIZE, SIZE, 3)
    view = render_view(splats, c2w, target, intrinsics, SIZE, "torch")
    expected = render(splats, camera.relative_pose(c2w, target), camera.intrinsics_to_K(intrinsics, SIZE, SIZE), SIZE, SIZE, background, "torch")
    torch.testing.assert_close(composite(view, background), expected.rgb.permute(0, 3, 1, 2))


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(data_dir):
    batch = _batch(data_dir)
    torch.manual_seed(0)
    model = TalkingHead(preset("tiny", image_size=SIZE))
    objective = Objective(model, Critics(), TrainConfig("static", str(data_dir), lpips_weight=0.0))
    optimizer = torch.optim.AdamW(model.generator.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        total = objective(batch, torch.Generator().manual_seed(0))["total"]
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(total.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_score_distillation_term_reaches_the_generator(data_dir, tmp_path):
    config = EDMDenoiserConfig(
        unet=UNetConfig(image_size=16, base_channels=8, channel_mults=(1, 2), attention_resolutions=(), embedding_dim=16),
        schedule=EDMSchedule(num_steps=6),
    )  # fmt: skip
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "prior.ckpt", EDMDenoiser(config), kinds=DENOISER_KINDS)
    settings = TrainConfig("static", str(data_dir), lpips_weight=0.0, prior=str(tmp_path / "prior.ckpt"), sds_weight=0.5)
    critics = loop.build_critics(settings, "cpu")
    model = TalkingHead(preset("tiny", image_size=SIZE))
    terms = Objective(model, critics, settings)(_batch(data_dir, 1), torch.Generator().manual_seed(0))
    assert sorted(terms) == ["depth_smoothness", "l2", "sds", "total"]
    assert terms["sds"].item() > 0
    torch.testing.assert_close(terms["total"], terms["l2"] + 0.01 * terms["depth_smoothness"] + 0.5 * terms["sds"])
    terms["sds"].backward()
    assert model.generator.unet.conv_out.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in critics.prior.parameters())


# ---------------------------------------------------------------------------------- pieces


def test_train_config_round_trips_and_names_what_a_resume_may_not_change(data_dir):
    config = TrainConfig("static", str(data_dir), sds_band=(0.5, 0.7), steps=10)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    changed = dataclasses.replace(config, steps=20, workers=2, lr=1e-3, seed=1)
    assert resume_differences(config.to_dict(), changed) == ["lr: 2.5e-05 -> 0.001", "seed: 0 -> 1"]
    with pytest.raises(ValueError, match="needs a prior"):
        TrainConfig("static", str(data_dir), sds_weight=1.0)


def test_ranks_share_the_sample_stream_block_by_block():
    stream = list(range(100))
    world, batch = 3, 2
    shards = [RankShard(stream, r, world, batch) for r in range(world)]
    # Step s of the job takes global samples [s W B, (s + 1) W B), rank r the r-th block of B.
    for step in range(4):
        taken = [shards[r][step * batch + j] for r in range(world) for j in range(batch)]
        assert taken == list(range(step * world * batch, (step + 1) * world * batch))
    assert [RankShard(stream, 0, 1, 4)[k] for k in range(10)] == list(range(10))


def test_step_randomness_is_a_function_of_seed_step_and_rank():
    def draw(*key):
        return torch.rand(4, generator=state.step_generator(*key))

    assert torch.equal(draw(0, 5, 0), draw(0, 5, 0))
    assert not torch.equal(draw(0, 5, 0), draw(0, 6, 0))
    assert not torch.equal(draw(0, 5, 0), draw(0, 5, 1))
    assert not torch.equal(draw(0, 5, 0), draw(1, 5, 0))


def test_global_rng_states_round_trip_through_a_checkpoint(tmp_path):
    saved = state.capture_rng()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    model = TalkingHead(preset("tiny", image_size=SIZE))
    save_checkpoint(tmp_path / "rng.ckpt", model, {"rng": saved})
    state.restore_rng(load_checkpoint(tmp_path / "rng.ckpt")[1]["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]


# ------------------------------------------------------------------------------------ runs


def test_a_run_killed_with_sigkill_resumes_to_the_same_weights(data_dir, tmp_path):
    steps = 6

    def command(run, *extra):
        return [sys.executable, "-m", "splat_portrait.cli", "-q", "train-static", str(data_dir), "-o", str(run),
                "--steps", str(steps), "--checkpoint-every", "2", *CLI_FAST, *extra]  # fmt: skip

    # One thread each (the same in all three runs, so the arithmetic is too): the uninterrupted run
    # and the one to be killed share the two cores.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole = subprocess.Popen(command(tmp_path / "whole"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed = tmp_path / "killed"
    process = subprocess.Popen(command(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (killed / "last.ckpt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    reached = load_checkpoint(killed / "last.ckpt")[1]["step"]
    assert 2 <= reached < steps
    assert whole.wait() == 0, whole.stderr.read().decode()
    subprocess.run(command(killed, "--resume"), env=env, check=True, capture_output=True)
    assert load_checkpoint(killed / "last.ckpt")[1]["step"] == steps
    _assert_same_weights(_weights(tmp_path / "whole" / "static.ckpt"), _weights(killed / "static.ckpt"))


@pytest.mark.parametrize("checkpoint_every", [2, 10])
def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(data_dir, tmp_path, monkeypatch, checkpoint_every):
    forward = Objective.forward
    calls = []

    def poisoned(self, batch, generator):
        terms = forward(self, batch, generator)
        calls.append(1)
        if len(calls) == 3:
            terms["l2"] = terms["l2"] * float("nan")
            terms["total"] = terms["l2"]
        return terms

    monkeypatch.setattr(Objective, "forward", poisoned)
    config = TrainConfig("static", str(data_dir), steps=5, checkpoint_every=checkpoint_every, **FAST)
    run = tmp_path / "run"
    with pytest.raises(SplatPortraitError) as caught:
        train(config, run)
    if checkpoint_every == 10:  # nothing saved yet: there is nothing to --resume
        assert str(caught.value) == (
            "loss became NaN (l2) at step 3; no checkpoint was written yet (the first is due at step 10); "
            "lower --lr or check the data, then start the run again"
        )
        assert not (run / "last.ckpt").exists()
        return
    assert str(caught.value) == (
        f"loss became NaN (l2) at step 3; the last good checkpoint is {run / 'last.ckpt'} (step 2); "
        "lower --lr or check the data, then --resume"
    )
    assert load_checkpoint(run / "last.ckpt")[1]["step"] == 2
    assert load_checkpoint(run / "static.ckpt")[1]["step"] == 2


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, config, run_dir, out_dir):
    """One process of a gloo job: trains, then reports its weights and the files it opened for writing."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    written = set()
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def audit(event, args):
        # Every way Python creates, opens for writing or renames a file under the run directory.
        if event == "open" and str(args[0]).startswith(str(run_dir)):
            mode, flags = args[1], args[2]
            if (mode and any(c in mode for c in "wax+")) or (flags or 0) & write_flags:
                written.add(str(args[0]))
        elif event == "os.mkdir" and str(args[0]).startswith(str(run_dir)):
            written.add(str(args[0]))
        elif event in ("os.rename", "os.replace") and str(args[1]).startswith(str(run_dir)):
            written.add(str(args[1]))

    sys.addaudithook(audit)
    torch.set_num_threads(1)
    context = distributed.start("cpu")
    try:
        trainer = loop.Trainer(config, run_dir, context, resume=False)
        trainer.run()
        torch.save(trainer.model.state_dict(), out_dir / f"rank{rank}.pt")
    finally:
        distributed.stop(context)
    (out_dir / f"rank{rank}.json").write_text(json.dumps(sorted(written)))


def test_two_gloo_processes_hold_identical_weights_and_only_rank_0_writes(data_dir, tmp_path):
    run_dir, out_dir = tmp_path / "run", tmp_path / "out"
    out_dir.mkdir()
    config = TrainConfig("static", str(data_dir), steps=3, checkpoint_every=2, **FAST)
    mp.spawn(_ddp_worker, args=(2, _free_port(), config, run_dir, out_dir), nprocs=2)
    first, second = (torch.load(out_dir / f"rank{r}.pt") for r in range(2))
    _assert_same_weights(first, second)
    _assert_same_weights(first, _weights(run_dir / "static.ckpt"))
    initial = TalkingHead(preset("tiny", image_size=SIZE)).state_dict()
    assert not torch.equal(first["generator.unet.conv_out.weight"], initial["generator.unet.conv_out.weight"])
    assert json.loads((out_dir / "rank1.json").read_text()) == []
    assert any(path.endswith("static.ckpt") for path in json.loads((out_dir / "rank0.json").read_text()))
    meta = load_checkpoint(run_dir / "last.ckpt")[1]
    assert (meta["world_size"], meta["samples"]) == (2, 6)


def test_stage_one_fine_tunes_a_checkpoint_under_a_new_footprint_with_depth_smoothness(data_dir, static_ckpt, tmp_path):
    run = tmp_path / "fine-tune"
    args = ["train-static", str(data_dir), "--init", str(static_ckpt), "--footprint", "0.5", "--depth-smoothness", "0.01",
            "-o", str(run), "--steps", "2", *CLI_FAST]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    model, meta = load_checkpoint(run / "static.ckpt")
    assert model.config.generator.footprint == 0.5
    assert load_checkpoint(static_ckpt)[0].config.generator.footprint == 0.0
    assert meta["config"]["init"] == str(static_ckpt.resolve()) and "depth_smoothness" in meta["losses"]
    before, after = _weights(static_ckpt), _weights(run / "static.ckpt")
    assert before.keys() == after.keys()
    assert not torch.equal(before["generator.unet.conv_out.weight"], after["generator.unet.conv_out.weight"])
    # Stage II keeps the footprint its stage-I checkpoint was trained with.
    dynamic = tmp_path / "dynamic"
    result = CliRunner().invoke(app, ["train-dynamic", str(data_dir), "--init", str(run / "static.ckpt"), "-o", str(dynamic), "--steps", "1", *CLI_FAST])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(dynamic / "dynamic.ckpt")[0].config.generator.footprint == 0.5


def test_training_settings_of_the_geometry_terms_are_checked():
    with pytest.raises(ValueError, match="footprint must not be negative"):
        TrainConfig("static", "data", footprint=-1.0)
    with pytest.raises(ValueError, match="depth_smoothness_weight must not be negative"):
        TrainConfig("static", "data", depth_smoothness_weight=-1.0)
    with pytest.raises(ValueError, match="sds_views must be one of bullet, uniform and sds_crop one of landmarks, centre, got 'box', 'landmarks'"):
        TrainConfig("static", "data", sds_views="box")
    with pytest.raises(ValueError, match="freeze_static belongs to stage II"):
        TrainConfig("static", "data", freeze_static=True)


# ----------------------------------------------------------------------------------- stage II


def test_train_dynamic_cli_from_a_stage_one_checkpoint(data_dir, static_ckpt, tmp_path):
    run = tmp_path / "dynamic"
    args = ["train-dynamic", str(data_dir), "--init", str(static_ckpt), "-o", str(run), "--steps", "2", *CLI_FAST]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    before, after = _weights(static_ckpt), _weights(run / "dynamic.ckpt")
    # Everything trains by default: the generator and the (zero-initialised) dynamic decoder's output.
    assert not torch.equal(before["dynamic.conv_out.weight"], after["dynamic.conv_out.weight"])
    assert not torch.equal(before["generator.unet.conv_out.weight"], after["generator.unet.conv_out.weight"])
    meta = load_checkpoint(run / "dynamic.ckpt")[1]
    assert meta["stage"] == "dynamic" and meta["step"] == 2
    assert FeatureSpec.from_json(meta["feature_spec"]) == FeatureSpec("mel", None, 80, normalise="utterance-gated")
    assert list((run / "tb").glob("events.out.tfevents.*"))


def test_freeze_static_trains_only_the_dynamic_decoder(data_dir, static_ckpt, tmp_path):
    config = TrainConfig("dynamic", str(data_dir), init=str(static_ckpt), steps=2, freeze_static=True, **FAST)
    train(config, tmp_path / "run")
    before, after = _weights(static_ckpt), _weights(tmp_path / "run" / "dynamic.ckpt")
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("generator."))
    assert not torch.equal(before["dynamic.conv_out.weight"], after["dynamic.conv_out.weight"])


def test_stage_two_refuses_features_from_another_extractor(data_dir, static_ckpt, tmp_path):
    other = tmp_path / "data"
    shutil.copytree(data_dir, other)
    for paths in layout.complete_clips(other):
        meta = layout.read_meta(paths)
        layout.write_meta(paths, dataclasses.replace(meta, audio_features=FeatureSpec("wav2vec2", "some/model", 80)))
    config = TrainConfig("dynamic", str(other), init=str(static_ckpt), steps=1, **FAST)
    with pytest.raises(SplatPortraitError, match=r"audio features come from wav2vec2 'some/model' \(80-d, 50 Hz\) but the checkpoint was trained with mel \(80-d, 50 Hz, utterance-normalised, loudness-gated\)"):  # fmt: skip
        train(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------------- CLI errors


def test_cli_refuses_to_overwrite_a_run_or_resume_with_other_settings(data_dir, static_ckpt):
    run = static_ckpt.parent
    base = ["train-static", str(data_dir), "-o", str(run), "--steps", "2", *CLI_FAST]
    result = CliRunner().invoke(app, base)
    assert result.exit_code == 1
    assert f"error: {run} already holds a run ({run / 'last.ckpt'}); pass --resume" in " ".join(result.output.split())
    result = CliRunner().invoke(app, [*base, "--resume", "--seed", "7"])
    assert result.exit_code == 1
    assert "cannot resume" in result.output and "seed: 0 -> 7" in " ".join(result.output.split())
    result = CliRunner().invoke(app, ["train-static", str(data_dir), "-o", str(run.parent / "none"), "--resume", *CLI_FAST])
    assert result.exit_code == 1 and "nothing to resume" in result.output


def test_default_lpips_without_vgg_weights_says_what_to_do(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    result = CliRunner().invoke(app, ["train-static", str(data_dir), "-o", str(tmp_path / "run"), "--steps", "1", "--device", "cpu"])
    assert result.exit_code == 1
    message = " ".join(result.output.split())
    assert "error: LPIPS needs torchvision's VGG16 weights (vgg16-397923af.pth)" in message
    assert message.endswith("or pass --lpips-weight 0")


def test_sds_weight_without_a_prior_is_refused(data_dir, tmp_path):
    result = CliRunner().invoke(app, ["train-static", str(data_dir), "-o", str(tmp_path / "run"), "--sds-weight", "1", *CLI_FAST])
    assert result.exit_code == 1
    assert "error: --sds-weight needs --prior PATH" in result.output


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_two_training_steps_on_cuda_with_bf16_autocast(data_dir, tmp_path):
    config = TrainConfig("static", str(data_dir), steps=2, **FAST)
    result = train(config, tmp_path / "run", device="cuda")
    assert math.isfinite(result.losses["total"])
    assert load_checkpoint(tmp_path / "run" / "static.ckpt")[1]["step"] == 2
