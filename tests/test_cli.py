import re

from typer.testing import CliRunner

from splat_portrait import __version__
from splat_portrait.cli.app import app

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"splat-portrait {__version__}"


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    listed = set(re.findall(r"│ ([a-z][a-z-]+) +", result.output.split("Commands")[1]))
    registered = {cmd.name or cmd.callback.__name__.replace("_", "-") for cmd in app.registered_commands}
    assert listed == registered
    assert "doctor" in listed


def test_doctor_reports_every_component():
    result = runner.invoke(app, ["doctor"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for component in ("splat-portrait", "torch", "CUDA", "gsplat", "C++ rasteriser", "onnxruntime", "ffmpeg"):
        assert re.search(rf"│ {re.escape(component)} +│", result.output), component
    assert re.search(r"│ onnxruntime +│ ok +│ .*CPUExecutionProvider", result.output)
