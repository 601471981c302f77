"""Facts about the running environment, for ``splat-portrait doctor`` and for run records."""

from __future__ import annotations

import platform
import subprocess
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def _torch_checks() -> list[Check]:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    cuda = torch.cuda.is_available()
    cuda_detail = f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} device(s)" if cuda else "no CUDA device"
    return [
        Check("torch", True, f"{torch.__version__} on {device}"),
        Check("CUDA", cuda, cuda_detail),
    ]


def _gsplat_check() -> Check:
    from splat_portrait.render import gsplat_status

    ok, detail = gsplat_status()
    return Check("gsplat", ok, detail)


def _cpu_rasterizer_check() -> Check:
    from splat_portrait.render.cpu_backend import cpu_status

    ok, detail = cpu_status()
    return Check("C++ rasteriser", ok, detail + ("" if ok else "; the torch renderer is used"))


def _onnxruntime_check() -> Check:
    try:
        import onnxruntime as ort
    except ImportError as err:
        return Check("onnxruntime", False, f"not importable: {err}")
    return Check("onnxruntime", True, f"{ort.__version__}; providers: {', '.join(ort.get_available_providers())}")


def _dlib_checks() -> list[Check]:
    from splat_portrait.face.detect import LANDMARK_MODEL, face_model_path, landmark_predictor, require_dlib

    dlib = require_dlib()
    landmark_predictor()  # loads the model file: a damaged one fails here, as it would in animate
    return [
        Check("dlib", True, f"{dlib.__version__} (face detection, 68 landmarks)"),
        Check("landmark model", True, str(face_model_path(LANDMARK_MODEL))),
    ]


def _ffmpeg_check() -> Check:
    from splat_portrait.media.ffmpeg import ffmpeg_exe

    exe = ffmpeg_exe()
    try:
        result = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return Check("ffmpeg", False, f"{exe} does not run ({err})")
    first_line = result.stdout.splitlines()[:1]
    if result.returncode != 0 or not first_line:
        return Check("ffmpeg", False, f"{exe} does not run (exit code {result.returncode})")
    return Check("ffmpeg", True, f"{exe} ({first_line[0]})")


def _checked(name: str, run: Callable[[], Check | list[Check]]) -> list[Check]:
    """A check's results; a check that fails in any way reports that failure instead of crashing doctor."""
    try:
        result = run()
    except Exception as err:  # doctor's job is to describe a broken environment, whatever broke
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return [Check(name, False, reason)]
    return result if isinstance(result, list) else [result]


def environment_report() -> list[Check]:
    """One :class:`Check` per component the pipeline uses, in pipeline order."""
    from splat_portrait import __version__

    checks = [Check("splat-portrait", True, f"{__version__} (Python {platform.python_version()})")]
    for name, run in (
        ("torch", _torch_checks), ("gsplat", _gsplat_check), ("C++ rasteriser", _cpu_rasterizer_check),
        ("onnxruntime", _onnxruntime_check),
        ("dlib", _dlib_checks), ("ffmpeg", _ffmpeg_check),
    ):  # fmt: skip
        checks += _checked(name, run)
    return checks


def run_record(seed: int | None = None) -> dict:
    """Where a figure comes from, for the JSON every benchmark writes: commit, date, machine, versions, command line."""
    import datetime
    import os
    import sys
    from pathlib import Path

    import torch

    from splat_portrait import __version__

    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip()
        changes = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                 capture_output=True, text=True, timeout=10).stdout.strip()  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        commit, changes = "", ""
    versions = {"splat-portrait": __version__, "python": platform.python_version(), "torch": torch.__version__}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "commit": commit or "unknown",
        # Tracked files edited since that commit: the figures then come from code no commit holds.
        "uncommitted_changes": bool(changes),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "gpu": gpu},
        "versions": versions,
        "seed": seed,
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
    }
