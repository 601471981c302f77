"""An exported model directory: ``model.json`` (the model card) beside its ONNX graphs.

::

    MODEL_DIR/model.json            ModelCard: preset, resolution, audio features, camera, versions, graphs
             /generator.onnx        image + camera -> Gaussian attributes, background, decoder features
             /audio_decoder.onnx    decoder features + audio windows + ΔT -> per-pixel offsets (dynamic frame axis)
             /generator_fp16.onnx, audio_decoder_fp16.onnx   optional mixed-precision graphs for CUDA

Every graph's SHA-256 is in the card and is checked on load, so an edited, truncated or swapped
file is refused with a clear message instead of producing a wrong video.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splat_portrait.audio.features import EXTRACTORS, FEATURE_RATE_HZ, FeatureSpec
from splat_portrait.errors import SplatPortraitError
from splat_portrait.media.audio import SAMPLE_RATE
from splat_portrait.media.video import FPS

log = logging.getLogger(__name__)

FORMAT = "splat-portrait/onnx-model"
VERSION = 1
CARD = "model.json"
GENERATOR, AUDIO_DECODER = "generator", "audio_decoder"
FP16_SUFFIX = "_fp16"
# Where the demo model lives inside an installation (filled by the demo-model issue).
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "assets" / "default"


@dataclass(frozen=True)
class GraphInfo:
    """One ONNX file of the model: its name in MODEL_DIR, hash, precision and interface."""

    file: str
    sha256: str
    precision: str  # "fp32", or "fp16" (mixed precision: fp16 compute, fp32 inputs and outputs)
    inputs: list[str]
    outputs: list[str]
    # Largest absolute difference from PyTorch (fp32) measured by the export's parity check; for the
    # generator every output but the splat rotations, which are compared by angle (radians).
    parity_max_abs_diff: float
    parity_max_rotation_rad: float = 0.0


@dataclass(frozen=True)
class ModelCard:
    """``model.json``: everything the runtime needs besides the graphs themselves."""

    preset: str  # a name from models.config.PRESETS, or "custom"
    image_size: int
    audio_features: FeatureSpec
    # Source camera the portrait is assumed to be taken with: normalised intrinsics and the frontal c2w.
    camera_intrinsics: list[float]
    camera_c2w: list[list[float]]
    opset: int
    graphs: dict[str, GraphInfo]
    versions: dict[str, str] = field(default_factory=dict)
    source_checkpoint: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    fps: int = 25
    sample_rate: int = 16000

    @classmethod
    def for_model(cls, model: Any, audio_features: FeatureSpec, **fields: Any) -> ModelCard:
        """The card of a :class:`~splat_portrait.models.TalkingHead`: its size, config and preset, the default camera.

        ``fields`` fill the rest (``graphs``, ``opset``, ``versions``, ``source_checkpoint``); a model
        run in PyTorch has no graphs.
        """
        import torch

        from splat_portrait import camera
        from splat_portrait.models.config import PRESETS

        preset = next((name for name, config in PRESETS.items() if config == model.config), "custom")
        return cls(
            preset=preset, image_size=model.config.image_size, audio_features=audio_features,
            camera_intrinsics=camera.default_intrinsics(dtype=torch.float64).tolist(),
            camera_c2w=camera.default_c2w(dtype=torch.float64).tolist(),
            opset=fields.pop("opset", 0), graphs=fields.pop("graphs", {}), config=model.config.to_dict(), **fields,
        )  # fmt: skip

    @property
    def feature_names(self) -> list[str]:
        """Names of the decoder-feature tensors the generator hands to the audio decoder, coarsest first."""
        return [n for n in self.graphs[GENERATOR].outputs if n.startswith("features_")]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "preset": self.preset,
            "image_size": self.image_size,
            "fps": self.fps,
            "sample_rate": self.sample_rate,
            "audio_features": self.audio_features.to_json(),
            "camera": {"intrinsics": self.camera_intrinsics, "c2w": self.camera_c2w},
            "opset": self.opset,
            "versions": self.versions,
            "source_checkpoint": self.source_checkpoint,
            "graphs": {name: vars(info) for name, info in self.graphs.items()},
            "config": self.config,
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> ModelCard:
        """Parse a card; anything malformed is a :class:`SplatPortraitError` naming ``where``."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise SplatPortraitError(f"{where} is not a splat-portrait model card (no {FORMAT!r} format marker)")
        if not isinstance(data.get("version"), int) or data["version"] > VERSION:
            raise SplatPortraitError(
                f"{where} has model format version {data.get('version')!r}, newer than this splat-portrait reads "
                f"({VERSION}); upgrade splat-portrait"
            )
        try:
            graphs = {name: GraphInfo(**info) for name, info in data["graphs"].items()}
            card = cls(
                preset=str(data["preset"]),
                image_size=int(data["image_size"]),
                audio_features=FeatureSpec.from_json(data["audio_features"]),
                camera_intrinsics=[float(v) for v in data["camera"]["intrinsics"]],
                camera_c2w=[[float(v) for v in row] for row in data["camera"]["c2w"]],
                opset=int(data["opset"]),
                graphs=graphs,
                versions=dict(data.get("versions", {})),
                source_checkpoint=dict(data.get("source_checkpoint", {})),
                config=dict(data.get("config", {})),
                fps=int(data.get("fps", 25)),
                sample_rate=int(data.get("sample_rate", 16000)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise SplatPortraitError(f"{where} is malformed ({type(err).__name__}: {err}); re-export the model") from None
        for name in (GENERATOR, AUDIO_DECODER):
            if name not in card.graphs:
                raise SplatPortraitError(f"{where} lists no {name!r} graph; re-export the model")
        if len(card.camera_intrinsics) != 4 or len(card.camera_c2w) != 4 or any(len(r) != 4 for r in card.camera_c2w):
            raise SplatPortraitError(f"{where}: camera must hold 4 intrinsics and a 4x4 c2w; re-export the model")
        problem = card.problem()
        if problem:
            raise SplatPortraitError(f"{where}: {problem}; re-export the model")
        return card

    def problem(self) -> str | None:
        """What makes this card's values unusable (the runtime would divide by them or allocate from them), or None."""
        spec = self.audio_features
        numbers = [*self.camera_intrinsics, *(v for row in self.camera_c2w for v in row)]
        checks = (
            (8 <= self.image_size <= 4096, f"image_size must be 8 to 4096 pixels, not {self.image_size}"),
            (self.fps == FPS, f"fps must be {FPS} (the rate the audio windows assume), not {self.fps}"),
            (self.sample_rate == SAMPLE_RATE, f"sample_rate must be {SAMPLE_RATE} (the rate speech is decoded at), not {self.sample_rate}"),
            (spec.extractor in EXTRACTORS, f"audio_features.extractor {spec.extractor!r} is not one of {', '.join(EXTRACTORS)}"),
            (spec.dim > 0 and spec.rate_hz == FEATURE_RATE_HZ, f"audio_features must be {FEATURE_RATE_HZ} Hz with a positive dim, not {spec.describe()}"),
            (all(math.isfinite(v) for v in numbers), "camera values must be finite numbers"),
            (all(v > 0 for v in self.camera_intrinsics[:2]), f"camera focal lengths must be positive, not {self.camera_intrinsics[:2]}"),
        )  # fmt: skip
        return next((message for ok, message in checks if not ok), None)


@dataclass(frozen=True)
class ModelDir:
    """A model directory whose card parsed and whose graph files all match their hashes."""

    root: Path
    card: ModelCard

    def has_fp16(self) -> bool:
        return all(n + FP16_SUFFIX in self.card.graphs for n in (GENERATOR, AUDIO_DECODER))


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def open_model_dir(path: str | os.PathLike | None) -> ModelDir:
    """Load and verify MODEL_DIR (``None``: the bundled default model)."""
    if path is None:
        if not (DEFAULT_MODEL_DIR / CARD).is_file():
            raise SplatPortraitError(
                "no bundled default model in this installation; pass --model MODEL_DIR (see `splat-portrait export`)"
            )
        path = DEFAULT_MODEL_DIR
    root = Path(path)
    if not root.exists():
        raise SplatPortraitError(f"model directory {root} does not exist; create one with `splat-portrait export`")
    if not root.is_dir():
        raise SplatPortraitError(f"{root} is not a model directory (it is a file); pass the folder `splat-portrait export` wrote")
    card_path = root / CARD
    if not card_path.is_file():
        raise SplatPortraitError(f"{root} has no {CARD}, so it is not an exported model; create one with `splat-portrait export`")
    try:
        data = json.loads(card_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SplatPortraitError(f"{card_path} is not valid JSON ({err}); re-export the model") from None
    card = ModelCard.from_json(data, str(card_path))
    for info in card.graphs.values():
        graph = root / info.file
        if Path(info.file).name != info.file:
            raise SplatPortraitError(f"{card_path} names graph file {info.file!r} outside the model directory; re-export it")
        if not graph.is_file():
            raise SplatPortraitError(f"{graph} is missing (listed in {CARD}); copy the whole model directory or re-export it")
        actual = sha256_of(graph)
        if actual != info.sha256:
            raise SplatPortraitError(
                f"{CARD} says {info.file} has SHA-256 {info.sha256} but the file has {actual}: "
                "the model directory is corrupt or was edited; re-export it"
            )
    return ModelDir(root, card)


def execution_providers(device: str = "auto") -> list[str]:
    """ONNX Runtime providers for ``device`` (``auto``: CUDA when this onnxruntime has it and a GPU is present, else CPU)."""
    import onnxruntime as ort
    import torch

    if device == "cpu":
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" in available and torch.cuda.is_available():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise SplatPortraitError(
            "--device cuda needs a CUDA GPU and onnxruntime with CUDA (pip install onnxruntime-gpu); this one has "
            f"{', '.join(available)}"
        )
    if torch.cuda.is_available():
        log.warning("onnxruntime has no CUDA provider, so the networks run on the CPU; pip install onnxruntime-gpu")
    return ["CPUExecutionProvider"]


def create_session(path: Path, providers: list[str], expected_inputs: list[str], expected_outputs: list[str],
                   threads: int | None = None):  # fmt: skip
    """An ONNX Runtime session for ``path``, checked to have the inputs and outputs the card lists (``threads``: intra-op, None: ORT's choice)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # ORT's worker threads otherwise spin after each call, stealing the cores the renderer needs next.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as err:  # ORT raises its own Fail/InvalidGraph/InvalidProtobuf types
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SplatPortraitError(f"{path} is not a valid ONNX model for this runtime ({reason}); re-export it") from None
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != expected_inputs or outputs != expected_outputs:
        raise SplatPortraitError(
            f"{path} has inputs {inputs} and outputs {outputs}, not the {expected_inputs} -> {expected_outputs} "
            f"that {CARD} describes; the model directory is inconsistent, re-export it"
        )
    return session
