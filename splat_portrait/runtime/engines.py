"""Two interchangeable ways to run the exported graphs' computation: ONNX Runtime and PyTorch eager.

Both take and return torch tensors with the shapes of :class:`~splat_portrait.models.TalkingHead`'s
``generator`` and ``dynamic`` forwards, so the animation pipeline and the benchmark use either one.
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from splat_portrait.models import Encoded, TalkingHead
from splat_portrait.runtime.model_dir import AUDIO_DECODER, FP16_SUFFIX, GENERATOR, ModelDir, create_session, execution_providers


class Engine(Protocol):
    name: str
    device: torch.device

    def encode(self, image: Tensor, c2w: Tensor, intrinsics: Tensor) -> Encoded:
        """Portrait (1, 3, S, S) in [-1, 1], c2w (1, 4, 4), intrinsics (1, 4) -> Gaussians, background, features."""

    def dynamic_offsets(self, encoded: Encoded, windows: Tensor, delta_t: Tensor) -> Tensor:
        """Audio windows (B, 8, 16, D) at ``delta_t`` (B,) seconds -> per-pixel offsets (B, 3, S, S)."""


class OnnxEngine:
    """The model directory's graphs in ONNX Runtime (CUDA execution provider when present, else CPU).

    The decoder features stay in ONNX Runtime's memory (``OrtValue``) between calls, so each batch
    of frames only moves its audio windows in and its offsets out.
    """

    def __init__(self, model: ModelDir, device: str = "auto", precision: str = "auto") -> None:
        self.providers = execution_providers(device)
        on_cuda = self.providers[0] == "CUDAExecutionProvider"
        self.device = torch.device("cuda" if on_cuda else "cpu")
        # Mixed-precision graphs only pay off on GPUs; on a CPU they would be slower than fp32.
        use_fp16 = precision == "fp16" or (precision == "auto" and on_cuda and model.has_fp16())
        if use_fp16 and not model.has_fp16():
            raise ValueError(f"{model.root} has no fp16 graphs; export it with --fp16")
        suffix = FP16_SUFFIX if use_fp16 else ""
        self.precision = "fp16" if use_fp16 else "fp32"
        self.name = f"onnxruntime {self.precision} ({self.device.type})"
        self._sessions = {}
        # On a CPU the audio decoder runs beside the renderer's thread (Animator.render_batches):
        # it gets the other cores, so the two do not fight over them.
        decoder_threads = None if on_cuda else max(1, (os.cpu_count() or 2) - 1)
        for name, threads in ((GENERATOR, None), (AUDIO_DECODER, decoder_threads)):
            info = model.card.graphs[name + suffix]
            self._sessions[name] = create_session(model.root / info.file, self.providers, info.inputs, info.outputs, threads)
        self._feature_names = model.card.feature_names
        # The OrtValues of the last portrait's features, and that portrait's Encoded.
        self._features_np: list[np.ndarray] = []
        self._features_ort: list = []
        self._features_for: Encoded | None = None

    def encode(self, image: Tensor, c2w: Tensor, intrinsics: Tensor) -> Encoded:
        feed = {"image": image, "c2w": c2w, "intrinsics": intrinsics}
        outputs = self._sessions[GENERATOR].run(None, {k: _numpy(v) for k, v in feed.items()})
        attributes, background, *features = (torch.from_numpy(o).to(self.device) for o in outputs)
        return Encoded(attributes, background, tuple(features), intrinsics.to(self.device))

    def _ort_features(self, encoded: Encoded) -> list:
        import onnxruntime as ort

        if self._features_for is not encoded:
            # On the CPU an OrtValue borrows the array's memory: keep the arrays alive beside it.
            self._features_np = [_numpy(f) for f in encoded.features]
            self._features_ort = [ort.OrtValue.ortvalue_from_numpy(a, self.device.type, 0) for a in self._features_np]
            self._features_for = encoded
        return self._features_ort

    def dynamic_offsets(self, encoded: Encoded, windows: Tensor, delta_t: Tensor) -> Tensor:
        session = self._sessions[AUDIO_DECODER]
        binding = session.io_binding()
        for name, value in zip(self._feature_names, self._ort_features(encoded)):
            binding.bind_ortvalue_input(name, value)
        binding.bind_cpu_input("windows", _numpy(windows))
        binding.bind_cpu_input("delta_t", _numpy(delta_t))
        binding.bind_output("offsets", "cpu")
        session.run_with_iobinding(binding)
        return torch.from_numpy(binding.copy_outputs_to_cpu()[0]).to(self.device)


class TorchEngine:
    """The same computation in PyTorch eager mode, from a checkpoint's model (for benchmarks and parity)."""

    def __init__(self, model: TalkingHead, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.name = f"pytorch eager fp32 ({self.device.type})"

    @torch.inference_mode()
    def encode(self, image: Tensor, c2w: Tensor, intrinsics: Tensor) -> Encoded:
        return self.model.encode(image.to(self.device), c2w.to(self.device), intrinsics.to(self.device))

    @torch.inference_mode()
    def dynamic_offsets(self, encoded: Encoded, windows: Tensor, delta_t: Tensor) -> Tensor:
        return self.model.dynamic_offsets(encoded.features, windows.to(self.device), delta_t.to(self.device))


def _numpy(t: Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy())
