"""``splat-portrait doctor``: what this environment can run."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from splat_portrait.environment import environment_report


def doctor() -> None:
    """Print a table of the environment: torch and its device, CUDA, gsplat, onnxruntime, ffmpeg."""
    table = Table(title="splat-portrait environment")
    table.add_column("component")
    table.add_column("status")
    table.add_column("details")
    for check in environment_report():
        status = "[green]ok[/]" if check.ok else "[yellow]missing[/]"
        table.add_row(check.name, status, check.detail)
    Console().print(table)
