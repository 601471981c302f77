"""Fixtures several test modules share."""

from pathlib import Path

import pytest
import torch

from splat_portrait.export.graphs import export_model
from splat_portrait.models import TalkingHead, preset, save_checkpoint

DATA = Path(__file__).parents[1] / ".." / "shared" / "data"


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
