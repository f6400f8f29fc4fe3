"""Load a recipe: YAML with positions, the `extends` chain, `--set` overrides, paths, validation.

Merge rules (`extends` and `--set` alike):
- mappings merge key by key, the later (child, override) value winning;
- lists and scalars are replaced whole; `null` replaces too (it unsets an inherited value);
- a tagged mapping (`type:` / `suite:`) whose tag changes is replaced whole, not merged:
  switching `optimizer.type` from adamw to adafactor must not carry b1/b2 along.
"""

from __future__ import annotations

import copy
import errno
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from pydantic import ValidationError

from . import walk, yamlio
from .base import TAG_KEYS, Path, PathKind, each, format_path, looks_local
from .errors import Loc, Positions, Problem, RecipeError, display_path, got, in_order, located, problems_from
from .partial import unreached_problems
from .schema import Recipe

FRAGMENT_SCHEMA = "recipe-fragment.schema.json"


@dataclass
class Loaded:
    """A loaded recipe and everything needed to explain it."""

    recipe: Recipe | None  # None for a fragment
    data: dict[str, Any]  # merged data that was validated (extends gone, paths resolved)
    positions: Positions
    files: list[FsPath]  # the recipe file first, then every file it extends, in merge order
    overrides: dict[str, Any] = field(default_factory=dict)  # --set, parsed by the schema's types
    fragment: bool = False
    # Valid settings that are likely not what was meant, each `file:line:col: key: warning: ...`,
    # in file order; every command that loads a recipe shows them.
    warnings: tuple[str, ...] = ()


@dataclass
class _Tree:
    data: dict[str, Any]
    keys: dict[Path, Loc]
    values: dict[Path, Loc]
    files: list[FsPath]


# --- reading files ----------------------------------------------------------------------


def is_fragment(text: str) -> bool:
    """A fragment (a piece for `extends`, e.g. recipes/base/*) names the fragment schema on its first line."""
    first = text.split("\n", 1)[0]
    return "yaml-language-server" in first and FRAGMENT_SCHEMA in first


# Bounds on what one load reads. A recipe and its bases are a few KB; these keep hostile input
# (a device like /dev/zero, a FIFO, a huge file, an endless extends chain) from costing more than
# a moment: only regular files are read, never more than they are allowed to hold.
MAX_FILE_BYTES = 1 << 20  # one recipe file
MAX_TOTAL_BYTES = 4 << 20  # every file one load reads (a base extended twice counts twice)
MAX_FILES = 256  # files one load reads, the same way
MAX_EXTENDS_DEPTH = 64  # files in one extends chain (a extends b extends c ...)
# ... and yamlio.Budget: values and text in all of them, aliases expanded, --set values included.

_KINDS = [
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
]


@dataclass
class _Reads:
    """What one load has read so far, against MAX_FILES and MAX_TOTAL_BYTES, and what its
    documents may still expand to."""

    files: int = 0
    bytes: int = 0
    budget: yamlio.Budget = field(default_factory=yamlio.Budget)

    def spent(self) -> bool:
        """Past a limit: it has been reported once, where it happened; read nothing more."""
        budget = self.budget
        return self.files > MAX_FILES or self.bytes > MAX_TOTAL_BYTES or budget.values < 0 or budget.chars < 0


