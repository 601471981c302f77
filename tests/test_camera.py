import math

import pytest
import torch

from splat_portrait import camera


def test_default_camera_looks_at_head_from_the_front():
    c2w = camera.default_c2w()
    assert torch.equal(c2w[:3, :3], torch.eye(3))
    assert c2w[:3, 3].tolist() == pytest.approx([0.0, 0.0, -camera.DEFAULT_RADIUS])
    # The head centre (world origin) is straight ahead at the camera distance.
    head_in_view = camera.transform_points(camera.world_to_view(c2w), torch.zeros(1, 3))
    assert head_in_view[0].tolist() == pytest.approx([0.0, 0.0, camera.DEFAULT_RADIUS])


def test_intrinsics_round_trip_and_pixel_matrix():
    intr = torch.tensor([[4.0, 3.0, 0.5, 0.25]])
    K = camera.intrinsics_to_K(intr, width=200, height=100)
    assert K[0].tolist() == [[800.0, 0.0, 100.0], [0.0, 300.0, 25.0], [0.0, 0.0, 1.0]]
    assert torch.allclose(camera.K_to_intrinsics(K, 200, 100), intr)


def test_pixel_rays_pass_through_pixel_centres():
    intr = torch.tensor([2.0, 2.0, 0.5, 0.5])
    rays = camera.pixel_rays(intr, height=4, width=4)
    assert rays.shape == (4, 4, 3)
    assert torch.all(rays[..., 2] == 1)
    K = camera.intrinsics_to_K(intr, 4, 4)
    # Projecting each ray with K must land on the pixel centre (u + 0.5, v + 0.5).
    proj = rays @ K.T
    v, u = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    assert torch.allclose(proj[..., 0], u + 0.5)
    assert torch.allclose(proj[..., 1], v + 0.5)


def test_pixel_rays_are_resolution_independent():
    intr = camera.default_intrinsics()
    coarse = camera.pixel_rays(intr, 2, 2)
    fine = camera.pixel_rays(intr, 4, 4)
    # The centre of a coarse pixel is the mean of the four fine pixels inside it.
    pooled = fine.reshape(2, 2, 2, 2, 3).mean((1, 3))
    assert torch.allclose(coarse, pooled, atol=1e-6)


def test_invert_rigid_matches_general_inverse():
    c2w = camera.orbit_around(camera.default_c2w(), torch.tensor(0.3), torch.tensor(-0.2))
    assert torch.allclose(camera.invert_rigid(c2w), torch.linalg.inv(c2w), atol=1e-6)
    assert torch.allclose(camera.invert_rigid(c2w) @ c2w, torch.eye(4), atol=1e-6)


def test_relative_pose_maps_source_view_points_into_target_view():
    src = camera.orbit_around(camera.default_c2w(), torch.tensor(0.2), torch.tensor(0.1))
    tgt = camera.orbit_around(camera.default_c2w(), torch.tensor(-0.4), torch.tensor(0.0))
    world = torch.randn(5, 3)
    in_src = camera.transform_points(camera.world_to_view(src), world)
    in_tgt = camera.transform_points(camera.world_to_view(tgt), world)
    assert torch.allclose(camera.transform_points(camera.relative_pose(src, tgt), in_src), in_tgt, atol=1e-5)


def test_orbit_yaw_moves_camera_right_and_keeps_looking_at_head():
    c2w = camera.orbit_around(camera.default_c2w(), torch.tensor(math.radians(30)), torch.tensor(0.0))
    eye = c2w[:3, 3]
    assert eye.tolist() == pytest.approx([2.7 * math.sin(math.radians(30)), 0.0, -2.7 * math.cos(math.radians(30))], abs=1e-5)
    forward = c2w[:3, 2]
    assert torch.allclose(forward, -eye / eye.norm(), atol=1e-6)


def test_orbit_pitch_moves_camera_up():
    c2w = camera.orbit_around(camera.default_c2w(), torch.tensor(0.0), torch.tensor(math.radians(10)))
    assert c2w[1, 3] < 0  # world y points down, so "up" is negative y
    assert c2w[:3, 3].norm().item() == pytest.approx(camera.DEFAULT_RADIUS, abs=1e-5)


def test_look_at_builds_opencv_frame():
    c2w = camera.look_at(torch.tensor([0.0, 0.0, -2.7]), torch.zeros(3))
    assert torch.allclose(c2w, camera.default_c2w(), atol=1e-6)
    R = c2w[:3, :3]
    assert torch.allclose(R @ R.T, torch.eye(3), atol=1e-6)
    assert torch.det(R).item() == pytest.approx(1.0)


@pytest.mark.parametrize("kind", camera.TRAJECTORIES)
def test_trajectories_start_at_source_and_stay_on_the_sphere(kind):
    src = camera.orbit_around(camera.default_c2w(), torch.tensor(0.1), torch.tensor(0.05))
    path = camera.trajectory(kind, src, num_frames=50)
    assert path.shape == (50, 4, 4)
    assert torch.allclose(path[0], src, atol=1e-6)
    assert torch.allclose(path[:, :3, 3].norm(dim=-1), torch.full((50,), camera.DEFAULT_RADIUS), atol=1e-4)


def test_bullet_trajectory_reaches_paper_extremes():
    path = camera.trajectory("bullet", camera.default_c2w(), num_frames=100, fps=25, period_s=4)
    eye = path[:, :3, 3]
    yaw = torch.rad2deg(torch.atan2(eye[:, 0], -eye[:, 2]))
    pitch = torch.rad2deg(torch.asin(-eye[:, 1] / eye.norm(dim=-1)))
    assert yaw.max().item() == pytest.approx(45, abs=0.5)
    assert yaw.min().item() == pytest.approx(-45, abs=0.5)
    assert pitch.abs().max().item() == pytest.approx(12.5, abs=0.5)


def test_trajectories_are_batched():
    src = camera.default_c2w((3,))
    assert camera.trajectory("orbit", src, num_frames=7).shape == (3, 7, 4, 4)


def test_unknown_trajectory_is_rejected():
    with pytest.raises(ValueError, match="unknown camera trajectory 'spin'"):
        camera.trajectory("spin", camera.default_c2w(), 10)
