"""The synthetic head: random identities, their motion (camera wander, blinks) and the analytic ray caster that renders them.

A head is a few ellipsoids (cranium, jaw, nose, neck, ears) with a solid procedural skin texture,
hair, eyes that blink and a jaw that drops with the mouth opening, in front of a textured
background plane. The ray caster renders every frame of a clip at once in torch.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from splat_portrait import camera
from splat_portrait.data import layout

FPS = layout.FPS

# Ellipsoid parts of every head, in this order (index = part id in the renderer).
CRANIUM, JAW, NOSE, NECK, LEFT_EAR, RIGHT_EAR = range(6)
# Centres and radii in world units for an average head; identities scale and perturb them. The
# sizes make the face fill the central ~60% of a frame at the default FFHQ-like camera.
_PARTS = np.array(
    [
        [[0.0, -0.03, 0.02], [0.19, 0.24, 0.22]],
        [[0.0, 0.10, -0.04], [0.14, 0.12, 0.16]],
        [[0.0, 0.01, -0.20], [0.03, 0.06, 0.04]],
        [[0.0, 0.32, 0.05], [0.11, 0.15, 0.11]],
        [[-0.19, 0.0, 0.03], [0.03, 0.06, 0.04]],
        [[0.19, 0.0, 0.03], [0.03, 0.06, 0.04]],
    ],
    np.float32,
)
# How far the jaw drops (world units) when the mouth is fully open.
_JAW_DROP = 0.03
_MOUTH_OPEN_HEIGHT = 0.045
_BACKGROUND_Z = 1.2
# Rays per chunk: bounds the renderer's memory (rays x parts floats per intermediate).
_CHUNK_RAYS = 1 << 17


@dataclass(frozen=True)
class HeadIdentity:
    """Everything that makes one synthetic person look like themselves."""

    parts: np.ndarray  # (6, 2, 3) ellipsoid centres and radii
    skin: np.ndarray  # (2, 3) RGB the skin texture mixes between
    skin_waves: np.ndarray  # (K, 4) 3D wave vectors and phases of the skin texture
    hair: np.ndarray  # (3,)
    hairline: float  # y of the front hairline
    lips: np.ndarray  # (3,)
    iris: np.ndarray  # (3,)
    eye_x: float
    eye_y: float
    mouth_y: float
    mouth_width: float
    light: np.ndarray  # (3,) unit vector towards the light
    background: np.ndarray  # (3, 3) RGB of the background pattern
    background_waves: np.ndarray  # (K, 3) 2D wave vectors and phases
    f0: float  # voice pitch (Hz) of the fallback voiced sound
    voice: str  # espeak-ng voice


def random_identity(rng: np.random.Generator) -> HeadIdentity:
    """A random person: head proportions, skin, hair, eyes, mouth, lighting, background, voice."""
    scale = rng.uniform(0.93, 1.07)
    stretch = np.array([rng.uniform(0.93, 1.07), rng.uniform(0.95, 1.05), 1.0], np.float32)
    parts = _PARTS.copy()
    parts[:, 0] *= scale * stretch
    parts[:, 1] *= scale * stretch
    parts[NOSE, 1] *= rng.uniform(0.8, 1.25, 3)
    tone = rng.uniform(0.25, 0.95)
    # Skin tones from dark brown to pale, each with a slightly redder second colour for texture.
    skin_a = np.array([0.95, 0.78, 0.66]) * tone + np.array([0.30, 0.18, 0.12]) * (1 - tone)
    skin_b = skin_a * rng.uniform(0.72, 0.85) + np.array([0.06, 0.0, 0.0])
    hair = rng.choice([[0.08, 0.06, 0.05], [0.30, 0.18, 0.10], [0.60, 0.45, 0.25], [0.55, 0.55, 0.55], [0.45, 0.15, 0.08]])
    light = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.7, -0.1), -1.0])
    return HeadIdentity(
        parts=parts.astype(np.float32),
        skin=np.clip(np.stack([skin_a, skin_b]), 0, 1).astype(np.float32),
        skin_waves=_random_waves(rng, 6, dims=3, low=10.0, high=50.0),
        hair=np.clip(np.asarray(hair) * rng.uniform(0.8, 1.2, 3), 0, 1).astype(np.float32),
        hairline=float(rng.uniform(-0.17, -0.11) * scale),
        lips=np.clip(skin_a * np.array([0.85, 0.5, 0.5]) + rng.uniform(0.0, 0.1), 0, 1).astype(np.float32),
        iris=rng.uniform(0.05, 0.45, 3).astype(np.float32),
        eye_x=float(rng.uniform(0.065, 0.085) * scale),
        eye_y=float(rng.uniform(-0.045, -0.025) * scale),
        mouth_y=float(rng.uniform(0.105, 0.125) * scale),
        mouth_width=float(rng.uniform(0.04, 0.055) * scale),
        light=(light / np.linalg.norm(light)).astype(np.float32),
        background=rng.uniform(0.1, 0.9, (3, 3)).astype(np.float32),
        background_waves=_random_waves(rng, 4, dims=2, low=2.0, high=12.0),
        f0=float(rng.uniform(95.0, 220.0)),
        voice=str(rng.choice(["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-us+f3", "en-gb+f2"])),
    )


def _random_waves(rng: np.random.Generator, count: int, dims: int, low: float, high: float) -> np.ndarray:
    directions = rng.normal(size=(count, dims))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    frequencies = rng.uniform(low, high, (count, 1))
    phases = rng.uniform(0, 2 * math.pi, (count, 1))
    return np.concatenate([directions * frequencies, phases], 1).astype(np.float32)


def blinks(rng: np.random.Generator, num_frames: int) -> np.ndarray:
    """Eye closure in [0, 1] per frame: a ~0.2 s blink every 2-5 s."""
    closure = np.zeros(num_frames, np.float32)
    profile = np.array([0.4, 1.0, 1.0, 0.4], np.float32)
    frame = rng.uniform(0.5, 3.0) * FPS
    while frame < num_frames:
        start = int(frame)
        span = closure[start : start + len(profile)]
        span[:] = np.maximum(span, profile[: len(span)])
        frame += rng.uniform(2.0, 5.0) * FPS
    return closure




def _wander(rng: np.random.Generator, num_frames: int, amplitude: float) -> np.ndarray:
    """A smooth random signal within +-amplitude: a few slow sinusoids (0.1-0.7 Hz)."""
    t = np.arange(num_frames) / FPS
    weights = rng.uniform(0.3, 1.0, 3)
    freqs = rng.uniform(0.1, 0.7, 3)
    phases = rng.uniform(0, 2 * math.pi, 3)
    signal = (weights[:, None] * np.sin(2 * math.pi * freqs[:, None] * t + phases[:, None])).sum(0)
    return amplitude * signal / weights.sum()


def talking_cameras(
    rng: np.random.Generator, num_frames: int, max_yaw_deg: float, max_pitch_deg: float, max_roll_deg: float, max_shift: float
) -> tuple[Tensor, Tensor]:
    """Per-frame normalised intrinsics (F, 4) and c2w (F, 4, 4) of a head moving while it talks."""
    yaw = torch.from_numpy(_wander(rng, num_frames, math.radians(max_yaw_deg)))
    pitch = torch.from_numpy(_wander(rng, num_frames, math.radians(max_pitch_deg)))
    roll = torch.from_numpy(_wander(rng, num_frames, math.radians(max_roll_deg)))
    shift = torch.from_numpy(np.stack([_wander(rng, num_frames, max_shift) for _ in range(3)], -1))
    c2w = camera.orbit_around(camera.default_c2w(dtype=torch.float64), yaw, pitch)
    forward = c2w[:, :3, 2]
    c2w[:, :3, :3] = camera.axis_angle_to_matrix(forward, roll) @ c2w[:, :3, :3]
    c2w[:, :3, 3] += shift
    return camera.default_intrinsics((num_frames,)), c2w.float()




@dataclass(frozen=True)
class _Scene:
    """Per-frame geometry and appearance as tensors the ray caster broadcasts over."""

    centres: Tensor  # (F, P, 3): the jaw moves with the mouth
    radii: Tensor  # (P, 3)
    mouth: Tensor  # (F,)
    blink: Tensor  # (F,)
    identity: HeadIdentity


def _scene(identity: HeadIdentity, mouth: np.ndarray, blink: np.ndarray) -> _Scene:
    mouth_t = torch.from_numpy(mouth).float()
    centres = torch.from_numpy(identity.parts[:, 0]).expand(len(mouth), -1, -1).clone()
    centres[:, JAW, 1] += _JAW_DROP * mouth_t
    return _Scene(centres, torch.from_numpy(identity.parts[:, 1]), mouth_t, torch.from_numpy(blink).float(), identity)


def _intersect(origins: Tensor, dirs: Tensor, centres: Tensor, radii: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest hit of rays (F, N, 3) from origins (F, 3) with ellipsoids (F, P, 3) / (P, 3).

    Returns the ray parameter t (F, N), inf on a miss, and the hit part (F, N). Rays have unit
    view-space z, so t is the hit's z-depth.
    """
    # |(o + t d - c) / r|^2 = 1 is a quadratic in t whose coefficients are matrix products over
    # the axes, far cheaper than broadcasting (F, P, N, 3) tensors.
    inv_r2 = radii.reciprocal().square()
    offset = origins[:, None, :] - centres
    a = dirs.square() @ inv_r2.T
    half_b = dirs @ (offset * inv_r2).transpose(1, 2)
    c = (offset.square() * inv_r2).sum(-1)[:, None, :] - 1
    disc = half_b.square() - a * c
    t = (-half_b - disc.clamp(min=0).sqrt()) / a
    t = torch.where((disc > 0) & (t > 0), t, math.inf)
    return t.min(-1)


