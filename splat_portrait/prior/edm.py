"""An EDM face denoiser (Karras et al. 2022): noise schedule, preconditioning, training loss, Euler step.

Images live in [-1, 1] (the frames' range) and are noised as ``x + sigma * eps``. The network is
our :class:`~splat_portrait.models.unet.SongUNet`, wrapped in EDM's preconditioning so that it
predicts a well-scaled target at every noise level:

    D(x; sigma) = c_skip(sigma) * x + c_out(sigma) * F(c_in(sigma) * x; c_noise(sigma))

with ``c_skip = s_d^2 / (sigma^2 + s_d^2)``, ``c_out = sigma * s_d / sqrt(sigma^2 + s_d^2)``,
``c_in = 1 / sqrt(sigma^2 + s_d^2)``, ``c_noise = ln(sigma) / 4`` and ``s_d = sigma_data``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from splat_portrait.models.checkpoint import load_checkpoint
from splat_portrait.models.config import PRESETS, UNetConfig
from splat_portrait.models.unet import ConditionMLP, SongUNet, positional_embedding

# A denoiser maps noisy images (B, C, H, W) and their noise levels (B,) to clean estimates.
Denoiser = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class EDMSchedule:
    """The sampler's noise levels, the paper's eq. 3 (EDM's eq. 5)::

        sigma_i = (sigma_max^(1/rho) + i / (N - 1) * (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,  i < N

    followed by ``sigma_N = 0``. (The paper prints the exponents as ``rho``; EDM's ``1/rho`` is
    the form that runs from ``sigma_max`` to ``sigma_min``.)
    """

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    num_steps: int = 18

    def __post_init__(self) -> None:
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min} and {self.sigma_max}")
        if self.rho <= 0 or self.num_steps < 2:
            raise ValueError(f"need rho > 0 and num_steps >= 2, got {self.rho} and {self.num_steps}")

    def sigmas(self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
        """``(N + 1,)`` decreasing levels: ``sigma_max``, ..., ``sigma_min``, 0."""
        i = torch.arange(self.num_steps, dtype=torch.float64)
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        levels = (hi + i / (self.num_steps - 1) * (lo - hi)) ** self.rho
        return torch.cat([levels, levels.new_zeros(1)]).to(dtype=dtype, device=device)


class Preconditioning(NamedTuple):
    c_skip: Tensor
    c_out: Tensor
    c_in: Tensor
    c_noise: Tensor


def preconditioning(sigma: Tensor, sigma_data: float = 0.5) -> Preconditioning:
    """EDM's coefficients (module docstring) at noise levels ``sigma`` (any shape)."""
    total = sigma.square() + sigma_data**2
    return Preconditioning(
        c_skip=sigma_data**2 / total,
        c_out=sigma * sigma_data / total.sqrt(),
        c_in=total.rsqrt(),
        c_noise=sigma.log() / 4,
    )


@dataclass(frozen=True)
class EDMDenoiserConfig:
    """Everything that rebuilds an :class:`EDMDenoiser`: its U-Net and the noise range it was trained for."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    # Width of the sinusoidal embedding of c_noise (the MLP then maps it to unet.embedding_dim).
    noise_embedding_dim: int = 32
    sigma_data: float = 0.5
    schedule: EDMSchedule = field(default_factory=EDMSchedule)

    def __post_init__(self) -> None:
        if self.noise_embedding_dim % 2:
            raise ValueError(f"noise_embedding_dim must be even, got {self.noise_embedding_dim}")


# The talking-head presets' U-Net shapes (64^2 for tests, 128^2 for a CPU-trainable demo).
PRIOR_PRESETS: dict[str, EDMDenoiserConfig] = {
    name: EDMDenoiserConfig(unet=PRESETS[name].generator.unet) for name in ("tiny", "small")
}


class EDMDenoiser(nn.Module):
    """``D(x, sigma)``: a preconditioned SongUNet (3 -> 3 channels) conditioned on the noise level."""

    kind: ClassVar[str] = "edm-denoiser"

    def __init__(self, config: EDMDenoiserConfig) -> None:
        super().__init__()
        self.config = config
        self.unet = SongUNet(config.unet, in_channels=3, out_channels=3)
        self.noise_mlp = ConditionMLP(config.noise_embedding_dim, config.unet.embedding_dim)

    @property
    def resolution(self) -> int:
        return self.config.unet.image_size

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """Denoised estimate of ``x`` (B, 3, R, R) at noise level ``sigma`` (a scalar or (B,))."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
        c = preconditioning(sigma, self.config.sigma_data)
        emb = self.noise_mlp(positional_embedding(c.c_noise, self.config.noise_embedding_dim))
        out, _ = self.unet(c.c_in[:, None, None, None] * x, emb)
        return c.c_skip[:, None, None, None] * x + c.c_out[:, None, None, None] * out


DENOISER_KINDS = {EDMDenoiser.kind: (EDMDenoiser, EDMDenoiserConfig)}


def load_denoiser(path: str | os.PathLike, device: str | torch.device = "cpu") -> EDMDenoiser:
    """The denoiser stored by ``splat-portrait train-prior``, frozen and in eval mode (a prior for SDS)."""
    model, _ = load_checkpoint(path, device, kinds=DENOISER_KINDS)
    return model.requires_grad_(False).eval()


def edm_loss(
    denoiser: EDMDenoiser,
    images: Tensor,
    generator: torch.Generator | None = None,
    p_mean: float = -1.2,
    p_std: float = 1.2,
) -> Tensor:
    """EDM's training loss on clean ``images`` (B, 3, R, R) in [-1, 1].

    ``ln(sigma) ~ N(p_mean, p_std^2)`` per image, and the squared error of ``D(y + sigma*n; sigma)``
    against ``y`` is weighted by ``(sigma^2 + s_d^2) / (sigma * s_d)^2``, which makes the effective
    target of the raw network unit-variance at every level.
    """
    device = generator.device if generator is not None else images.device
    sigma = (p_mean + p_std * torch.randn(images.shape[0], generator=generator, device=device)).exp().to(images)
    noise = torch.randn(images.shape, generator=generator, device=device).to(images)
    s_d = denoiser.config.sigma_data
    weight = (sigma.square() + s_d**2) / (sigma * s_d).square()
    denoised = denoiser(images + sigma[:, None, None, None] * noise, sigma)
    return (weight[:, None, None, None] * (denoised - images).square()).mean()


def euler_step(denoiser: Denoiser, x: Tensor, sigma: float, sigma_next: float) -> Tensor:
    """One step of the probability-flow ODE, the paper's eq. 4::

        x_next = x + (sigma_next - sigma) * (x - D(x; sigma)) / sigma

    A step to ``sigma_next = 0`` lands on ``D(x; sigma)`` itself.
    """
    if not sigma > 0:
        raise ValueError(f"an Euler step starts at a positive noise level, got {sigma}")
    slope = (x - denoiser(x, torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device))) / sigma
    return x + (sigma_next - sigma) * slope

