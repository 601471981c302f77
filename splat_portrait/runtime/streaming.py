"""Live animation: speech arrives in chunks, frames leave as soon as their audio windows are complete.

A :class:`LiveHead` runs the generator once for the portrait, then for every chunk of samples
pushed it extends the features incrementally (:mod:`splat_portrait.audio.streaming`), makes every
frame that became possible (at most ``batch_frames`` per decoder/render call) and yields them.
The frames are the ones ``animate`` renders from the same speech, and there are as many
(``ceil(25 x duration)``, the last ones made by :meth:`LiveHead.finish`).

Latency: frame ``n`` shows time ``n / 25`` s but needs the audio up to ``n / 25 + 0.28`` s
(:data:`~splat_portrait.audio.streaming.LOOKAHEAD_SECONDS`), so a frame can leave no earlier than
280 ms after its moment was spoken, plus the time to compute it. A shorter ``lookahead_s`` makes
frames sooner from fewer future sounds (the missing features repeat the newest one); the frames then
differ from ``animate``'s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np
import torch

from splat_portrait import camera
from splat_portrait.audio.streaming import FeatureBuffer, lookahead_features, streaming_extractor
from splat_portrait.errors import SplatPortraitError
from splat_portrait.media.mp4 import LiveVideoWriter
from splat_portrait.runtime.cameras import camera_loop, view_matrices
from splat_portrait.runtime.compose import to_uint8
from splat_portrait.runtime.inputs import Portrait
from splat_portrait.runtime.outputs import splats_in_world, world_offsets
from splat_portrait.runtime.pipeline import Animator, Batch, StageTimer
from splat_portrait.models import Encoded, to_splats
from splat_portrait.splats import Splats


@dataclass(frozen=True)
class LiveFrame:
    """One finished frame: its index, the picture and (if asked for) every splat's speech offset in world space."""

    index: int
    rgb: np.ndarray  # (S, S, 3) uint8
    offsets: np.ndarray | None  # (N, 3) float32, world-space motion of each splat of the static head


class LiveHead:
    """One portrait animated by speech that arrives piece by piece (:meth:`push`, then :meth:`finish`)."""

    def __init__(self, animator: Animator, portrait: Portrait, with_offsets: bool = False, lookahead_s: float | None = None,
                 encoded: Encoded | None = None) -> None:  # fmt: skip
        """``encoded``: the generator's output for this portrait, if an earlier head of it ran it already."""
        self.animator = animator
        self.portrait = portrait
        self.with_offsets = with_offsets
        self.timer = StageTimer()
        card, engine = animator.card, animator.engine
        self._extractor = streaming_extractor(card.audio_features)
        self._features = FeatureBuffer(card.audio_features.dim, lookahead_features(lookahead_s))
        if encoded is None:
            with self.timer("generator"):
                encoded = engine.encode(portrait.generator_input(), portrait.c2w[None], animator.intrinsics[None])
        self.encoded = encoded
        with self.timer("camera"):
            loop = camera_loop(animator.options.camera, portrait.c2w, card.fps)
            self._viewmats = view_matrices(portrait.c2w, loop).to(engine.device)
        size = animator.size
        self._K = camera.intrinsics_to_K(animator.intrinsics[None], size, size).to(engine.device)
        self._background = animator.background(self.encoded)
        self._static = to_splats(self.encoded.attributes, self.encoded.intrinsics)
        self.samples = 0

    @property
    def frames_done(self) -> int:
        return self._features.frames_done

    def static_splats(self) -> Splats:
        """The head without speech offsets, in world coordinates (what ``--ply`` writes)."""
        return splats_in_world(self._static[0].to("cpu"), self.portrait.c2w)

    @torch.inference_mode()
    def push(self, samples: np.ndarray) -> Iterator[LiveFrame]:
        """Append (N,) float32 16 kHz samples and yield every frame that became possible, in order."""
        self.samples += len(samples)
        with self.timer("features"):
            self._features.append(self._extractor.push(samples))
        yield from self._make(self._features.frames_available())

    @torch.inference_mode()
    def finish(self) -> Iterator[LiveFrame]:
        """End of speech: yield the last frames (their windows repeat the final feature, as offline)."""
        with self.timer("features"):
            self._features.append(self._extractor.finish(), finished=True)
        yield from self._make(self._features.frames_available(self.animator.num_frames(self.samples)))

    def _make(self, available: int) -> Iterator[LiveFrame]:
        batches = []
        while self.frames_done < available:
            index, windows = self._features.take(min(self.animator.chunk_frames, available - self.frames_done))
            views = self._viewmats[(index % len(self._viewmats)).to(self._viewmats.device)]
            batches.append(Batch(index, windows, views, self._K.expand(len(index), -1, -1)))
        for chunk in self.animator.render_batches(self.encoded, batches, self._background, self.timer):
            with self.timer("encode"):
                rgb = to_uint8(chunk.render.rgb)
                offsets = world_offsets(chunk.splats.means, self._static.means, self.portrait.c2w) if self.with_offsets else [None] * len(rgb)
            for i, n in enumerate(chunk.index.tolist()):
                yield LiveFrame(n, rgb[i], offsets[i])


