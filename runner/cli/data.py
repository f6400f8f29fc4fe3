"""data: run a recipe's data stage alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import SetOption, app, directory_option, new_directory


@app.command()
def data(
    recipe: Annotated[Path, typer.Argument(help="Recipe file.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="New (or empty) directory for manifest.json, documents/, tokens/.")],
    set_: SetOption = None,
    cache_dir: Annotated[
        Optional[Path], typer.Option(help="Cache of built data (default: $CCRUN_CACHE/data or ~/.cache/ccrun/data).")
    ] = None,
    num_proc: Annotated[Optional[int], typer.Option(
        min=1, max=256, help="Worker processes, at most 256 (default: the recipe's, or all cores).")] = None,
) -> None:
    """Run the data stage of a recipe: sources → filters → dedup → tokenize → pack, with a manifest."""
    from ..data import describe, prepare_data
    from ..recipe.load import load_recipe

    new_directory(out, "--out")
    if cache_dir is not None:
        directory_option(cache_dir, "--cache-dir")
    loaded = load_recipe(recipe, set_ or ())
    manifest = prepare_data(loaded.recipe, out, cache_dir=cache_dir, num_proc=num_proc)
    typer.echo(describe(manifest))
    typer.echo(str(out))
