"""The ``"cpu"`` backend: our C++ rasteriser (``cpu_rasterizer.cpp``), compiled on first use.

Same inputs, rules and outputs as :func:`splat_portrait.render.torch_backend.rasterize` (the
vectorised torch reference it is tested against), for float32 CPU tensors, with its backward
pass; tiles run on OpenMP threads (``torch.set_num_threads``). It is built with PyTorch's C++
extension loader (a C++ compiler and ``ninja``, from the project's dependencies) into
``TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``) the first time a process needs it,
about a minute once per machine and torch version; where it cannot be built, ``"auto"`` renders
with the torch backend and says why once.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("cpu_rasterizer.cpp")


@functools.lru_cache(maxsize=None)
def kernels() -> tuple[object | None, str]:
    """(the compiled module, "") or (None, why it is unavailable)."""
    # The loader warns that it found no CUDA runtime, which does not matter for a CPU kernel.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension

        source = SOURCE.read_text(encoding="utf-8")
        # The build folder is named by the source's hash and the source is written into it, so a
        # build serves every checkout and installed copy of the same code, wherever it lives (a
        # source path that changes would make ninja rebuild), and different code never shares one.
        digest = hashlib.sha256(source.encode()).hexdigest()[:12]
        module = cpp_extension.load_inline(
            name=f"splat_portrait_cpu_rasterizer_{digest}", cpp_sources=[source], extra_cflags=["-O3", "-fopenmp"],
            extra_ldflags=["-fopenmp"], verbose=False,
        )  # fmt: skip
    except Exception as err:  # a missing compiler or ninja, a failed build: all mean "use torch"
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        return None, f"the C++ rasteriser could not be built ({reason[:200]})"
    return module, ""


def cpu_status() -> tuple[bool, str]:
    module, reason = kernels()
    return module is not None, reason or "C++ rasteriser built"


class _Rasterize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, features, depths, extents, visible, width: int, height: int) -> Tensor:
        module, _ = kernels()
        out, t_final, last, starts, entries, box = module.forward(
            means2d, conics, opacities, features, depths, extents, visible, width, height
        )
        ctx.save_for_backward(means2d, conics, opacities, features, t_final, last, starts, entries, box)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        module, _ = kernels()
        d_means, d_conics, d_opacities, d_features = module.backward(grad_out, *ctx.saved_tensors)
        return d_means, d_conics, d_opacities, d_features, None, None, None, None, None


def rasterize(
    means2d: Tensor, conics: Tensor, opacities: Tensor, features: Tensor, depths: Tensor, extents: Tensor,
    visible: Tensor, width: int, height: int,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """:func:`splat_portrait.render.torch_backend.rasterize` in C++: features (B, H, W, C) and alpha (B, H, W, 1)."""
    # A feature of ones composites to sum(w) = 1 - T_final: the pixel's alpha, with its gradient.
    table = torch.cat([features, torch.ones_like(features[..., :1])], -1)
    out = _Rasterize.apply(
        means2d.contiguous(), conics.contiguous(), opacities.contiguous(), table.contiguous(), depths.detach().contiguous(),
        extents.detach().contiguous(), visible.contiguous(), width, height,
    )  # fmt: skip
    return out[..., :-1], out[..., -1:]
