"""validate, resolve, diff, schema: the recipe commands (no heavy library is imported)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..common.errors import BadInput, CcrunError
from .app import Options, SetOption, app, directory_option


class StaleSchemas(CcrunError):
    """`ccrun schema --check` found files that differ from the models (exit 1)."""


@app.command()
def validate(
    recipes: Annotated[list[Path], typer.Argument(help="Recipe files.", show_default=False)],
    set_: SetOption = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Treat warnings as problems: exit 2 if there are any.")
    ] = False,
) -> None:
    """Check recipes: every problem, located as file:line:col, and every warning (exit 0 with only warnings).
    Fragments (recipes/base) get key and type checks."""
    from ..recipe.validate import validate_files

    code = validate_files(recipes, set_ or (), debug=Options.debug, strict=strict)
    if code:
        raise typer.Exit(code)


@app.command()
def resolve(
    recipe: Annotated[Path, typer.Argument(help="Recipe file.", show_default=False)],
    set_: SetOption = None,
    hash_only: Annotated[bool, typer.Option("--hash", help="Print only the recipe hash.")] = False,
    relative_to: Annotated[
        Optional[Path],
        typer.Option(help="Resolve the file's relative paths (extends, data) as if it lived in this directory."),
    ] = None,
    or_raw: Annotated[
        bool, typer.Option("--or-raw", help="On error print the problems as comments and the file as is, exit 0.")
    ] = False,
) -> None:
    """Print the canonical recipe: every default filled, derived values explicit, extends merged."""
    from ..recipe.errors import RecipeError
    from ..recipe.load import load_recipe, read_recipe_bytes
    from ..recipe.resolve import recipe_hash, to_yaml

    try:
        loaded = load_recipe(recipe, set_ or (), relative_to=relative_to)
    except RecipeError as exc:
        if not or_raw:
            raise
        try:
            raw = read_recipe_bytes(recipe)
        except RecipeError:
            raise exc from None  # no file to show as is (missing, a directory, a FIFO, too big): its error
        comments = "".join(f"# ccrun: {line}\n" for line in str(exc).splitlines())
        typer.echo(comments + raw.decode("utf-8", errors="replace"), nl=False)
        return
    for warning in loaded.warnings if not or_raw else ():  # --or-raw is git's textconv: its output only
        typer.echo(warning, err=True)
    typer.echo(recipe_hash(loaded.recipe) if hash_only else to_yaml(loaded.recipe), nl=hash_only)


def _resolved_of(target: Path) -> tuple[dict, str]:
    """A recipe file, or a run directory (its resolved.yaml), as resolved data and a label."""
    from ..recipe.load import load_recipe
    from ..recipe.resolve import resolved_dict
    from ..track.rundir import RunDir

    if target.is_dir():
        return resolved_dict(RunDir.open(target).recipe().recipe), str(target / "resolved.yaml")
    return resolved_dict(load_recipe(target).recipe), str(target)


@app.command()
def diff(
    a: Annotated[Path, typer.Argument(metavar="A", help="Recipe file or run directory.", show_default=False)],
    b: Annotated[Path, typer.Argument(metavar="B", help="Recipe file or run directory.", show_default=False)],
    format_: Annotated[str, typer.Option("--format", "-f", help="text, markdown or json.")] = "text",
) -> None:
    """Show what differs between two recipes after extends and defaults. Exit 0 same, 1 different, 2 error."""
    from ..recipe.diff import differences, render

    if format_ not in ("text", "markdown", "json"):
        raise BadInput(f"--format: must be one of text, markdown, json (got {format_!r})")
    data_a, label_a = _resolved_of(a)
    data_b, label_b = _resolved_of(b)
    found = differences(data_a, data_b)
    typer.echo(render(found, label_a, label_b, format_), nl=False)
    raise typer.Exit(1 if found else 0)


@app.command()
def schema(
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Where the schema files go.")] = Path("schemas"),
    check: Annotated[bool, typer.Option("--check", help="Exit 1 if the files on disk are stale; write nothing.")] = False,
) -> None:
    """Write the JSON Schemas (recipe, recipe fragment, summary.json) and the recipe reference."""
    from ..common.io import atomic_write
    from ..recipe.jsonschema import schema_files

    directory_option(out_dir, "--out-dir")
    stale = []
    for name, text in schema_files().items():
        path = out_dir / name
        if path.exists() and not path.is_file():
            raise BadInput(f"--out-dir {out_dir}: {path} is not a file (nothing was written)")
        if not (path.is_file() and path.read_text(encoding="utf-8", errors="replace") == text):
            stale.append((path, text))
    if not check:
        for path, text in stale:  # the schemas are generated files: stale ones are replaced, atomically
            out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(path, text, overwrite=True)
            typer.echo(f"wrote {path}")
    if check and stale:
        raise StaleSchemas(f"stale: {', '.join(str(path) for path, _ in stale)}; run `ccrun schema` and commit the result")
    if not stale:
        typer.echo("schemas are up to date")
