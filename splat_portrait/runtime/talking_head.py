"""``TalkingHeadPipeline``: the public Python API every command is a thin layer over.

::

    from splat_portrait import TalkingHeadPipeline

    pipe = TalkingHeadPipeline.from_pretrained()            # the bundled model (or a MODEL_DIR / checkpoint)
    frames, splats = pipe("face.png", "speech.wav", camera="orbit")
    splats.save_ply("head.ply")                              # frames: (F, H, W, 3) uint8 at pipe.fps
    pipe.save("face.png", "speech.wav", "talk.mp4", ply="head.ply")   # files, streamed in bounded memory

``from_pretrained`` takes an exported MODEL_DIR (``splat-portrait export``; run with ONNX Runtime),
a training checkpoint (run in PyTorch), or nothing for the bundled model. Images are files, (H, W, 3)
uint8 RGB arrays or PIL images; speech is any audio file or (N,) float samples at 16 kHz.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np
import torch
from torch import Tensor

from splat_portrait.errors import SplatPortraitError
from splat_portrait.models import to_splats
from splat_portrait.runtime.cameras import CameraOptions, view_matrices
from splat_portrait.runtime.compose import to_uint8
from splat_portrait.runtime.engines import Engine, OnnxEngine, TorchEngine
from splat_portrait.runtime.inputs import load_portrait, load_speech
from splat_portrait.runtime.model_dir import ModelCard, open_model_dir
from splat_portrait.runtime.outputs import OutputPaths, splats_in_world
from splat_portrait.runtime.pipeline import AnimateOptions, AnimateResult, Animator, Chunk, Prepared
from splat_portrait.splats import Splats


class TalkingHeadOutput(NamedTuple):
    frames: np.ndarray  # (F, H, W, 3) uint8 RGB at the model's fps
    splats: Splats  # the static head in world coordinates (what --ply writes)


class TalkingHeadPipeline:
    """A loaded model (engine + model card) and how it renders; call it to animate a portrait."""

    def __init__(self, engine: Engine, card: ModelCard, options: AnimateOptions = AnimateOptions(), allow_download: bool = False):
        self.engine = engine
        self.card = card
        self.options = options
        self.allow_download = allow_download

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike | None = None,
        device: str = "auto",
        options: AnimateOptions = AnimateOptions(),
        allow_download: bool = False,
    ) -> TalkingHeadPipeline:
        """Load a MODEL_DIR (ONNX Runtime), a checkpoint file (PyTorch) or, with ``None``, the bundled model.

        ``device``: ``auto`` (CUDA where available), ``cpu`` or ``cuda``. A wav2vec2 model the card
        names is looked up locally only, unless ``allow_download``.
        """
        if device not in ("auto", "cpu", "cuda"):
            raise SplatPortraitError(f"unknown device {device!r}; choose auto, cpu or cuda")
        if model is not None and Path(model).is_file():
            on_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
            pipe = cls.from_checkpoint(model, "cuda" if on_cuda else "cpu", options)
        else:
            model_dir = open_model_dir(model)
            pipe = cls(OnnxEngine(model_dir, device), model_dir.card, options, allow_download)
        pipe.animator().extractor  # a missing feature model is an error now, not at the first job
        return pipe

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu", options: AnimateOptions = AnimateOptions()) -> TalkingHeadPipeline:
        """A training checkpoint run in PyTorch eager mode (what ``evaluate`` scores)."""
        from splat_portrait.export.graphs import feature_spec_of
        from splat_portrait.models import load_checkpoint

        model, training = load_checkpoint(path)
        return cls.from_model(model.eval(), feature_spec_of(model, training), device, options)

    @classmethod
    def from_model(cls, model: Any, audio_features: Any, device: str | torch.device = "cpu", options: AnimateOptions = AnimateOptions()) -> TalkingHeadPipeline:
        """A :class:`~splat_portrait.models.TalkingHead` in memory, reading ``audio_features`` (a FeatureSpec)."""
        return cls(TorchEngine(model, device), ModelCard.for_model(model, audio_features), options)

    @property
    def fps(self) -> int:
        return self.card.fps

    def animator(self, camera: str | None = None, yaw: float = 0.0, pitch: float = 0.0, size: int | None = None) -> Animator:
        """The :class:`Animator` for one call: the pipeline's options with this call's camera and size."""
        options = self.options
        if camera is not None or yaw or pitch:
            options = dataclasses.replace(options, camera=CameraOptions(camera or options.camera.trajectory, None, yaw, pitch))
        if size is not None:
            options = dataclasses.replace(options, size=size)
        return Animator(self.engine, self.card, options, self.allow_download)

    def __call__(self, image: Any, audio: Any, camera: str | None = None, yaw: float = 0.0, pitch: float = 0.0,
                 size: int | None = None) -> TalkingHeadOutput:  # fmt: skip
        """Animate in memory: the frames (F, H, W, 3) uint8 and the static head's splats (world space)."""
        animator = self.animator(camera, yaw, pitch, size)
        portrait = load_portrait(image, self.card.image_size)
        job = animator.prepare(portrait, load_speech(audio))
        frames = np.concatenate([to_uint8(chunk.render.rgb) for chunk in animator.chunks(job)])
        return TalkingHeadOutput(frames, self.static_splats(job))

    def save(self, image: Any, audio: Any, video: str | os.PathLike, ply: str | os.PathLike | None = None,
             ply_frames: str | os.PathLike | None = None, depth: str | os.PathLike | None = None,
             on_frames: Callable[[int, int], None] | None = None, html: str | os.PathLike | None = None,
             **camera: Any) -> AnimateResult:  # fmt: skip
        """Animate into files (MP4 with the speech, optional .ply, per-frame .ply folder, depth video, browser page), streamed in bounded memory."""
        paths = OutputPaths(*(Path(p) if p is not None else None for p in (video, ply, ply_frames, depth, html)))
        return self.animator(**camera).animate(image, audio, paths, on_frames)

    def reenact(self, source: Tensor, source_c2w: Tensor, source_intrinsics: Tensor, features: Tensor, c2w: Tensor,
                intrinsics: Tensor) -> Iterator[Chunk]:  # fmt: skip
        """A source frame (3, R, R) in [-1, 1] with its camera, driven by 50 Hz ``features`` and seen from cameras ``c2w`` (F, 4, 4).

        What evaluation needs: the source and its pose come from a dataset, not from a photo.
        """
        animator = self.animator()
        with torch.inference_mode():
            encoded = self.engine.encode(source[None], source_c2w[None], source_intrinsics[None])
            viewmats = view_matrices(source_c2w, c2w).to(self.engine.device)
        yield from animator.chunks(Prepared(None, features, viewmats, encoded, intrinsics))

    @staticmethod
    def static_splats(job: Prepared) -> Splats:
        """The job's head without speech offsets, in world coordinates (what ``--ply`` writes)."""
        return splats_in_world(to_splats(job.encoded.attributes, job.encoded.intrinsics)[0], job.portrait.c2w)
