"""Image metrics (PSNR, SSIM, LPIPS), FID and the metric registry, on inputs with known answers."""

import math
import re

import numpy as np
import pytest
import scipy.linalg
import torch
from skimage.metrics import structural_similarity

from splat_portrait.errors import SplatPortraitError
from splat_portrait.metrics import METRICS, MetricOptions, Unavailable, build_metric
from splat_portrait.metrics.availability import MetricUnavailable
from splat_portrait.metrics.fid import FEATURE_DIM, InceptionFeatures, fid_from_features, frechet_distance
from splat_portrait.metrics.image import channels_first, gaussian_window, psnr, ssim
from splat_portrait.metrics.lpips import Lpips

ALEXNET = "alexnet-owt-7be5be79.pth"
ALEXNET_URL = f"https://download.pytorch.org/models/{ALEXNET}"
INCEPTION = "pt_inception-2015-12-05-6726825d.pth"


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch cache, so weights are found only where a test puts them (and nothing is downloaded)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    return checkpoints


def _images(seed, shape=(2, 3, 32, 40)):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- PSNR


def test_psnr_of_identical_images_is_infinite():
    x = _images(0)
    assert torch.equal(psnr(x, x), torch.full((2,), math.inf))


def test_psnr_of_a_known_noise_level():
    target = torch.full((1, 3, 16, 16), 0.5)
    checker = (torch.arange(16)[:, None] + torch.arange(16)) % 2 * 2 - 1  # +-1, mean square exactly 1
    pred = target + 0.1 * checker  # MSE 0.01 -> 20 dB
    assert psnr(pred, target).item() == pytest.approx(20.0, abs=1e-4)
    grey = torch.full((1, 3, 256, 256), 0.5, dtype=torch.float64)
    noise = torch.randn(grey.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert psnr(grey + 0.05 * noise, grey).item() == pytest.approx(20 * math.log10(1 / 0.05), abs=0.05)


def test_psnr_accepts_channels_last_and_gives_per_image_values():
    target = torch.full((2, 8, 9, 3), 0.5)
    pred = target.clone()
    pred[1] += 0.1
    values = psnr(pred, target)
    assert values[0] == math.inf and values[1].item() == pytest.approx(20.0, abs=1e-4)
    assert torch.equal(channels_first(target), target.permute(0, 3, 1, 2))


@pytest.mark.parametrize(
    ("pred", "target", "message"),
    [
        (torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9), "images differ in shape"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "float tensors"),
        (torch.full((1, 3, 8, 8), 255.0), torch.zeros(1, 3, 8, 8), r"must lie in \[0, 1\], got values in \[255, 255\]"),
        (torch.zeros(1, 3, 8, 3), torch.zeros(1, 3, 8, 3), "cannot tell the channel axis"),
        (torch.zeros(1, 4, 8, 8), torch.zeros(1, 4, 8, 8), "3 colour channels"),
    ],
)
def test_image_metrics_refuse_bad_inputs(pred, target, message):
    with pytest.raises(ValueError, match=message):
        psnr(pred, target)


# ---------------------------------------------------------------- SSIM


def test_ssim_window_is_the_standard_gaussian():
    taps = gaussian_window(dtype=torch.float64)
    assert len(taps) == 11 and taps.sum().item() == pytest.approx(1.0)
    assert (taps[4] / taps[5]).item() == pytest.approx(math.exp(-0.5 / 1.5**2))


def test_ssim_of_identical_images_is_one():
    x = _images(2)
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-6)


