"""The renderer against independent numerical references.

The references here are written from the 3DGS/gsplat rules, not from our implementation: a
textbook EWA projection with full 3x3 matrices, and gsplat's per-pixel front-to-back loop
(alpha clamp at 0.999, skip alpha < 1/255, stop before T would drop to 1e-4), in float64.
"""

from __future__ import annotations

import logging
import math

import pytest
import torch

from splat_portrait.errors import SplatPortraitError
from splat_portrait.render import RenderOutput, gsplat_status, render, resolve_backend
from splat_portrait.render.api import _auto_backend
from splat_portrait.render.cpu_backend import cpu_status
from splat_portrait.splats import Splats

F64 = torch.float64
ALPHA_MIN = 1 / 255


@pytest.fixture(autouse=True)
def _single_thread():
    """These scenes are tiny: threads only add overhead, and on a busy 2-core machine every parallel
    region waits for a descheduled worker, which made gradcheck 20x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ----------------------------------------------------------------------------- references


def _rotation(quat: torch.Tensor) -> torch.Tensor:
    w, x, y, z = (quat / quat.norm()).tolist()
    return torch.tensor(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ],
        dtype=F64,
    )


def reference_alpha(mean, quat, scale, opacity, viewmat, K, width, height):
    """(H, W) alpha of one splat and its camera z: EWA with full matrices (splat inside the view)."""
    mean, quat, scale, viewmat, K = (t.to(F64) for t in (mean, quat, scale, viewmat, K))
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    x, y, z = (R @ mean + t).tolist()
    Rq = _rotation(quat)
    cov_world = Rq @ torch.diag(scale**2) @ Rq.T
    fx, fy, cx, cy = K[0, 0].item(), K[1, 1].item(), K[0, 2].item(), K[1, 2].item()
    J = torch.tensor([[fx / z, 0, -fx * x / z**2], [0, fy / z, -fy * y / z**2]], dtype=F64)
    cov2d = J @ R @ cov_world @ R.T @ J.T + 0.3 * torch.eye(2, dtype=F64)
    mu = torch.tensor([fx * x / z + cx, fy * y / z + cy], dtype=F64)
    v, u = torch.meshgrid(torch.arange(height, dtype=F64) + 0.5, torch.arange(width, dtype=F64) + 0.5, indexing="ij")
    d = torch.stack([u - mu[0], v - mu[1]], -1)
    maha = torch.einsum("hwi,ij,hwj->hw", d, torch.linalg.inv(cov2d), d)
    alpha = torch.clamp(float(opacity) * torch.exp(-0.5 * maha), max=0.999)
    return torch.where(alpha >= ALPHA_MIN, alpha, 0.0), z


def reference_composite(alphas, colors, depths, background=None):
    """gsplat's per-pixel loop, vectorised over pixels; inputs in front-to-back order.

    Returns rgb, alpha, depth and the (H, W) mask of pixels where the transmittance stop fired.
    """
    H, W = alphas[0].shape
    T = torch.ones(H, W, dtype=F64)
    done = torch.zeros(H, W, dtype=torch.bool)
    rgb = torch.zeros(H, W, 3, dtype=F64)
    depth_sum = torch.zeros(H, W, dtype=F64)
    for alpha, color, z in zip(alphas, colors, depths):
        use = ~done & (alpha > 0)
        next_T = T * (1 - alpha)
        stop = use & (next_T <= 1e-4)
        done |= stop
        use &= ~stop
        w = torch.where(use, alpha * T, 0.0)
        rgb += w[..., None] * torch.as_tensor(color, dtype=F64)
        depth_sum += w * z
        T = torch.where(use, next_T, T)
    alpha = 1 - T
    if background is not None:
        rgb = rgb + T[..., None] * background.to(F64)
    depth = torch.where(alpha > 0, depth_sum / alpha.clamp_min(1e-300), 0.0)
    return rgb, alpha[..., None], depth[..., None], done


def reference_render(splats: Splats, viewmat, K, width, height, background=None):
    """One cloud (N,) through one camera with the two references above."""
    per_splat = [
        reference_alpha(splats.means[i], splats.quats[i], splats.scales[i], splats.opacities[i], viewmat, K, width, height)
        for i in range(splats.num_splats)
    ]
    order = sorted(range(splats.num_splats), key=lambda i: per_splat[i][1])  # stable: ties keep input order
    return reference_composite(
        [per_splat[i][0] for i in order],
        [splats.colors[i].tolist() for i in order],
        [per_splat[i][1] for i in order],
        background,
    )


# ----------------------------------------------------------------------------- scenes


def camera(width, height, focal=None, z=0.0, dtype=torch.float32):
    """Identity-rotation camera at (0, 0, -z) with the principal point off the pixel grid."""
    focal = focal or 1.2 * max(width, height)
    K = torch.tensor([[focal, 0, width / 2 + 0.17], [0, focal * 1.05, height / 2 - 0.23], [0, 0, 1]], dtype=dtype)
    viewmat = torch.eye(4, dtype=dtype)
    viewmat[2, 3] = z
    return viewmat[None], K[None]


def random_cloud(n, seed, dtype=torch.float32, opacity=(0.05, 0.95), log_scale=-3.0, spread=(0.35, 0.35, 0.3), depth=2.5):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * torch.tensor(spread) + torch.tensor([0.0, 0.0, depth])
    return Splats(
        means=means.to(dtype),
        quats=torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1).to(dtype),
        scales=torch.exp(torch.randn(n, 3, generator=g) * 0.5 + log_scale).to(dtype),
        opacities=(opacity[0] + (opacity[1] - opacity[0]) * torch.rand(n, generator=g)).to(dtype),
        colors=torch.rand(n, 3, generator=g).to(dtype),
    )


def single(mean, quat=(1.0, 0.0, 0.0, 0.0), scale=(0.05, 0.05, 0.05), opacity=0.8, color=(1.0, 0.5, 0.25)):
    """A cloud (1,) holding one splat."""
    return Splats(
        torch.tensor([mean]), torch.tensor([quat]), torch.tensor([scale]), torch.tensor([opacity]), torch.tensor([color])
    )


def stack(*clouds: Splats) -> Splats:
    return Splats.cat(list(clouds))


def batch(cloud: Splats) -> Splats:
    return cloud.map(lambda t: t[None])


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("opacity", [0.7, 1.0])
def test_single_gaussian_matches_analytic_2d_gaussian(opacity):
    W, H, z = 24, 20, 2.0
    viewmat, K = camera(W, H)
    K[0, 0, 2], K[0, 1, 2] = 12.5, 9.5  # the splat's centre lands on a pixel centre: peak sampled
    theta, sx, sy = 0.6, 0.08, 0.03
    quat = (math.cos(theta / 2), 0.0, 0.0, math.sin(theta / 2))  # rotation about the optical axis
    color = (0.9, 0.4, 0.1)
    cloud = Splats(
        torch.tensor([[0.0, 0.0, z]]), torch.tensor([quat]), torch.tensor([[sx, sy, 0.02]]),
        torch.tensor([opacity]), torch.tensor([color]),
    )  # fmt: skip
    out = render(batch(cloud), viewmat, K, W, H)

    # On the optical axis the projection is a pure scaling by f/z: cov2d = (f/z)^2 R S^2 R^T + 0.3 I.
    f_x, f_y = K[0, 0, 0].item() / z, K[0, 1, 1].item() / z
    c, s = math.cos(theta), math.sin(theta)
    R2 = torch.tensor([[c, -s], [s, c]], dtype=F64)
    cov = torch.diag(torch.tensor([f_x, f_y], dtype=F64)) @ R2 @ torch.diag(torch.tensor([sx, sy], dtype=F64) ** 2)
    cov = cov @ R2.T @ torch.diag(torch.tensor([f_x, f_y], dtype=F64)) + 0.3 * torch.eye(2, dtype=F64)
    v, u = torch.meshgrid(torch.arange(H, dtype=F64) + 0.5, torch.arange(W, dtype=F64) + 0.5, indexing="ij")
    d = torch.stack([u - K[0, 0, 2].item(), v - K[0, 1, 2].item()], -1)
    alpha = opacity * torch.exp(-0.5 * torch.einsum("hwi,ij,hwj->hw", d, torch.linalg.inv(cov), d))
    alpha = torch.clamp(alpha, max=0.999)
    alpha = torch.where(alpha >= 1 / 255, alpha, 0.0)

    torch.testing.assert_close(out.alpha[0, ..., 0].double(), alpha, atol=2e-6, rtol=0)
    torch.testing.assert_close(out.rgb[0].double(), alpha[..., None] * torch.tensor(color, dtype=F64), atol=2e-6, rtol=0)
    assert (alpha == 0).any() and (alpha > 0.5).any()  # the image shows both the splat and its cut-off
    assert out.alpha.max().item() == pytest.approx(min(opacity, 0.999), abs=1e-6)  # 1.0 is clamped to 0.999
    depth = out.depth[0, ..., 0]
    assert torch.allclose(depth[alpha > 0], torch.full_like(depth[alpha > 0], z), atol=1e-5)
    assert (depth[alpha == 0] == 0).all()


def test_two_overlapping_gaussians_composite_front_to_back():
    W, H = 20, 16
    viewmat, K = camera(W, H)
    front = Splats(torch.tensor([[0.02, 0.0, 2.0]]), torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.06),
                   torch.tensor([0.6]), torch.tensor([[1.0, 0.0, 0.0]]))  # fmt: skip
    back = Splats(torch.tensor([[-0.03, 0.02, 2.5]]), torch.tensor([[0.9, 0.1, 0.3, 0.2]]),
                  torch.tensor([[0.09, 0.05, 0.07]]), torch.tensor([0.9]), torch.tensor([[0.0, 0.0, 1.0]]))  # fmt: skip

    a1, z1 = reference_alpha(front.means[0], front.quats[0], front.scales[0], 0.6, viewmat[0], K[0], W, H)
    a2, z2 = reference_alpha(back.means[0], back.quats[0], back.scales[0], 0.9, viewmat[0], K[0], W, H)
    # Hand-composited: the front splat gets weight a1, the back one a2 (1 - a1).
    w1, w2 = a1, a2 * (1 - a1)
    alpha = 1 - (1 - a1) * (1 - a2)
    rgb = torch.stack([w1, torch.zeros_like(w1), w2], -1)
    depth = torch.where(alpha > 0, (w1 * z1 + w2 * z2) / alpha.clamp_min(1e-300), 0.0)
    assert ((a1 > 0.3) & (a2 > 0.3)).any()  # they really overlap

    for cloud in (stack(front, back), stack(back, front)):  # input order must not matter
        out = render(batch(cloud), viewmat, K, W, H)
        torch.testing.assert_close(out.rgb[0].double(), rgb, atol=2e-6, rtol=0)
        torch.testing.assert_close(out.alpha[0, ..., 0].double(), alpha, atol=2e-6, rtol=0)
        torch.testing.assert_close(out.depth[0, ..., 0].double(), depth, atol=1e-5, rtol=0)

    # Depth, not input order, decides: moving the blue splat in front reverses the composite.
    swapped = stack(front.map(lambda t: t.clone()), back.map(lambda t: t.clone()))
    swapped.means[0, 2], swapped.means[1, 2] = 2.5, 2.0
    expected = reference_render(swapped, viewmat[0], K[0], W, H)
    out = render(batch(swapped), viewmat, K, W, H)
    torch.testing.assert_close(out.rgb[0].double(), expected[0], atol=2e-6, rtol=0)
    assert (out.rgb[0].double() - rgb).abs().max() > 0.1


def test_random_scene_matches_reference_loop():
    # Image sides that are not tile multiples, splats crossing the border, opaque clusters that
    # trigger the transmittance stop, and some splats behind the camera or outside the view.
    W, H = 29, 23
    viewmat, K = camera(W, H, z=0.0)
    opaque_stack = random_cloud(6, seed=31, opacity=(0.95, 1.0), log_scale=-1.8, spread=(0.1, 0.1, 0.3))
    cloud = stack(random_cloud(60, seed=1), random_cloud(40, seed=2, opacity=(0.9, 1.0), log_scale=-2.5), opaque_stack)
    # The reference leaves out gsplat's Jacobian clamp, which starts 15% of the field of view
    # outside the image (|x/z| > 0.54, |y/z| > 0.40 here): keep splats inside that.
    xz, yz = (cloud.means[:, :2] / cloud.means[:, 2:3]).unbind(-1)
    cloud = cloud[(cloud.means[:, 2] > 1.0) & (xz.abs() < 0.5) & (yz.abs() < 0.38)]
    bg = torch.tensor([[0.2, 0.7, 0.4]])
    out = render(batch(cloud), viewmat, K, W, H, background=bg)
    expected = reference_render(cloud, viewmat[0], K[0], W, H, background=bg[0])
    torch.testing.assert_close(out.rgb[0].double(), expected[0], atol=5e-6, rtol=0)
    torch.testing.assert_close(out.alpha[0].double(), expected[1], atol=5e-6, rtol=0)
    torch.testing.assert_close(out.depth[0].double(), expected[2], atol=2e-5, rtol=0)
    assert expected[3].sum() >= 4  # the transmittance stop fires on some pixels

    # Splats behind the camera, or beyond far_plane, are dropped.
    behind = Splats.cat([cloud, single((0.0, 0.0, -1.0), opacity=1.0, scale=(0.5, 0.5, 0.5))])
    torch.testing.assert_close(render(batch(behind), viewmat, K, W, H, background=bg).rgb, out.rgb)
    near = render(batch(cloud), viewmat, K, W, H, background=bg, far_plane=2.0)
    expected_near = reference_render(cloud[cloud.means[:, 2] <= 2.0], viewmat[0], K[0], W, H, background=bg[0])
    torch.testing.assert_close(near.rgb[0].double(), expected_near[0], atol=5e-6, rtol=0)


def test_flat_and_image_backgrounds_blend_by_transmittance():
    W, H = 16, 12
    viewmat, K = camera(W, H)
    cloud = batch(random_cloud(12, seed=3))
    bare = render(cloud, viewmat, K, W, H)
    assert (bare.alpha < 0.05).any() and (bare.alpha > 0.5).any()

    flat = torch.tensor([[0.3, 0.6, 0.9]])
    out = render(cloud, viewmat, K, W, H, background=flat)
    torch.testing.assert_close(out.rgb, bare.rgb + (1 - bare.alpha) * flat[:, None, None, :])
    torch.testing.assert_close(out.alpha, bare.alpha)
    torch.testing.assert_close(out.depth, bare.depth)

    image = torch.rand(1, H, W, 3, generator=torch.Generator().manual_seed(4)).requires_grad_()
    out = render(cloud, viewmat, K, W, H, background=image)
    torch.testing.assert_close(out.rgb, bare.rgb + (1 - bare.alpha) * image)
    out.rgb.sum().backward()
    torch.testing.assert_close(image.grad, (1 - bare.alpha).expand(-1, -1, -1, 3))


def _flat_splat(z, opacity, color):
    """A splat much wider than the 6x6 image, so its alpha is nearly `opacity` on every pixel."""
    return single((0.0, 0.0, z), scale=(50.0, 50.0, 0.01), opacity=opacity, color=color)


def test_transmittance_stop_rule():
    W, H = 6, 6
    viewmat, K = camera(W, H, focal=8.0)
    colors = [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]
    # alpha 0.999 (clamped) leaves T = 1e-3; alpha 0.5 behind it leaves 5e-4 (> 1e-4: drawn); the
    # third, alpha 0.9, would leave 5e-5 <= 1e-4, so the pixel stops before it.
    cloud = stack(*[_flat_splat(z, op, c) for z, op, c in zip((2.0, 2.1, 2.2), (1.0, 0.5, 0.9), colors)])
    out = render(batch(cloud), viewmat, K, W, H)

    a = [reference_alpha(cloud.means[i], cloud.quats[i], cloud.scales[i], cloud.opacities[i], viewmat[0], K[0], W, H)[0]
         for i in range(3)]  # fmt: skip
    assert torch.allclose(a[0], torch.full_like(a[0], 0.999)) and (a[1] > 0.49).all() and (a[2] > 0.89).all()
    w0, w1 = a[0], a[1] * (1 - a[0])
    expected_rgb = torch.stack([w0, w1, torch.zeros_like(w0)], -1)
    torch.testing.assert_close(out.rgb[0].double(), expected_rgb, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.alpha[0, ..., 0].double(), 1 - (1 - a[0]) * (1 - a[1]), atol=1e-7, rtol=0)
    # Without the rule the third splat would add ~4.5e-4 of blue: far above float error.
    assert (a[2] * (1 - a[0]) * (1 - a[1]) > 4e-4).all()
    # The same image as without the third splat at all.
    torch.testing.assert_close(render(batch(cloud[:2]), viewmat, K, W, H).rgb, out.rgb)


def test_alpha_below_1_over_255_is_skipped():
    W, H = 14, 14
    viewmat, K = camera(W, H)
    # Peak alpha 1.5/255: drawn near the centre, skipped where the falloff takes it under 1/255.
    faint = single((0.0, 0.0, 2.0), scale=(0.1, 0.1, 0.1), opacity=1.5 / 255, color=(1.0, 1.0, 1.0))
    ref, _ = reference_alpha(faint.means[0], faint.quats[0], faint.scales[0], 1.5 / 255, viewmat[0], K[0], W, H)
    out = render(batch(faint), viewmat, K, W, H)
    assert (ref > 0).any() and (ref == 0).any()
    assert (out.alpha[0, ..., 0][ref == 0] == 0).all()  # exactly nothing, not a tiny alpha
    torch.testing.assert_close(out.alpha[0, ..., 0].double(), ref, atol=1e-8, rtol=0)

    # Skipped pixels leave the transmittance untouched for a splat behind.
    behind = single((0.0, 0.0, 3.0), scale=(0.3, 0.3, 0.3), opacity=0.9, color=(0.0, 0.5, 1.0))
    both = render(batch(stack(faint, behind)), viewmat, K, W, H)
    alone = render(batch(behind), viewmat, K, W, H)
    skipped = ref == 0
    assert torch.equal(both.rgb[0][skipped], alone.rgb[0][skipped])

    # Opacity under 1/255 can never reach the threshold: the splat is invisible.
    invisible = single((0.0, 0.0, 2.0), scale=(0.1, 0.1, 0.1), opacity=0.9 / 255)
    assert render(batch(invisible), viewmat, K, W, H).alpha.abs().max() == 0


def test_fronto_parallel_plane_depth():
    W, H, z = 32, 32, 3.0
    viewmat, K = camera(W, H, focal=40.0)
    # A grid of flat splats on the plane z = 3, denser than the pixels and covering the view.
    u = torch.linspace(-1.5, 1.5, 40)
    gy, gx = torch.meshgrid(u, u, indexing="ij")
    n = gx.numel()
    means = torch.stack([gx.reshape(-1), gy.reshape(-1), torch.full((n,), z)], -1)
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).expand(n, 4).clone()
    scales = torch.tensor([[0.06, 0.06, 1e-4]]).expand(n, 3).clone()
    g = torch.Generator().manual_seed(5)
    cloud = Splats(means, quats, scales, torch.full((n,), 0.8), torch.rand(n, 3, generator=g))
    out = render(batch(cloud), viewmat, K, W, H)
    covered = out.alpha[0, ..., 0] > 0.9
    assert covered.float().mean() > 0.9
    torch.testing.assert_close(out.depth[0, ..., 0][covered], torch.full_like(out.depth[0, ..., 0][covered], z))

    # Tilted, the splats form a staircase along z = 3 + 0.3 y. Front-to-back compositing favours
    # the nearer of overlapping steps, so the expected depth sits a little in front of the plane,
    # within about one step (0.3 * grid spacing = 0.023), while following its slope.
    tilted = cloud.map(lambda t: t.clone())
    tilted.means[:, 2] += 0.3 * tilted.means[:, 1]
    out = render(batch(tilted), viewmat, K, W, H)
    v = (torch.arange(H, dtype=F64) + 0.5 - K[0, 1, 2]) / K[0, 1, 1]  # y / z of each pixel row
    plane = (z / (1 - 0.3 * v))[:, None].expand(H, W)  # z = 3 + 0.3 y along each ray
    error = out.depth[0, ..., 0].double() - plane
    assert (out.alpha > 0.9).all()
    assert ((error < 0.005) & (error > -0.035)).all()
    torch.testing.assert_close(error.mean(1)[-1] - error.mean(1)[0], torch.tensor(0.0, dtype=F64), atol=0.015, rtol=0)


def test_batch_matches_rendering_each_cloud_alone():
    W, H = 21, 18
    clouds = Splats.cat([batch(random_cloud(30, seed=6)), batch(random_cloud(30, seed=7, opacity=(0.5, 1.0)))], dim=0)
    v0, K0 = camera(W, H)
    v1, K1 = camera(W, H, focal=30.0, z=0.4)
    v1[0, :3, :3] = torch.tensor([[0.98, 0.0, 0.199], [0.0, 1.0, 0.0], [-0.199, 0.0, 0.98]])
    viewmats, Ks = torch.cat([v0, v1]), torch.cat([K0, K1])
    bg = torch.tensor([[0.1, 0.2, 0.3], [0.9, 0.8, 0.7]])
    both = render(clouds, viewmats, Ks, W, H, background=bg)
    assert isinstance(both, RenderOutput) and both.rgb.shape == (2, H, W, 3)
    assert both.alpha.shape == (2, H, W, 1) and both.depth.shape == (2, H, W, 1)
    for b in range(2):
        alone = render(clouds[b : b + 1], viewmats[b : b + 1], Ks[b : b + 1], W, H, background=bg[b : b + 1])
        for name in ("rgb", "alpha", "depth"):
            torch.testing.assert_close(getattr(both, name)[b : b + 1], getattr(alone, name), atol=1e-6, rtol=0)
    assert (both.rgb[0] - both.rgb[1]).abs().max() > 0.1


def _opaque_gradcheck_cloud(viewmat, K) -> Splats:
    """Near-opaque layers in front of translucent splats: the clamp and the stop both fire."""
    g = torch.Generator().manual_seed(301)
    z = torch.tensor([2.0, 2.3, 2.6], dtype=F64)
    means = torch.cat([torch.randn(3, 2, generator=g, dtype=F64) * 0.05, z[:, None]], -1)
    # The front splat (opacity 1) is centred on pixel (4, 3), where its alpha is clamped to 0.999.
    means[0, 0] = (4.5 - K[0, 0, 2]) / K[0, 0, 0] * z[0]
    means[0, 1] = (3.5 - K[0, 1, 2]) / K[0, 1, 1] * z[0]
    layers = Splats(
        means, torch.nn.functional.normalize(torch.randn(3, 4, generator=g, dtype=F64), dim=-1),
        torch.exp(torch.randn(3, 3, generator=g, dtype=F64) * 0.2 - 0.4), torch.tensor([1.0, 0.995, 0.99], dtype=F64),
        torch.rand(3, 3, generator=g, dtype=F64),
    )  # fmt: skip
    return stack(layers, random_cloud(3, seed=401, dtype=F64, opacity=(0.3, 0.8), log_scale=-1.5))


@pytest.mark.parametrize("opaque", [False, True])
def test_gradcheck_all_inputs(opaque):
    W, H = 8, 8
    viewmat, K = camera(W, H, focal=9.0, dtype=F64)
    if opaque:
        cloud = _opaque_gradcheck_cloud(viewmat, K)
        stopped = reference_render(cloud, viewmat[0], K[0], W, H)[3]
        assert stopped.sum() >= 2
    else:
        cloud = random_cloud(6, seed=8, dtype=F64, opacity=(0.3, 0.8), log_scale=-1.6)
    background = torch.tensor([[0.2, 0.5, 0.7]], dtype=F64)
    inputs = [t.clone()[None].requires_grad_() for t in (cloud.means, cloud.quats, cloud.scales, cloud.opacities, cloud.colors)]
    inputs.append(background.clone().requires_grad_())

    def images(means, quats, scales, opacities, colors, bg):
        out = render(Splats(means, quats, scales, opacities, colors), viewmat, K, W, H, background=bg)
        return torch.cat([out.rgb, out.alpha, out.depth], -1).reshape(-1)

    # gradcheck's analytical side costs one backward pass per output; checking the Jacobian along
    # 24 fixed random directions of the 320 outputs keeps it fast and still sees any wrong entry.
    directions = torch.randn(24, W * H * 5, generator=torch.Generator().manual_seed(0), dtype=F64)
    alpha = images(*inputs).view(H, W, 5)[..., 3]
    assert 0.2 < alpha.mean() < 1.0
    assert torch.autograd.gradcheck(lambda *x: directions @ images(*x), inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_gradients_flow_to_every_attribute_in_float32():
    W, H = 16, 16
    viewmat, K = camera(W, H)
    cloud = random_cloud(20, seed=9)
    params = [t.clone()[None].requires_grad_() for t in (cloud.means, cloud.quats, cloud.scales, cloud.opacities, cloud.colors)]
    out = render(Splats(*params), viewmat, K, W, H)
    (out.rgb.square().sum() + out.depth.mean()).backward()
    for p in params:
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_shape_and_argument_validation():
    W, H = 8, 6
    viewmat, K = camera(W, H)
    cloud = batch(random_cloud(4, seed=10))
    with pytest.raises(ValueError, match=r"batch shape \(B,\)"):
        render(random_cloud(4, seed=10), viewmat, K, W, H)
    with pytest.raises(ValueError, match=r"viewmats must have shape \(1, 4, 4\)"):
        render(cloud, viewmat[0], K, W, H)
    with pytest.raises(ValueError, match=r"Ks must have shape \(1, 3, 3\)"):
        render(cloud, viewmat, K.expand(2, 3, 3), W, H)
    with pytest.raises(ValueError, match="background must be"):
        render(cloud, viewmat, K, W, H, background=torch.zeros(1, W, H, 3))
    with pytest.raises(ValueError, match="width must be a positive int"):
        render(cloud, viewmat, K, 0, H)
    with pytest.raises(ValueError, match="height must be a positive int"):
        render(cloud, viewmat, K, W, 2.5)
    with pytest.raises(ValueError, match="near_plane"):
        render(cloud, viewmat, K, W, H, near_plane=0.0)
    with pytest.raises(ValueError, match="unknown render backend 'cuda'"):
        render(cloud, viewmat, K, W, H, backend="cuda")
    with pytest.raises(ValueError, match="float32 or float64"):
        render(cloud.map(lambda t: t.half()), viewmat, K, W, H)
    # gsplat needs CUDA tensors: a one-line SplatPortraitError, whether or not a GPU exists.
    with pytest.raises(SplatPortraitError, match="gsplat") as info:
        render(cloud, viewmat, K, W, H, backend="gsplat")
    assert "\n" not in str(info.value)


def test_backend_resolution_and_status(caplog):
    assert resolve_backend("torch", "cpu") == "torch"
    _auto_backend.cache_clear()
    # CPU tensors: our C++ rasteriser where it builds, else the torch one.
    expected = "cpu" if cpu_status()[0] else "torch"
    with caplog.at_level(logging.INFO, logger="splat_portrait.render.api"):
        assert resolve_backend("auto", "cpu") == expected
        assert resolve_backend("auto", torch.device("cpu")) == expected
    assert len([r for r in caplog.records if "backend" in r.getMessage()]) == 1  # logged once
    usable, detail = gsplat_status()
    assert isinstance(usable, bool) and isinstance(detail, str) and detail
    if not torch.cuda.is_available():
        assert not usable and "CUDA" in detail


# ----------------------------------------------------------------------------- gsplat parity

_GSPLAT_USABLE, _GSPLAT_DETAIL = gsplat_status() if torch.cuda.is_available() else (False, "no CUDA device")


def head_scene(n=10_000, seed=0) -> Splats:
    """An ellipsoid shell of small splats around the world origin, framed like a head by the default
    camera (which sees about 0.63 units across at the origin); splats are about 2 px across."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    means = direction * torch.tensor([0.2, 0.26, 0.22]) * (1 + 0.03 * torch.randn(n, 1, generator=g))
    return Splats(
        means=means,
        quats=torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
        scales=torch.exp(torch.randn(n, 3, generator=g) * 0.4 - 5.3),
        opacities=torch.sigmoid(torch.randn(n, generator=g) + 1.0),
        colors=torch.rand(n, 3, generator=g),
    )


