"""Mouth-aware training: landmark-weighted L2, the lip-shape loss, landmarks in samples, feature normalisation."""

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from splat_portrait import camera
from splat_portrait.audio import features as F
from splat_portrait.data import layout
from splat_portrait.data.datasets import DynamicDataset
from splat_portrait.data.synthetic import SynthConfig, synthesize_clip, write_synthetic_dataset
from splat_portrait.data.synthetic.speech import room_noise
from splat_portrait.errors import SplatPortraitError
from splat_portrait.losses.mouth import MOUTH, lip_gap_loss, lip_shape_loss, mouth_weights, points_under, still_face_loss, weighted_mse
from splat_portrait.models import TalkingHead, preset
from splat_portrait.training import TrainConfig
from splat_portrait.training.objective import Critics, Objective, lip_terms, predict, still_term

from conftest import face

SIZE = 32


# ------------------------------------------------------------------------------- loss functions


def test_mouth_weights_cover_the_mouth_box_and_spare_frames_without_landmarks():
    landmarks = torch.stack([face(), face()])
    weights = mouth_weights(landmarks, torch.tensor([True, False]), 20, 10.0, margin=0.0)
    assert weights.shape == (2, 1, 20, 20)
    inside = weights[0, 0] == 10
    rows, cols = inside.nonzero().T
    # The mouth spans x 0.4-0.6 and y 0.66-0.74: pixel centres (k + 0.5) / 20 inside that box.
    assert (cols.min().item(), cols.max().item()) == (8, 11)
    assert (rows.min().item(), rows.max().item()) == (13, 14)
    assert set(weights[0].unique().tolist()) == {1.0, 10.0}
    assert torch.equal(weights[1], torch.ones(1, 20, 20))


def test_weighted_mse_is_plain_mse_with_unit_weights_and_counts_weighted_pixels_more():
    pred, target = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(weighted_mse(pred, target, torch.ones(2, 1, 4, 4)), torch.nn.functional.mse_loss(pred, target))
    error = torch.zeros(1, 3, 4, 4)
    error[..., 0, 0] = 1.0
    weights = torch.ones(1, 1, 4, 4)
    weights[..., 0, 0] = 10
    assert weighted_mse(error, torch.zeros_like(error), weights).item() == pytest.approx(10 / 16)
    with pytest.raises(ValueError, match="equal shapes"):
        weighted_mse(pred, target[:1], weights)


def test_splats_on_their_pixel_rays_project_back_onto_their_pixels():
    """points_under + camera.project_points at the source camera is the identity on crop coordinates."""
    intrinsics = camera.default_intrinsics((1,))
    rays = camera.pixel_rays(intrinsics, SIZE, SIZE)
    # At one depth the splats span a plane, which bilinear interpolation between them stays on.
    means = (rays * 2.7).reshape(1, SIZE * SIZE, 3)
    uv = torch.rand(1, 20, 2) * 0.8 + 0.1
    seen = camera.project_points(torch.eye(4)[None], points_under(means, SIZE, uv), intrinsics)
    torch.testing.assert_close(seen, uv, atol=1e-5, rtol=0)
    # A pixel centre samples exactly that pixel's splat, whatever the depths.
    means = (rays * (2.5 + torch.rand(1, SIZE, SIZE, 1))).reshape(1, SIZE * SIZE, 3)
    centre = torch.tensor([[[(5 + 0.5) / SIZE, (7 + 0.5) / SIZE]]])
    torch.testing.assert_close(points_under(means, SIZE, centre)[0, 0], means[0, 7 * SIZE + 5])


