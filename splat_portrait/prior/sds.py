"""Score distillation from a 2D face prior (the paper's Sec. 3.3).

A training step renders the predicted splats at a random extreme pose (a point of the bullet path,
:func:`bullet_poses`, or of a yaw x pitch box, :func:`random_extreme_poses`; splats live in the source
view, so the viewmat is ``camera.relative_pose(c2w_source, c2w_extreme)``), brings the render into
the prior's framing and range (:func:`aligned_crop` of the box preprocessing would cut around the
face :func:`landmark_boxes` finds in it, or :func:`ffhq_crop` as it is; values in [-1, 1]), and
adds :func:`score_distillation_loss`: noise the render, denoise it with Euler steps of the prior's
sampler, and pull the render towards the result.

Which noise levels "60-80% of the noise range" means: the band is a fraction of the sampler's
schedule (eq. 3), counted along its steps from ``sigma_max`` (0%) to ``sigma_min`` (100%). With
EDM's defaults (N = 18) the 60-80% band starts the denoising at sigma ~0.1-1, i.e. after 60-80% of
a full sampling run, so the face keeps its overall appearance and the prior re-synthesises texture.
The other reading (counting from ``sigma_min``) would start at sigma ~6-24, which for images of
standard deviation 0.5 is nearly pure noise and would replace the face, contradicting the paper's
observation that this band "preserves the portrait's overall appearance".
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from splat_portrait.camera import orbit_around
from splat_portrait.face.crop import ffhq_box
from splat_portrait.face.detect import detect_landmarks
from splat_portrait.prior.edm import Denoiser, EDMSchedule, euler_step


def band_indices(schedule: EDMSchedule, band: tuple[float, float] = (0.6, 0.8)) -> range:
    """The schedule indices ``i`` whose position ``i / (N - 1)`` lies in ``band`` (see module docstring)."""
    lo, hi = band
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"the noise band must satisfy 0 <= low <= high <= 1, got {band}")
    last = schedule.num_steps - 1
    # The tolerance keeps e.g. 0.6 * 10 = 6.000000000000001 from excluding index 6.
    first, final = math.ceil(lo * last - 1e-9), math.floor(hi * last + 1e-9)
    if first > final:
        raise ValueError(f"a {schedule.num_steps}-step schedule has no noise level in the band {band}; use more steps")
    return range(first, final + 1)


@torch.no_grad()
def denoise_from_band(
    x_clean: Tensor,
    denoiser: Denoiser,
    schedule: EDMSchedule,
    generator: torch.Generator | None = None,
    band: tuple[float, float] = (0.6, 0.8),
    num_euler_steps: int | None = None,
) -> tuple[Tensor, int]:
    """Noise ``x_clean`` (B, 3, R, R) in [-1, 1] at a level from ``band`` and denoise it back to sigma = 0.

    One start index ``i`` (uniform over :func:`band_indices`) serves the whole batch: ``x = x_clean +
    sigma_i * eps``, then Euler steps (eq. 4) through ``sigma_{i+1}, ..., sigma_{N-1}, 0``. With
    ``num_euler_steps = k`` only the first ``k - 1`` of those levels are visited and the k-th step
    goes straight to 0, so the result is always noise-free. Returns ``(x_denoised, i)``, computed
    without autograd.
    """
    if num_euler_steps is not None and num_euler_steps < 1:
        raise ValueError(f"num_euler_steps must be >= 1, got {num_euler_steps}")
    indices = band_indices(schedule, band)
    device = generator.device if generator is not None else x_clean.device
    start = indices[int(torch.randint(len(indices), (), generator=generator, device=device))]
    sigmas = schedule.sigmas(torch.float64).tolist()[start:]
    if num_euler_steps is not None and num_euler_steps < len(sigmas) - 1:
        sigmas = sigmas[:num_euler_steps] + [0.0]
    noise = torch.randn(x_clean.shape, generator=generator, device=device).to(x_clean)
    x = x_clean.detach() + sigmas[0] * noise
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        x = euler_step(denoiser, x, sigma, sigma_next)
    return x, start


def score_distillation_loss(
    x_clean: Tensor,
    denoiser: Denoiser,
    schedule: EDMSchedule,
    generator: torch.Generator | None = None,
    band: tuple[float, float] = (0.6, 0.8),
    num_euler_steps: int | None = None,
) -> Tensor:
    """``mean((x_clean - stopgrad(x_denoised))^2)``: gradients reach the render, never the denoiser.

    Arguments as :func:`denoise_from_band`; ``x_clean`` is the cropped render in [-1, 1].
    """
    denoised, _ = denoise_from_band(x_clean, denoiser, schedule, generator, band, num_euler_steps)
    return (x_clean - denoised).square().mean()


def random_extreme_poses(
    c2w: Tensor, generator: torch.Generator | None = None, yaw_deg: float = 45.0, pitch_deg: float = 12.5
) -> Tensor:
    """Cameras orbiting each source camera ``c2w`` (B, 4, 4) by yaw and pitch uniform in +-yaw_deg, +-pitch_deg."""
    device = generator.device if generator is not None else c2w.device
    u = torch.rand((2, *c2w.shape[:-2]), generator=generator, device=device).to(c2w)
    yaw = (2 * u[0] - 1) * math.radians(yaw_deg)
    pitch = (2 * u[1] - 1) * math.radians(pitch_deg)
    return orbit_around(c2w, yaw, pitch)


def ffhq_crop(images: Tensor, size: int, crop: float = 1.0) -> Tensor:
    """The prior's view of renders (B, C, H, W): a centred square of side ``crop * min(H, W)``, resized to ``size``.

    Assumes the renders use the training frames' framing: frames are FFHQ-style aligned crops
    (preprocessing aligns them, and the default camera reproduces the FFHQ/EG3D framing), and the
    prior is trained on those frames, so with the default ``crop = 1`` this is only a resize. A
    render at an orbited pose keeps the head at the image centre, which is what FFHQ's alignment
    does too. Differentiable; antialiased when shrinking.
    """
    if not 0.0 < crop <= 1.0:
        raise ValueError(f"crop must be in (0, 1], got {crop}")
    h, w = images.shape[-2:]
    side = max(1, round(crop * min(h, w)))
    top, left = (h - side) // 2, (w - side) // 2
    return _resize_square(images[..., top : top + side, left : left + side], size)


def _resize_square(square: Tensor, size: int) -> Tensor:
    """Square images resized to ``size`` (antialiased when shrinking); unchanged at that size already."""
    if square.shape[-1] == size:
        return square
    return F.interpolate(square, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def bullet_poses(c2w: Tensor, generator: torch.Generator | None = None, yaw_deg: float = 45.0, pitch_deg: float = 12.5) -> Tensor:
    """Cameras at uniformly random points of the paper's bullet path around each source camera ``c2w`` (B, 4, 4).

    The path is the figure-eight ``yaw = yaw_deg sin(phi)``, ``pitch = pitch_deg sin(2 phi)``
    (the ``bullet`` camera trajectory); uniform ``phi`` spends most draws near the extreme yaws,
    where the training frames show nothing, instead of spreading them over a box.
    """
    device = generator.device if generator is not None else c2w.device
    phi = 2 * math.pi * torch.rand(c2w.shape[:-2], generator=generator, device=device).to(c2w)
    return orbit_around(c2w, math.radians(yaw_deg) * torch.sin(phi), math.radians(pitch_deg) * torch.sin(2 * phi))


def aligned_crop(images: Tensor, boxes: Tensor, size: int) -> Tensor:
    """Squares ``boxes`` (B, 3) = (cx, cy, side) in pixels cut out of ``images`` (B, C, H, W) and resized to ``size``.

    The differentiable counterpart of preprocessing's crop: bilinear resampling at the image's own
    resolution, reflecting the image where a box leaves it (as FFHQ does), then an antialiased
    resize to the prior's size. Gradients reach the images, not the boxes.
    """
    b, _, h, w = images.shape
    cx, cy, side = boxes.detach().to(images).unbind(-1)
    zero = torch.zeros_like(cx)
    # affine_grid maps output coordinates in [-1, 1] onto input ones; the input's [-1, 1] spans its pixels' edges.
    theta = torch.stack([
        torch.stack([side / w, zero, 2 * cx / w - 1], -1),
        torch.stack([zero, side / h, 2 * cy / h - 1], -1),
    ], -2)  # fmt: skip
    grid = F.affine_grid(theta, (b, images.shape[1], h, w), align_corners=False)
    return _resize_square(F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False), size)


def landmark_boxes(images: Tensor) -> tuple[Tensor, Tensor]:
    """The preprocessing crop box (B, 3) of the face dlib finds in each render (B, 3, H, W) in [0, 1], and which had one (B,).

    A render without a detectable face keeps the whole image, the framing every render starts from.
    """
    b, _, h, w = images.shape
    pixels = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    boxes = torch.tensor([[w / 2, h / 2, float(min(h, w))]] * b, dtype=torch.float64)
    found = torch.zeros(b, dtype=torch.bool)
    for i, image in enumerate(pixels):
        landmarks = detect_landmarks(image)
        if landmarks is not None:
            boxes[i] = torch.from_numpy(ffhq_box(landmarks.astype(np.float64)))
            found[i] = True
    return boxes.to(images.device), found
