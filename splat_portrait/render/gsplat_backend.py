"""gsplat's fused CUDA rasterizer, called with the settings that make it agree with our torch backend.

``gsplat`` compiles its CUDA kernels on first use (or loads prebuilt ones); whether that works is
only known by trying, so :func:`gsplat_status` tries once per process and remembers the answer.
"""

from __future__ import annotations

import contextlib
import io
from functools import lru_cache

import torch
from torch import Tensor

from splat_portrait.render.projection import EPS2D
from splat_portrait.splats import Splats


@lru_cache(maxsize=1)
def gsplat_status() -> tuple[bool, str]:
    """Whether gsplat's CUDA kernels load and run here, and a one-line explanation for ``doctor``."""
    try:
        import gsplat
    except Exception as err:  # a broken install can fail with more than ImportError
        return False, f"gsplat is not importable ({type(err).__name__}: {err})"
    version = getattr(gsplat, "__version__", "unknown version")
    if not torch.cuda.is_available():
        return False, f"gsplat {version} installed, but there is no CUDA device (the torch renderer is used)"
    # gsplat announces compiling or a missing toolkit on stdout; keep that out of our output.
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            from gsplat.cuda._backend import _C

            if _C is None:
                hint = " ".join(chatter.getvalue().split()) or "no prebuilt kernels and no CUDA toolkit to build them"
                return False, f"gsplat {version}: CUDA kernels unavailable ({hint})"
            _smoke_test()
    except Exception as err:
        return False, f"gsplat {version}: CUDA kernels failed to load or run ({type(err).__name__}: {err})"
    return True, f"gsplat {version}, CUDA kernels loaded on {torch.cuda.get_device_name(0)}"


def _smoke_test() -> None:
    """Render one splat: kernels built for another GPU architecture only fail when launched."""
    device = torch.device("cuda")
    splats = Splats(
        means=torch.tensor([[[0.0, 0.0, 2.0]]], device=device),
        quats=torch.tensor([[[1.0, 0.0, 0.0, 0.0]]], device=device),
        scales=torch.full((1, 1, 3), 0.1, device=device),
        opacities=torch.full((1, 1), 0.9, device=device),
        colors=torch.ones(1, 1, 3, device=device),
    )
    K = torch.tensor([[[16.0, 0.0, 8.0], [0.0, 16.0, 8.0], [0.0, 0.0, 1.0]]], device=device)
    _, alpha, _ = render_gsplat(splats, torch.eye(4, device=device)[None], K, 16, 16, 0.01, 1e10)
    if not float(alpha.max()) > 0.5:
        raise RuntimeError("smoke-test render came out empty")


def render_gsplat(
    splats: Splats, viewmats: Tensor, Ks: Tensor, width: int, height: int, near_plane: float, far_plane: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Composited colours (B, H, W, 3) without background, alpha (B, H, W, 1) and expected depth (B, H, W, 1)."""
    from gsplat import rasterization

    # One camera per cloud: gsplat's camera axis C is 1 here. "RGB+ED" composites camera-space z as
    # a fourth channel with a zero background and divides by alpha, i.e. our depth definition;
    # classic mode means no opacity compensation, matching the torch backend.
    renders, alphas, _ = rasterization(
        splats.means, splats.quats, splats.scales, splats.opacities, splats.colors,
        viewmats[:, None], Ks[:, None], width, height,
        near_plane=near_plane, far_plane=far_plane, eps2d=EPS2D, radius_clip=0.0,
        packed=False, render_mode="RGB+ED", rasterize_mode="classic",
    )  # fmt: skip
    renders, alphas = renders[:, 0], alphas[:, 0]
    return renders[..., :3], alphas, renders[..., 3:]
