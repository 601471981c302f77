"""``animate --batch jobs.csv``: many portrait/speech pairs through one loaded model.

The CSV has a header row naming the columns ``image``, ``audio`` and ``output`` (in any order) and
one job per row; relative paths are relative to the CSV file's folder. A failing row is recorded
with its reason and the next row runs.

The file is trusted input: it may name any path the user can write. Before any row runs, the
whole file is refused if an output of one row is an input of any row (it would be replaced before
that row reads it), or an output already exists and ``overwrite`` is off.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from splat_portrait.errors import SplatPortraitError
from splat_portrait.runtime.outputs import refuse_overwriting_inputs
from splat_portrait.runtime.pipeline import AnimateResult
from splat_portrait.runtime.talking_head import TalkingHeadPipeline

log = logging.getLogger(__name__)

COLUMNS = ("image", "audio", "output")


@dataclass(frozen=True)
class Job:
    row: int  # line number in the CSV file
    image: Path
    audio: Path
    output: Path


@dataclass(frozen=True)
class JobStatus:
    job: Job
    result: AnimateResult | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def read_jobs(path: str | os.PathLike, overwrite: bool = False) -> list[Job]:
    """The jobs listed in a CSV file; a malformed file is an error before any job runs."""
    path = Path(path)
    if not path.is_file():
        raise SplatPortraitError(f"batch file {path} does not exist")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [name.strip() for name in reader.fieldnames or []]
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                raise SplatPortraitError(
                    f"batch file {path} needs a header row with columns {', '.join(COLUMNS)}; missing {', '.join(missing)}"
                )
            jobs = []
            for record in reader:
                values = {k.strip(): (v or "").strip() for k, v in record.items() if k is not None}
                if not any(values.values()):
                    continue
                empty = [c for c in COLUMNS if not values.get(c)]
                if empty:
                    raise SplatPortraitError(f"batch file {path}, line {reader.line_num}: no {', '.join(empty)} given")
                paths = [path.parent / Path(values[c]).expanduser() for c in COLUMNS]
                jobs.append(Job(reader.line_num, *paths))
    except (UnicodeDecodeError, csv.Error) as err:
        raise SplatPortraitError(f"batch file {path} is not a readable CSV file ({err})") from None
    if not jobs:
        raise SplatPortraitError(f"batch file {path} lists no jobs")
    outputs = [j.output.resolve() for j in jobs]
    if len(set(outputs)) != len(outputs):
        raise SplatPortraitError(f"batch file {path} writes the same output file twice; give every row its own output")
    inputs = [p for j in jobs for p in (j.image, j.audio)]
    for job in jobs:
        try:
            refuse_overwriting_inputs([job.output], inputs)
        except SplatPortraitError as err:
            raise SplatPortraitError(f"batch file {path}, line {job.row}: {err}") from None
    existing = [j for j in jobs if j.output.exists()]
    if existing and not overwrite:
        rows = ", ".join(f"line {j.row} ({j.output})" for j in existing[:3]) + (" and more" if len(existing) > 3 else "")
        raise SplatPortraitError(f"batch file {path}: outputs already exist at {rows}; pass --overwrite to replace them")
    return jobs


def run_batch(
    pipe: TalkingHeadPipeline,
    jobs: list[Job],
    on_job: Callable[[Job], None] | None = None,
    on_frames: Callable[[int, int], None] | None = None,
) -> list[JobStatus]:
    """Animate every job with the same loaded model; one job's failure does not stop the others."""
    statuses = []
    for job in jobs:
        if on_job:
            on_job(job)
        try:
            result = pipe.save(job.image, job.audio, job.output, on_frames=on_frames)
            statuses.append(JobStatus(job, result=result))
        except SplatPortraitError as err:
            log.warning("row %d failed: %s", job.row, err)
            statuses.append(JobStatus(job, error=str(err)))
        except Exception as err:  # a bug: keep its traceback in the log, but run the other rows
            log.exception("row %d failed unexpectedly", job.row)
            statuses.append(JobStatus(job, error=f"unexpected {type(err).__name__}: {err}"))
    return statuses
