"""Activated 3D Gaussians and the standard 3DGS ``.ply`` file format.

:class:`Splats` holds Gaussians as the renderers consume them (no activations left to apply),
batched over any leading dimensions: ``means`` (..., N, 3), ``quats`` (..., N, 4) as unit wxyz,
``scales`` (..., N, 3) as standard deviations, ``opacities`` (..., N) in [0, 1] and ``colors``
(..., N, 3) as RGB in [0, 1].

The ``.ply`` layout is the INRIA 3DGS one that external viewers read (SuperSplat/PlayCanvas, the
INRIA viewer, gsplat's loaders): binary little-endian float32 vertices with
``x y z nx ny nz f_dc_0..2 opacity scale_0..2 rot_0..3``; opacity stored as a logit, scale as a log,
colour as the degree-0 spherical-harmonic coefficient, rotation as a normalised wxyz quaternion.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from splat_portrait.atomic import atomic_open
from splat_portrait.errors import SplatPortraitError

log = logging.getLogger(__name__)

# Degree-0 real spherical harmonic: colour = 0.5 + SH_C0 * f_dc.
SH_C0 = 0.28209479177387814
PLY_PROPERTIES = (
    "x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
    "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
)  # fmt: skip
_PLY_DTYPE = np.dtype([(name, "<f4") for name in PLY_PROPERTIES])


@dataclass
class Splats:
    """A batch of activated Gaussians; every field shares the leading (..., N) dimensions."""

    means: Tensor
    quats: Tensor
    scales: Tensor
    opacities: Tensor
    colors: Tensor

    def __post_init__(self) -> None:
        lead = self.opacities.shape
        expected = {"means": 3, "quats": 4, "scales": 3, "colors": 3}
        for name, width in expected.items():
            shape = getattr(self, name).shape
            if shape != (*lead, width):
                raise ValueError(f"Splats.{name} has shape {tuple(shape)}, expected {(*lead, width)}")

    @property
    def batch_shape(self) -> torch.Size:
        return self.opacities.shape[:-1]

    @property
    def num_splats(self) -> int:
        return self.opacities.shape[-1]

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    def map(self, fn: Callable[[Tensor], Tensor]) -> Splats:
        """A new Splats with ``fn`` applied to every field."""
        return Splats(**{f.name: fn(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def to(self, *args, **kwargs) -> Splats:
        return self.map(lambda t: t.to(*args, **kwargs))

    def detach(self) -> Splats:
        return self.map(Tensor.detach)

    def __getitem__(self, index) -> Splats:
        """Index the leading dimensions: ``s[0]`` is the first cloud of a batch, ``s[mask]`` keeps splats.

        Every field has its per-splat values in trailing dimensions, so one index means the same
        thing for all of them as long as it stops at the splat dimension.
        """
        return self.map(lambda t: t[index])

    def __len__(self) -> int:
        return self.opacities.shape[0]

    @staticmethod
    def cat(items: Sequence[Splats], dim: int = -1) -> Splats:
        """Concatenate along a leading dimension; ``dim=-1`` (default) joins clouds splat-wise."""
        if not items:
            raise ValueError("Splats.cat needs at least one Splats")
        ndim = len(items[0].opacities.shape)
        axis = dim if dim >= 0 else ndim + dim
        if not 0 <= axis < ndim:
            raise ValueError(f"dim {dim} is out of range for Splats with {ndim} leading dimensions")
        names = [f.name for f in dataclasses.fields(Splats)]
        return Splats(**{n: torch.cat([getattr(s, n) for s in items], axis) for n in names})

    def save_ply(self, path: str | os.PathLike) -> int:
        """Write this single cloud as a 3DGS ``.ply``; returns how many non-finite splats were dropped."""
        return write_ply(self, path)


def encode_ply_vertices(splats: Splats) -> tuple[np.ndarray, int]:
    """The 3DGS vertex records for one cloud (N,) and the number of splats dropped as non-finite."""
    if splats.batch_shape != ():
        raise ValueError(f"a .ply holds one cloud; got a batch of shape {tuple(splats.batch_shape)}")
    s = splats.detach().to(device="cpu", dtype=torch.float64)
    opacity = s.opacities
    columns = [
        s.means,
        torch.zeros_like(s.means),  # normals: unused by 3DGS, expected by the layout
        (s.colors - 0.5) / SH_C0,
        torch.log(opacity / (1 - opacity))[:, None],
        torch.log(s.scales),
        torch.nn.functional.normalize(s.quats, dim=-1),
    ]
    values = torch.cat(columns, -1)
    # Opacity 0/1 or scale 0 become +-inf here; such splats are as unusable as NaN input ones.
    keep = torch.isfinite(values).all(-1) & (torch.abs(values) < np.finfo(np.float32).max).all(-1)
    values = values[keep].to(torch.float32).numpy()
    records = np.empty(values.shape[0], dtype=_PLY_DTYPE)
    for i, name in enumerate(PLY_PROPERTIES):
        records[name] = values[:, i]
    return records, int((~keep).sum())


def ply_header(num_vertices: int) -> bytes:
    lines = ["ply", "format binary_little_endian 1.0", f"element vertex {num_vertices}"]
    lines += [f"property float {name}" for name in PLY_PROPERTIES]
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


def write_ply(splats: Splats, path: str | os.PathLike) -> int:
    """Write one cloud atomically as a 3DGS ``.ply``; non-finite splats are dropped, counted and logged."""
    records, dropped = encode_ply_vertices(splats)
    if dropped:
        log.warning("dropped %d of %d splats with NaN/Inf values while writing %s", dropped, splats.num_splats, path)
    with atomic_open(path, "wb") as f:
        f.write(ply_header(len(records)))
        f.write(records.tobytes())
    return dropped


def _parse_header(f, path) -> tuple[int, list[tuple[str, str]], int]:
    if f.readline().strip() != b"ply":
        raise SplatPortraitError(f"{path} is not a PLY file (it does not start with 'ply')")
    count, props, element = None, [], None
    while True:
        line = f.readline()
        if not line:
            raise SplatPortraitError(f"{path}: PLY header has no end_header")
        words = line.decode("ascii", errors="replace").split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and words[1] != "binary_little_endian":
            raise SplatPortraitError(f"{path}: only binary_little_endian PLY files are supported, got {words[1]}")
        if words[0] == "element":
            element = words[1]
            if element == "vertex":
                count = int(words[2])
        if words[0] == "property" and element == "vertex":
            if words[1] == "list":
                raise SplatPortraitError(f"{path}: list properties are not part of the 3DGS layout")
            props.append((words[-1], words[1]))
        if words[0] == "end_header":
            break
    if count is None:
        raise SplatPortraitError(f"{path}: PLY has no vertex element")
    return count, props, f.tell()


_PLY_TYPES = {"float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8", "uchar": "u1", "uint8": "u1",
              "int": "<i4", "int32": "<i4", "uint": "<u4", "uint32": "<u4", "short": "<i2", "ushort": "<u2",
              "char": "i1", "int8": "i1"}  # fmt: skip


def read_ply(path: str | os.PathLike) -> Splats:
    """Read a 3DGS ``.ply`` (ours or another tool's; extra properties such as ``f_rest_*`` are ignored)."""
    with open(path, "rb") as f:
        count, props, offset = _parse_header(f, path)
        dtype = np.dtype([(name, _PLY_TYPES[kind]) for name, kind in props])
        data = f.read(count * dtype.itemsize)
    if len(data) < count * dtype.itemsize:
        raise SplatPortraitError(f"{path}: PLY is truncated ({len(data)} of {count * dtype.itemsize} data bytes)")
    missing = [p for p in PLY_PROPERTIES if p not in dtype.names and not p.startswith("n")]
    if missing:
        raise SplatPortraitError(f"{path}: not a 3DGS PLY, missing properties {', '.join(missing)}")
    rec = np.frombuffer(data, dtype=dtype, count=count)

    def column(*names: str) -> Tensor:
        return torch.from_numpy(np.stack([rec[n].astype(np.float32) for n in names], -1))

    return Splats(
        means=column("x", "y", "z"),
        quats=torch.nn.functional.normalize(column("rot_0", "rot_1", "rot_2", "rot_3"), dim=-1),
        scales=torch.exp(column("scale_0", "scale_1", "scale_2")),
        opacities=torch.sigmoid(column("opacity")[:, 0]),
        colors=0.5 + SH_C0 * column("f_dc_0", "f_dc_1", "f_dc_2"),
    )
