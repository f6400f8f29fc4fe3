"""The `ccrun` console script. `ccrun validate FILE... [--set KEY=VALUE]...` is answered here,
without importing typer or building the command-line app (that costs about as much as the
validation itself, and validate runs in editors and pre-commit hooks); everything else, including
`validate --help` and any option this module does not know, goes to `runner.cli`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def fast_validate_args(argv: Sequence[str]) -> tuple[list[str], list[str]] | None:
    """(files, overrides) when argv is a plain `validate` this module can answer; otherwise None."""
    if not argv or argv[0] != "validate":
        return None
    files: list[str] = []
    overrides: list[str] = []
    args = iter(argv[1:])
    for arg in args:
        if arg in ("--set", "-s"):
            value = next(args, None)
            if value is None:
                return None
            overrides.append(value)
        elif arg.startswith("--set="):
            overrides.append(arg.removeprefix("--set="))
        elif arg == "--":
            files.extend(args)
        elif arg.startswith("-") and arg != "-":
            return None  # --help, --debug, unknown options: the full command line answers
        else:
            files.append(arg)
    if not files or not all(f == "-" or os.path.exists(f) for f in files):
        return None  # a recipe by name (`ccrun validate smoke`) or a missing file: the full command line answers
    return files, overrides


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    fast = fast_validate_args(args)
    if fast is None:
        from .cli import main as full

        full(args)
        return
    # Pydantic's plugin discovery scans every installed distribution's entry points; a process
    # that only validates recipes has no use for plugins.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    from .recipe.validate import validate_files

    try:
        code = validate_files(*fast)
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
