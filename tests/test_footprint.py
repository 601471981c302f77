"""Surface footprints (models/footprint.py) and the quaternion functions they are built from."""

import math

import pytest
import torch

from splat_portrait import camera
from splat_portrait.models import GaussianMaps, TalkingHead, preset, to_splats
from splat_portrait.models.footprint import cover_surface, frame_quaternion, surface_frame, surface_steps
from splat_portrait.models.generator import ATTRIBUTE_CHANNELS
from splat_portrait.render import render
from splat_portrait.render.projection import quat_to_rotmat
from splat_portrait.rotations import quat_multiply, quat_rotate, shortest_arc, turn_about

S = 32


def random_quats(n: int, seed: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(n, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1)


def test_quaternion_product_and_rotation_agree_with_rotation_matrices():
    a, b = random_quats(50, 0), random_quats(50, 1)
    v = torch.randn(50, 3, dtype=torch.float64)
    assert torch.allclose(quat_to_rotmat(quat_multiply(a, b)), quat_to_rotmat(a) @ quat_to_rotmat(b), atol=1e-12)
    assert torch.allclose(quat_rotate(a, v), (quat_to_rotmat(a) @ v[..., None])[..., 0], atol=1e-12)


def test_shortest_arc_takes_one_unit_vector_onto_the_other_about_their_common_normal():
    gen = torch.Generator().manual_seed(2)
    a = torch.nn.functional.normalize(torch.randn(50, 3, generator=gen, dtype=torch.float64), dim=-1)
    b = torch.nn.functional.normalize(torch.randn(50, 3, generator=gen, dtype=torch.float64), dim=-1)
    q = shortest_arc(a, b, eps=0)
    assert torch.allclose(q.norm(dim=-1), torch.ones(50, dtype=torch.float64))
    assert torch.allclose(quat_rotate(q, a), b, atol=1e-12)
    # The axis is perpendicular to both, so the angle is exactly theirs.
    assert torch.allclose(2 * torch.acos(q[:, 0]), torch.acos((a * b).sum(-1)), atol=1e-7)


def test_a_turn_about_an_axis_is_exact_and_well_conditioned_at_every_angle_up_to_a_half_turn():
    axis = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    angles = torch.tensor([0.0, 0.3, 1.5, -1.5, 2.9, -2.9, math.pi - 1e-7, -(math.pi - 1e-7), math.pi], dtype=torch.float64)
    a = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).expand(len(angles), 3)
    b = torch.stack([angles.cos(), angles.sin(), torch.zeros_like(angles)], -1)
    q = turn_about(axis.expand_as(a), a, b)
    torch.testing.assert_close(q.norm(dim=-1), torch.ones_like(angles))
    torch.testing.assert_close(quat_rotate(q, a), b, atol=1e-12, rtol=0)
    # In float32, rounding the target by 1e-7 moves the turn by about as much, even next to a half
    # turn, where the shortest arc's result moves by ~1e-3 (up to sign: q and -q are one rotation).
    def moved(rotation, angle):
        a32, axis32 = a[:1].float(), axis[None].float()
        b1 = torch.tensor([[math.cos(angle), math.sin(angle), 0.0]], dtype=torch.float32)
        b2 = torch.nn.functional.normalize(b1 + torch.tensor([[0.0, 1e-7, 0.0]]), dim=-1)
        q1, q2 = rotation(axis32, a32, b1), rotation(axis32, a32, b2)
        return torch.minimum((q1 - q2).abs().max(), (q1 + q2).abs().max()).item()
    assert moved(turn_about, math.pi - 1e-4) < 1e-5
    assert moved(lambda axis, a, b: shortest_arc(a, b), math.pi - 1e-4) > 1e-4


def plane_points(size: int, slope_x: float = 0.0, depth: float = 2.7) -> tuple[torch.Tensor, torch.Tensor]:
    """Splat centres (1, 3, S, S) on the plane z = depth + slope_x * x seen by the default camera, and its intrinsics."""
    intrinsics = camera.default_intrinsics((1,)).double()
    rays = camera.pixel_rays(intrinsics, size, size).permute(0, 3, 1, 2)
    # Points on the ray through each pixel: z (1 - slope * x/z) = depth.
    z = depth / (1 - slope_x * rays[:, :1])
    return rays * z, intrinsics


