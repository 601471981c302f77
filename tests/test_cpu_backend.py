"""The C++ rasteriser against the torch reference: same pictures, same gradients, same rules."""

import pytest
import torch

from splat_portrait import camera
from splat_portrait.errors import SplatPortraitError
from splat_portrait.render import cpu_backend, render, resolve_backend, torch_backend
from splat_portrait.render.projection import project
from splat_portrait.splats import Splats

usable, why = cpu_backend.cpu_status()
pytestmark = pytest.mark.skipif(not usable, reason=why)


def scene(B: int, N: int, seed: int, opacity_bias: float = 0.0, size: float = 0.05) -> Splats:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(B, N, 3, generator=g) * 0.5
    means[..., 2] += 3
    quats = torch.randn(B, N, 4, generator=g)
    scales = torch.rand(B, N, 3, generator=g) * size + 0.005
    opacities = torch.sigmoid(torch.randn(B, N, generator=g) + opacity_bias)
    return Splats(means, quats, scales, opacities, torch.rand(B, N, 3, generator=g))


def projected(splats: Splats, width: int, height: int):
    B = splats.batch_shape[0]
    viewmats = torch.eye(4).expand(B, 4, 4)
    Ks = torch.tensor([[60.0, 0, width / 2], [0, 60, height / 2], [0, 0, 1]]).expand(B, 3, 3)
    p = project(splats.means, splats.quats, splats.scales, splats.opacities, viewmats, Ks, width, height, 0.01, 1e10)
    features = torch.cat([splats.colors, p.depths[..., None]], -1)
    return p, features, (p.radii > 0).all(-1)


def composite_both(splats: Splats, width: int, height: int, seed: int = 1):
    """Both rasterisers' outputs and gradients for the same inputs and the same random upstream gradient."""
    p, features, visible = projected(splats, width, height)
    inputs = (p.means2d, p.conics, splats.opacities, features)
    results = []
    for rasterize in (torch_backend.rasterize, cpu_backend.rasterize):
        leaves = [t.detach().clone().requires_grad_() for t in inputs]
        out, alpha = rasterize(*leaves, p.depths.detach(), p.extents, visible, width, height)
        g = torch.Generator().manual_seed(seed)
        loss = (out * torch.randn(out.shape, generator=g)).sum() + (alpha * torch.randn(alpha.shape, generator=g)).sum()
        loss.backward()
        results.append((out.detach(), alpha.detach(), [leaf.grad for leaf in leaves]))
    return results


@pytest.mark.parametrize(
    "B, N, width, height, bias, size",
    [
        (1, 2000, 64, 48, 0.0, 0.05),  # typical
        (2, 3000, 61, 47, 0.0, 0.05),  # a batch, sizes that leave partial edge tiles
        (1, 3000, 40, 40, 4.0, 0.08),  # nearly opaque and overlapping: pixels stop early, alphas clamp at 0.999
        (1, 500, 33, 70, -3.0, 0.2),  # faint, large splats: many alphas near the 1/255 cut
    ],
)
def test_pictures_and_gradients_match_the_torch_reference(B, N, width, height, bias, size):
    (out_t, alpha_t, grads_t), (out_c, alpha_c, grads_c) = composite_both(scene(B, N, 0, bias, size), width, height)
    torch.testing.assert_close(out_c, out_t, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alpha_c, alpha_t, atol=1e-5, rtol=1e-5)
    for name, g_c, g_t in zip(("means2d", "conics", "opacities", "features"), grads_c, grads_t):
        scale = g_t.abs().max().clamp_min(1.0)
        assert (g_c - g_t).abs().max() <= 2e-5 * scale, name


def test_nothing_visible_renders_empty_with_zero_gradients():
    splats = scene(1, 50, 0)
    p, features, visible = projected(splats, 32, 32)
    means2d = p.means2d.detach().requires_grad_()
    out, alpha = cpu_backend.rasterize(means2d, p.conics, splats.opacities, features, p.depths, p.extents,
                                       torch.zeros_like(visible), 32, 32)  # fmt: skip
    assert out.abs().max() == 0 and alpha.abs().max() == 0
    (out.sum() + alpha.sum()).backward()
    assert means2d.grad.abs().max() == 0


def test_render_with_the_cpu_backend_equals_the_torch_backend():
    splats = scene(2, 1500, 3)
    viewmats = torch.eye(4).expand(2, 4, 4)
    Ks = torch.tensor([[50.0, 0, 24], [0, 50, 20], [0, 0, 1]]).expand(2, 3, 3)
    background = torch.rand(2, 3)
    ours = render(splats, viewmats, Ks, 48, 40, background, backend="cpu")
    reference = render(splats, viewmats, Ks, 48, 40, background, backend="torch")
    for field in ("rgb", "alpha", "depth"):
        torch.testing.assert_close(getattr(ours, field), getattr(reference, field), atol=2e-5, rtol=1e-5)


def test_auto_takes_the_cpu_backend_for_float32_cpu_tensors_and_torch_for_float64():
    assert resolve_backend("auto", "cpu") == "cpu"
    splats = scene(1, 200, 0)
    double = splats.map(lambda t: t.double())
    viewmats = torch.eye(4, dtype=torch.float64)[None]
    Ks = camera.intrinsics_to_K(camera.default_intrinsics((1,)), 16, 16).double()
    render(double, viewmats, Ks, 16, 16)  # float64 falls back to the torch reference
    with pytest.raises(ValueError, match="render backend 'cpu' needs float32 splats, got torch.float64"):
        render(double, viewmats, Ks, 16, 16, backend="cpu")


def test_an_unbuildable_kernel_is_reported_and_auto_falls_back(monkeypatch):
    from splat_portrait.render import api

    monkeypatch.setattr(api, "cpu_status", lambda: (False, "the C++ rasteriser could not be built (no compiler)"))
    api._auto_backend.cache_clear()
    try:
        assert resolve_backend("auto", "cpu") == "torch"
        with pytest.raises(SplatPortraitError, match=r"render backend 'cpu' is unusable: the C\+\+ rasteriser could not be built \(no compiler\)"):
            resolve_backend("cpu", "cpu")
    finally:
        api._auto_backend.cache_clear()
