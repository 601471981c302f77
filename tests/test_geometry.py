"""Geometry priors of training (losses/geometry.py) and the score-distillation views and framing (prior/sds.py)."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from splat_portrait import camera
from splat_portrait.face.crop import ffhq_box
from splat_portrait.face.detect import detect_landmarks
from splat_portrait.losses.geometry import depth_smoothness
from splat_portrait.prior import aligned_crop, bullet_poses, landmark_boxes, random_extreme_poses

DATA = Path(__file__).parents[1] / ".." / "shared" / "data"
S = 24


def ramp(size: int = S) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64), indexing="ij")
    return (2.7 + 0.01 * x - 0.004 * y)[None, None]


def grey(size: int = S) -> torch.Tensor:
    return torch.zeros(1, 3, size, size, dtype=torch.float64)


def test_depth_smoothness_is_zero_on_a_slanted_plane_and_counts_a_staircase_in_pixel_widths():
    intrinsics = camera.default_intrinsics((1,)).double()
    assert depth_smoothness(ramp(), grey(), intrinsics).item() == pytest.approx(0, abs=1e-12)
    # One step of 2 pixel widths between columns 11 and 12: both columns bend by 2 widths (column
    # 12's widths are a little wider, at its depth); the y axis sees no bend, and the mean is over both.
    stairs = torch.full((1, 1, S, S), 2.7, dtype=torch.float64)
    width = 2.7 / (intrinsics[0, 0].item() * S)
    stairs[..., 12:] += 2 * width
    expected = (2 + 2 * 2.7 / (2.7 + 2 * width)) / (S - 2) / 2
    assert depth_smoothness(stairs, grey(), intrinsics).item() == pytest.approx(expected, rel=1e-9)
    # An image edge at the step lowers what it costs.
    edge = grey()
    edge[..., 12:] = 1.0
    assert depth_smoothness(stairs, edge, intrinsics).item() < 0.5 * expected
    with pytest.raises(ValueError, match="at least 3x3"):
        depth_smoothness(stairs[..., :2], grey()[..., :2], intrinsics)


def test_depth_smoothness_gradient_flattens_a_bumpy_surface():
    intrinsics = camera.default_intrinsics((1,))
    depth = (ramp().float() + 0.01 * torch.randn(1, 1, S, S, generator=torch.Generator().manual_seed(0))).requires_grad_()
    optimiser = torch.optim.Adam([depth], lr=5e-4)
    first = None
    for _ in range(30):
        loss = depth_smoothness(depth, grey().float(), intrinsics)
        first = first if first is not None else loss.item()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.7 * first


def yaw_pitch_deg(c2w: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    p = c2w[:, :3, 3].numpy()
    return np.degrees(np.arctan2(p[:, 0], -p[:, 2])), np.degrees(np.arctan2(-p[:, 1], np.hypot(p[:, 0], p[:, 2])))


def test_bullet_poses_follow_the_figure_eight_and_favour_the_extreme_yaws():
    source = camera.default_c2w((4000,))
    yaw, pitch = yaw_pitch_deg(bullet_poses(source, torch.Generator().manual_seed(0)))
    assert np.abs(yaw).max() <= 45 + 1e-3 and np.abs(pitch).max() <= 12.5 + 1e-3
    # On the path, pitch = 12.5 sin(2 phi) with yaw = 45 sin(phi): |pitch| = 25 |sin phi cos phi|.
    s = yaw / 45
    assert np.allclose(np.abs(pitch), 25 * np.abs(s) * np.sqrt(1 - s * s), atol=0.3)
    far = np.mean(np.abs(yaw) > 45 / math.sqrt(2))
    box_yaw, _ = yaw_pitch_deg(random_extreme_poses(source, torch.Generator().manual_seed(0)))
    assert far == pytest.approx(0.5, abs=0.03)
    assert np.mean(np.abs(box_yaw) > 45 / math.sqrt(2)) == pytest.approx(1 - 1 / math.sqrt(2), abs=0.03)


def test_aligned_crop_of_the_whole_image_is_the_image_and_a_shifted_box_shifts_it():
    images = torch.rand(2, 3, S, S, generator=torch.Generator().manual_seed(1), requires_grad=True)
    whole = torch.tensor([[S / 2, S / 2, S]] * 2)
    assert torch.allclose(aligned_crop(images, whole, S), images, atol=1e-6)
    shifted = aligned_crop(images, whole + torch.tensor([3.0, -2.0, 0.0]), S)
    assert torch.allclose(shifted[..., 2:, : S - 3], images[..., : S - 2, 3:], atol=1e-4)
    # Beyond the image's edge the crop reflects it, as preprocessing does.
    assert torch.allclose(shifted[..., 0, : S - 3], images[..., 1, 3:], atol=1e-4)
    assert aligned_crop(images, whole, S // 2).shape == (2, 3, S // 2, S // 2)
    shifted.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_landmark_boxes_reframe_a_shifted_face_like_preprocessing_and_keep_a_faceless_render():
    portrait = np.asarray(Image.open(DATA / "portraits" / "happy_256.png").convert("RGB"))
    size = 128
    frame = np.asarray(Image.fromarray(portrait).resize((size, size), Image.LANCZOS))
    moved = np.roll(frame, (10, -8), axis=(0, 1))
    renders = torch.from_numpy(np.stack([moved, np.full_like(moved, 128)])).permute(0, 3, 1, 2).float() / 255
    boxes, found = landmark_boxes(renders)
    assert found.tolist() == [True, False]
    assert torch.allclose(boxes[0], torch.from_numpy(ffhq_box(detect_landmarks(moved).astype(np.float64))))
    assert boxes[1].tolist() == [size / 2, size / 2, size]
    # The aligned crop of the shifted render frames the face where the unshifted one has it.
    before = ffhq_box(detect_landmarks(frame).astype(np.float64))
    assert boxes[0][:2].numpy() - before[:2] == pytest.approx([-8, 10], abs=1.5)
