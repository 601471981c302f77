"""``splat_portrait.render.rasterization``: gsplat's signature and results, from our torch rasteriser."""

import inspect

import pytest
import torch

from splat_portrait import camera
from splat_portrait.render import rasterization, render
from splat_portrait.render.gsplat_compat import _IGNORED, _UNSUPPORTED
from splat_portrait.splats import Splats

W, H = 48, 40


def scene(n: int = 300, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * 0.15 + torch.tensor([0.0, 0.0, 2.7])
    return {
        "means": means,
        "quats": torch.randn(n, 4, generator=g),  # not normalised: rasterization normalises, as gsplat does
        "scales": torch.exp(torch.randn(n, 3, generator=g) * 0.3 - 4.0),
        "opacities": torch.sigmoid(torch.randn(n, generator=g)),
        "colors": torch.rand(n, 3, generator=g),
    }


def cameras(count: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    c2w = camera.orbit_around(camera.default_c2w((count,)), torch.linspace(0.0, 0.3, count), torch.zeros(count))
    return camera.world_to_view(c2w), camera.intrinsics_to_K(camera.default_intrinsics((count,)), W, H)


def test_arguments_have_gsplats_names_and_defaults():
    gsplat = pytest.importorskip("gsplat")
    theirs = inspect.signature(gsplat.rasterization).parameters
    ours = [p for p in inspect.signature(rasterization).parameters.values() if p.kind is not p.VAR_KEYWORD]
    assert [p.name for p in ours] == [name for name in theirs if name in {p.name for p in ours}]
    for p in ours:
        assert p.default == theirs[p.name].default, p.name
    handled = {p.name for p in ours} | set(_IGNORED) | set(_UNSUPPORTED) | {"rolling_shutter"}
    assert handled == set(theirs)
    for name, unused in _UNSUPPORTED.items():
        assert theirs[name].default == unused, name


def test_it_draws_what_render_draws_for_every_camera():
    s, (viewmats, Ks) = scene(), cameras(2)
    backgrounds = torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, 0.3, 0.1, 0.0]])
    colors, alphas, meta = rasterization(**s, viewmats=viewmats, Ks=Ks, width=W, height=H, render_mode="RGB+ED", backgrounds=backgrounds)
    assert colors.shape == (2, H, W, 4) and alphas.shape == (2, H, W, 1)
    cloud = Splats(s["means"], torch.nn.functional.normalize(s["quats"], dim=-1), s["scales"], s["opacities"], s["colors"])
    both = cloud.map(lambda t: t[None].expand(2, *t.shape))
    ours = render(both, viewmats, Ks, W, H, background=backgrounds[:, :3], backend="torch")
    assert ours.alpha.mean() > 0.05
    torch.testing.assert_close(colors[..., :3], ours.rgb)
    torch.testing.assert_close(alphas, ours.alpha)
    torch.testing.assert_close(colors[..., 3:], ours.depth)
    assert meta["radii"].shape == (2, 300, 2) and meta["means2d"].shape == (2, 300, 2) and meta["n_cameras"] == 2


def test_render_modes_and_per_camera_colours():
    s, (viewmats, Ks) = scene(), cameras(2)
    expected, alphas, _ = rasterization(**s, viewmats=viewmats, Ks=Ks, width=W, height=H, render_mode="ED")
    accumulated, _, _ = rasterization(**s, viewmats=viewmats, Ks=Ks, width=W, height=H, render_mode="D")
    torch.testing.assert_close(accumulated, expected * alphas, atol=1e-5, rtol=1e-5)
    rgb, _, _ = rasterization(**s, viewmats=viewmats, Ks=Ks, width=W, height=H)
    per_camera = {**s, "colors": torch.stack([s["colors"], 1 - s["colors"]])}
    two, _, _ = rasterization(**per_camera, viewmats=viewmats, Ks=Ks, width=W, height=H)
    torch.testing.assert_close(two[0], rgb[0])
    torch.testing.assert_close(two[1], alphas[1] - rgb[1])  # colours 1 - c composite to alpha - image


