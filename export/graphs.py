"""Checkpoint -> MODEL_DIR: two ONNX graphs, checked and compared with PyTorch, and their model card.

* ``generator.onnx``: ``image (1, 3, S, S), c2w (1, 4, 4), intrinsics (1, 4) -> attributes (1, 15, S, S),
  background (1, 3, S, S), features_0 .. features_{L-1}`` (the generator's decoder features, coarsest first).
* ``audio_decoder.onnx``: ``features_* (batch 1), windows (F, 8, 16, D), delta_t (F,) -> offsets (F, 3, S, S)``
  with a dynamic frame axis ``F``, so one call animates many frames of one portrait.

Export uses the TorchScript-based exporter (``dynamo=False``), which needs nothing beyond torch and
onnx. Every graph passes ``onnx.checker`` and a parity test against PyTorch on random inputs before
anything is renamed into MODEL_DIR; ``model.json`` is renamed last, so a failed export leaves the
directory as it was.

Parity thresholds (largest absolute difference over every output, against PyTorch in fp32):

* fp32 graphs: ``1e-4``, except the generator's splat rotations, compared by the angle between
  the two rotations: ``5e-3`` rad (see ``ROTATION_TOLERANCE_RAD``).
* fp16 graphs (``--fp16``): traced under autocast, so convolutions, linear layers and attention
  matmuls run in fp16 while inputs, outputs, normalisation and the sinusoidal camera/time
  embeddings stay fp32 (fp16 cannot hold ``ΔT * 25 * 2^k`` angles). Threshold
  ``2e-2 * max(1, max |reference|)`` per output: fp16 keeps ~3 significant digits and the error
  grows with depth. They are meant for the CUDA execution provider (the CPU one runs them slower
  than fp32); the parity check runs them on whatever provider is present.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from splat_portrait import __version__, camera
from splat_portrait.atomic import atomic_path, writable_dir
from splat_portrait.audio.features import EXTRACTORS, FeatureSpec, MelExtractor, check_compatible
from splat_portrait.audio.windows import NUM_WINDOWS, WINDOW
from splat_portrait.errors import SplatPortraitError
from splat_portrait.models import TalkingHead, load_checkpoint
from splat_portrait.models.generator import attribute_slice
from splat_portrait.runtime.model_dir import (
    AUDIO_DECODER, CARD, FP16_SUFFIX, GENERATOR, GraphInfo, ModelCard, create_session, execution_providers, sha256_of,
)  # fmt: skip

DEFAULT_OPSET = 17
FP32_TOLERANCE = 1e-4
# Splat rotations are compared by the angle between them, not by quaternion components: with the
# surface footprint a rotation comes from differences of neighbouring splat centres (steps ~5e-3
# world units, each centre carrying the network's ~1e-6 float32 error), so it is only defined to
# ~1e-3 rad, while the covariance it gives changes by ~0.1 %.
ROTATION_TOLERANCE_RAD = 5e-3
FP16_RELATIVE_TOLERANCE = 2e-2
# Frame counts the audio decoder is checked at: one, and several, proving the frame axis is dynamic.
PARITY_FRAMES = (1, 3)


class _AudioDecoderGraph(nn.Module):
    """The dynamic decoder with its feature tuple spread over positional inputs, as ONNX needs."""

    def __init__(self, model: TalkingHead) -> None:
        super().__init__()
        self.dynamic = model.dynamic

    def forward(self, *inputs: Tensor) -> Tensor:
        *features, windows, delta_t = inputs
        return self.dynamic(features, windows, delta_t)


@dataclass(frozen=True)
class _GraphSpec:
    name: str
    module: nn.Module
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]


def feature_spec_of(
    model: TalkingHead, training: dict | None, extractor: str | None = None, extractor_model: str | None = None
) -> FeatureSpec:
    """The audio features a checkpoint's model reads: the ``extractor`` named, else the checkpoint's record, else mel.

    Training records the spec in the checkpoint's training metadata (``training["feature_spec"]``);
    a checkpoint without it is assumed to read the 80-d log-mel features when its width says so.
    """
    dim = model.config.dynamic.audio.feature_dim
    recorded = training.get("feature_spec") if isinstance(training, dict) else None
    recorded = FeatureSpec.from_json(recorded) if recorded else None
    if extractor is None:
        spec = recorded or FeatureSpec("mel", None, MelExtractor.n_mels)
    elif extractor not in EXTRACTORS:
        raise SplatPortraitError(f"unknown audio feature extractor {extractor!r}; choose one of {', '.join(EXTRACTORS)}")
    elif extractor == "wav2vec2" and not extractor_model:
        raise SplatPortraitError("--audio-features wav2vec2 needs --audio-model PATH_OR_HUB_ID")
    elif extractor == "mel" and extractor_model:
        raise SplatPortraitError("--audio-model applies only to --audio-features wav2vec2")
    else:
        normalise = recorded.normalise if recorded is not None else "none"
        spec = FeatureSpec(extractor, extractor_model, MelExtractor.n_mels if extractor == "mel" else dim, normalise=normalise)
        if recorded is not None:
            # Naming the extractor may point at a local copy of the recorded wav2vec2 model, never at other features.
            check_compatible(recorded, spec)
    if spec.dim != dim:
        hint = "" if recorded else "; the checkpoint does not record its audio features: pass --audio-features/--audio-model"
        raise SplatPortraitError(f"audio features {spec.describe()} do not fit the model, which reads {dim}-d features{hint}")
    return spec


def _graph_specs(model: TalkingHead, num_features: int) -> tuple[_GraphSpec, _GraphSpec]:
    features = [f"features_{i}" for i in range(num_features)]
    frames = {0: "frames"}
    return (
        _GraphSpec(GENERATOR, model.generator, ["image", "c2w", "intrinsics"], ["attributes", "background", *features], {}),
        _GraphSpec(
            AUDIO_DECODER, _AudioDecoderGraph(model), [*features, "windows", "delta_t"], ["offsets"],
            {"windows": frames, "delta_t": frames, "offsets": frames},
        ),
    )  # fmt: skip


def _random_inputs(model: TalkingHead, seed: int = 0) -> tuple[tuple[Tensor, ...], dict[int, tuple[Tensor, Tensor]]]:
    """A random portrait with a slightly turned camera, and random audio windows for each parity frame count."""
    gen = torch.Generator().manual_seed(seed)
    size = model.config.image_size
    image = torch.rand(1, 3, size, size, generator=gen) * 2 - 1
    angles = (torch.rand(2, generator=gen) - 0.5) * 0.4
    c2w = camera.orbit_around(camera.default_c2w((1,)), angles[0], angles[1])
    intrinsics = camera.default_intrinsics((1,))
    dim = model.config.dynamic.audio.feature_dim
    audio = {
        n: (torch.randn(n, NUM_WINDOWS, WINDOW, dim, generator=gen), torch.rand(n, generator=gen) * 10) for n in PARITY_FRAMES
    }
    return (image, c2w, intrinsics), audio


def _trace(spec: _GraphSpec, args: tuple[Tensor, ...], path: Path, opset: int, fp16: bool) -> None:
    autocast = torch.autocast("cpu", dtype=torch.float16) if fp16 else contextlib.nullcontext()
    with warnings.catch_warnings(), torch.no_grad(), autocast:
        # The tracer warns about Python values it records as constants (shapes); ours are static by design.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            spec.module, args, str(path), opset_version=opset, dynamo=False, do_constant_folding=True,
            input_names=spec.input_names, output_names=spec.output_names, dynamic_axes=spec.dynamic_axes or None,
        )  # fmt: skip


def _check_graph(path: Path, name: str) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise SplatPortraitError(f"the exported {name} graph fails onnx.checker ({str(err).splitlines()[0]})") from None


def _differences(got: list[np.ndarray], expected: list[Tensor], fp16: bool) -> list[tuple[float, float]]:
    """(largest absolute difference, the largest allowed) for each of a graph's outputs."""
    result = []
    for g, e in zip(got, expected, strict=True):
        e = e.numpy()
        if g.shape != e.shape:
            raise SplatPortraitError(f"exported graph output has shape {g.shape}, PyTorch gives {e.shape}")
        diff = float(np.nan_to_num(np.abs(g.astype(np.float64) - e), nan=np.inf).max()) if e.size else 0.0
        limit = FP16_RELATIVE_TOLERANCE * max(1.0, float(np.abs(e).max())) if fp16 else FP32_TOLERANCE
        result.append((diff, limit))
    return result


