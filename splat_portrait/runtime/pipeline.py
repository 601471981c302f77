"""The Animator: portrait + speech -> talking-head MP4 (and optional depth video, ``.ply`` files and browser page).

Per job: crop and pose the portrait, decode the speech, then :meth:`Animator.prepare` computes its
features, the camera path and runs the generator once, and :meth:`Animator.chunks` walks the frames
in chunks of ``batch_frames``: audio windows -> one audio-decoder call -> splats -> one render
call (:meth:`Animator.render_batches`, where on a CPU the decoder of the next chunk runs beside
the render of this one); ``animate`` pipes each chunk's frames to ffmpeg. (``prepare`` and
``chunks`` take inputs already in memory, for callers with no files or no ffmpeg, such as
``benchmarks/gpu_check.py``; :class:`~splat_portrait.runtime.streaming.LiveHead` feeds
``render_batches`` from live audio.) Only one chunk of windows, offsets and images is in memory at
a time (``--html`` keeps every frame's compressed offsets, about 25 kB each at 128²), so a
ten-minute clip runs in the memory of a ten-second one; what grows with the length is the decoded speech (64 kB/s) and its
features (D * 200 B/s, 16 kB/s for mel).

Frames are 25 fps and there are ``ceil(25 * duration)`` of them, so the video ends within one frame
after the speech. Frame ``n`` is driven by the audio around ``t = n / 25`` s with ``ΔT = t`` (the
portrait stands for the moment the speech starts, like the source frame in training).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from splat_portrait import camera
from splat_portrait.audio.features import FeatureExtractor, extractor_for
from splat_portrait.audio.windows import audio_windows
from splat_portrait.media.audio import wav_bytes, write_wav
from splat_portrait.media.mp4 import Mp4Writer
from splat_portrait.models import Encoded, to_splats
from splat_portrait.render import MAX_SIZE, RenderOutput, render
from splat_portrait.runtime.cameras import CameraOptions, camera_path, view_matrices
from splat_portrait.runtime.compose import DepthColors, PasteBack, to_uint8
from splat_portrait.runtime.engines import Engine
from splat_portrait.runtime.inputs import Portrait, load_portrait, load_speech
from splat_portrait.runtime.model_dir import ModelCard
from splat_portrait.runtime.outputs import OutputPaths, splats_in_world, staged, world_offsets, write_world_ply
from splat_portrait.splats import Splats
from splat_portrait.web.html import standalone_page
from splat_portrait.web.payload import encode_frame, viewer_head

# Pixels rendered per call: large outputs render in smaller chunks so memory stays that of 16 frames at 512².
CHUNK_PIXELS = 16 * 512 * 512

STAGES = ("image", "audio", "features", "camera", "generator", "audio decoder", "render", "encode", "ply", "html")


@dataclass(frozen=True)
class AnimateOptions:
    """How every job of an Animator is rendered."""

    camera: CameraOptions = field(default_factory=CameraOptions)
    # Side of the rendered crop in pixels (None: the model's resolution). Splats are rendered
    # directly at this size, not upscaled afterwards.
    size: int | None = None
    paste_back: bool = False
    # Frames per audio-decoder call and per render call.
    batch_frames: int = 16
    render_backend: str = "auto"
    # PyTorch threads for the per-frame work on a CPU (splats, rendering, frame conversion; the
    # engine's calls keep their own threads). One: the renderer's many
    # small kernels gain little from OpenMP on few cores, and while ffmpeg and ONNX Runtime share
    # those cores OpenMP's spinning barriers stall it (measured on 2 cores, small preset at 128^2:
    # 9 ms per frame with 1 thread, 10 ms with 2 idle-waiting threads, up to 1000 ms with 2 spinning).
    render_threads: int = 1

    def __post_init__(self) -> None:
        if self.size is not None and not 16 <= self.size <= MAX_SIZE:
            raise ValueError(f"size must be 16 to {MAX_SIZE} pixels, got {self.size}")
        if self.batch_frames < 1 or self.render_threads < 1:
            raise ValueError(f"batch_frames and render_threads must be at least 1, got {self.batch_frames}, {self.render_threads}")


@dataclass(frozen=True)
class AnimateResult:
    outputs: OutputPaths
    frames: int
    duration: float  # seconds of speech
    seconds: dict[str, float]  # wall time per stage
    total_seconds: float
    dropped_splats: int = 0  # non-finite splats left out of .ply files

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.total_seconds if self.total_seconds > 0 else math.inf


@dataclass(frozen=True)
class Prepared:
    """One job made ready for the frame loop: the portrait, speech features, cameras and the generator's output."""

    portrait: Portrait | None  # None where the source is not a photo (evaluation drives a dataset frame)
    features: Tensor  # (N, D) 50 Hz audio features
    viewmats: Tensor  # (F, 4, 4) one camera per frame, on the engine's device
    encoded: Encoded
    intrinsics: Tensor  # (F, 4) normalised intrinsics of each frame's camera

    @property
    def num_frames(self) -> int:
        return len(self.viewmats)


