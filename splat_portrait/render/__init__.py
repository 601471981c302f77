"""Differentiable rendering of Gaussian splats: ``render(splats, viewmats, Ks, width, height)``.

Three backends draw the same image: ``"gsplat"`` (its fused CUDA kernels), ``"torch"`` (ours,
any device and dtype, tile-binned and vectorised), which follows gsplat's projection and
compositing rules exactly, and ``"cpu"`` (the same rules in our C++ rasteriser, float32 on CPUs,
compiled on first use); ``"auto"`` takes gsplat where its kernels run, else cpu where it builds,
else torch. Module map: ``projection`` (EWA splat projection), ``torch_backend`` (binning +
compositing with a hand-written backward), ``cpu_backend`` (the C++ rasteriser and its loader),
``gsplat_backend`` (the gsplat call and its availability check), ``api`` (this entry point),
``gsplat_compat`` (``rasterization()``: the torch rasteriser behind gsplat's own signature).
"""

from splat_portrait.render.api import BACKENDS, MAX_SIZE, RenderOutput, render, resolve_backend
from splat_portrait.render.gsplat_backend import gsplat_status
from splat_portrait.render.gsplat_compat import rasterization

__all__ = ["BACKENDS", "MAX_SIZE", "RenderOutput", "gsplat_status", "rasterization", "render", "resolve_backend"]