def test_ssim_of_two_flat_images_is_the_luminance_term():
    # No variance anywhere: SSIM = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1).
    a, b = torch.full((1, 3, 20, 20), 0.2), torch.full((1, 3, 20, 20), 0.6)
    c1 = 0.01**2
    assert ssim(a, b).item() == pytest.approx((2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1), abs=1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ssim_matches_scikit_image(dtype):
    x = _images(3, (3, 3, 37, 50)).to(dtype)
    y = (x + 0.15 * torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=dtype)).clamp(0, 1)
    expected = [
        structural_similarity(
            a.permute(1, 2, 0).double().numpy(), b.permute(1, 2, 0).double().numpy(),
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1,
        )  # fmt: skip
        for a, b in zip(x, y)
    ]
    result = ssim(x, y)
    assert result.dtype == dtype
    assert np.allclose(result.numpy(), expected, atol=1e-4 if dtype == torch.float32 else 1e-10)
    assert torch.allclose(ssim(x.permute(0, 2, 3, 1), y.permute(0, 2, 3, 1)), result)


def test_ssim_needs_the_window_to_fit():
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.zeros(1, 3, 10, 40), torch.zeros(1, 3, 10, 40))


# ---------------------------------------------------------------- LPIPS


def test_lpips_without_backbone_weights_says_which_file_goes_where(torch_home):
    with pytest.raises(MetricUnavailable) as err:
        Lpips("alex")
    assert str(err.value) == f"LPIPS (alex) needs {ALEXNET}: download {ALEXNET_URL} and put it in {torch_home}"
    assert not any(torch_home.iterdir())


def test_lpips_loads_the_cached_backbone_and_scores(torch_home):
    import torchvision

    # Any backbone weights give LPIPS(x, x) = 0; these random ones stand in for ImageNet's.
    backbone = torchvision.models.alexnet(weights=None).state_dict()
    torch.save(backbone, torch_home / ALEXNET)
    metric = Lpips("alex")
    assert metric.name == "lpips-v0.1-alex"
    loaded = metric.model.net.state_dict()
    assert torch.equal(loaded["slice1.0.weight"], backbone["features.0.weight"])
    assert torch.equal(loaded["slice5.10.weight"], backbone["features.10.weight"])
    x, y = _images(5, (2, 3, 64, 64)), _images(6, (2, 3, 64, 64))
    assert torch.equal(metric(x, x), torch.zeros(2))
    distance = metric(x, y)
    assert distance.shape == (2,) and (distance > 0).all()
    assert torch.allclose(metric(x.permute(0, 2, 3, 1), y.permute(0, 2, 3, 1)), distance)


def test_lpips_with_a_broken_backbone_file_is_unavailable(torch_home):
    (torch_home / ALEXNET).write_bytes(b"not a checkpoint")
    expected = f"could not load {re.escape(str(torch_home / ALEXNET))} .*replace it with {re.escape(ALEXNET_URL)}"
    with pytest.raises(MetricUnavailable, match=expected):
        Lpips("alex")


# ---------------------------------------------------------------- FID


def _rotation(dim, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    return q


def test_frechet_distance_of_one_dimensional_gaussians():
    # (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[9.0]])) == pytest.approx(
        9.0 + 1.0
    )


def test_frechet_distance_of_gaussians_with_commuting_covariances():
    # Shared eigenvectors: |m1 - m2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
    q = _rotation(5, 0)
    a, b = np.array([1.0, 2.0, 3.0, 4.0, 0.5]), np.array([4.0, 2.0, 1.0, 9.0, 0.5])
    mean_a, mean_b = np.arange(5.0), np.arange(5.0) + 0.5
    expected = 5 * 0.25 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mean_a, q @ np.diag(a) @ q.T, mean_b, q @ np.diag(b) @ q.T) == pytest.approx(expected)


def test_frechet_distance_of_general_gaussians_matches_the_symmetric_form():
    rng = np.random.default_rng(1)
    m = rng.standard_normal((6, 6))
    n = rng.standard_normal((6, 6))
    cov_a, cov_b = m @ m.T + np.eye(6), n @ n.T + 0.1 * np.eye(6)
    root_a = scipy.linalg.sqrtm(cov_a).real
    # tr((A B)^1/2) = tr((A^1/2 B A^1/2)^1/2), whose argument is symmetric positive definite.
    cross = np.sqrt(np.linalg.eigvalsh(root_a @ cov_b @ root_a)).sum()
    expected = np.trace(cov_a) + np.trace(cov_b) - 2 * cross
    assert frechet_distance(np.zeros(6), cov_a, np.zeros(6), cov_b) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(np.zeros(6), cov_a, np.zeros(6), cov_a) == pytest.approx(0.0, abs=1e-8)