def _split_rotations(attributes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Generator attributes (B, C, H, W) -> (every channel but the rotations, the rotations (B, 4, H, W))."""
    rotation = attribute_slice("rotation")
    kept = np.concatenate([attributes[:, : rotation.start], attributes[:, rotation.stop :]], axis=1)
    return kept, attributes[:, rotation]


def rotation_angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angles in radians between the rotations of quaternions (B, 4, ...) (q and -q are one rotation)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    cos_half = np.abs((a * b).sum(1)) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return 2 * np.arccos(np.clip(np.nan_to_num(cos_half, nan=0.0), 0.0, 1.0))


def _parity(specs, paths, model, fp16: bool, providers: list[str]) -> dict[str, float]:
    """Run each exported graph in ONNX Runtime and PyTorch (fp32) on the same random inputs."""
    (image, c2w, intrinsics), audio = _random_inputs(model)
    with torch.no_grad():
        attributes, background, features = model.generator(image, c2w, intrinsics)
        cases = {
            GENERATOR: [((image, c2w, intrinsics), [attributes, background, *features])],
            AUDIO_DECODER: [((*features, w, dt), [model.dynamic(features, w, dt)]) for w, dt in audio.values()],
        }
    result = {}
    for spec, path in zip(specs, paths):
        label = spec.name + (FP16_SUFFIX if fp16 else "")
        session = create_session(path, providers, spec.input_names, spec.output_names)
        worst = worst_angle = 0.0
        for args, expected in cases[spec.name]:
            feed = {n: a.numpy() for n, a in zip(spec.input_names, args)}
            got = session.run(None, feed)
            if spec.name == GENERATOR:
                (got[0], got_rotations), (kept, rotations) = _split_rotations(got[0]), _split_rotations(expected[0].numpy())
                expected = [torch.from_numpy(kept), *expected[1:]]
                angle = float(rotation_angles(got_rotations, rotations).max())
                if not angle <= ROTATION_TOLERANCE_RAD:
                    raise SplatPortraitError(
                        f"ONNX parity check failed for {label}: splat rotations differ from PyTorch's by up to {angle:.3g} rad "
                        f"> {ROTATION_TOLERANCE_RAD:.3g}; the graph does not compute what the model does, so nothing was written"
                    )
                worst_angle = max(worst_angle, angle)
            for diff, allowed in _differences(got, expected, fp16):
                if not diff <= allowed:
                    raise SplatPortraitError(
                        f"ONNX parity check failed for {label}: max abs difference from PyTorch {diff:.3g} > {allowed:.3g}; "
                        "the graph does not compute what the model does, so nothing was written"
                    )
                worst = max(worst, diff)
        result[spec.name] = (worst, worst_angle)
    return result


def export_model(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    audio_features: str | None = None,
    audio_model: str | None = None,
) -> ModelCard:
    """Export a checkpoint's model to ``out_dir`` (fp32 graphs, plus mixed-precision ones with ``fp16``).

    ``audio_features``/``audio_model`` name the feature extractor where the checkpoint does not record it.
    """
    import onnx
    import onnxruntime

    checkpoint = Path(checkpoint)
    out_dir = Path(out_dir)
    model, training = load_checkpoint(checkpoint)
    writable_dir(out_dir)
    model = model.eval()
    spec = feature_spec_of(model, training, audio_features, audio_model)
    num_features = len(model.config.generator.unet.channel_mults)
    specs = _graph_specs(model, num_features)
    (image, c2w, intrinsics), audio = _random_inputs(model)
    with torch.no_grad():
        features = model.generator(image, c2w, intrinsics)[2]
    trace_args = {GENERATOR: (image, c2w, intrinsics), AUDIO_DECODER: (*features, *audio[PARITY_FRAMES[-1]])}
    providers = execution_providers("auto")
    graphs: dict[str, GraphInfo] = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as commit:
        # Entered first, so it is renamed into place last, after every graph it describes.
        card_tmp = commit.enter_context(atomic_path(out_dir / CARD))
        for precision in ("fp32", "fp16") if fp16 else ("fp32",):
            suffix = FP16_SUFFIX if precision == "fp16" else ""
            paths = []
            for graph in specs:
                tmp = commit.enter_context(atomic_path(out_dir / f"{graph.name}{suffix}.onnx"))
                _trace(graph, trace_args[graph.name], tmp, opset, precision == "fp16")
                _check_graph(tmp, graph.name + suffix)
                paths.append(tmp)
            parity = _parity(specs, paths, model, precision == "fp16", providers)
            for graph, tmp in zip(specs, paths):
                graphs[graph.name + suffix] = GraphInfo(
                    f"{graph.name}{suffix}.onnx", sha256_of(tmp), precision, graph.input_names, graph.output_names,
                    *parity[graph.name],
                )  # fmt: skip
        card = ModelCard.for_model(
            model, spec, opset=opset, graphs=graphs,
            versions={"splat_portrait": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                      "onnxruntime": onnxruntime.__version__},
            source_checkpoint={"file": checkpoint.name, "sha256": sha256_of(checkpoint)},
        )  # fmt: skip
        card_tmp.write_text(json.dumps(card.to_json(), indent=2) + "\n", encoding="utf-8")
    return card