def test_lip_shape_loss_known_answers():
    closed, opened = face(0.0), face(0.1)
    known = torch.tensor([True])
    assert lip_shape_loss(closed[None, MOUTH], closed[None], known).item() == pytest.approx(0, abs=1e-5)
    # Where the head sits is not a lip error: shapes are compared about their centroids.
    assert lip_shape_loss(closed[None, MOUTH] + 0.2, closed[None], known).item() == pytest.approx(0, abs=1e-5)
    # Every mouth point 0.01 too far right of a centred shape: 0.01 / face height 0.5.
    shifted = closed[None, MOUTH].clone()
    shifted[:, :10, 0] += 0.01
    shifted[:, 10:, 0] -= 0.01
    assert lip_shape_loss(shifted, closed[None], known).item() == pytest.approx(0.02, abs=1e-5)
    # A closed mouth against an open one costs; frames without landmarks do not count.
    assert lip_shape_loss(closed[None, MOUTH], opened[None], known).item() > 0.02
    both = lip_shape_loss(torch.stack([closed, closed])[:, MOUTH], torch.stack([closed, opened]), torch.tensor([True, False]))
    assert both.item() == pytest.approx(0, abs=1e-5)
    lips = closed[None, MOUTH].clone().requires_grad_()
    nothing = lip_shape_loss(lips, opened[None], torch.tensor([False]))
    nothing.backward()
    assert nothing.item() == 0 and torch.equal(lips.grad, torch.zeros_like(lips))


def test_lip_gap_loss_known_answers():
    closed, opened = face(0.0), face(0.1)
    known = torch.tensor([True])
    assert lip_gap_loss(closed[None, MOUTH], closed[None], known).item() == pytest.approx(0, abs=1e-5)
    # Inner lips 0.1 apart against closed ones: 0.1 / face height 0.5, either way round.
    assert lip_gap_loss(opened[None, MOUTH], closed[None], known).item() == pytest.approx(0.2, abs=1e-5)
    assert lip_gap_loss(closed[None, MOUTH], opened[None], known).item() == pytest.approx(0.2, abs=1e-5)
    # Lips crossed over (upper below lower) are not an open mouth.
    crossed = opened[None, MOUTH].clone()
    crossed[:, [62 - 48, 66 - 48], 1] = crossed[:, [66 - 48, 62 - 48], 1]
    assert lip_gap_loss(crossed, opened[None], known).item() == pytest.approx(0.4, abs=1e-5)
    # Only the gap counts: a wider or displaced outer lip with the same gap costs nothing.
    wide = opened[None, MOUTH].clone()
    wide[:, :12, 0] = 0.5 + 1.5 * (wide[:, :12, 0] - 0.5)
    assert lip_gap_loss(wide + 0.1, opened[None], known).item() == pytest.approx(0, abs=1e-5)
    assert lip_shape_loss(wide, opened[None], known).item() > 0.01
    # A closed mouth, whose inner lips coincide, is pulled open: upper lip up (-y), lower lip down.
    lips = closed[None, MOUTH].clone().requires_grad_()
    lip_gap_loss(lips, opened[None], known).backward()
    assert lips.grad[0, 62 - 48, 1] > 0 and lips.grad[0, 66 - 48, 1] < 0
    assert lip_gap_loss(lips, opened[None], torch.tensor([False])).item() == 0


def test_still_face_loss_counts_offsets_away_from_the_mouth_only():
    landmarks, size = face()[None], 20
    inside = mouth_weights(landmarks, torch.tensor([True]), size, 2.0, margin=0.5)[0, 0] == 2
    assert 0 < inside.sum() < size * size / 4
    everywhere = torch.zeros(1, 3, size, size)
    everywhere[:, 0] = 1.0  # one pixel width along x
    known = torch.tensor([True])
    assert still_face_loss(everywhere, landmarks, known).item() == pytest.approx(1.0)
    # Offsets inside the grown mouth box are free; twice the length costs four times as much.
    mouth_only = everywhere * inside
    assert still_face_loss(mouth_only, landmarks, known).item() == 0
    assert still_face_loss(2 * (everywhere - mouth_only), landmarks, known).item() == pytest.approx(4.0)
    # Frames without landmarks do not count.
    both = still_face_loss(torch.cat([0 * everywhere, everywhere]), torch.cat([landmarks, landmarks]), torch.tensor([True, False]))
    assert both.item() == 0


# ------------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def data_dir(landmark_data):
    return landmark_data


