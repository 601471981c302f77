"""Fixtures several test modules share."""

from pathlib import Path

import numpy as np
import pytest
import torch

from splat_portrait.data import layout
from splat_portrait.data.synthetic import SynthConfig, write_synthetic_dataset
from splat_portrait.export.graphs import export_model
from splat_portrait.models import TalkingHead, preset, save_checkpoint

DATA = Path(__file__).parents[1] / ".." / "shared" / "data"


def face(mouth_open: float = 0.0, shift=(0.0, 0.0)) -> torch.Tensor:
    """68 landmarks of a schematic frontal face in crop coordinates, the inner lips ``mouth_open`` apart."""
    points = torch.full((68, 2), 0.5)
    points[36:42] = torch.tensor([0.38, 0.4])
    points[42:48] = torch.tensor([0.62, 0.4])
    points[27] = torch.tensor([0.5, 0.4])
    points[8] = torch.tensor([0.5, 0.9])  # face height 0.5
    angles = torch.linspace(0, 2 * np.pi, 13)[:-1]
    points[48:60] = 0.5 + torch.stack([0.1 * torch.cos(angles), 0.7 + 0.04 * torch.sin(angles)], -1) - torch.tensor([0.0, 0.5])
    points[60:68] = torch.tensor([0.5, 0.7])
    points[60:65, 1] -= mouth_open / 2
    points[[65, 66, 67], 1] += mouth_open / 2
    return points + torch.tensor(shift)


@pytest.fixture(scope="session")
def landmark_data(tmp_path_factory) -> Path:
    """Two synthetic 32² clips given landmarks whose lips open and close (stand-ins for preprocessed
    real clips); frame 3 of the second has no face."""
    root = tmp_path_factory.mktemp("mouth-data")
    write_synthetic_dataset(root, 2, seed=5, config=SynthConfig(seconds=0.6, size=32, speech="voiced"), test_fraction=0.0)
    for k, paths in enumerate(layout.complete_clips(root)):
        frames = layout.read_meta(paths).num_frames
        track = torch.stack([face(0.08 * abs(np.sin(0.7 * f + k))) for f in range(frames)]).numpy()
        if k == 1:
            track[3] = np.nan
        layout.write_landmarks(paths, track)
    return root


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """An exported tiny model (64²) whose speech moves the splats by a fraction of a pixel."""
    root = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    model = TalkingHead(preset("tiny"))
    with torch.no_grad():
        # Weights as after a little training.
        model.dynamic.conv_out.weight.normal_(0, 0.003)
    save_checkpoint(root / "tiny.ckpt", model)
    export_model(root / "tiny.ckpt", root / "model")
    return root / "model"