def _waves(points: Tensor, waves: np.ndarray) -> Tensor:
    """Sum of sinusoids of ``points`` (..., d) for wave rows (K, d + 1): a smooth texture in [-1, 1]."""
    w = torch.from_numpy(waves)
    return torch.sin(points @ w[:, :-1].T + w[:, -1]).mean(-1)


def _head_colour(points: Tensor, normals: Tensor, part: Tensor, frame: Tensor, scene: _Scene) -> Tensor:
    """Shaded RGB (N, 3) of head surface points (N, 3) on ``part`` (N,) at frame index (N,)."""
    ident = scene.identity
    mouth = scene.mouth[frame]
    # Texture lives on the moving jaw, so it must not swim when the jaw drops.
    local = points.clone()
    on_jaw = part == JAW
    local[on_jaw, 1] -= _JAW_DROP * mouth[on_jaw]
    skin = torch.from_numpy(ident.skin)
    mix = 0.5 + 0.5 * torch.tanh(4 * _waves(local, ident.skin_waves))
    colour = skin[0] + mix[:, None] * (skin[1] - skin[0])
    x, y, z = local.unbind(-1)
    front = z < -0.05
    face = (part == CRANIUM) | (part == JAW)

    # Hair covers the cranium above the hairline; the line drops towards the back of the head.
    hairline = ident.hairline + 0.22 * torch.clamp((z + 0.05) / 0.2, 0, 1)
    strands = 0.85 + 0.15 * torch.sin(90 * x + 8 * torch.sin(25 * y))
    hair = (part == CRANIUM) & (y < hairline)
    colour = torch.where(hair[:, None], torch.from_numpy(ident.hair) * strands[:, None], colour)

    for side in (-1.0, 1.0):
        dx, dy = x - side * ident.eye_x, y - ident.eye_y
        half_height = 0.016 * (1 - scene.blink[frame]) + 1e-4
        sclera = face & front & ((dx / 0.032) ** 2 + (dy / half_height) ** 2 < 1)
        iris = sclera & (dx**2 + dy**2 < 0.012**2)
        pupil = sclera & (dx**2 + dy**2 < 0.005**2)
        brow = face & front & (dx.abs() < 0.035) & ((dy + 0.04 + 0.15 * dx**2 / 0.035).abs() < 0.005)
        colour = torch.where(sclera[:, None], torch.tensor([0.92, 0.9, 0.88]), colour)
        colour = torch.where(iris[:, None], torch.from_numpy(ident.iris), colour)
        colour = torch.where(pupil[:, None], torch.tensor([0.03, 0.03, 0.03]), colour)
        colour = torch.where(brow[:, None], torch.from_numpy(ident.hair) * 0.8, colour)

    # The upper lip stays put and the lower lip follows the jaw: the opening grows downwards.
    open_height = _MOUTH_OPEN_HEIGHT * mouth
    centre_y = ident.mouth_y + 0.5 * open_height
    half_height = 0.5 * open_height + 0.002
    u = x / ident.mouth_width
    lips = face & front & (u**2 + ((y - centre_y) / (half_height + 0.012)) ** 2 < 1)
    cavity = face & front & ((u / 0.9) ** 2 + ((y - centre_y) / half_height) ** 2 < 1)
    teeth = cavity & (y < centre_y - half_height + 0.006) & (mouth > 0.2)
    colour = torch.where(lips[:, None], torch.from_numpy(ident.lips), colour)
    colour = torch.where(cavity[:, None], torch.tensor([0.2, 0.05, 0.06]), colour)
    colour = torch.where(teeth[:, None], torch.tensor([0.9, 0.88, 0.8]), colour)

    lambert = (normals @ torch.from_numpy(ident.light)).clamp(min=0)
    return colour * (0.35 + 0.7 * lambert[:, None])