def test_steps_are_the_shorter_neighbour_difference_so_they_skip_a_one_sided_jump():
    y, x = torch.meshgrid(torch.arange(6.0), torch.arange(6.0), indexing="ij")
    points = torch.stack([0.1 * x, 0.2 * y, 2 + 0.05 * x + 0.01 * x * x])[None]
    step_x, step_y = surface_steps(points)
    # x steps grow along the row, so every pixel but the first takes its backward difference.
    assert torch.allclose(step_x[..., 1:], points[..., 1:] - points[..., :-1])
    assert torch.allclose(step_x[..., 0], points[..., 1] - points[..., 0])
    assert torch.allclose(step_y, torch.tensor([0.0, 0.2, 0.0])[None, :, None, None].expand_as(step_y))
    points, _ = plane_points(6, slope_x=0.5)
    # A cliff between columns 2 and 3: both columns keep the step on their continuous side.
    cliff = points.clone()
    cliff[..., 3:] = cliff[..., 3:] * 1.3
    step_x, _ = surface_steps(cliff)
    assert torch.allclose(step_x[..., 2], cliff[..., 2] - cliff[..., 1])
    assert torch.allclose(step_x[..., 3], cliff[..., 4] - cliff[..., 3])
    with pytest.raises(ValueError, match="at least 2x2"):
        surface_steps(points[..., :1])


