"""The typer app, the options several commands share, and `main`: the one place where an error
becomes a message and an exit code (runner.common.errors: 2 bad input, 1 failed run, 130
interrupted; anything else is an internal error, exit 1)."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..common.errors import BadInput, CcrunError

app = typer.Typer(
    name="ccrun",
    help="Train and evaluate code language models from declarative recipes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

SetOption = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", metavar="KEY=VALUE", help="Override a recipe value, e.g. --set train.steps=100."),
]
CheckpointOption = Annotated[Optional[str], typer.Option(help="A run's checkpoint: best or latest.")]


class Options:
    """Global options, set by the callback before any command runs."""

    debug = False


def checkpoint_choice(checkpoint: str | None) -> str | None:
    if checkpoint not in (None, "best", "latest"):
        raise BadInput(f"--checkpoint: best or latest (got {checkpoint!r})")
    return checkpoint


def directory_option(path: Path, option: str) -> Path:
    """A directory argument that is, or can become, a directory: neither it nor anything above it
    is a file (checked before any work starts, so a typo fails at once)."""
    for place in (path, *path.parents):
        try:
            if place.is_dir():
                return path
            if place.exists() or place.is_symlink():
                what = "is" if place == path else f"is inside {place}, which is"
                raise BadInput(f"{option} {path}: {what} not a directory (nothing was written)")
        except OSError as exc:
            raise BadInput(f"{option} {path}: cannot be used ({exc.strerror or exc})") from None
    return path


def new_directory(path: Path, option: str) -> Path:
    """An output directory that must not exist yet, or be empty (nothing is ever overwritten)."""
    directory_option(path, option)
    try:
        used = path.is_dir() and any(path.iterdir())
    except OSError as exc:
        raise BadInput(f"{option} {path}: cannot be read ({exc.strerror or exc})") from None
    if used:
        raise BadInput(f"{option} {path}: exists and is not empty; give a new one (nothing was overwritten)")
    return path


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"ccrun {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    """ccrun: one YAML recipe → one reproducible run directory."""
    Options.debug = Options.debug or debug


def _argv(argv: list[str]) -> list[str]:
    """`ccrun RECIPE ...` is short for `ccrun run RECIPE ...`; --debug may appear anywhere."""
    if "--debug" in argv:
        Options.debug = True
        argv = [a for a in argv if a != "--debug"]
    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    first = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if first is not None and argv[first] not in commands and argv[first].endswith((".yaml", ".yml")):
        argv = [*argv[:first], "run", *argv[first:]]
    return argv


def main(argv: list[str] | None = None) -> None:
    args = _argv(list(sys.argv[1:] if argv is None else argv))
    try:
        app(args=args, prog_name="ccrun", standalone_mode=True)
    except CcrunError as exc:
        if Options.debug:
            traceback.print_exc()
        typer.echo(exc.render(), err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: say what, exit 1
        if Options.debug:
            traceback.print_exc()
        else:
            typer.echo(f"ccrun: internal error: {type(exc).__name__}: {exc} (run with --debug for a traceback)", err=True)
        sys.exit(1)