def test_fid_from_sample_features():
    rng = np.random.default_rng(2)
    real = rng.standard_normal((20000, 3))
    assert fid_from_features(real, real) == pytest.approx(0.0, abs=1e-8)
    shifted = rng.standard_normal((20000, 3)) + np.array([1.0, 2.0, 0.0])
    assert fid_from_features(real, shifted) == pytest.approx(5.0, abs=0.1)
    # Fewer samples than dimensions: singular covariances still give a finite distance.
    assert math.isfinite(fid_from_features(rng.standard_normal((4, 10)), rng.standard_normal((4, 10))))
    with pytest.raises(ValueError, match="at least two"):
        fid_from_features(real[:1], real)


def test_fid_without_inception_weights_says_which_file_goes_where(torch_home):
    expected = f"FID needs {INCEPTION}: download https://.*/{INCEPTION} and put it in {re.escape(str(torch_home))}$"
    with pytest.raises(MetricUnavailable, match=expected):
        InceptionFeatures()


def test_fid_features_through_the_cached_inception(torch_home, monkeypatch):
    import pytorch_fid.inception as inception
    import torchvision

    # Random stand-in weights for the FID Inception, saved where the real ones would be.
    with monkeypatch.context() as patch:
        patch.setattr(inception, "load_state_dict_from_url", lambda *args, **kwargs: {})
        patch.setattr(torchvision.models.Inception3, "load_state_dict", lambda self, state: None)
        torch.save(inception.fid_inception_v3().state_dict(), torch_home / INCEPTION)
    features = InceptionFeatures(batch_size=2)(_images(7, (3, 40, 40, 3)))
    assert features.shape == (3, FEATURE_DIM) and features.dtype == np.float64 and np.isfinite(features).all()


# ---------------------------------------------------------------- registry


def test_registry_builds_available_metrics_and_reports_the_rest(torch_home):
    assert METRICS == ("psnr", "ssim", "lpips", "csim", "fid", "lipsync", "mouth", "sync", "views")
    x = _images(8)
    built = {name: build_metric(name) for name in METRICS}
    assert built["psnr"].compute(x, x)[0] == math.inf
    assert built["ssim"].compute(x, x)[0].item() == pytest.approx(1.0)
    assert isinstance(built["lpips"], Unavailable)
    assert str(built["lpips"]).startswith(f"unavailable: LPIPS (alex) needs {ALEXNET}")
    assert isinstance(built["fid"], Unavailable) and INCEPTION in built["fid"].reason
    assert str(built["lipsync"]) == (
        "unavailable: LipSync (SyncNet) needs weights that are not given: download syncnet_v2.model "
        "(see joonson/syncnet_python's download_model.sh) and pass its path as the SyncNet weights"
    )
    assert built["mouth"].implementation.startswith("dlib 68 landmarks")
    assert str(build_metric("csim", MetricOptions(face_recognizer="arcface"))).startswith(
        "unavailable: CSIM (ArcFace) needs weights that are not given"
    )


def test_registry_raises_for_unknown_names_and_broken_user_files(tmp_path):
    with pytest.raises(ValueError, match="unknown metric 'mse'"):
        build_metric("mse")
    broken = tmp_path / "syncnet_v2.model"
    broken.write_bytes(b"garbage")
    with pytest.raises(SplatPortraitError, match="is not a readable PyTorch checkpoint"):
        build_metric("lipsync", MetricOptions(syncnet_weights=broken))
