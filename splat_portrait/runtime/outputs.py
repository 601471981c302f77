"""An animation's output files, written under temporary names and moved into place together.

A job can write a video, a depth video, a ``.ply`` of the static head and a folder of per-frame
``.ply`` files. They all appear only when the whole job succeeded: a failure at any frame leaves
none of them behind (and an existing file under the same name untouched).

``.ply`` files hold the splats in world coordinates (the head centred at the origin, the axes of the
frontal camera: x right, y down, z into the face), the world the cameras live in.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from torch import Tensor

from splat_portrait.atomic import atomic_path, refuse_folder, temporary_name, under_final_name, writable_dir, write_error
from splat_portrait.camera import transform_points
from splat_portrait.errors import SplatPortraitError
from splat_portrait.rotations import quat_multiply
from splat_portrait.splats import Splats, write_ply


@dataclass(frozen=True)
class OutputPaths:
    """Where one animation writes; ``None`` skips an output."""

    video: Path
    ply: Path | None = None
    ply_frames: Path | None = None
    depth: Path | None = None
    html: Path | None = None  # the self-contained browser page (splat_portrait.web.html)

    def named(self) -> list[Path]:
        return [Path(p) for p in (getattr(self, f.name) for f in fields(self)) if p is not None]

    def check(self, inputs: Sequence[str | os.PathLike] = ()) -> None:
        """Refuse, before any work is done, outputs that cannot be written or would destroy an input.

        Clashing names, an output that is (a link to) one of ``inputs``, a file name that is a
        folder, a non-empty ``ply_frames`` folder and a folder that cannot take files are errors.
        """
        named = self.named()
        if len({p.resolve() for p in named}) != len(named):
            raise SplatPortraitError("two outputs have the same path; give each output its own file name")
        refuse_overwriting_inputs(named, inputs)
        for f in fields(self):
            target = getattr(self, f.name)
            if target is not None:
                if f.name != "ply_frames":  # the one output that is a folder
                    refuse_folder(target)
                writable_dir(Path(target).parent, for_file=target)
        if self.ply_frames is not None and self.ply_frames.exists():
            if not self.ply_frames.is_dir():
                raise SplatPortraitError(f"--ply-frames {self.ply_frames} is a file; name a folder")
            if any(self.ply_frames.iterdir()):
                raise SplatPortraitError(f"--ply-frames folder {self.ply_frames} is not empty; name a new or empty folder")


def refuse_overwriting_inputs(outputs: Sequence[str | os.PathLike], inputs: Sequence[str | os.PathLike]) -> None:
    """Raise if an output is the same file as an input: same real path, or a hard link to it."""
    for output in map(Path, outputs):
        for source in map(Path, inputs):
            if _same_file(output, source):
                raise SplatPortraitError(f"output {output} is the input {source}; writing it would destroy the input, name another file")


def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links: another name, the same inode
    except OSError:
        return False


@contextlib.contextmanager
def _staged_dir(path: Path) -> Iterator[Path]:
    tmp = temporary_name(path)
    try:
        tmp.mkdir()
    except OSError as err:
        raise write_error(path, err) from None
    try:
        try:
            yield tmp
        except SplatPortraitError as err:
            raise under_final_name(err, tmp, path) from None
        try:
            if path.is_dir():
                path.rmdir()  # empty, as OutputPaths.check made sure
            os.replace(tmp, path)
        except OSError as err:
            if err.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise SplatPortraitError(
                    f"--ply-frames folder {path} was filled by another run while this one rendered; "
                    "its files are untouched and this run wrote none there"
                ) from None
            raise write_error(path, err) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def staged(outputs: OutputPaths) -> Iterator[OutputPaths]:
    """Yield the same outputs under temporary names; on success all are renamed into place.

    Call :meth:`OutputPaths.check` first: it also removes leftover temporaries of killed runs.
    """
    with contextlib.ExitStack() as stack:
        temporary = {}
        for f in fields(outputs):
            target = getattr(outputs, f.name)
            if target is not None:
                stage = _staged_dir if f.name == "ply_frames" else atomic_path
                temporary[f.name] = stack.enter_context(stage(Path(target)))
        yield replace(outputs, **temporary)


def splats_in_world(splats: Splats, c2w: Tensor) -> Splats:
    """One cloud of splats in a camera's view space moved into world space by its ``c2w`` (4, 4)."""
    c2w = c2w.to(splats.means)
    xyzw = Rotation.from_matrix(c2w[:3, :3].double().cpu().numpy()).as_quat()
    turn = torch.from_numpy(np.roll(xyzw, 1))  # wxyz
    return replace(splats, means=transform_points(c2w, splats.means), quats=quat_multiply(turn.to(splats.quats), splats.quats))


def world_offsets(means: Tensor, static_means: Tensor, c2w: Tensor) -> np.ndarray:
    """(B, N, 3) speech-moved means minus the static head's (N, 3), both in view space, turned into world space."""
    moved = (means - static_means).to("cpu", torch.float32)
    return (moved @ c2w[:3, :3].T.to(moved)).numpy()


def write_world_ply(splats: Splats, c2w: Tensor, path: Path) -> int:
    """Write one cloud from view space as a world-space 3DGS ``.ply``; returns how many splats were dropped."""
    return write_ply(splats_in_world(splats, c2w), path)
