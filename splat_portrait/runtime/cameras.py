"""The camera path an animation is rendered along, and the view matrices that render it.

Three sources, one per frame: a named trajectory around the portrait's own camera (``static``,
``orbit``, ``nod``, ``bullet``; :func:`splat_portrait.camera.trajectory`), or the head pose of a
reference video (``--pose-from``), tracked and posed as ``preprocess`` does. The reference's
cameras are used as they are (absolute head poses, as in same-identity evaluation); a reference
shorter than the speech plays forwards and backwards so the motion never jumps. Fixed
``--yaw``/``--pitch`` offsets (degrees, positive yaw moves the camera to its right, positive
pitch moves it up) then turn every camera around the head.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from splat_portrait import camera
from splat_portrait.errors import SplatPortraitError
from splat_portrait.face.track import track_face


# Seconds after which every named trajectory repeats.
TRAJECTORY_PERIOD_S = 4.0


@dataclass(frozen=True)
class CameraOptions:
    """How the camera moves: a trajectory or a reference video, plus fixed angle offsets in degrees."""

    trajectory: str = "static"
    pose_from: Path | None = None
    yaw_deg: float = 0.0
    pitch_deg: float = 0.0

    def __post_init__(self) -> None:
        if self.trajectory not in camera.TRAJECTORIES:
            raise SplatPortraitError(f"unknown --camera {self.trajectory!r}; choose one of {', '.join(camera.TRAJECTORIES)}")
        if self.pose_from is not None and self.trajectory != "static":
            raise SplatPortraitError(f"--pose-from sets the camera path itself; leave out --camera {self.trajectory}")
        for flag, value in (("--yaw", self.yaw_deg), ("--pitch", self.pitch_deg)):
            if not math.isfinite(value):
                raise SplatPortraitError(f"{flag} must be a finite number of degrees, got {value}")


def ping_pong(num_source: int, num_frames: int) -> np.ndarray:
    """Indices into ``num_source`` items for ``num_frames`` frames: 0, 1, .., n-1, n-2, .., 0, 1, .."""
    if num_source == 1:
        return np.zeros(num_frames, np.int64)
    period = 2 * (num_source - 1)
    phase = np.arange(num_frames) % period
    return np.where(phase < num_source, phase, period - phase)


def reference_track(video: str | os.PathLike) -> Tensor:
    """Camera-to-world matrices (T, 4, 4) of the head in every frame of ``video`` at 25 fps."""
    track = track_face(video)
    if track is None:
        raise SplatPortraitError(f"no face found in {video}; --pose-from needs a video of a face")
    return torch.from_numpy(track.c2w).float()


def reference_poses(video: str | os.PathLike | Tensor, num_frames: int) -> Tensor:
    """Camera-to-world matrices (num_frames, 4, 4) of the head in ``video`` (or its track) played forwards and backwards."""
    c2w = video if torch.is_tensor(video) else reference_track(video)
    return c2w[torch.from_numpy(ping_pong(len(c2w), num_frames))]


def camera_path(options: CameraOptions, source_c2w: Tensor, num_frames: int, track: Tensor | None = None) -> Tensor:
    """Camera-to-world matrices (num_frames, 4, 4) to render the frames from (``track``: the --pose-from video's, if read already)."""
    if options.pose_from is not None:
        path = reference_poses(track if track is not None else options.pose_from, num_frames)
    else:
        path = camera.trajectory(options.trajectory, source_c2w, num_frames, period_s=TRAJECTORY_PERIOD_S)
    if options.yaw_deg or options.pitch_deg:
        path = camera.orbit_around(path, math.radians(options.yaw_deg), math.radians(options.pitch_deg))
    return path


def camera_loop(options: CameraOptions, source_c2w: Tensor, fps: int) -> Tensor:
    """One period (P, 4, 4) of the camera path: frame ``n`` of any length of speech is seen from entry ``n % P``.

    Every path repeats (trajectories every ``TRAJECTORY_PERIOD_S``, a reference video forwards and
    back), so a live stream of unknown length gets the cameras ``camera_path`` gives a file.
    """
    if options.pose_from is None:
        return camera_path(options, source_c2w, round(fps * TRAJECTORY_PERIOD_S))
    track = reference_track(options.pose_from)
    return camera_path(options, source_c2w, max(1, 2 * (len(track) - 1)), track)


def view_matrices(source_c2w: Tensor, path: Tensor) -> Tensor:
    """Renderer view matrices (F, 4, 4) for splats in the source camera's view space seen from ``path``."""
    return camera.relative_pose(source_c2w.expand_as(path), path)
