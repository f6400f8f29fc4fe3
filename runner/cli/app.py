"""The typer app, the options several commands share, and `main`: the one place where an error
becomes a message and an exit code (runner.common.errors: 2 bad input, 1 failed run, 130
interrupted; anything else is an internal error, exit 1)."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import typer.main

from ..common.errors import BadInput, CcrunError

app = typer.Typer(
    name="ccrun",
    help="Train and evaluate code language models from declarative recipes.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
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


RECIPES = Path("recipes")  # where a recipe named by its name alone is looked for (under the current directory)
# Commands whose arguments are recipes (a recipe name stands for recipes/NAME.yaml), and options that are.
RECIPE_COMMANDS = {"run", "launch", "validate", "resolve", "diff", "eval"}
RECIPE_OPTIONS = {"--from"}


def recipe_names() -> list[str]:
    try:
        return sorted(p.stem for p in RECIPES.glob("*.yaml") if p.is_file())
    except OSError:
        return []


def complete_recipe(incomplete: str) -> list[str]:
    """Shell completion of a recipe argument: recipes/*.yaml by name and by path."""
    names = recipe_names()
    return [n for n in names if n.startswith(incomplete)] + [
        p for p in (f"{RECIPES / n}.yaml" for n in names) if p.startswith(incomplete)]


def _bare(arg: str) -> bool:
    """A word that can only be a recipe's name: no directory part, no .yaml ending, not an option."""
    return bool(arg) and not arg.startswith("-") and "/" not in arg and os.sep not in arg \
        and not arg.endswith((".yaml", ".yml")) and arg not in (".", "..")


def recipe_argument(arg: str) -> str:
    """A recipe argument as given, or for a bare name that is no file or directory here,
    recipes/NAME.yaml; a bare name with no such recipe is bad input naming the close ones."""
    if not _bare(arg) or os.path.lexists(arg):
        return arg
    candidate = RECIPES / f"{arg}.yaml"
    if candidate.is_file():
        return str(candidate)
    raise BadInput(f"{arg}: no such file, and no recipe {candidate}" + _close(arg, recipe_names()))


def _close(word: str, names: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, names, n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _argv(argv: list[str], command: Any = None) -> list[str]:
    """`ccrun RECIPE ...` is short for `ccrun run RECIPE ...`, and a recipe may be named by its name
    alone (`ccrun smoke`: recipes/smoke.yaml); --debug may appear anywhere."""
    if "--debug" in argv:
        Options.debug = True
        argv = [a for a in argv if a != "--debug"]
    command = command or typer.main.get_command(app)
    commands = getattr(command, "commands", {})
    first = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if first is None:
        return argv
    word = argv[first]
    if word not in commands:
        if word.endswith((".yaml", ".yml")):
            return [*argv[:first], "run", *argv[first:]]
        if _bare(word) and not os.path.lexists(word):
            if (RECIPES / f"{word}.yaml").is_file():
                return [*argv[:first], "run", *_recipe_arguments(commands["run"], argv[first:])]
            hint = _close(word, [*commands, *recipe_names()])
            if hint:
                raise BadInput(f"{word}: neither a command nor a recipe in {RECIPES}/" + hint)
        return argv  # click says what is wrong
    if word in RECIPE_COMMANDS or word == "init":
        return [*argv[: first + 1], *_recipe_arguments(commands[word], argv[first + 1:], word in RECIPE_COMMANDS)]
    return argv


def _recipe_arguments(command: Any, args: list[str], positional: bool = True) -> list[str]:
    """`args` of `command` with each recipe argument (positional ones when `positional`, and the
    values of RECIPE_OPTIONS) passed through `recipe_argument`."""
    takes_value = {opt for p in command.params if p.param_type_name == "option" and not p.is_flag and not p.count
                   for opt in (*p.opts, *p.secondary_opts)}
    out, rest = [], iter(args)
    for arg in rest:
        if arg == "--":
            out += [arg, *(recipe_argument(a) if positional else a for a in rest)]
            break
        name = arg.split("=", 1)[0]
        if arg.startswith("-") and len(arg) > 1:
            if name in RECIPE_OPTIONS and "=" in arg:
                out.append(f"{name}={recipe_argument(arg.split('=', 1)[1])}")
            elif name in takes_value and "=" not in arg:
                value = next(rest, None)
                out.append(arg)
                if value is not None:
                    out.append(recipe_argument(value) if name in RECIPE_OPTIONS else value)
            else:
                out.append(arg)
        else:
            out.append(recipe_argument(arg) if positional else arg)
    return out


def main(argv: list[str] | None = None) -> None:
    command = typer.main.get_command(app)
    try:
        args = _argv(list(sys.argv[1:] if argv is None else argv), command)
        command(args=args, prog_name="ccrun", standalone_mode=True)
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
