"""``splat-portrait serve``: the browser page where a portrait talks in 3D while you orbit it."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Optional

import typer

from splat_portrait.errors import SplatPortraitError
from splat_portrait.render import MAX_SIZE

log = logging.getLogger(__name__)


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (default: this machine only; 0.0.0.0 opens it to the network)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port."),
    model: Optional[Path] = typer.Option(None, "--model", help="MODEL_DIR (ONNX Runtime) or a checkpoint; default: the bundled model."),
    size: Optional[int] = typer.Option(None, "--size", min=16, max=MAX_SIZE, help="Side in pixels the page draws the head at (default: the model's)."),
    max_upload_mb: float = typer.Option(25.0, "--max-upload-mb", min=0.1, help="Largest portrait or speech file accepted."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
) -> None:
    """Serve a local page: drop a portrait and speech (or use the microphone), watch and orbit the 3D head as it talks."""
    missing = [name for name in ("fastapi", "uvicorn", "websockets", "multipart") if importlib.util.find_spec(name) is None]
    if missing:
        raise SplatPortraitError(f"serve needs the web extras ({', '.join(missing)} missing): pip install 'splat-portrait[web]'")
    from splat_portrait.runtime.pipeline import AnimateOptions
    from splat_portrait.runtime.talking_head import TalkingHeadPipeline
    from splat_portrait.web.server import serve as run_server

    pipe = TalkingHeadPipeline.from_pretrained(model, device, AnimateOptions(size=size, batch_frames=4))
    log.info("serving %s on http://%s:%d/ (Ctrl+C stops)", model or "the bundled model", host, port)
    try:
        run_server(pipe.animator(), host, port, max_upload_mb)
    except OSError as err:
        raise SplatPortraitError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
