"""Facts about the running environment, for ``splat-portrait doctor`` and for run records."""

from __future__ import annotations

import platform
import shutil
import subprocess
from dataclasses import dataclass


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


def _onnxruntime_check() -> Check:
    try:
        import onnxruntime as ort
    except ImportError as err:
        return Check("onnxruntime", False, f"not importable: {err}")
    return Check("onnxruntime", True, f"{ort.__version__}; providers: {', '.join(ort.get_available_providers())}")


def _ffmpeg_check() -> Check:
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as err:
        exe = shutil.which("ffmpeg")
        if exe is None:
            return Check("ffmpeg", False, f"no ffmpeg binary found ({err})")
    first_line = subprocess.run([exe, "-version"], capture_output=True, text=True).stdout.splitlines()[:1]
    return Check("ffmpeg", True, f"{exe} ({first_line[0] if first_line else 'version unknown'})")


def environment_report() -> list[Check]:
    """One :class:`Check` per component the pipeline uses, in pipeline order."""
    from splat_portrait import __version__

    return [
        Check("splat-portrait", True, f"{__version__} (Python {platform.python_version()})"),
        *_torch_checks(),
        _gsplat_check(),
        _onnxruntime_check(),
        _ffmpeg_check(),
    ]
