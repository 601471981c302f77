import math

import pytest
import torch
from typer.testing import CliRunner

from splat_portrait import camera
from splat_portrait.cli.app import app
from splat_portrait.errors import SplatPortraitError
from splat_portrait.models import TalkingHead, preset, save_checkpoint
from splat_portrait.models.config import UNetConfig
from splat_portrait.prior import (
    EDMDenoiser,
    EDMDenoiserConfig,
    EDMSchedule,
    band_indices,
    denoise_from_band,
    edm_loss,
    euler_step,
    ffhq_crop,
    load_denoiser,
    preconditioning,
    random_extreme_poses,
    score_distillation_loss,
)
from splat_portrait.prior.edm import DENOISER_KINDS

# A denoiser small enough for many steps per second on two CPU cores.
MICRO = EDMDenoiserConfig(
    unet=UNetConfig(image_size=8, base_channels=8, channel_mults=(1, 2), attention_resolutions=(4,), embedding_dim=16),
    noise_embedding_dim=8,
)


def closed_form_sigma(i: int, s: EDMSchedule) -> float:
    a, b = s.sigma_max ** (1 / s.rho), s.sigma_min ** (1 / s.rho)
    return (a + i / (s.num_steps - 1) * (b - a)) ** s.rho


@pytest.mark.parametrize(
    "schedule", [EDMSchedule(), EDMSchedule(sigma_min=0.01, sigma_max=10.0, rho=3.0, num_steps=5)], ids=["edm", "custom"]
)
def test_sigma_schedule_follows_eq3(schedule):
    sigmas = schedule.sigmas(torch.float64)
    assert sigmas.shape == (schedule.num_steps + 1,)
    expected = [closed_form_sigma(i, schedule) for i in range(schedule.num_steps)] + [0.0]
    assert sigmas.tolist() == pytest.approx(expected, rel=1e-12, abs=0)
    assert sigmas[0].item() == pytest.approx(schedule.sigma_max, rel=1e-12)
    assert sigmas[-2].item() == pytest.approx(schedule.sigma_min, rel=1e-12)
    assert sigmas[-1].item() == 0.0
    assert bool((sigmas[1:] < sigmas[:-1]).all())


def test_edm_default_schedule_reference_values():
    sigmas = EDMSchedule().sigmas(torch.float64).tolist()
    # A few levels of EDM's 18-step schedule (rho = 7); 11-13 are the SDS band's starting levels.
    assert sigmas[1] == pytest.approx(57.58598, rel=1e-6)
    assert sigmas[11] == pytest.approx(0.585348, rel=1e-5)
    assert sigmas[13] == pytest.approx(0.139516, rel=1e-5)
    assert sigmas[16] == pytest.approx(0.0075280, rel=1e-4)
    assert EDMSchedule().sigmas().dtype == torch.float32


def test_schedule_rejects_bad_ranges():
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        EDMSchedule(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="num_steps >= 2"):
        EDMSchedule(num_steps=1)


def test_preconditioning_coefficients_at_known_sigmas():
    c = preconditioning(torch.tensor([0.5, 0.0 + 1e-8, 3.0], dtype=torch.float64), sigma_data=0.5)
    # sigma = sigma_data: half skip, output scale sigma_data/sqrt(2), input scale 1/sqrt(2 sigma_data^2).
    assert c.c_skip[0].item() == pytest.approx(0.5)
    assert c.c_out[0].item() == pytest.approx(0.5 / math.sqrt(2))
    assert c.c_in[0].item() == pytest.approx(math.sqrt(2))
    assert c.c_noise[0].item() == pytest.approx(math.log(0.5) / 4)
    # sigma -> 0: the denoiser passes its input through.
    assert c.c_skip[1].item() == pytest.approx(1.0)
    assert c.c_out[1].item() == pytest.approx(0.0, abs=1e-7)
    assert c.c_skip[2].item() == pytest.approx(0.25 / 9.25)
    assert c.c_out[2].item() == pytest.approx(1.5 / math.sqrt(9.25))
    assert c.c_in[2].item() == pytest.approx(1 / math.sqrt(9.25))