def read_recipe_bytes(path: str | os.PathLike, where: Loc | None = None, key: str = "") -> bytes:
    """A recipe file's bytes: a regular file of at most MAX_FILE_BYTES. Opened without blocking (a
    FIFO would wait for a writer) and checked with fstat before a byte is read. Raises RecipeError
    (at `where`, for `key`: the extends that names the file)."""
    shown = display_path(path)

    def refuse(message: str) -> RecipeError:
        return RecipeError([Problem(where, key, message)])

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise refuse(f"file not found: {shown}") from None
    except IsADirectoryError:
        raise refuse(f"is a directory, not a recipe file: {shown}") from None
    except OSError as exc:
        reason = "a symlink loop" if exc.errno == errno.ELOOP else exc.strerror
        raise refuse(f"cannot read {shown}: {reason}") from None
    except ValueError:  # a NUL character in the name
        raise refuse(f"not a file name: {shown!r}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise refuse(f"is a directory, not a recipe file: {shown}")
        if not stat.S_ISREG(info.st_mode):
            kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a file")
            raise refuse(f"not a regular file ({kind}): {shown}")
        too_big = f"file too large (a recipe file holds at most {MAX_FILE_BYTES >> 20} MiB): {shown}"
        if info.st_size > MAX_FILE_BYTES:
            raise refuse(too_big)
        chunks, size = [], 0
        while chunk := os.read(fd, MAX_FILE_BYTES + 1 - size):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_FILE_BYTES:  # it grew since fstat
                raise refuse(too_big)
    except OSError as exc:
        raise refuse(f"cannot read {shown}: {exc.strerror}") from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def _read_text(path: FsPath, shown: str, where: Loc | None, key: str) -> str:
    """read_recipe_bytes as UTF-8 text; a byte that is not UTF-8 is reported where it is."""
    data = read_recipe_bytes(path, where, key)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        loc = Loc(shown, data.count(b"\n", 0, exc.start) + 1, len(data[line_start : exc.start].decode("utf-8")) + 1)
        raise RecipeError([Problem(loc, "", f"not UTF-8 text (byte 0x{data[exc.start]:02x}: {exc.reason})")]) from None


def _chain(files: tuple[FsPath, ...]) -> str:
    shown = [display_path(p) for p in files]
    if len(shown) > 6:
        shown = [*shown[:3], f"... ({len(shown) - 5} more)", *shown[-2:]]
    return " -> ".join(shown)


def _read_tree(
    path: FsPath,
    stack: tuple[FsPath, ...],
    where: Loc | None = None,
    extends_dir: FsPath | None = None,
    *,
    reads: _Reads | None = None,
    text: str | None = None,
) -> _Tree:
    """One file and, recursively, what it extends (relative to `extends_dir`, default its own directory)."""
    shown = display_path(path)
    reads = reads if reads is not None else _Reads()
    key = "extends" if where else ""
    reads.files += 1
    if reads.files > MAX_FILES:
        raise RecipeError([Problem(where, key, f"more than {MAX_FILES} files to read through extends")])
    if text is None:
        text = _read_text(path, shown, where, key)
    reads.bytes += len(text)
    if reads.bytes > MAX_TOTAL_BYTES:
        raise RecipeError(
            [Problem(where, key, f"more than {MAX_TOTAL_BYTES >> 20} MiB to read through extends (at {shown})")]
        )
    data, keys, values = yamlio.parse(text, shown, reads.budget)
    root = Loc(shown, 1, 1)
    if data is None:
        raise RecipeError([Problem(root, "", "the file is empty; a recipe is a mapping (name, model, ...)")])
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a single value ({got(data)})"
        raise RecipeError([Problem(root, "", f"a recipe must be a mapping of keys to values, not {kind}")])

    bases = data.pop("extends", None)
    ext_values = {p[1:]: v for p, v in values.items() if p[:1] == ("extends",)}
    ext_at = ext_values.get((), root)
    keys = {p: v for p, v in keys.items() if p[:1] != ("extends",)}
    values = {p: v for p, v in values.items() if p[:1] != ("extends",)}
    if bases is None:
        return _Tree(data, keys, values, [path])
    if isinstance(bases, str):
        bases = [bases]
        ext_values = {(0,): ext_at}
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise RecipeError([Problem(ext_at, "extends", "must be a file path or a list of file paths")])
    empty = [Problem(ext_values.get((i,), ext_at), "extends", "is empty; give a file path") for i, b in
             enumerate(bases) if not b.strip()]
    if empty:
        raise RecipeError(empty)

    merged = _Tree({}, {}, {}, [])
    problems = []
    seen = [p.resolve() for p in (*stack, path)]  # each resolved before it was read
    for i, base in enumerate(bases):
        if reads.spent():
            break
        where_base = ext_values.get((i,), ext_at)
        try:
            target = ((extends_dir or path.parent) / os.path.expanduser(base)).resolve()
        except (OSError, RuntimeError, ValueError) as exc:
            # Python 3.11's Path.resolve raises RuntimeError on a symlink loop (3.13: OSError),
            # and ValueError on a NUL character.
            loop = isinstance(exc, RuntimeError) or getattr(exc, "errno", None) == errno.ELOOP
            reason = "a symlink loop" if loop else getattr(exc, "strerror", None) or str(exc)
            problems.append(Problem(where_base, "extends", f"cannot read {base!r}: {reason}"))
            continue
        if target in seen:
            chain = " -> ".join(display_path(p) for p in (*seen, target)[seen.index(target):])
            problems.append(Problem(where_base, "extends", f"cycle: {chain}"))
            continue
        if len(seen) >= MAX_EXTENDS_DEPTH:
            problems.append(Problem(where_base, "extends", f"chain of more than {MAX_EXTENDS_DEPTH} files: "
                                    f"{_chain((*seen, target))}"))
            continue
        try:
            tree = _read_tree(target, (*stack, path), where_base, reads=reads)
        except RecipeError as exc:
            problems.extend(exc.problems)
            continue
        merged = _merge_trees(merged, tree)
    if problems:
        raise RecipeError(problems)
    out = _merge_trees(merged, _Tree(data, keys, values, [path]))
    out.files = list(dict.fromkeys([path, *merged.files]))  # each file once, in merge order
    return out


# --- merging -------------------------------------------------------------------------------


def merge(base: Any, child: Any) -> Any:
    """Deep merge of plain data; see the module docstring for the rules."""
    if isinstance(base, dict) and isinstance(child, dict) and not tag_changed(base, child):
        out = dict(base)
        for key, value in child.items():
            out[key] = merge(base[key], value) if key in base else value
        return out
    return child


def tag_changed(base: dict, child: dict) -> bool:
    return any(k in base and k in child and base[k] != child[k] for k in TAG_KEYS)


def has_path(data: Any, path: Path) -> bool:
    node = data
    for part in path:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return False
    return True


def _merge_trees(base: _Tree, child: _Tree) -> _Tree:
    data = merge(base.data, child.data)

    def pick(b: dict[Path, Loc], c: dict[Path, Loc]) -> dict[Path, Loc]:
        # A path came from the child exactly when the child has it; otherwise from the base.
        return {p: loc for p, loc in b.items() if p not in c and has_path(data, p)} | c

    return _Tree(data, pick(base.keys, child.keys), pick(base.values, child.values), base.files + child.files)


# --- overrides ------------------------------------------------------------------------------

_INDEX = re.compile(r"\[(\d+)\]")


def parse_dotted(dotted: str) -> Path:
    """'evals[0].sampling.1.k' → ('evals', 0, 'sampling', 1, 'k')."""
    parts: list[str | int] = []
    for piece in _INDEX.sub(r".\1", dotted).split("."):
        if piece == "":
            raise ValueError(f"empty key in {dotted!r}")
        parts.append(int(piece) if piece.isdigit() else piece)
    return tuple(parts)


def schema_path(data: Any, dotted: str) -> tuple[Path, Any]:
    """Check a dotted key against the schema: (path, type at it). Keys below a free mapping
    (the sweep's dotted keys) are taken whole. Raises UnknownPath."""
    parts = parse_dotted(dotted)
    annotation: Any = Recipe
    node = data
    out: list[str | int] = []
    for depth, part in enumerate(parts):
        if walk.is_dict_type(annotation):
            rest = ".".join(str(p) for p in parts[depth:])
            annotation, _ = walk.child(annotation, node, rest, depth)
            out.append(rest)
            break
        annotation, _ = walk.child(annotation, node, part, depth)
        node = walk._get(node, part)
        out.append(part)
    return tuple(out), annotation


def _set(data: dict, path: Path, value: Any) -> None:
    """Set `path` (checked against the schema) in recipe data. A mapping that is missing on the way,
    or holds a value that is not one, becomes an empty one: the override wins, as in a merge."""
    node: Any = data
    for depth, part in enumerate(path[:-1]):
        if isinstance(node, list):
            if not (isinstance(part, int) and 0 <= part < len(node)):
                raise walk.UnknownPath(depth, f"index {part} is out of range ({walk.items(len(node))})")
            nxt = node[part]
        else:
            nxt = node.get(part)
        wants_list = isinstance(path[depth + 1], int)
        if wants_list and not isinstance(nxt, list):
            raise walk.UnknownPath(depth + 1, f"index {path[depth + 1]} is out of range (the list is empty)")
        if not wants_list and not isinstance(nxt, dict):
            nxt = node[part] = {}
        node = nxt
    last = path[-1]
    if isinstance(node, list):
        if not (isinstance(last, int) and 0 <= last < len(node)):
            raise walk.UnknownPath(len(path) - 1, f"index {last} is out of range ({walk.items(len(node))})")
        node[last] = value
        return
    if last in TAG_KEYS and node.get(last) not in (None, value):
        node.clear()  # a new tag starts a fresh mapping; see the module docstring
    node[last] = value


def apply_override(tree: _Tree, arg: str, budget: yamlio.Budget | None = None) -> tuple[str, Any]:
    """Apply one `--set dotted.key=value` in place, its YAML spending from `budget` (the load's).
    Returns the (dotted key, parsed value)."""
    where = Loc(f"--set {arg}")
    bad = yamlio.bad_character("--set", arg)
    if bad is not None:
        raise RecipeError([Problem(where, "", bad.message)])
    if "=" not in arg:
        raise RecipeError([Problem(where, "", "expected dotted.key=value")])
    dotted, text = arg.split("=", 1)
    dotted = dotted.strip()
    if dotted.split(".")[0].split("[")[0] == "extends":
        raise RecipeError([Problem(where, "extends", "can only be written in a recipe file")])
    try:
        path, annotation = schema_path(tree.data, dotted)
    except ValueError as exc:
        raise RecipeError([Problem(where, dotted, str(exc))]) from None
    except walk.UnknownPath as exc:
        parts = parse_dotted(dotted)
        shown = format_path(parts[: exc.depth + 1]) if exc.depth >= 0 else dotted
        raise RecipeError([Problem(where, shown, exc.message)]) from None
    if walk.wants_text(annotation) and text.strip() not in ("null", "Null", "NULL", "~"):
        value: Any = text
    else:
        try:
            value = yamlio.parse_value(text, budget)
        except RecipeError as exc:
            raise RecipeError([Problem(where, format_path(path), p.message) for p in exc.problems]) from None
    try:
        _set(tree.data, path, copy.deepcopy(value))
    except walk.UnknownPath as exc:
        raise RecipeError([Problem(where, format_path(path), exc.message)]) from None
    for table in (tree.keys, tree.values):
        for p in [p for p in table if p[: len(path)] == path]:
            del table[p]
        table[path] = where
    return format_path(path), value


# --- paths ---------------------------------------------------------------------------------


def _resolve_paths(tree: _Tree, relative_to: FsPath | None) -> list[Problem]:
    """Relative paths resolve against the directory of the file that wrote them (cwd for --set).
    Returns the problems: a NUL character (YAML's "\\0"), which no file name can hold."""
    problems = []
    for path, kind in list(walk.iter_path_fields(Recipe, tree.data)):
        value = walk.value_at(tree.data, path)
        if "\0" in value:
            problems.append(Problem(tree.values.get(path), format_path(path), "a file path cannot hold a NUL character"))
            continue
        if kind is PathKind.HUB_OR_LOCAL and not looks_local(value):
            continue
        loc = tree.values.get(path)
        written_in = _source_file(loc, tree.files)
        base = relative_to if (relative_to and written_in == tree.files[0]) else (
            written_in.parent if written_in else FsPath.cwd()
        )
        resolved = os.path.normpath(os.path.join(base, os.path.expanduser(value)))
        _set(tree.data, path, resolved)
    return problems


def _source_file(loc: Loc | None, files: list[FsPath]) -> FsPath | None:
    if loc is None or loc.line == 0:
        return None
    for f in files:
        if display_path(f) == loc.file:
            return f
    return None


# --- validation -----------------------------------------------------------------------------


def _validated(
    data: dict[str, Any], positions: Positions, *, fragment: bool = False
) -> tuple[Recipe | None, list[Problem]]:
    """`data` as a Recipe, or every problem in one round: each field's, and each cross-field problem
    whose fields are valid (runner/recipe/partial.py). A fragment's missing fields are not problems."""
    try:
        return Recipe.model_validate(data), []
    except ValidationError as exc:
        problems = problems_from(exc, Recipe, data, positions, skip_missing=fragment)
        if not fragment:
            problems += unreached_problems(Recipe, data, exc, positions)
        return None, problems


def _validate(tree: _Tree, positions: Positions, fragment: bool) -> Recipe | None:
    recipe, problems = _validated(tree.data, positions, fragment=fragment)
    if not fragment:
        problems += _check_sweep(tree, positions, problems)
    if problems:
        raise RecipeError(problems)
    return None if fragment else recipe


def _check_sweep(tree: _Tree, positions: Positions, known: list[Problem]) -> list[Problem]:
    """Every sweep key must be a real path, and every grid value valid there. A value's problems are
    those its point of the grid has and the recipe itself (`known`) does not."""
    problems: list[Problem] = []
    sweep = tree.data.get("sweep")
    if not isinstance(sweep, dict):
        return problems  # not a mapping: said by validation
    known_keys = {(p.key, p.message) for p in known}
    without = {k: v for k, v in tree.data.items() if k != "sweep"}  # copied per value: the sweep is not
    for key, values in sweep.items():
        where = ("sweep", key)
        if not isinstance(key, str) or not isinstance(values, list):
            continue  # said by validation
        if key.split(".")[0] in ("sweep", "name", "extends"):
            problems.append(Problem(positions.at(where, key=True), format_path(where), f"cannot sweep over {key!r}"))
            continue
        try:
            path, _ = schema_path(tree.data, key)
        except (ValueError, walk.UnknownPath) as exc:
            message = str(exc)
            if isinstance(exc, walk.UnknownPath):
                parts = parse_dotted(key)
                message = exc.message if exc.depth >= len(parts) - 1 else f"{format_path(parts[: exc.depth + 1])}: {exc.message}"
            problems.append(Problem(positions.at(where, key=True), format_path(where), message))
            continue
        for i, value in enumerate(values):
            point = copy.deepcopy(without)
            try:
                _set(point, path, copy.deepcopy(value))
            except walk.UnknownPath as exc:
                problems.append(Problem(positions.at((*where, i)), format_path((*where, i)), exc.message))
                continue
            at, shown = positions.at((*where, i)), format_path((*where, i))
            for p in _validated(point, positions)[1]:
                if (p.key, p.message) not in known_keys:
                    problems.append(Problem(at, shown, f"with {key}={value!r}: {p.key}: {p.message}"))
    return problems


def _warnings(recipe: Recipe, positions: Positions) -> tuple[str, ...]:
    found = [
        located(path, warning, positions, prefix="warning: ")
        for path, spec in recipe.specs()
        for warning in each(spec.warn)
    ]
    return tuple(str(p) for p in in_order(found))


def load_recipe(
    path: str | os.PathLike,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    relative_to: str | os.PathLike | None = None,
    allow_fragment: bool = False,
) -> Loaded:
    """Load, merge, override and validate a recipe file. Raises RecipeError with every problem.

    `relative_to` resolves the top file's relative paths as if it lived in that directory (for
    `git diff` textconv, where git hands over a temporary copy). A fragment is accepted (its
    keys and types checked, required fields left to the recipes that extend it) only with
    `allow_fragment`.
    """
    file = FsPath(path).absolute()
    shown = display_path(file)
    text = _read_text(file, shown, None, "")
    fragment = is_fragment(text)
    if fragment and not allow_fragment:
        raise RecipeError(
            [Problem(Loc(shown, 1, 1), "", "is a fragment (recipes/base piece for extends), not a runnable recipe")]
        )
    base_dir = FsPath(relative_to).absolute() if relative_to else None
    reads = _Reads()
    tree = _read_tree(file, (), None, extends_dir=base_dir, reads=reads, text=text)
    set_values: dict[str, Any] = {}
    problems: list[Problem] = []
    for arg in overrides:
        try:
            key, value = apply_override(tree, arg, reads.budget)
            set_values[key] = value
        except RecipeError as exc:
            problems.extend(exc.problems)
    problems.extend(_resolve_paths(tree, base_dir))
    positions = Positions(tree.keys, tree.values, Loc(shown, 1, 1))
    try:
        recipe = _validate(tree, positions, fragment)
    except RecipeError as exc:
        problems.extend(exc.problems)
    if problems:
        raise RecipeError(problems)
    warnings = _warnings(recipe, positions) if recipe is not None else ()
    return Loaded(recipe, tree.data, positions, tree.files, set_values, fragment, warnings)