def test_radius_clip_drops_small_splats_and_gradients_flow():
    s, (viewmats, Ks) = scene(), cameras(1)
    _, _, meta = rasterization(**s, viewmats=viewmats, Ks=Ks, width=W, height=H)
    _, _, clipped = rasterization(**s, viewmats=viewmats, Ks=Ks, width=W, height=H, radius_clip=2.0)
    kept = (clipped["radii"] > 0).all(-1)
    assert 0 < kept.sum() < (meta["radii"] > 0).all(-1).sum()
    assert (clipped["radii"][kept].amax(-1) > 2).all()
    leaves = {k: v.clone().requires_grad_() for k, v in s.items()}
    colors, alphas, _ = rasterization(**leaves, viewmats=viewmats, Ks=Ks, width=W, height=H, packed=False, tile_size=8)
    (colors.sum() + alphas.sum()).backward()
    for name, leaf in leaves.items():
        assert leaf.grad is not None and leaf.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "option, message",
    [
        ({"sh_degree": 3}, "rasterization: sh_degree=3 is not supported by the torch rasteriser (only sh_degree=None); use gsplat on a CUDA device for it"),
        ({"rasterize_mode": "antialiased"}, "rasterization: rasterize_mode='antialiased' is not supported by the torch rasteriser (only rasterize_mode='classic')"),
        ({"covars": torch.zeros(300, 3, 3)}, "rasterization: covars=a tensor of shape (300, 3, 3) is not supported"),
        ({"camera_model": "fisheye"}, "rasterization: camera_model='fisheye' is not supported"),
        ({"render_mode": "RGB+X"}, "render_mode must be one of RGB, D, ED, RGB+D, RGB+ED, got 'RGB+X'"),
        ({"backgrounds": torch.zeros(2, 4)}, "backgrounds must have shape (2, 3) for render_mode 'RGB', got (2, 4)"),
    ],
)  # fmt: skip
def test_unsupported_arguments_are_named(option, message):
    s, (viewmats, Ks) = scene(), cameras(2)
    with pytest.raises(ValueError) as caught:
        rasterization(**s, viewmats=viewmats, Ks=Ks, width=W, height=H, **option)
    assert str(caught.value).startswith(message)


def test_bad_shapes_and_unknown_arguments():
    s, (viewmats, Ks) = scene(), cameras(2)
    with pytest.raises(ValueError, match=r"means must have shape \(N, 3\), got \(1, 300, 3\) \(batched leading dimensions are not supported\)"):
        rasterization(**{**s, "means": s["means"][None]}, viewmats=viewmats, Ks=Ks, width=W, height=H)
    with pytest.raises(ValueError, match=r"Ks must have shape \(2, 3, 3\), got \(1, 3, 3\)"):
        rasterization(**s, viewmats=viewmats, Ks=Ks[:1], width=W, height=H)
    with pytest.raises(TypeError, match="rasterization\\(\\) got an unexpected keyword argument 'colour'"):
        rasterization(**s, viewmats=viewmats, Ks=Ks, width=W, height=H, colour=1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU for gsplat's kernels")
def test_it_matches_gsplat_on_cuda():
    gsplat = pytest.importorskip("gsplat")
    s = {k: v.cuda() for k, v in scene(2000).items()}
    viewmats, Ks = (t.cuda() for t in cameras(2))
    backgrounds = torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, 0.3, 0.1, 0.0]], device="cuda")
    ours = rasterization(**s, viewmats=viewmats, Ks=Ks, width=W, height=H, render_mode="RGB+ED", backgrounds=backgrounds)
    theirs = gsplat.rasterization(**s, viewmats=viewmats, Ks=Ks, width=W, height=H, render_mode="RGB+ED", backgrounds=backgrounds)
    assert (ours[0] - theirs[0]).abs().mean() < 1e-3 and (ours[1] - theirs[1]).abs().mean() < 1e-3
