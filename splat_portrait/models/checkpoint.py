"""Checkpoints: one ``torch.save`` file holding a model's config, weights and optional training state.

Layout (a plain dict)::

    {"format": "splat-portrait/checkpoint", "version": 1, "kind": "talking-head",
     "written_by": "<package version>", "config": {...}, "state_dict": {...}, "training": {...} | None}

``config`` is the dataclass config as built-in types, so :func:`load_model` rebuilds the model from
the file alone. Files are read with ``torch.load(weights_only=True)``: a pickle holding arbitrary
Python objects is refused rather than executed. Saving is atomic (temporary file, fsync, rename).
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from splat_portrait import __version__
from splat_portrait.atomic import atomic_path
from splat_portrait.errors import SplatPortraitError
from splat_portrait.models.config import ModelConfig, config_from_dict, config_to_dict
from splat_portrait.models.talking_head import TalkingHead

FORMAT = "splat-portrait/checkpoint"
VERSION = 1
# Checkpoint kind -> (model class, its config class); a model class is built as ``cls(config)``.
# Other packages pass their own mapping as ``kinds`` (the diffusion prior: splat_portrait.prior.edm).
ModelKinds = Mapping[str, tuple[type[nn.Module], type]]
MODEL_KINDS: ModelKinds = {TalkingHead.kind: (TalkingHead, ModelConfig)}
_ZIP_MAGIC = b"PK\x03\x04"
_PLAIN_TYPES = (str, int, float, bool, type(None), Tensor, torch.dtype, torch.device, torch.Size)


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    training_state: dict[str, Any] | None = None,
    kinds: ModelKinds = MODEL_KINDS,
) -> None:
    """Write ``model`` (config + weights) and, for resuming training, ``training_state`` atomically.

    ``training_state`` (optimizer state dict, step, ...) must hold only tensors and built-in data,
    so it loads with ``weights_only=True``. ``kinds`` lists the model classes that may be saved.
    """
    kind = getattr(type(model), "kind", None)
    if kind not in kinds or kinds[kind][0] is not type(model):
        raise TypeError(f"cannot checkpoint a {type(model).__name__}; known kinds: {', '.join(kinds)}")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "written_by": __version__,
        "config": config_to_dict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "training": training_state,
    }
    _check_plain(payload, "checkpoint")
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu", kinds: ModelKinds = MODEL_KINDS
) -> tuple[nn.Module, dict[str, Any] | None]:
    """The model a checkpoint describes, with its weights, and its training state (None if absent).

    ``kinds`` are the models the caller accepts (default: the talking head).
    """
    path = Path(path)
    payload = _read(path)
    kind = payload.get("kind")
    if kind not in kinds:
        wanted = " or ".join(repr(k) for k in kinds)
        raise SplatPortraitError(f"{path} holds a model of kind {kind!r}, but this needs a checkpoint of kind {wanted}")
    model_cls, config_cls = kinds[kind]
    try:
        config = config_from_dict(config_cls, payload.get("config"))
    except (TypeError, ValueError) as err:
        raise SplatPortraitError(
            f"{path}: its model config does not match this splat-portrait version ({_first_line(err)}); "
            "use the version that wrote it or retrain"
        ) from None
    model = model_cls(config)
    _check_weights(path, model, payload.get("state_dict"))
    model.load_state_dict(payload["state_dict"])
    return model.to(device), payload.get("training")


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """The model stored in a checkpoint, ready for inference (training state dropped)."""
    return load_checkpoint(path, device)[0].eval()


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SplatPortraitError(f"checkpoint {path} does not exist (or is not a file)")
    with open(path, "rb") as f:
        head = f.read(len(_ZIP_MAGIC))
    if not head:
        raise SplatPortraitError(f"checkpoint {path} is empty")
    try:
        with warnings.catch_warnings():
            # torch warns about unusual pickle protocols before failing on foreign files.
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # Only a real pickle naming classes or functions ("Unsupported global") holds objects;
        # random bytes fail the same safe unpickler with "Unsupported operand".
        if "unsupported global" in str(err).lower():
            raise SplatPortraitError(
                f"{path} is not a splat-portrait checkpoint: it holds arbitrary Python objects, "
                "which are not loaded for safety"
            ) from None
        raise SplatPortraitError(f"{path} is not a splat-portrait checkpoint (not a readable PyTorch file)") from None
    except Exception:  # torch.load fails with many exception types on arbitrary bytes
        if head == _ZIP_MAGIC:
            message = f"checkpoint {path} is truncated or corrupted; save or download it again"
            raise SplatPortraitError(message) from None
        raise SplatPortraitError(f"{path} is not a splat-portrait checkpoint (not a readable PyTorch file)") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise SplatPortraitError(f"{path} is a PyTorch file but not a splat-portrait checkpoint (no {FORMAT!r} marker)")
    version = payload.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise SplatPortraitError(
            f"checkpoint {path} has format version {version!r}, newer than this splat-portrait reads ({VERSION}); "
            "upgrade splat-portrait"
        )
    return payload


def _check_weights(path: Path, model: nn.Module, state_dict: Any) -> None:
    """One-line summary of how stored weights differ from the model's, instead of torch's multi-line error."""
    if not isinstance(state_dict, dict):
        raise SplatPortraitError(f"{path}: checkpoint has no weights (state_dict missing)")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [
        k for k in expected
        if k in state_dict and (not isinstance(state_dict[k], Tensor) or state_dict[k].shape != expected[k].shape)
    ]  # fmt: skip
    if missing or unexpected or misshaped:
        first = (missing + unexpected + misshaped)[0]
        raise SplatPortraitError(
            f"{path}: its weights do not match the model its config describes ({len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(misshaped)} mis-shaped tensors, e.g. {first}); "
            "use the version that wrote it or retrain"
        )


def _check_plain(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _check_plain(k, where)
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(value, _PLAIN_TYPES):
        raise TypeError(f"{where} is a {type(value).__name__}; checkpoints hold only tensors and built-in data")


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__