def test_denoiser_applies_the_preconditioning():
    model = EDMDenoiser(MICRO)
    with torch.no_grad():
        model.unet.conv_out.weight.zero_()
        model.unet.conv_out.bias.fill_(1.0)  # F(.) == 1 everywhere
    x = torch.randn(2, 3, 8, 8)
    sigma = torch.tensor([0.3, 2.0])
    c = preconditioning(sigma, 0.5)
    expected = c.c_skip[:, None, None, None] * x + c.c_out[:, None, None, None]
    torch.testing.assert_close(model(x, sigma), expected)
    torch.testing.assert_close(model(x, 0.3)[0], expected[0])


def test_euler_step_on_single_point_data_is_exact():
    x0 = torch.tensor([[0.3, -0.7, 0.1]], dtype=torch.float64)

    def ideal(x, sigma):  # data = {x0}: the ideal denoiser ignores its input
        return x0.expand_as(x)

    x = torch.tensor([[1.5, 2.0, -3.0]], dtype=torch.float64)
    sigmas = EDMSchedule().sigmas(torch.float64).tolist()
    step = euler_step(ideal, x, sigmas[4], sigmas[5])
    torch.testing.assert_close(step, x0 + sigmas[5] / sigmas[4] * (x - x0), rtol=1e-14, atol=1e-14)
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        x = euler_step(ideal, x, sigma, sigma_next)
    torch.testing.assert_close(x, x0, rtol=0, atol=1e-14)  # the last step (to sigma = 0) lands on D(x)
    with pytest.raises(ValueError, match="positive noise level"):
        euler_step(ideal, x, 0.0, 0.0)


def test_euler_steps_converge_to_the_gaussian_ode_solution():
    # Data N(0, s^2): D(x; sigma) = s^2 / (s^2 + sigma^2) x and the probability-flow ODE
    # dx/dsigma = sigma x / (s^2 + sigma^2) has x(sigma) = x(sigma0) sqrt((s^2 + sigma^2) / (s^2 + sigma0^2)).
    s2 = 0.25

    def gaussian(x, sigma):
        return s2 / (s2 + sigma[:, None] ** 2) * x

    x_start = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    sigma0, sigma1 = 2.0, 0.1
    exact = x_start * math.sqrt((s2 + sigma1**2) / (s2 + sigma0**2))
    errors = []
    for steps in (50, 100, 200):
        grid = torch.linspace(sigma0, sigma1, steps + 1, dtype=torch.float64).tolist()
        x = x_start
        for sigma, sigma_next in zip(grid[:-1], grid[1:]):
            x = euler_step(gaussian, x, sigma, sigma_next)
        errors.append((x - exact).abs().max().item())
    assert errors[-1] < 5e-3
    # First order: halving the step size halves the error.
    assert errors[0] / errors[1] == pytest.approx(2.0, rel=0.1)
    assert errors[1] / errors[2] == pytest.approx(2.0, rel=0.1)


def test_noise_band_indices():
    assert band_indices(EDMSchedule()) == range(11, 14)
    # 0.6 * 10 is 6.000000000000001 in floating point; index 6 still belongs to the band.
    assert band_indices(EDMSchedule(num_steps=11)) == range(6, 9)
    assert band_indices(EDMSchedule(num_steps=101), (0.0, 1.0)) == range(0, 101)
    with pytest.raises(ValueError, match="a 3-step schedule has no noise level in the band"):
        band_indices(EDMSchedule(num_steps=3))
    with pytest.raises(ValueError, match="0 <= low <= high <= 1"):
        band_indices(EDMSchedule(), (0.8, 0.6))


class Recorder:
    """A denoiser that records its calls and answers a fixed image."""

    def __init__(self, answer):
        self.answer, self.sigmas, self.inputs = answer, [], []

    def __call__(self, x, sigma):
        self.sigmas.append(sigma[0].item())
        self.inputs.append(x.clone())
        return self.answer.expand_as(x)