def _background_colour(origins: Tensor, dirs: Tensor, identity: HeadIdentity) -> Tensor:
    """RGB (F, N, 3) of the textured wall at z = _BACKGROUND_Z behind the head."""
    t = (_BACKGROUND_Z - origins[:, None, 2]) / dirs[..., 2]
    xy = origins[:, None, :2] + t[..., None] * dirs[..., :2]
    palette = torch.from_numpy(identity.background)
    s = 0.5 + 0.5 * _waves(xy, identity.background_waves[:2])
    r = 0.5 + 0.5 * _waves(xy, identity.background_waves[2:])
    return palette[0] + s[..., None] * (palette[1] - palette[0]) + 0.3 * r[..., None] * (palette[2] - palette[0])


def _shade(origins: Tensor, dirs: Tensor, t: Tensor, part: Tensor, frames: Tensor, scene: _Scene) -> Tensor:
    """RGB (F, N, 3) of world rays (F, N, 3) that hit ``part`` at depth ``t`` (inf: background)."""
    rgb = _background_colour(origins, dirs, scene.identity)
    hit = torch.isfinite(t)
    frame = frames[:, None].expand_as(t)[hit]
    points = origins[:, None].expand_as(dirs)[hit] + t[hit][:, None] * dirs[hit]
    part_hit = part[hit]
    centre = scene.centres[frame, part_hit]
    normals = torch.nn.functional.normalize((points - centre) / scene.radii[part_hit] ** 2, dim=-1)
    rgb[hit] = _head_colour(points, normals, part_hit, frame, scene)
    return rgb