class FrameSink(Protocol):
    """Where a live stream's output goes: the speech as it arrives and each frame as it is made."""

    def audio(self, samples: np.ndarray) -> None: ...

    def frame(self, frame: LiveFrame) -> None: ...


@dataclass(frozen=True)
class StreamStats:
    """What a live run did: frames and samples, and each frame's latency (seconds from the audio chunk that completed its windows to the frame)."""

    frames: int
    samples: int
    latencies: np.ndarray
    seconds: float  # wall time from the first chunk to the last frame

    def latency_percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) if len(self.latencies) else float("nan")


def run_stream(head: LiveHead, chunks: Iterable[np.ndarray], sinks: Sequence[FrameSink],
               clock: Callable[[], float] = time.perf_counter) -> StreamStats:  # fmt: skip
    """Feed ``chunks`` to ``head`` as they come, passing the audio and every frame to ``sinks``.

    A frame made by :meth:`LiveHead.finish` (the speech ended) counts from the end of the stream.
    """
    latencies: list[float] = []
    started: float | None = None

    def deliver(frames: Iterator[LiveFrame], arrived: float) -> None:
        for frame in frames:
            for sink in sinks:
                sink.frame(frame)
            latencies.append(clock() - arrived)

    for samples in chunks:
        arrived = clock()
        started = arrived if started is None else started
        for sink in sinks:
            sink.audio(samples)
        deliver(head.push(samples), arrived)
    ended = clock()
    if head.samples == 0:
        raise SplatPortraitError("no audio arrived; a live stream needs speech (WAV or raw 16 kHz PCM)")
    deliver(head.finish(), ended)
    return StreamStats(head.frames_done, head.samples, np.asarray(latencies), clock() - (started or ended))


class VideoSink:
    """Frames and speech into a progressively written video (:class:`~splat_portrait.media.mp4.LiveVideoWriter`)."""

    def __init__(self, writer: LiveVideoWriter) -> None:
        self.writer = writer

    def audio(self, samples: np.ndarray) -> None:
        self.writer.write_audio(samples)

    def frame(self, frame: LiveFrame) -> None:
        self.writer.write(frame.rgb)


class RawSink:
    """Frames as raw rgb24 bytes on a binary stream (``ffmpeg -f rawvideo -pix_fmt rgb24 -s SxS -r 25 -i -``)."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream

    def audio(self, samples: np.ndarray) -> None:
        pass  # the speech is the caller's: it sent it

    def frame(self, frame: LiveFrame) -> None:
        try:
            self.stream.write(frame.rgb.tobytes())
            self.stream.flush()
        except BrokenPipeError:
            raise SplatPortraitError("the program reading the frames closed its end of the pipe") from None
