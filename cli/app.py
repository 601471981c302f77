"""The ``splat-portrait`` Typer application: global options, error handling and command registry.

Each subcommand lives in its own module beside this one and is registered below. A
:class:`SplatPortraitError` anywhere under a command becomes one ``error: ...`` line on stderr and
exit code 1, and so does an operating-system error (a full disk, a read-only folder, a missing
permission): those are the machine's state, not bugs. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging

import click
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

from splat_portrait import __version__
from splat_portrait.cli import animate
from splat_portrait.cli import doctor
from splat_portrait.cli import evaluate
from splat_portrait.cli import export
from splat_portrait.cli import preprocess
from splat_portrait.cli import serve
from splat_portrait.cli import stream
from splat_portrait.cli import synth
from splat_portrait.cli import train
from splat_portrait.cli import train_prior
from splat_portrait.cli import train_sync
from splat_portrait.errors import SplatPortraitError

EXIT_USER_ERROR = 1


def os_error_line(err: OSError) -> str:
    """``path: reason`` for an operating-system error, as one line."""
    names = [str(n) for n in (err.filename, err.filename2) if n is not None]
    reason = err.strerror or str(err) or type(err).__name__
    return f"{' -> '.join(names)}: {reason}" if names else reason


def _fail(message: str) -> None:
    Console(stderr=True, soft_wrap=True).print(Text.assemble(("error:", "bold red"), " ", message), highlight=False)
    raise SystemExit(EXIT_USER_ERROR)


def _flags_without_type(params: list[click.Parameter]) -> list[click.Parameter]:
    # Typer's help shows every option's type, so an on/off flag reads "--resume <bool>" as if it took
    # a value; an empty metavar leaves the type column blank for flags.
    for param in params:
        # (Typer's options are its own vendored click's classes, not click.Option.)
        if param.param_type_name == "option" and getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class _Command(TyperCommand):
    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return _flags_without_type(super().get_params(ctx))


class _Group(TyperGroup):
    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return _flags_without_type(super().get_params(ctx))

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SplatPortraitError as err:
            _fail(str(err))
        except OSError as err:
            _fail(os_error_line(err))


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


COMMANDS = {
    "doctor": doctor.doctor,
    "export": export.export,
    "animate": animate.animate,
    "stream": stream.stream,
    "serve": serve.serve,
    "preprocess": preprocess.preprocess,
    "synth": synth.synth,
    "train-prior": train_prior.train_prior,
    "train-static": train.train_static,
    "train-dynamic": train.train_dynamic,
    "train-sync": train_sync.train_sync,
    "evaluate": evaluate.evaluate,
}
for _name, _function in COMMANDS.items():
    app.command(_name, cls=_Command)(_function)


def main() -> None:
    app(prog_name="splat-portrait")
