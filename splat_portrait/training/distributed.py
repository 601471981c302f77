"""Data-parallel training under ``torchrun``: process group, device and data sharding.

The same command runs alone or as one of ``W`` processes started by ``torchrun --nproc-per-node``
(which sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and the rendezvous address). Gradients are
averaged by :class:`~torch.nn.parallel.DistributedDataParallel`; the process group uses NCCL on
CUDA and gloo on CPU. Rank 0 alone writes checkpoints and logs; every rank reads the checkpoints
it starts or resumes from, so across nodes RUN_DIR and ``--init`` must be on a shared file system.

Data: global step ``s`` consumes samples ``[s W B, (s + 1) W B)`` of the deterministic sample
stream and rank ``r`` takes the ``r``-th block of ``B`` of them, so the stream (and a resumed run)
is the same for every world size's own bookkeeping: after ``s`` steps ``s W B`` samples are used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Dataset

from splat_portrait.errors import SplatPortraitError


@dataclass(frozen=True)
class Distributed:
    """Where this process stands in the job."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def start(device: str) -> Distributed:
    """Join the ``torchrun`` job if there is one (``WORLD_SIZE`` > 1); else a single process on ``device``.

    Under ``torchrun`` on CUDA each process takes the GPU ``LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    chosen = torch.device(device)
    if world <= 1:
        return Distributed(0, 1, chosen)
    if chosen.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise SplatPortraitError(
                f"process LOCAL_RANK {local} has no GPU ({torch.cuda.device_count()} visible); "
                "start at most one process per GPU (torchrun --nproc-per-node)"
            )
        chosen = torch.device("cuda", local)
        torch.cuda.set_device(chosen)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), chosen)


def stop(context: Distributed) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def any_rank(context: Distributed, flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any (so all ranks stop together, never deadlock)."""
    if not context.enabled:
        return flag
    value = torch.tensor([float(flag)], device=context.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def mean_across_ranks(context: Distributed, values: dict[str, float]) -> dict[str, float]:
    """Per-name means over the ranks (for logging: rank 0 reports the whole batch)."""
    if not context.enabled or not values:
        return values
    names = sorted(values)
    packed = torch.tensor([values[n] for n in names], dtype=torch.float64, device=context.device)
    dist.all_reduce(packed)
    return dict(zip(names, (packed / context.world_size).tolist()))


class RankShard(Dataset):
    """Rank ``rank``'s view of a sample stream: local index ``m`` is global sample ``(s W + r) B + j``.

    ``s, j = divmod(m, B)``; with one process this is the identity. Loading local samples
    ``[s B, ...)`` with :func:`~splat_portrait.data.datasets.make_loader` then resumes at step ``s``.
    """

    def __init__(self, dataset: Dataset, rank: int, world_size: int, batch_size: int) -> None:
        self.dataset, self.rank, self.world_size, self.batch_size = dataset, rank, world_size, batch_size

    def global_index(self, local: int) -> int:
        step, j = divmod(local, self.batch_size)
        return (step * self.world_size + self.rank) * self.batch_size + j

    def __getitem__(self, local: int) -> Any:
        return self.dataset[self.global_index(local)]

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]
