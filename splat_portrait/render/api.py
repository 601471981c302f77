"""The renderer's entry point: argument checks, backend choice and background compositing."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from splat_portrait.errors import SplatPortraitError
from splat_portrait.render.cpu_backend import cpu_status
from splat_portrait.render.cpu_backend import rasterize as rasterize_cpu
from splat_portrait.render.gsplat_backend import gsplat_status, render_gsplat
from splat_portrait.render.projection import project
from splat_portrait.render.torch_backend import rasterize
from splat_portrait.splats import Splats

log = logging.getLogger(__name__)

BACKENDS = ("auto", "cpu", "torch", "gsplat")
# Largest image side callers should ask for: a 2048² frame already takes the torch renderer ~1 GB, and
# the bound keeps a typo such as --size 60000 (a 43 GB allocation) from exhausting the machine.
MAX_SIZE = 2048


@dataclass
class RenderOutput:
    rgb: Tensor  # (B, H, W, 3) splats composited over the background
    alpha: Tensor  # (B, H, W, 1) accumulated opacity
    depth: Tensor  # (B, H, W, 1) expected camera z: sum(w_i z_i) / alpha, 0 where alpha == 0


def resolve_backend(backend: str = "auto", device: torch.device | str | None = None) -> str:
    """The backend that renders tensors on ``device``: ``"cpu"``, ``"torch"`` or ``"gsplat"``.

    ``"auto"`` picks gsplat for CUDA tensors when its kernels load, our C++ rasteriser for CPU
    tensors when it builds, else torch. Asking for ``"gsplat"`` or ``"cpu"`` where it cannot run
    raises :class:`SplatPortraitError`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown render backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    device_type = torch.device(device if device is not None else "cpu").type
    if backend == "torch":
        return "torch"
    if backend == "cpu":
        if device_type != "cpu":
            raise SplatPortraitError(f"render backend 'cpu' needs CPU tensors, got {device_type} ones; use backend 'auto'")
        usable, detail = cpu_status()
        if not usable:
            raise SplatPortraitError(f"render backend 'cpu' is unusable: {detail}; use backend 'torch' or 'auto'")
        return "cpu"
    if backend == "gsplat":
        if not torch.cuda.is_available():
            raise SplatPortraitError(
                "render backend 'gsplat' needs a CUDA GPU and none is available; use backend 'torch' or 'auto'"
            )
        if device_type != "cuda":
            raise SplatPortraitError(
                f"render backend 'gsplat' needs CUDA tensors, got {device_type} ones; "
                "move the splats to the GPU or use backend 'torch'"
            )
        usable, detail = gsplat_status()
        if not usable:
            raise SplatPortraitError(f"render backend 'gsplat' is unusable: {detail}; use backend 'torch' or 'auto'")
        return "gsplat"
    return _auto_backend(device_type)


@lru_cache(maxsize=None)
def _auto_backend(device_type: str) -> str:
    # Cached per device type, which also makes the choice get logged once per process.
    if device_type == "cuda":
        usable, detail = gsplat_status()
        choice = "gsplat" if usable else "torch"
    elif device_type == "cpu":
        usable, detail = cpu_status()
        choice = "cpu" if usable else "torch"
    else:
        choice, detail = "torch", f"tensors on {device_type}"
    log.info("rendering %s tensors with the %s backend (%s)", device_type, choice, detail)
    return choice


