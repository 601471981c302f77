"""The evaluation protocols: which test clips drive, which image is the source, how many frames count.

* ``same-identity``: the source is the first frame of the driving clip itself; its audio and
  cameras drive the first ``seconds`` of generation, which are compared with the real frames.
* ``cross-identity``: the source is the first frame of a test clip of another identity, paired
  deterministically (the next clip in id order whose identity differs); there is no ground truth,
  so only CSIM (against the source), FID and LipSync apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from splat_portrait.data.layout import FPS, ManifestEntry
from splat_portrait.errors import SplatPortraitError
from splat_portrait.metrics import METRICS

PROTOCOLS = ("same-identity", "cross-identity")
BASELINES = ("copy-source",)
# Metrics that compare with the real frames, which only the same-identity protocol has.
GROUND_TRUTH_METRICS = ("psnr", "ssim", "lpips")


@dataclass(frozen=True)
class Case:
    """One evaluated clip: driving clip ``clip`` (its audio and cameras) and the clip ``source`` whose frame 0 is the input."""

    clip: int
    source: int
    num_frames: int


def check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise SplatPortraitError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")


def check_baseline(baseline: str | None) -> None:
    if baseline is not None and baseline not in BASELINES:
        raise SplatPortraitError(f"unknown baseline {baseline!r}; choose one of {', '.join(BASELINES)}")


def protocol_metrics(protocol: str, requested: Sequence[str] | None) -> tuple[str, ...]:
    """The metrics to run, in the canonical order: all that apply by default, else the requested ones (checked)."""
    check_protocol(protocol)
    applicable = METRICS if protocol == "same-identity" else tuple(m for m in METRICS if m not in GROUND_TRUTH_METRICS)
    if requested is None:
        return applicable
    for name in requested:
        if name not in METRICS:
            raise SplatPortraitError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")
        if name not in applicable:
            raise SplatPortraitError(
                f"metric {name!r} compares with ground truth, which the {protocol} protocol has not; "
                f"choose from {', '.join(applicable)}"
            )
    if not requested:
        raise SplatPortraitError(f"no metrics given; choose from {', '.join(applicable)}")
    return tuple(m for m in METRICS if m in requested)


def parse_metric_list(text: str | None) -> list[str] | None:
    """``"psnr, ssim"`` -> ``["psnr", "ssim"]``; None stays None (the protocol's default)."""
    if text is None:
        return None
    return [name.strip().lower() for name in text.split(",") if name.strip()]


def identity_of(entry: ManifestEntry) -> str:
    """Clips cut from one source video show one person; every synthetic clip is its own identity."""
    return entry.id if entry.synthetic else entry.source


def cross_identity_sources(identities: Sequence[str]) -> list[int]:
    """For each clip (in id order), the index of the next clip, cyclically, whose identity differs."""
    count = len(identities)
    sources = []
    for k, identity in enumerate(identities):
        other = next((j % count for j in range(k + 1, k + count) if identities[j % count] != identity), None)
        if other is None:
            raise SplatPortraitError(
                f"the cross-identity protocol needs test clips of at least two identities, but all {count} show one; "
                "use --protocol same-identity or add test clips of other people"
            )
        sources.append(other)
    return sources


def frames_to_score(seconds: float, num_frames: int) -> int:
    """The first ``seconds`` of a clip in frames (at least the source frame and one more)."""
    return min(num_frames, max(2, round(seconds * FPS)))


def plan_cases(
    entries: Sequence[ManifestEntry], frame_counts: Sequence[int], protocol: str, seconds: float, max_clips: int | None
) -> list[Case]:
    """Cases for the test clips ``entries`` (sorted by id), the first ``max_clips`` of them."""
    check_protocol(protocol)
    if seconds <= 0:
        raise SplatPortraitError(f"--seconds must be positive, got {seconds}")
    if max_clips is not None and max_clips < 1:
        raise SplatPortraitError(f"--clips must be at least 1, got {max_clips}")
    short = [e.id for e, n in zip(entries, frame_counts) if n < 2]
    if short:
        raise SplatPortraitError(f"test clip {short[0]} has fewer than 2 frames; evaluation needs a source frame and one to predict")
    if protocol == "same-identity":
        sources = list(range(len(entries)))
    else:
        sources = cross_identity_sources([identity_of(e) for e in entries])
    cases = [Case(k, sources[k], frames_to_score(seconds, frame_counts[k])) for k in range(len(entries))]
    return cases[:max_clips]