def test_the_frame_of_a_slanted_plane_is_its_tangents_and_normal():
    slope = 0.8
    points, _ = plane_points(8, slope_x=slope)
    u, v, n = surface_frame(*surface_steps(points))
    expected_normal = torch.nn.functional.normalize(torch.tensor([-slope, 0.0, 1.0], dtype=torch.float64), dim=0)
    assert torch.allclose(n, expected_normal[None, :, None, None].expand_as(n), atol=1e-9)
    assert torch.allclose((u * n).sum(1), torch.zeros(1, 8, 8, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(torch.cross(u, v, dim=1), n, atol=1e-12)
    rotation = quat_to_rotmat(frame_quaternion(u, n).movedim(1, -1))
    assert torch.allclose(rotation[..., :, 0], u.movedim(1, -1), atol=1e-9)
    assert torch.allclose(rotation[..., :, 2], n.movedim(1, -1), atol=1e-9)


def test_a_frontal_plane_keeps_its_rotations_and_widens_its_splats_to_cover_their_pixels():
    points, intrinsics = plane_points(S)
    pixel = points[:, 2:] / (intrinsics[:, 0, None, None, None] * S)
    rotation = random_quats(S * S, 3).T.reshape(1, 4, S, S)
    scale = torch.rand(1, 3, S, S, dtype=torch.float64) * pixel
    turned, covered = cover_surface(points, rotation, scale, pixel, c=0.5, max_px=3.0)
    # The frontal patch's frame is almost the view axes (pixel rays fan out by under 0.1 degrees per pixel).
    assert torch.allclose(quat_to_rotmat(turned.movedim(1, -1)), quat_to_rotmat(rotation.movedim(1, -1)), atol=2e-2)
    step = (points[..., 1:] - points[..., :-1]).norm(dim=1)
    assert torch.allclose(covered[:, 0, :, :-1], torch.sqrt(scale[:, 0, :, :-1] ** 2 + (0.5 * step) ** 2), rtol=1e-6)
    assert torch.equal(covered[:, 2], scale[:, 2])
    # A step across a depth jump on both sides counts as max_px pixels at most.
    spike = points.clone()
    spike[..., 10, 10] *= 1.5
    _, spiked = cover_surface(spike, rotation, scale, pixel, c=0.5, max_px=3.0)
    assert spiked[0, 0, 10, 10] <= math.hypot(scale[0, 0, 10, 10], 0.5 * 3.0 * pixel[0, 0, 10, 10]) + 1e-12


def slanted_cheek_holes(footprint: float, yaw_deg: float = 30.0) -> float:
    """Share of a cheek-steep plane's inside (72 degrees from frontal), turned towards by ``yaw_deg``, that shows
    more than a tenth of the background through its splats."""
    points, intrinsics = plane_points(S, slope_x=3.0)
    points, intrinsics = points.float(), intrinsics.float()
    pixel = points[:, 2:] / (intrinsics[:, 0, None, None, None] * S)
    # What the model learns without a footprint: splats of 0.37 px (the bundled model's median).
    scale = 0.37 * pixel.expand(1, 3, S, S)
    rotation = torch.tensor([1.0, 0, 0, 0])[None, :, None, None].expand(1, 4, S, S)
    if footprint > 0:
        rotation, scale = cover_surface(points, rotation, scale, pixel, footprint, 3.0)
    attributes = torch.zeros(1, ATTRIBUTE_CHANNELS, S, S)
    maps = GaussianMaps.from_attributes(attributes)
    for name, value in dict(opacity=torch.ones(1, 1, S, S), scale=scale, depth=points[:, 2:], rotation=rotation, color=torch.ones(1, 3, S, S)).items():
        getattr(maps, name).copy_(value)
    splats = to_splats(attributes, intrinsics)
    c2w = camera.default_c2w((1,))
    turned = camera.orbit_around(c2w, torch.tensor(math.radians(yaw_deg)), torch.tensor(0.0))
    out = render(splats, camera.relative_pose(c2w, turned), camera.intrinsics_to_K(intrinsics, S, S), S, S, background=None, backend="torch")
    # The inside of the plane's image: the hull of its projected centres, away from its edges.
    uv = camera.project_points(camera.relative_pose(c2w, turned), splats.means, intrinsics)[0] * S
    inside = torch.zeros(S, S, dtype=torch.bool)
    lo, hi = uv.min(0).values, uv.max(0).values
    margin = (hi - lo) * 0.2
    (x0, y0), (x1, y1) = (lo + margin).long().tolist(), (hi - margin).long().tolist()
    inside[y0:y1, x0:x1] = True
    return float((out.alpha[0, ..., 0][inside] < 0.9).float().mean())


def test_footprints_close_the_holes_thin_splats_leave_on_a_slanted_surface_seen_from_30_degrees():
    # The neighbouring columns separate into see-through stripes.
    assert slanted_cheek_holes(0.0) > 0.9
    assert slanted_cheek_holes(0.5) == 0.0
    assert slanted_cheek_holes(0.5, yaw_deg=-30.0) == 0.0


def depth_head_gradient_of_rotations(footprint: float) -> float:
    torch.manual_seed(0)
    model = TalkingHead(preset("tiny", image_size=S, footprint=footprint))
    image = torch.rand(1, 3, S, S, generator=torch.Generator().manual_seed(1)) * 2 - 1
    encoded = model.encode(image, camera.default_c2w((1,)), camera.default_intrinsics((1,)))
    encoded.maps.rotation[:, 1:].sum().backward()
    depth_channel = 4  # opacity (1), scale (3), then depth
    return float(model.generator.unet.conv_out.weight.grad[depth_channel].abs().sum())


def test_a_generator_with_a_footprint_still_reproduces_its_input_and_orients_splats_by_its_depth():
    torch.manual_seed(0)
    model = TalkingHead(preset("tiny", image_size=S, footprint=0.5))
    image = torch.rand(1, 3, S, S, generator=torch.Generator().manual_seed(1)) * 2 - 1
    c2w, intrinsics = camera.default_c2w((1,)), camera.default_intrinsics((1,))
    with torch.no_grad():
        encoded = model.encode(image, c2w, intrinsics)
        out = render(model.splats(encoded), camera.relative_pose(c2w, c2w), camera.intrinsics_to_K(intrinsics, S, S), S, S, background=None, backend="torch")
    assert torch.allclose(encoded.maps.rotation.norm(dim=1), torch.ones(1, S, S), atol=1e-5)
    assert out.alpha.min() > 0.9
    # Rotations are read in the depth surface's frame, so the depth head learns from them too.
    assert depth_head_gradient_of_rotations(0.0) == 0.0
    assert depth_head_gradient_of_rotations(0.5) > 0.0
