"""``rasterization()``: our torch rasteriser behind gsplat's own function signature, for any device.

People who know gsplat can swap ``from gsplat import rasterization`` for
``from splat_portrait.render import rasterization`` and run on a CPU. The arguments have gsplat
1.5's names, defaults and shapes, and so do the results: ``N`` Gaussians seen by ``C`` cameras ->
``render_colors`` (C, H, W, X), ``render_alphas`` (C, H, W, 1) and a ``meta`` dict.

Supported: ``means`` (N, 3), ``quats`` (N, 4, wxyz, normalised here as gsplat does), ``scales``
(N, 3), ``opacities`` (N,), ``colors`` (N, D) or (C, N, D) with ``sh_degree=None``, ``viewmats``
(C, 4, 4), ``Ks`` (C, 3, 3), ``near_plane``, ``far_plane``, ``radius_clip``, ``eps2d``,
``backgrounds`` (C, X) and ``render_mode`` ``RGB``, ``D``, ``ED``, ``RGB+D``, ``RGB+ED``.
Performance switches that do not change the result (``packed``, ``tile_size``, ``sparse_grad``,
``channel_chunk``) are accepted and ignored. Everything else gsplat offers (spherical harmonics,
``antialiased`` mode, ``absgrad``, batched leading dimensions, distributed rendering, other camera
models, distortion, rolling shutter, 3D covariances, the unscented transform) raises a ValueError
that names the argument. ``meta`` holds ``means2d``, ``conics``, ``depths``, ``radii`` (C, N, 2),
``opacities`` (C, N), ``width``, ``height``, ``n_cameras``; gsplat's tile bookkeeping is not there.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from splat_portrait.render.projection import EPS2D, project
from splat_portrait.render.torch_backend import rasterize

RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")
# Arguments of gsplat.rasterization that only change speed or memory, not the image.
_IGNORED = ("packed", "tile_size", "sparse_grad", "channel_chunk")
# Unsupported arguments and the value that means "not used".
_UNSUPPORTED = {
    "sh_degree": None, "absgrad": False, "rasterize_mode": "classic", "distributed": False, "camera_model": "pinhole",
    "segmented": False, "covars": None, "with_ut": False, "with_eval3d": False, "radial_coeffs": None,
    "tangential_coeffs": None, "thin_prism_coeffs": None, "ftheta_coeffs": None, "viewmats_rs": None,
}  # fmt: skip


def rasterization(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = EPS2D,
    backgrounds: Tensor | None = None,
    render_mode: str = "RGB",
    **options: Any,
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Render ``N`` Gaussians from ``C`` cameras, as ``gsplat.rasterization`` does (see the module docstring)."""
    _check_options(options)
    if render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be one of {', '.join(RENDER_MODES)}, got {render_mode!r}")
    N, C = _check_shapes(means, quats, scales, opacities, colors, viewmats, Ks)
    per_camera = [t[None].expand(C, *t.shape) for t in (means, torch.nn.functional.normalize(quats, dim=-1), scales, opacities)]
    means_c, quats_c, scales_c, opacities_c = per_camera
    colors_c = colors if colors.dim() == 3 else colors[None].expand(C, -1, -1)
    p = project(means_c, quats_c, scales_c, opacities_c, viewmats, Ks, width, height, near_plane, far_plane, eps2d)
    visible = (p.radii > 0).all(-1) & (p.radii.amax(-1) > radius_clip)
    channels = {"RGB": [colors_c], "D": [p.depths[..., None]], "ED": [p.depths[..., None]]}
    features = torch.cat([c for part in render_mode.split("+") for c in channels[part]], -1)
    out, alphas = rasterize(p.means2d, p.conics, opacities_c, features, p.depths, p.extents, visible, width, height)
    if render_mode.endswith("ED"):
        # Expected depth: the accumulated depth over the accumulated opacity, as gsplat normalises it.
        out = torch.cat([out[..., :-1], out[..., -1:] / alphas.clamp_min(1e-10)], -1)
    if backgrounds is not None:
        if backgrounds.shape != (C, out.shape[-1]):
            raise ValueError(f"backgrounds must have shape ({C}, {out.shape[-1]}) for render_mode {render_mode!r}, got {tuple(backgrounds.shape)}")
        out = out + (1 - alphas) * backgrounds[:, None, None, :].to(out)
    radii = torch.where(visible[..., None], p.radii, torch.zeros_like(p.radii))
    meta = {"means2d": p.means2d, "conics": p.conics, "depths": p.depths, "radii": radii, "opacities": opacities_c,
            "width": width, "height": height, "n_cameras": C}  # fmt: skip
    return out, alphas, meta


def _check_options(options: dict[str, Any]) -> None:
    for name, value in options.items():
        if name in _IGNORED:
            continue
        if name not in _UNSUPPORTED and name != "rolling_shutter":
            raise TypeError(f"rasterization() got an unexpected keyword argument {name!r}")
        if name == "rolling_shutter":
            if getattr(value, "name", value) not in ("GLOBAL", None):
                raise ValueError(f"rasterization: {name}={value!r} is not supported by the torch rasteriser (global shutter only)")
        elif isinstance(value, Tensor) or value != _UNSUPPORTED[name]:
            raise ValueError(
                f"rasterization: {name}={_describe(value)} is not supported by the torch rasteriser "
                f"(only {name}={_UNSUPPORTED[name]!r}); use gsplat on a CUDA device for it"
            )


def _describe(value: Any) -> str:
    return f"a tensor of shape {tuple(value.shape)}" if isinstance(value, Tensor) else repr(value)


def _check_shapes(means, quats, scales, opacities, colors, viewmats, Ks) -> tuple[int, int]:
    if means.dim() != 2 or means.shape[-1] != 3:
        raise ValueError(
            f"means must have shape (N, 3), got {tuple(means.shape)} (batched leading dimensions are not supported)"
        )
    N, C = means.shape[0], viewmats.shape[0] if viewmats.dim() == 3 else -1
    expected = {"quats": (quats, (N, 4)), "scales": (scales, (N, 3)), "opacities": (opacities, (N,)),
                "viewmats": (viewmats, (C, 4, 4)), "Ks": (Ks, (C, 3, 3))}  # fmt: skip
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(tensor.shape)}")
    if colors.shape[:-1] not in ((N,), (C, N)):
        raise ValueError(f"colors must have shape ({N}, D) or ({C}, {N}, D) (sh_degree=None), got {tuple(colors.shape)}")
    return N, C