def render(
    splats: Splats,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    background: Tensor | None = None,
    backend: str = "auto",
    near_plane: float = 0.01,
    far_plane: float = 1e10,
) -> RenderOutput:
    """Render B clouds (``splats`` with batch shape (B,)) through one camera each.

    ``viewmats`` (B, 4, 4) are world-to-camera (OpenCV axes), ``Ks`` (B, 3, 3) pixel intrinsics;
    ``background`` is None (black), (B, 3) colours or (B, H, W, 3) images. Differentiable with
    respect to every splat attribute and the background.
    """
    _check_inputs(splats, viewmats, Ks, width, height, background, near_plane, far_plane)
    viewmats, Ks = viewmats.to(splats.means), Ks.to(splats.means)

    choice = resolve_backend(backend, splats.device)
    if choice in ("gsplat", "cpu") and splats.dtype != torch.float32:
        if backend == choice:
            raise ValueError(f"render backend {choice!r} needs float32 splats, got {splats.dtype}")
        choice = "torch"

    if choice == "gsplat":
        rgb, alpha, depth = render_gsplat(splats, viewmats, Ks, width, height, near_plane, far_plane)
    else:
        composite = rasterize_cpu if choice == "cpu" else rasterize
        rgb, alpha, depth = _render_ours(splats, viewmats, Ks, width, height, near_plane, far_plane, composite)

    if background is not None:
        background = background.to(rgb)
        if background.dim() == 2:
            background = background[:, None, None, :]
        rgb = rgb + (1 - alpha) * background
    return RenderOutput(rgb=rgb, alpha=alpha, depth=depth)


def _render_ours(
    splats: Splats, viewmats: Tensor, Ks: Tensor, width: int, height: int, near_plane: float, far_plane: float, composite
) -> tuple[Tensor, Tensor, Tensor]:
    """Our projection, then ``composite`` (the torch or the C++ rasteriser, same signature and rules)."""
    p = project(
        splats.means, splats.quats, splats.scales, splats.opacities, viewmats, Ks, width, height, near_plane, far_plane
    )
    visible = (p.radii > 0).all(-1)
    features = torch.cat([splats.colors, p.depths[..., None]], -1)
    out, alpha = composite(p.means2d, p.conics, splats.opacities, features, p.depths, p.extents, visible, width, height)
    # Same normalisation as gsplat's "ED" mode; where alpha is 0 the sum is 0 too, so depth is 0.
    depth = out[..., 3:] / alpha.clamp_min(1e-10)
    return out[..., :3], alpha, depth


def _check_inputs(splats, viewmats, Ks, width, height, background, near_plane, far_plane) -> None:
    if not isinstance(splats, Splats):
        raise ValueError(f"render expects a Splats, got {type(splats).__name__}")
    if len(splats.batch_shape) != 1:
        raise ValueError(
            f"render expects Splats with batch shape (B,) (B clouds of N splats), got batch shape "
            f"{tuple(splats.batch_shape)}; use splats[None] for a single cloud"
        )
    B = splats.batch_shape[0]
    if splats.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"render needs float32 or float64 splats, got {splats.dtype}")
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not isinstance(viewmats, Tensor) or viewmats.shape != (B, 4, 4):
        raise ValueError(
            f"viewmats must have shape ({B}, 4, 4) (one world-to-camera matrix per cloud), got {_shape(viewmats)}"
        )
    if not isinstance(Ks, Tensor) or Ks.shape != (B, 3, 3):
        raise ValueError(f"Ks must have shape ({B}, 3, 3) (one pixel intrinsic matrix per cloud), got {_shape(Ks)}")
    if background is not None and (
        not isinstance(background, Tensor) or background.shape not in ((B, 3), (B, height, width, 3))
    ):
        raise ValueError(f"background must be None, ({B}, 3) or ({B}, {height}, {width}, 3), got {_shape(background)}")
    if not 0 < near_plane < far_plane:
        raise ValueError(f"need 0 < near_plane < far_plane, got near_plane={near_plane}, far_plane={far_plane}")
    for name, t in (("viewmats", viewmats), ("Ks", Ks), ("background", background)):
        if t is not None and t.device != splats.device:
            raise ValueError(f"{name} is on {t.device} but the splats are on {splats.device}")


def _shape(value) -> str:
    return str(tuple(value.shape)) if isinstance(value, Tensor) else f"a {type(value).__name__}"