def test_samples_carry_landmarks_and_say_where_there_are_none(data_dir, tmp_path):
    dataset = DynamicDataset(data_dir, "train", SIZE, seed=0)
    clip = next(c for c, record in enumerate(dataset.clips) if np.isnan(record.landmarks[3].numpy()).any())
    sample = dataset._sample(0, clip, 3, 4)
    assert sample["landmarks_i"].shape == (68, 2)
    assert (sample["has_landmarks_i"].item(), sample["has_landmarks_n"].item()) == (False, True)
    assert torch.equal(sample["landmarks_i"], torch.zeros(68, 2))
    torch.testing.assert_close(sample["landmarks_n"], dataset.clips[clip].landmarks[4])
    # A clip without landmarks.npy (synthetic clips, or clips preprocessed before landmarks were kept).
    bare = tmp_path / "bare"
    write_synthetic_dataset(bare, 1, seed=5, config=SynthConfig(seconds=0.6, size=SIZE, speech="voiced"), test_fraction=0.0)
    sample = DynamicDataset(bare, "train", SIZE, seed=0)[0]
    assert not sample["has_landmarks_i"] and not sample["has_landmarks_n"]


def test_landmarks_of_the_wrong_shape_are_refused(data_dir, tmp_path):
    root = tmp_path / "data"
    write_synthetic_dataset(root, 1, seed=5, config=SynthConfig(seconds=0.6, size=SIZE, speech="voiced"), test_fraction=0.0)
    (paths,) = layout.complete_clips(root)
    layout.write_landmarks(paths, np.zeros((2, 68, 2), np.float32))
    with pytest.raises(SplatPortraitError, match=r"landmarks of shape \(2, 68, 2\) for 15 frames"):
        DynamicDataset(root, "train", SIZE)
    with pytest.raises(ValueError, match=r"landmarks must be \(F, 68, 2\)"):
        layout.write_landmarks(paths, np.zeros((2, 20, 2)))


# ------------------------------------------------------------------------------- objective


def _batch(data_dir, count=4):
    dataset = DynamicDataset(data_dir, "train", SIZE, seed=1)
    return default_collate([dataset[k] for k in range(count)])


def test_mouth_weight_raises_the_l2_of_mouth_errors(data_dir):
    batch = _batch(data_dir)
    torch.manual_seed(0)
    model = TalkingHead(preset("tiny", image_size=SIZE))
    plain = Objective(model, Critics(), TrainConfig("dynamic", str(data_dir), init="x", lpips_weight=0.0))
    weighted = Objective(model, Critics(), TrainConfig("dynamic", str(data_dir), init="x", lpips_weight=0.0, mouth_weight=10.0))
    a = plain(batch, torch.Generator().manual_seed(0))["l2"]
    b = weighted(batch, torch.Generator().manual_seed(0))["l2"]
    assert b > 1.05 * a