def test_denoising_starts_in_the_band_and_follows_the_schedule():
    schedule = EDMSchedule()
    sigmas = schedule.sigmas(torch.float64).tolist()
    x_clean = torch.zeros(4, 3, 16, 16)
    generator = torch.Generator().manual_seed(0)
    starts = set()
    for _ in range(30):
        recorder = Recorder(x_clean)
        _, start = denoise_from_band(x_clean, recorder, schedule, generator)
        starts.add(start)
        assert recorder.sigmas == pytest.approx(sigmas[start:-1], rel=1e-6)
        # The first input is x_clean plus sigma_start times standard normal noise.
        noise = recorder.inputs[0] / sigmas[start]
        assert abs(noise.mean().item()) < 0.1 and noise.std().item() == pytest.approx(1.0, rel=0.1)
    assert starts == {11, 12, 13}
    # Truncated: k Euler steps, the last one straight to sigma = 0.
    recorder = Recorder(x_clean + 1)
    denoised, start = denoise_from_band(x_clean, recorder, schedule, generator, num_euler_steps=2)
    assert recorder.sigmas == pytest.approx(sigmas[start : start + 2], rel=1e-6)
    torch.testing.assert_close(denoised, x_clean + 1)


def test_sds_is_zero_when_the_prior_returns_the_render():
    x_clean = (torch.rand(2, 3, 8, 8) * 2 - 1).requires_grad_()
    loss = score_distillation_loss(x_clean, Recorder(x_clean.detach()), EDMSchedule(), torch.Generator().manual_seed(1))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.count_nonzero(x_clean.grad) == 0


def test_sds_gradient_pulls_the_render_towards_the_denoised_image():
    x_clean = (torch.rand(2, 3, 8, 8) * 2 - 1).requires_grad_()
    target = torch.rand(2, 3, 8, 8) * 2 - 1
    loss = score_distillation_loss(x_clean, Recorder(target), EDMSchedule(), torch.Generator().manual_seed(2))
    loss.backward()
    torch.testing.assert_close(loss, (x_clean - target).square().mean())
    torch.testing.assert_close(x_clean.grad, 2 * (x_clean - target).detach() / x_clean.numel())
    stepped = x_clean.detach() - 100.0 * x_clean.grad
    assert (stepped - target).norm() < (x_clean.detach() - target).norm()


def test_sds_sends_no_gradient_into_the_denoiser():
    denoiser = EDMDenoiser(MICRO)
    x_clean = (torch.rand(2, 3, 8, 8) * 2 - 1).requires_grad_()
    loss = score_distillation_loss(x_clean, denoiser, EDMSchedule(), torch.Generator().manual_seed(3), num_euler_steps=2)
    loss.backward()
    assert loss.item() > 0
    assert x_clean.grad is not None and torch.count_nonzero(x_clean.grad) > 0
    assert all(p.grad is None for p in denoiser.parameters())


def test_random_extreme_poses_stay_in_the_yaw_and_pitch_ranges():
    source = camera.default_c2w((2000,))
    poses = random_extreme_poses(source, torch.Generator().manual_seed(4))
    position = poses[:, :3, 3]
    radius = position.norm(dim=-1)
    torch.testing.assert_close(radius, torch.full_like(radius, camera.DEFAULT_RADIUS))
    # World y points down: the camera rises (y < 0) for positive pitch; it moves to +x for positive yaw.
    pitch = torch.rad2deg(torch.asin(-position[:, 1] / radius))
    yaw = torch.rad2deg(torch.atan2(position[:, 0], -position[:, 2]))
    assert yaw.abs().max() <= 45.0 + 1e-3 and yaw.abs().max() > 44.0
    assert pitch.abs().max() <= 12.5 + 1e-3 and pitch.abs().max() > 12.0
    assert (yaw > 0).float().mean().item() == pytest.approx(0.5, abs=0.05)
    # Cameras keep looking at the head.
    torch.testing.assert_close(poses[:, :3, 2], -position / radius[:, None], rtol=1e-5, atol=1e-5)
    again = random_extreme_poses(source, torch.Generator().manual_seed(4))
    assert torch.equal(poses, again)


def test_ffhq_crop():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    assert torch.equal(ffhq_crop(images, 8), images)
    assert torch.equal(ffhq_crop(images, 4, crop=0.5), images[..., 2:6, 2:6])
    constant = torch.full((1, 3, 16, 16), 0.25, requires_grad=True)
    resized = ffhq_crop(constant, 6)
    assert resized.shape == (1, 3, 6, 6)
    torch.testing.assert_close(resized, torch.full((1, 3, 6, 6), 0.25))
    resized.sum().backward()
    assert constant.grad.sum().item() == pytest.approx(3 * 36)
    with pytest.raises(ValueError, match=r"crop must be in \(0, 1\]"):
        ffhq_crop(images, 4, crop=0.0)


