"""What a checkpoint needs beyond the weights to continue a run exactly: randomness and file names.

A step's own randomness (flat background colours, SDS poses and noise) comes from a generator
seeded by ``(seed, step, rank)``, so it needs no saved state and is the same whether a run was
interrupted or not, on every rank. The global torch / CUDA / NumPy / Python generators are saved
as well (rank 0's), so library code that draws from them resumes where it stopped.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

# The run's files: RUN_DIR/last.ckpt (everything --resume needs) and RUN_DIR/<stage>.ckpt (the model).
RESUME_FILE = "last.ckpt"
TENSORBOARD_DIR = "tb"


def model_file(run_dir: Path, stage: str) -> Path:
    """``RUN_DIR/static.ckpt`` or ``RUN_DIR/dynamic.ckpt``: weights, config and how they were trained."""
    return run_dir / f"{stage}.ckpt"


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The CPU generator of step ``step`` (0-based) on ``rank``: a pure function of the three."""
    state = np.random.SeedSequence([seed, step, rank]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def capture_rng() -> dict[str, Any]:
    """The global generators' states as tensors and built-in data (loadable with ``weights_only``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, python_state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(python_state), gauss],
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, python_state, gauss = state["python"]
    random.setstate((version, tuple(python_state), gauss))