@pytest.mark.parametrize("term", ["lip", "lip_gap"])
def test_the_lip_losses_train_the_dynamic_decoder_to_move_the_lips(data_dir, term):
    batch = _batch(data_dir, 4)
    torch.manual_seed(0)
    model = TalkingHead(preset("tiny", image_size=SIZE))
    config = TrainConfig("dynamic", str(data_dir), init="x", lpips_weight=0.0, depth_smoothness_weight=0.0, **{f"{term}_weight": 2.0})
    terms = Objective(model, Critics(), config)(batch, torch.Generator().manual_seed(0))
    assert terms[term] > 0 and ({"lip", "lip_gap"} - {term}).isdisjoint(terms)
    torch.testing.assert_close(terms["total"], terms["l2"] + 2.0 * terms[term])
    optimizer = torch.optim.Adam(model.dynamic.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        # The lip term alone: it needs no render, so the steps are cheap.
        loss = lip_terms(predict(model, batch, dynamic=True), batch, SIZE, config)[term]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


def test_the_still_face_term_measures_the_audio_offsets_in_pixel_widths(data_dir):
    batch = _batch(data_dir, 4)
    torch.manual_seed(0)
    model = TalkingHead(preset("tiny", image_size=SIZE))
    config = TrainConfig("dynamic", str(data_dir), init="x", lpips_weight=0.0, depth_smoothness_weight=0.0, still_weight=0.5)
    objective = Objective(model, Critics(), config)
    # An untrained decoder leaves the head static: nothing to pay.
    assert objective(batch, torch.Generator().manual_seed(0))["still"].item() == 0
    with torch.no_grad():
        model.dynamic.conv_out.bias.copy_(torch.tensor([1e-3, 0.0, 0.0]))
    terms = objective(batch, torch.Generator().manual_seed(0))
    torch.testing.assert_close(terms["total"], terms["l2"] + 0.5 * terms["still"])
    # Every splat moved by max_offset * tanh(1e-3) along x: that length in each one's own pixel widths.
    prediction = predict(model, batch, dynamic=True)
    shift = model.config.dynamic.max_offset * np.tanh(1e-3)
    pixels = prediction.encoded.maps.depth / (batch["intrinsics_i"][:, 0, None, None, None] * SIZE)
    expected = still_face_loss(torch.cat([shift / pixels, 0 * pixels, 0 * pixels], 1), batch["landmarks_i"], batch["has_landmarks_i"])
    torch.testing.assert_close(still_term(prediction, batch), expected, rtol=1e-3, atol=0)
    assert 0 < expected.item()


def test_lip_and_mouth_settings_are_checked():
    with pytest.raises(ValueError, match=r"lip_weight > 0 weighs the audio offsets: it belongs to stage II"):
        TrainConfig("static", "d", lip_weight=1.0)
    with pytest.raises(ValueError, match=r"lip_gap_weight > 0 weighs the audio offsets: it belongs to stage II"):
        TrainConfig("static", "d", lip_gap_weight=1.0)
    with pytest.raises(ValueError, match=r"still_weight > 0 weighs the audio offsets: it belongs to stage II"):
        TrainConfig("static", "d", still_weight=1.0)
    with pytest.raises(ValueError, match="mouth_weight must be at least 1"):
        TrainConfig("static", "d", mouth_weight=0.5)
    with pytest.raises(ValueError, match="lip_weight must not be negative"):
        TrainConfig("dynamic", "d", init="x", lip_weight=-1.0)


# ------------------------------------------------------------------------------- audio


def test_utterance_normalisation_and_its_spec():
    samples = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32)
    extractor = F.make_extractor("mel", normalise="utterance")
    out = extractor(samples)
    np.testing.assert_allclose(out.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(out.std(0), 1, atol=1e-3)
    np.testing.assert_allclose(out, F.normalise_utterance(F.make_extractor("mel")(samples)))
    # A constant dimension stays at zero rather than amplifying rounding noise.
    assert np.abs(F.normalise_utterance(np.full((10, 2), 3.0))).max() == 0
    spec = extractor.spec
    assert spec == F.FeatureSpec("mel", None, 80, normalise="utterance")
    assert F.FeatureSpec.from_json(spec.to_json()) == spec
    # Specs written before normalisation existed read as un-normalised.
    assert F.FeatureSpec.from_json({"extractor": "mel", "model": None, "dim": 80}).normalise == "none"
    assert spec.describe() == "mel (80-d, 50 Hz, utterance-normalised)"
    with pytest.raises(SplatPortraitError) as info:
        F.check_compatible(spec, F.FeatureSpec("mel", None, 80))
    assert str(info.value).endswith("recompute them with --audio-features mel --audio-norm utterance")
    with pytest.raises(SplatPortraitError, match="unknown audio normalisation 'peak'; choose one of none, utterance, utterance-gated"):
        F.make_extractor("mel", normalise="peak")


def test_synthetic_pauses_are_room_noise_not_digital_silence():
    clip = synthesize_clip(3, SynthConfig(seconds=2.0, size=SIZE, speech="voiced"))
    mel = F.make_extractor("mel")(clip.audio)
    assert (mel <= np.log(1e-6) + 1e-3).mean() == 0
    noise = room_noise(np.random.default_rng(0), 16000)
    level = 20 * np.log10(np.sqrt(np.mean(noise**2)))
    assert -60 <= level <= -45
    assert len(room_noise(np.random.default_rng(0), 0)) == 0