@dataclass(frozen=True)
class Batch:
    """Frames to make together: their indices (B,), audio windows (B, 8, 16, D) and cameras (B, 4, 4) / (B, 3, 3)."""

    index: Tensor
    windows: Tensor
    viewmats: Tensor
    Ks: Tensor


@dataclass(frozen=True)
class Chunk:
    """Consecutive frames rendered together: their indices (B,), splats and render, and the job's background (1, S, S, 3)."""

    index: Tensor
    splats: Splats
    render: RenderOutput
    background: Tensor


class StageTimer:
    """Wall-clock seconds spent in each named stage, accumulated over repeated entries."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


class Animator:
    """A loaded model (an :class:`Engine` and its card) that turns portraits and speech into videos."""

    def __init__(
        self, engine: Engine, card: ModelCard, options: AnimateOptions = AnimateOptions(), allow_download: bool = False
    ) -> None:
        self.engine = engine
        self.card = card
        self.options = options
        self.allow_download = allow_download
        self.intrinsics = torch.tensor(card.camera_intrinsics, dtype=torch.float32)

    @functools.cached_property
    def extractor(self) -> FeatureExtractor:
        """The card's audio feature extractor, loaded on first use (evaluation brings its own features)."""
        return extractor_for(self.card.audio_features, allow_download=self.allow_download)

    @property
    def size(self) -> int:
        return self.options.size or self.card.image_size

    @property
    def chunk_frames(self) -> int:
        """Frames per audio-decoder and render call: ``batch_frames``, fewer where frames are large."""
        return max(1, min(self.options.batch_frames, CHUNK_PIXELS // self.size**2))

    def inputs(self, image: Any, audio: Any) -> list[Path]:
        """Every file a job with ``image`` and ``audio`` reads, which none of its outputs may replace."""
        files = [image, audio, self.options.camera.pose_from]
        return [Path(f) for f in files if isinstance(f, (str, os.PathLike))]

    def num_frames(self, num_samples: int) -> int:
        """``ceil(fps * duration)``, in integers so no rounding of the duration can add a frame."""
        return -(-num_samples * self.card.fps // self.card.sample_rate)

    @torch.inference_mode()
    def animate(
        self,
        image: str | os.PathLike | np.ndarray | Any,
        audio: str | os.PathLike | np.ndarray,
        outputs: OutputPaths,
        on_frames: Callable[[int, int], None] | None = None,
    ) -> AnimateResult:
        """Animate ``image`` with ``audio`` into ``outputs``; ``on_frames(done, total)`` reports progress.

        ``image`` is a file, an (H, W, 3) uint8 RGB array or a PIL image; ``audio`` a file or (N,)
        float samples at 16 kHz.
        """
        started = time.perf_counter()
        timer = StageTimer()
        outputs.check(inputs=self.inputs(image, audio))
        with timer("image"):
            portrait = load_portrait(image, self.card.image_size)
        with timer("audio"):
            samples = load_speech(audio)
        job = self.prepare(portrait, samples, timer)
        with tempfile.TemporaryDirectory() as tmp:
            if isinstance(audio, np.ndarray):  # ffmpeg muxes the speech from a file
                audio = Path(tmp) / "speech.wav"
                write_wav(audio, samples)
            dropped = self._write(job, Path(audio), samples, outputs, timer, on_frames)
        total = time.perf_counter() - started
        seconds = {s: timer.seconds[s] for s in STAGES if s in timer.seconds}
        return AnimateResult(outputs, job.num_frames, len(samples) / self.card.sample_rate, seconds, total, dropped)

    @torch.inference_mode()
    def prepare(self, portrait: Portrait, samples: np.ndarray, timer: StageTimer | None = None) -> Prepared:
        """A loaded portrait and 16 kHz speech -> features, the camera path and the generator's output."""
        timer = timer or StageTimer()
        with timer("features"):
            features = torch.from_numpy(self.extractor(samples))
        num_frames = self.num_frames(len(samples))
        with timer("camera"):
            viewmats = view_matrices(portrait.c2w, camera_path(self.options.camera, portrait.c2w, num_frames))
        with timer("generator"):
            encoded = self.engine.encode(portrait.generator_input(), portrait.c2w[None], self.intrinsics[None])
        return Prepared(portrait, features, viewmats.to(self.engine.device), encoded, self.intrinsics.expand(num_frames, -1))

    @torch.inference_mode()
    def chunks(self, job: Prepared, timer: StageTimer | None = None) -> Iterator[Chunk]:
        """The job's frames, ``chunk_frames`` at a time: audio decoder -> splats -> one render call each."""
        device = self.engine.device
        Ks = camera.intrinsics_to_K(job.intrinsics, self.size, self.size).to(device)

        def batches() -> Iterator[Batch]:
            for start in range(0, job.num_frames, self.chunk_frames):
                index = torch.arange(start, min(start + self.chunk_frames, job.num_frames))
                frames = index.to(device)
                yield Batch(index, audio_windows(job.features, index), job.viewmats[frames], Ks[frames])

        yield from self.render_batches(job.encoded, batches(), self.background(job.encoded), timer or StageTimer())

    def render_batches(self, encoded: Encoded, batches: Iterable[Batch], background: Tensor, timer: StageTimer) -> Iterator[Chunk]:
        """Each batch of frames through the audio decoder, then splats and one render call.

        On a CPU the decoder runs one batch ahead in a second thread while the current batch
        renders: ONNX Runtime and the renderer's kernels both release the GIL, so on two cores the
        two stages overlap instead of taking turns (the decoder's seconds then overlap the render's).
        """

        def decode(batch: Batch) -> Tensor:
            with torch.inference_mode(), timer("audio decoder"):
                return self.engine.dynamic_offsets(encoded, batch.windows, batch.index.float() / self.card.fps)

        def draw(batch: Batch, offsets: Tensor) -> Chunk:
            with self._render_threads(), timer("render"):
                splats, out = render_chunk(encoded, offsets, batch.viewmats, batch.Ks, self.size, background, self.options.render_backend)
            return Chunk(batch.index, splats, out, background)

        if self.engine.device.type != "cpu":
            for batch in batches:
                yield draw(batch, decode(batch))
            return
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="audio-decoder") as ahead:
            pending: tuple[Batch, concurrent.futures.Future] | None = None
            for batch in batches:
                future = ahead.submit(decode, batch)
                if pending is not None:
                    yield draw(pending[0], pending[1].result())
                pending = (batch, future)
            if pending is not None:
                yield draw(pending[0], pending[1].result())

    def background(self, encoded: Encoded) -> Tensor:
        """The generator's background at the output size, (1, S, S, 3) on the engine's device."""
        return _resize(encoded.background, self.size).permute(0, 2, 3, 1).to(self.engine.device)

    def _render_threads(self) -> contextlib.AbstractContextManager:
        if self.engine.device.type != "cpu":
            return contextlib.nullcontext()
        return _torch_threads(self.options.render_threads)

    def _write(self, job: Prepared, audio: Path, samples: np.ndarray, outputs: OutputPaths, timer: StageTimer,
               on_frames: Callable[[int, int], None] | None) -> int:  # fmt: skip
        size, portrait = self.size, job.portrait
        paste = PasteBack(portrait.image, portrait.box) if self.options.paste_back else None
        width, height = paste.size if paste else (size, size)
        depth_colors: DepthColors | None = None
        dropped = 0
        static = to_splats(job.encoded.attributes, job.encoded.intrinsics)
        page = PageRecorder(static, portrait.c2w, self.card, size) if outputs.html else None
        with staged(outputs) as tmp, contextlib.ExitStack() as writers:
            video = writers.enter_context(Mp4Writer(tmp.video, width, height, self.card.fps, audio=audio, name=outputs.video))
            depth = (writers.enter_context(Mp4Writer(tmp.depth, size, size, self.card.fps, audio=audio, name=outputs.depth))
                     if tmp.depth else None)  # fmt: skip
            for chunk in self.chunks(job, timer):
                out = chunk.render
                with self._render_threads():
                    with timer("encode"):
                        for frame in to_uint8(out.rgb):
                            video.write(paste(frame) if paste else frame)
                        if depth is not None:
                            depth_colors = depth_colors or DepthColors.fit(out.depth[0], out.alpha[0])
                            for frame in depth_colors(out.depth, out.alpha):
                                depth.write(frame)
                    if tmp.ply_frames is not None:
                        with timer("ply"):
                            for i, n in enumerate(chunk.index.tolist()):
                                dropped += write_world_ply(chunk.splats[i], portrait.c2w, tmp.ply_frames / f"frame_{n:06d}.ply")
                    if page is not None:
                        with timer("html"):
                            page.add(chunk)
                if on_frames:
                    on_frames(int(chunk.index[-1]) + 1, job.num_frames)
            with timer("encode"):
                writers.close()  # ffmpeg finishes the files here
            if tmp.ply is not None:
                with timer("ply"):
                    dropped += write_world_ply(static[0], portrait.c2w, tmp.ply)
            if page is not None:
                with timer("html"):
                    page.write(tmp.html, outputs.html.stem, samples)
        return dropped


class PageRecorder:
    """Collects every frame's offsets for ``animate --html`` and writes the self-contained page."""

    def __init__(self, static: Splats, c2w: Tensor, card: ModelCard, size: int) -> None:
        self.static, self.c2w, self.card = static, c2w, card
        self.head, self.meta = viewer_head(splats_in_world(static[0], c2w), c2w, card.camera_intrinsics[0], size, card.fps, None)
        self.frames: list[bytes] = []

    def add(self, chunk: Chunk) -> None:
        offsets = world_offsets(chunk.splats.means, self.static.means, self.c2w)
        self.frames += [encode_frame(n, offsets[i], self.head.keep) for i, n in enumerate(chunk.index.tolist())]

    def write(self, path: Path, title: str, samples: np.ndarray) -> None:
        page = standalone_page(title, {**self.meta, "frames": len(self.frames)}, self.head, self.frames,
                               wav_bytes(samples, self.card.sample_rate))  # fmt: skip
        path.write_text(page, encoding="utf-8")


def render_chunk(
    encoded: Encoded, offsets: Tensor, viewmats: Tensor, Ks: Tensor, size: int, background: Tensor, backend: str
) -> tuple[Splats, RenderOutput]:
    """The splats of one chunk of frames (``offsets`` (B, 3, S, S) applied) and their render from ``viewmats``/``Ks`` (B, ...).

    ``background`` (1, size, size, 3) is shared by every frame.
    """
    count = len(offsets)
    splats = to_splats(encoded.attributes.expand(count, -1, -1, -1), encoded.intrinsics.expand(count, -1), offsets)
    if splats.device.type == "cuda":
        splats = splats.map(Tensor.contiguous)  # gsplat's kernels read dense arrays
    return splats, render(splats, viewmats, Ks, size, size, background.expand(count, -1, -1, -1), backend=backend)


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _resize(images: Tensor, size: int) -> Tensor:
    """(B, C, H, W) images resized to (size, size); the background is smooth, so bilinear suffices."""
    if images.shape[-1] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