def test_edm_training_lowers_the_loss_on_a_toy_set():
    gen = torch.Generator().manual_seed(5)
    # Toy data: 4 smooth images (horizontal and vertical ramps of either sign).
    ramp = torch.linspace(-0.8, 0.8, 8)
    base = torch.stack([ramp.expand(8, 8), ramp[:, None].expand(8, 8)])
    toy = torch.cat([base, -base])[:, None].expand(4, 3, 8, 8)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = EDMDenoiser(MICRO)

    def evaluate() -> float:
        with torch.no_grad():
            return edm_loss(model, toy.repeat(16, 1, 1, 1), torch.Generator().manual_seed(99)).item()

    before = evaluate()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(40):
        loss = edm_loss(model, toy.repeat(4, 1, 1, 1), gen)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = evaluate()
    assert after < 0.75 * before, (before, after)


def test_denoiser_checkpoint_round_trip(tmp_path):
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = EDMDenoiser(MICRO)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
    path = tmp_path / "prior.ckpt"
    save_checkpoint(path, model, {"step": 3}, kinds=DENOISER_KINDS)
    loaded = load_denoiser(path)
    assert isinstance(loaded, EDMDenoiser) and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    assert loaded.config == model.config
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    sigma = torch.tensor([0.01, 0.5, 30.0])
    with torch.no_grad():
        assert torch.equal(loaded(x, sigma), model.eval()(x, sigma))


def test_load_denoiser_refuses_a_talking_head_checkpoint(tmp_path):
    path = tmp_path / "head.ckpt"
    save_checkpoint(path, TalkingHead(preset("tiny")))
    with pytest.raises(SplatPortraitError) as info:
        load_denoiser(path)
    assert str(info.value) == f"{path} holds a model of kind 'talking-head', but this needs a checkpoint of kind 'edm-denoiser'"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    args = ["synth", "-o", str(root), "--clips", "2", "--seconds", "0.2", "--size", "32", "--speech", "voiced"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return root


def test_train_prior_cli_end_to_end(data_dir, tmp_path):
    out = tmp_path / "prior.ckpt"
    args = ["train-prior", str(data_dir), "-o", str(out), "--steps", "3", "--batch-size", "2", "--resolution", "16",
            "--checkpoint-every", "2", "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    prior = load_denoiser(out)
    assert prior.resolution == 16
    assert prior.config.unet.base_channels == preset("tiny").generator.unet.base_channels
    payload = torch.load(out, weights_only=True)
    assert payload["kind"] == "edm-denoiser"
    assert payload["training"]["step"] == 3 and payload["training"]["samples"] == 6
    assert payload["config"]["schedule"] == {"sigma_min": 0.002, "sigma_max": 80.0, "rho": 7.0, "num_steps": 18}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prior.ckpt"]
    # The trained prior plugs straight into score distillation.
    render = torch.rand(1, 3, 32, 32, requires_grad=True)
    loss = score_distillation_loss(
        ffhq_crop(render * 2 - 1, prior.resolution), prior, prior.config.schedule, num_euler_steps=1
    )
    loss.backward()
    assert torch.isfinite(loss) and render.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--preset", "huge"], "error: unknown prior preset 'huge'; choose one of tiny, small"),
        (["--resolution", "18"], "error: --resolution 18 does not suit the tiny preset: image_size 18 must be divisible by 2^2 for 3 levels"),
    ],
)  # fmt: skip
def test_train_prior_cli_errors(tmp_path, extra, message):
    result = CliRunner().invoke(app, ["train-prior", str(tmp_path), "-o", str(tmp_path / "p.ckpt"), *extra])
    assert result.exit_code == 1
    assert message in " ".join(result.output.split())


def test_train_prior_cli_without_data(tmp_path):
    result = CliRunner().invoke(app, ["train-prior", str(tmp_path / "nothing"), "-o", str(tmp_path / "p.ckpt")])
    assert result.exit_code == 1
    assert "error: data directory" in result.output and "does not exist" in result.output