def _world_rays(c2w: Tensor, intrinsics: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Origins (F, 3) and world directions (F, size^2, 3) with unit view-space z."""
    rays = camera.pixel_rays(intrinsics, size, size).reshape(len(c2w), -1, 3)
    return c2w[:, :3, 3], rays @ c2w[:, :3, :3].transpose(-1, -2)


@contextlib.contextmanager
def _single_threaded() -> Iterator[None]:
    # The ray caster's kernels are small: a second intra-op thread gains little, and on a busy
    # machine threads waiting for each other made rendering several times slower (measured).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@torch.no_grad()
def render_head(
    identity: HeadIdentity,
    c2w: Tensor,
    intrinsics: Tensor,
    mouth: np.ndarray,
    blink: np.ndarray,
    size: int,
    supersample: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Render frames of a head: RGB (F, S, S, 3) uint8 and z-depth (F, S, S) float32 (0 = background).

    Depth is cast through pixel centres (as :func:`camera.pixel_rays` defines them); colour is the
    mean of ``supersample^2`` rays spread over each pixel.
    """
    with _single_threaded():
        return _render(_scene(identity, mouth, blink), c2w, intrinsics, size, supersample)


def _render(scene: _Scene, c2w: Tensor, intrinsics: Tensor, size: int, supersample: int) -> tuple[np.ndarray, np.ndarray]:
    num = len(c2w)
    rgb = np.empty((num, size, size, 3), np.uint8)
    depth = np.empty((num, size, size), np.float32)
    fine = size * supersample
    step = max(1, _CHUNK_RAYS // (fine * fine))
    for first in range(0, num, step):
        frames = torch.arange(first, min(first + step, num))
        centres = scene.centres[frames]
        origins, dirs = _world_rays(c2w[frames], intrinsics[frames], size)
        t, _ = _intersect(origins, dirs, centres, scene.radii)
        depth[frames.numpy()] = torch.where(torch.isfinite(t), t, 0.0).reshape(-1, size, size).numpy()
        origins, dirs = _world_rays(c2w[frames], intrinsics[frames], fine)
        t, part = _intersect(origins, dirs, centres, scene.radii)
        colour = _shade(origins, dirs, t, part, frames, scene)
        colour = colour.reshape(-1, fine, fine, 3).permute(0, 3, 1, 2)
        colour = torch.nn.functional.avg_pool2d(colour, supersample).permute(0, 2, 3, 1)
        rgb[frames.numpy()] = (colour.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return rgb, depth