@pytest.mark.gpu
@pytest.mark.skipif(not _GSPLAT_USABLE, reason=f"needs CUDA and gsplat's kernels: {_GSPLAT_DETAIL}")
def test_torch_and_gsplat_backends_agree():
    from splat_portrait import camera as cam

    W = H = 256
    device = torch.device("cuda")
    cloud = batch(head_scene()).to(device)
    c2w = cam.orbit_around(cam.default_c2w((2,)), torch.tensor([0.0, 0.4]), torch.tensor([0.0, -0.1]))
    viewmats = cam.world_to_view(c2w).to(device)
    Ks = cam.intrinsics_to_K(cam.default_intrinsics((2,)), W, H).to(device)
    clouds = Splats.cat([cloud, cloud], dim=0)
    bg = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.3, 0.1]], device=device)
    ours = render(clouds, viewmats, Ks, W, H, background=bg, backend="torch")
    theirs = render(clouds, viewmats, Ks, W, H, background=bg, backend="gsplat")
    assert ours.alpha.mean() > 0.2
    assert (ours.rgb - theirs.rgb).abs().mean() < 1e-3
    assert (ours.alpha - theirs.alpha).abs().mean() < 1e-3
    covered = (ours.alpha > 0.5) & (theirs.alpha > 0.5)
    assert (ours.depth - theirs.depth)[covered].abs().mean() < 1e-3
