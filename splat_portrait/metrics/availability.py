"""Why a metric cannot run, and where its weights are looked for.

Metrics need weights that no package ships (ImageNet backbones, Inception, SyncNet). They are never
downloaded behind the user's back and never replaced by random weights: a metric either finds the
exact file or raises :class:`MetricUnavailable` saying which file to put where.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from urllib.parse import urlparse

import torch

from splat_portrait.errors import SplatPortraitError


class MetricUnavailable(SplatPortraitError):
    """A metric cannot run here (missing weights or package); the message says how to provide them."""


def hub_checkpoint(url: str, metric: str, allow_download: bool = False) -> Path:
    """Torch hub's cached copy of ``url`` (``$TORCH_HOME/hub/checkpoints/<file>``), which torchvision reads.

    Downloads it only when ``allow_download``; otherwise, or when the download fails, raises
    :class:`MetricUnavailable` naming the file and the folder it belongs in.
    """
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    if path.is_file():
        return path
    failure = ""
    if allow_download:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(path), progress=False)
            return path
        except OSError as err:  # URLError is an OSError
            failure = f" (download failed: {err})"
    raise MetricUnavailable(f"{metric} needs {path.name}{failure}: download {url} and put it in {path.parent}")


def user_weights(path: str | Path | None, metric: str, how: str) -> Path:
    """A weights file the user supplies; ``how`` says where to get it when it is not given or not there."""
    if path is None:
        raise MetricUnavailable(f"{metric} needs weights that are not given: {how}")
    path = Path(path).expanduser()
    if not path.is_file():
        raise MetricUnavailable(f"{metric} weights {path} do not exist: {how}")
    return path


def require_module(module: str, package: str, metric: str) -> ModuleType:
    """Import ``module``, or raise :class:`MetricUnavailable` telling how to install ``package``."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MetricUnavailable(f"{metric} needs the {package} package ({err}): pip install {package}") from err
