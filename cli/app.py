"""The ``splat-portrait`` Typer application: global options, error handling and command registry.

Each subcommand lives in its own module beside this one and is registered below. A
:class:`SplatPortraitError` anywhere under a command becomes one ``error: ...`` line on stderr and
exit code 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging

import click
import typer
from rich.console import Console
from rich.logging import RichHandler
from typer.core import TyperGroup

from splat_portrait import __version__
from splat_portrait.cli import animate
from splat_portrait.cli import doctor
from splat_portrait.cli import evaluate
from splat_portrait.cli import export
from splat_portrait.cli import preprocess
from splat_portrait.cli import synth
from splat_portrait.cli import train
from splat_portrait.cli import train_prior
from splat_portrait.errors import SplatPortraitError

EXIT_USER_ERROR = 1


class _Group(TyperGroup):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SplatPortraitError as err:
            Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {err}", highlight=False, markup=True)
            raise SystemExit(EXIT_USER_ERROR) from None


app = typer.Typer(
    name="splat-portrait",
    cls=_Group,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    help="One portrait + a speech recording -> a 3D talking head of Gaussian splats (MP4 and 3DGS .ply).",
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"splat-portrait {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug messages."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only show warnings and errors."),
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = RichHandler(console=Console(stderr=True), show_time=False, show_path=False)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[handler], force=True)
    logging.getLogger("splat_portrait").setLevel(level)


app.command()(doctor.doctor)
app.command("export")(export.export)
app.command("animate")(animate.animate)
app.command("preprocess")(preprocess.preprocess)
app.command("synth")(synth.synth)
app.command("train-prior")(train_prior.train_prior)
app.command("train-static")(train.train_static)
app.command("train-dynamic")(train.train_dynamic)
app.command("evaluate")(evaluate.evaluate)


def main() -> None:
    app(prog_name="splat-portrait")
