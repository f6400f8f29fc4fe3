"""`ccrun validate`: check recipe files and report, one `ok` line per good file and every
problem of the others, and every warning. Both ways in (runner.entry's fast path and runner.cli) call this."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from .errors import RecipeError
from .load import load_recipe
from .resolve import recipe_hash


def validate_files(
    paths: Sequence[str | Path], overrides: Sequence[str], *, debug: bool = False, strict: bool = False
) -> int:
    """Check recipes, printing one `ok` line per good file and every problem of the others, and each
    warning (`file:line:col: key: warning: ...`) on stderr; returns the exit code (0 all good or only
    warnings, 2 any problem, or any warning when `strict`). Shared by both ways in."""
    failed = False
    for path in paths:
        try:
            loaded = load_recipe(path, overrides, allow_fragment=True)
        except RecipeError as exc:
            if debug:
                traceback.print_exc()
            print(str(exc), file=sys.stderr)
            failed = True
            continue
        for warning in loaded.warnings:
            print(warning, file=sys.stderr)
        if strict and loaded.warnings:
            failed = True
            continue
        if loaded.fragment:
            print(f"ok  {path}  (fragment: keys and types checked)")
        else:
            print(f"ok  {path}  {loaded.recipe.name}  {recipe_hash(loaded.recipe)[:8]}")
    sys.stdout.flush()
    return 2 if failed else 0
