"""Recipe problems as `file:line:col: dotted.key: message`, all at once, pointing where the value was set."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from ..common.errors import BadInput

from . import walk
from .base import TAG_KEYS, Path, Problems, format_path


@dataclass(frozen=True, order=True)
class Loc:
    """Where a value was written: a file position (1-based), or a command-line override."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}" if self.line else self.file


@dataclass(frozen=True)
class Problem:
    loc: Loc | None
    key: str
    message: str

    def __str__(self) -> str:
        parts = [str(self.loc)] if self.loc else []
        if self.key:
            parts.append(self.key)
        parts.append(self.message)
        return _printable(": ".join(parts))


def _printable(text: str) -> str:
    """One line a terminal shows as written: a newline, an escape sequence or a byte that was not
    UTF-8 in a key or a --set argument is shown escaped (`\\n`, `\\x1b`, `\\udce9`)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# Problems printed at most; a list of 100,000 bad items is said in a screenful, then counted.
MAX_SHOWN = 100


class RecipeError(BadInput):
    """Bad input: one or more problems, each printed on its own line as `file:line:col: key: message`
    (no `ccrun:` prefix). Exit code 2."""

    prefixed = False

    def __init__(self, problems: list[Problem]):
        self.problems = in_order(problems)
        lines = [str(p) for p in self.problems[:MAX_SHOWN]]
        if len(self.problems) > MAX_SHOWN:
            lines.append(f"... and {len(self.problems) - MAX_SHOWN} more problems")
        super().__init__("\n".join(lines))


def in_order(problems: list[Problem]) -> list[Problem]:
    """Problems without repeats, in file order then position (those without a position first)."""
    seen, out = set(), []
    for p in problems:
        if str(p) not in seen:
            seen.add(str(p))
            out.append(p)
    # File order, then position; problems without a position (e.g. a missing file) first.
    return sorted(out, key=lambda p: (p.loc is not None, p.loc or Loc(""), p.key))


def display_path(path: str | os.PathLike) -> str:
    """A path as the user should read it: relative to the current directory when below it."""
    path = os.fspath(path)
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


@dataclass
class Positions:
    """Where each path of the merged recipe data was set: the key's and the value's location."""

    keys: dict[Path, Loc]
    values: dict[Path, Loc]
    root: Loc

    def at(self, path: Path, *, key: bool = False) -> Loc:
        """Location of `path`, or of its nearest ancestor that was written somewhere."""
        table = self.keys if key else self.values
        if path in table:
            return table[path]
        for end in range(len(path) - 1, 0, -1):
            prefix = path[:end]
            # The nearest written ancestor: its key, or for a list item, where the item starts.
            if isinstance(prefix[-1], int) and prefix in self.values:
                return self.values[prefix]
            if prefix in self.keys:
                return self.keys[prefix]
        return self.root


def data_path(loc: tuple[Any, ...], data: Any) -> Path:
    """Pydantic's error location → path in the recipe data (union tags in the location dropped)."""
    out: list[Any] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part not in node and any(node.get(k) == part for k in TAG_KEYS):
            continue  # the tag pydantic adds for a tagged-union member
        out.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(out)


def got(value: Any) -> str:
    """A value as it would be written in YAML, shortened."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = repr(value)
    elif isinstance(value, float) and not math.isfinite(value):
        text = ".nan" if math.isnan(value) else ".inf" if value > 0 else "-.inf"
    elif isinstance(value, dict):
        text = "a mapping"
    elif isinstance(value, list):
        text = "a list"
    else:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_TYPE_NAMES = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
    "list": "a list",
    "dict": "a mapping",
    "model": "a mapping",
}


def message_for(error: dict[str, Any], root: type[BaseModel], data: Any, path: Path) -> str:
    """Pydantic's error, said the way a recipe author needs to read it."""
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        bound = next(iter(ctx.values()))
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return f"must be {bounds[kind]} {bound} (got {got(value)})"
    if kind == "missing":
        return "required"
    if kind == "finite_number":
        return f"must be a finite number (got {got(value)})"
    if kind == "extra_forbidden":
        parent = path[:-1]
        try:
            annotation, _ = walk.type_at(root, data, parent) if parent else (root, [])
            model = walk.pick_model(annotation, walk.value_at(data, parent))
        except walk.UnknownPath:
            model = None
        names = list(model.model_fields) if model is not None else []
        return walk.unknown_key_message(str(path[-1]), names) if names else "unknown key"
    if kind == "union_tag_invalid":
        expected = [t.strip().strip("'") for t in ctx.get("expected_tags", "").split(",")]
        tag = ctx.get("tag")
        return f"must be one of: {', '.join(expected)} (got {got(tag)}){walk.did_you_mean(str(tag), expected)}"
    if kind == "union_tag_not_found":
        if not isinstance(value, dict):
            return f"must be a mapping (got {got(value)})"
        try:
            annotation, _ = walk.type_at(root, data, path[:-1])
        except walk.UnknownPath:
            return "required"
        return f"required; one of: {walk.describe_tag_choices(annotation)}"
    if kind == "literal_error":
        expected = [e.strip().strip("'") for e in ctx.get("expected", "").replace(" or ", ", ").split(",")]
        hint = walk.did_you_mean(str(value), expected) if isinstance(value, str) else ""
        return f"must be one of: {', '.join(expected)} (got {got(value)}){hint}"
    if kind.endswith("_type") or kind.endswith("_parsing") or kind == "int_from_float":
        base = kind.split("_")[0]
        if base == "model" or kind == "model_attributes_type":
            base = "dict"
        name = _TYPE_NAMES.get(base, base)
        if kind == "int_from_float":
            name = "an integer"
        return f"must be {name} (got {got(value)})"
    if kind in ("too_short", "too_long"):
        n = ctx.get("min_length" if kind == "too_short" else "max_length")
        if kind == "too_short" and n == 1:
            return "must not be empty"
        return f"must have {'at least' if kind == 'too_short' else 'at most'} {n} item{'s' if n != 1 else ''}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')} (got {got(value)})"
    message = error["msg"]
    return f"{message[0].lower()}{message[1:]} (got {got(value)})"


def problems_from(
    exc: ValidationError,
    root: type[BaseModel],
    data: Any,
    positions: Positions,
    *,
    skip_missing: bool = False,
) -> list[Problem]:
    """Every error of a validation, located. `skip_missing` drops "required" errors (fragments)."""
    problems = []
    for error in exc.errors():
        if skip_missing and error["type"] in ("missing", "union_tag_not_found"):
            continue
        path = data_path(error["loc"], data)
        if error["type"] in ("union_tag_invalid", "union_tag_not_found") and isinstance(walk.value_at(data, path), dict):
            path = (*path, (error.get("ctx") or {}).get("discriminator", "'type'").strip("'"))  # point at the tag
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, Problems):
            problems.extend(located(path, problem, positions) for problem in cause.problems)
            continue
        message = message_for(error, root, data, path)
        loc = positions.at(path, key=error["type"] == "extra_forbidden")
        problems.append(Problem(loc, format_path(path), message))
    return problems


def located(path: Path, problem: tuple, positions: Positions, *, prefix: str = "") -> Problem:
    """A spec's problem (relative path, message[, where to point]) from the spec at `path`, located."""
    rel, message, at = problem[0], problem[1], problem[2] if len(problem) > 2 else None
    full = path + tuple(rel)
    loc = positions.at(full) if at is None else positions.at(path + tuple(at), key=True)
    return Problem(loc, format_path(full), prefix + message)
