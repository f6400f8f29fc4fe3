"""YAML in and out, the recipe way.

Reading keeps the line and column of every key and value, rejects duplicate keys (PyYAML keeps
the last one silently), and resolves plain scalars by YAML 1.2's core rules: `5e-5` is a float,
`yes`/`no`/`on`/`off` are strings, dates stay strings.

Reading is safe against hostile text: only plain values (mappings, lists, strings, numbers,
booleans, null) are built, never objects (`!!python/object` is refused like any other tag, as
yaml.safe_load does); a recipe (its file, what it extends, its --set values: one Budget) may hold
at most MAX_VALUES values and MAX_CHARS characters of text once its aliases are expanded, nested at
most MAX_DEPTH collections deep; characters YAML does not allow (a NUL) are refused where they are.
PyYAML itself shares an anchored node between its aliases and leaves the cost of expanding them to
whoever walks the tree: 353 bytes of nested aliases ("billion laughs") expand to 10**9 values, and
`&a [*a]` is a list that contains itself. The composer here measures every anchored node as it is
built, so such a document is refused at the offending alias, before anything is expanded.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import yaml

from .base import Path, format_path
from .errors import Loc, Problem, RecipeError

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BaseDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

# A recipe has a few hundred values (the largest shipped one, resolved, 164) and nests a
# handful of levels; these bounds are far above any real recipe and keep reading (~15 us a value)
# and every later walk of the data (merge, validation, positions) well under a second, and its
# recursion far from Python's limit.
MAX_VALUES = 10_000  # scalars and collections in one recipe, aliases expanded
MAX_CHARS = 1 << 20  # characters of text (keys and scalars) in one recipe, aliases expanded
MAX_DEPTH = 64  # collections nested in one another, aliases expanded
MAX_INT_BITS = 64  # no recipe number needs more; a longer one is a mistake (or an attack)

# Characters YAML 1.1 (libyaml's reader) accepts; anything else, e.g. a NUL byte, is refused here,
# located, instead of by the reader (whose error has a byte offset and no line).
_NOT_YAML = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    yaml_implicit_resolvers: dict = {}


for _tag, _pattern, _first in [
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9][0-9_]*|0o[0-7_]+|0x[0-9a-fA-F_]+)$", list("-+0123456789")),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        list("-+.0123456789"),
    ),
]:
    _Loader.add_implicit_resolver(_tag, re.compile(_pattern), _first)
# Recognised only to be refused with a clear message (merge keys are YAML 1.1; recipes use extends).
_Loader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^<<$"), ["<"])

_CORE = "tag:yaml.org,2002:"


def _unsupported(tag: str) -> str:
    shown = "!!" + tag[len(_CORE) :] if tag.startswith(_CORE) else tag
    return f"unsupported YAML tag {shown}: a recipe holds plain values (mappings, lists, text, numbers, true/false, null)"


def _scalar(node: yaml.ScalarNode) -> Any:
    tag, text = node.tag, node.value
    if tag == "tag:yaml.org,2002:str":
        return text
    if tag == "tag:yaml.org,2002:null":
        return None
    if tag == "tag:yaml.org,2002:bool":
        return text.lower() == "true"
    if tag == "tag:yaml.org,2002:int":
        digits = text.replace("_", "")
        prefixed = digits[:2] in ("0o", "0x")
        # Bounded before converting: Python refuses to read (or print) a decimal int of more than
        # 4300 digits, and a hex one of a megabyte converts just fine into a number nothing can use.
        if len(digits.lstrip("+-")[2 if prefixed else 0 :].lstrip("0")) > 24:
            raise ValueError(f"integer too large (more than {MAX_INT_BITS} bits)")
        value = int(digits, 0) if prefixed else int(digits)
        if abs(value).bit_length() > MAX_INT_BITS:
            raise ValueError(f"integer too large (more than {MAX_INT_BITS} bits)")
        return value
    if tag == "tag:yaml.org,2002:float":
        lowered = text.replace("_", "").lower()
        if lowered.endswith("inf"):
            return -math.inf if lowered.startswith("-") else math.inf
        if lowered.endswith("nan"):
            return math.nan
        return float(lowered)
    raise ValueError(_unsupported(tag))


def _loc(file: str, mark: Any) -> Loc:
    return Loc(file, mark.line + 1, mark.column + 1)


def _loc_at(file: str, text: str, index: int) -> Loc:
    """The 1-based line and column (in characters, as YAML marks count) of text[index]."""
    line_start = text.rfind("\n", 0, index) + 1
    return Loc(file, text.count("\n", 0, index) + 1, index - line_start + 1)


def bad_character(file: str, text: str) -> Problem | None:
    """The first character YAML does not allow (a control character, a byte that was not UTF-8), located."""
    found = _NOT_YAML.search(text)
    if found is None:
        return None
    code = ord(found.group())
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, kept by Python's surrogateescape (argv)
        message = f"not UTF-8 text (byte 0x{code - 0xDC00:02x})"
    elif 0xD800 <= code <= 0xDFFF:
        message = f"not UTF-8 text (lone surrogate U+{code:04X})"
    else:
        message = f"control character U+{code:04X} is not allowed in YAML"
    return Problem(_loc_at(file, text, found.start()), "", message)


def _syntax_problem(file: str, text: str, exc: yaml.YAMLError) -> Problem:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is None and isinstance(exc, yaml.reader.ReaderError):
        # libyaml's reader says where in bytes (of the UTF-8 text it was given), not in lines.
        index = len(text.encode("utf-8")[: exc.position].decode("utf-8", "ignore"))
        return Problem(_loc_at(file, text, index), "", f"YAML syntax error: {exc.reason}")
    loc = _loc(file, mark) if mark is not None else Loc(file, 1, 1)
    line = text.splitlines()[loc.line - 1] if mark is not None and loc.line <= len(text.splitlines()) else ""
    if "\t" in line[: max(loc.col, len(line) - len(line.lstrip()))] or "\t" in line[: loc.col]:
        return Problem(loc, "", "tab character: YAML indentation must use spaces")
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    if context and "single document" in context:
        return Problem(loc, "", "a recipe file holds one YAML document; a second one starts here")
    context_mark = getattr(exc, "context_mark", None)
    if context and context_mark is not None and context_mark is not mark:
        problem += f" ({context} at line {context_mark.line + 1})"
    return Problem(loc, "", f"YAML syntax error: {problem}")


@dataclass
class Budget:
    """What one recipe may still hold, aliases expanded; shared by every document of a load (the
    file, what it extends, the --set values), so many small files cannot add up to a large one."""

    values: int = MAX_VALUES
    chars: int = MAX_CHARS


class _Alias:
    """`*name` as written: where, and the node its anchor `&name` names (shared, never copied)."""

    __slots__ = ("name", "node", "start_mark")

    def __init__(self, name: str, node: yaml.Node, start_mark: Any):
        self.name, self.node, self.start_mark = name, node, start_mark


def _target(node: Any) -> yaml.Node:
    return node.node if isinstance(node, _Alias) else node


class _Composer:
    """PyYAML's Composer (yaml/composer.py) over the loader's events, with aliases kept as
    `_Alias` and every node measured as it is built: values it expands to, levels it nests.
    Refuses, at the alias or node where it happens, what would expand past MAX_VALUES or
    MAX_DEPTH, and an alias inside the collection it names (PyYAML builds that as a collection
    that contains itself; expanding it never ends)."""

    def __init__(self, loader: Any, file: str, budget: Budget):
        self.events = loader
        self.file = file
        self.budget = budget
        self.anchors: dict[str, yaml.Node] = {}
        # anchor → (values, characters, levels) it expands to, once its node is complete
        self.sizes: dict[str, tuple[int, int, int]] = {}
        self.path: list[str | int] = []  # where the composer is, for messages

    def document(self) -> yaml.Node | None:
        events = self.events
        events.get_event()  # stream start
        node = None
        if not events.check_event(yaml.StreamEndEvent):
            events.get_event()  # document start
            node = self.node(0)[0]
            events.get_event()  # document end
        if not events.check_event(yaml.StreamEndEvent):
            event = events.get_event()
            raise yaml.composer.ComposerError(
                "expected a single document in the stream",
                node.start_mark if node is not None else None,
                "but found another document",
                event.start_mark,
            )
        return node

    def refuse(self, mark: Any, message: str) -> None:
        raise RecipeError([Problem(_loc(self.file, mark), format_path(tuple(self.path)), message)])

    def spend(self, mark: Any, values: int, chars: int, alias: str | None = None) -> None:
        budget = self.budget
        budget.values -= values
        budget.chars -= chars
        if budget.values < 0:
            self.refuse(mark, f"more than {MAX_VALUES} values in one recipe" if alias is None else
                        f"alias *{alias} expands to {values} values, past the limit of {MAX_VALUES} values in one "
                        "recipe (aliases expanded)")
        if budget.chars < 0:
            self.refuse(mark, f"more than {MAX_CHARS} characters of text in one recipe" if alias is None else
                        f"alias *{alias} expands to {chars} characters of text, past the limit of {MAX_CHARS} in "
                        "one recipe (aliases expanded)")

    def node(self, depth: int) -> tuple[Any, int, int, int]:
        """The next node at nesting `depth`: (node, values, characters, levels) it expands to."""
        event = self.events.get_event()
        if isinstance(event, yaml.AliasEvent):
            return self.alias(event, depth)
        anchor = event.anchor
        if anchor is not None and anchor in self.anchors:
            raise yaml.composer.ComposerError(
                f"found duplicate anchor {anchor!r}; first occurrence",
                self.anchors[anchor].start_mark,
                "second occurrence",
                event.start_mark,
            )
        if isinstance(event, yaml.ScalarEvent):
            self.spend(event.start_mark, 1, len(event.value))
            tag = event.tag
            if tag is None or tag == "!":
                tag = self.events.resolve(yaml.ScalarNode, event.value, event.implicit)
            node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)
            if anchor is not None:
                self.anchors[anchor], self.sizes[anchor] = node, (1, len(event.value), 0)
            return node, 1, len(event.value), 0
        self.spend(event.start_mark, 1, 0)
        if depth >= MAX_DEPTH:
            self.refuse(event.start_mark, f"nested deeper than {MAX_DEPTH} levels")
        mapping = isinstance(event, yaml.MappingStartEvent)
        kind = yaml.MappingNode if mapping else yaml.SequenceNode
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.events.resolve(kind, None, event.implicit)
        node = kind(tag, [], event.start_mark, None, flow_style=event.flow_style)
        if anchor is not None:
            self.anchors[anchor] = node  # registered before its items, as PyYAML does; sized after
        values, chars, levels = 1, 0, 0
        end = yaml.MappingEndEvent if mapping else yaml.SequenceEndEvent
        index = 0
        while not self.events.check_event(end):
            if mapping:
                key, n, c, h = self.node(depth + 1)
                values, chars, levels = values + n, chars + c, max(levels, h)
                target = _target(key)
                self.path.append(target.value if isinstance(target, yaml.ScalarNode) else "?")
                value, n, c, h = self.node(depth + 1)
                node.value.append((key, value))
            else:
                self.path.append(index)
                item, n, c, h = self.node(depth + 1)
                node.value.append(item)
            self.path.pop()
            values, chars, levels = values + n, chars + c, max(levels, h)
            index += 1
        node.end_mark = self.events.get_event().end_mark
        if anchor is not None:
            self.sizes[anchor] = (values, chars, levels + 1)
        return node, values, chars, levels + 1

    def alias(self, event: Any, depth: int) -> tuple[Any, int, int, int]:
        name = event.anchor
        if name not in self.anchors:
            raise yaml.composer.ComposerError(None, None, f"found undefined alias {name!r}", event.start_mark)
        if name not in self.sizes:
            self.refuse(event.start_mark, f"alias *{name} is inside &{name}, the collection it names "
                        "(a structure that contains itself; a recipe cannot hold one)")
        values, chars, levels = self.sizes[name]
        if depth + levels > MAX_DEPTH:
            self.refuse(event.start_mark, f"alias *{name} nests deeper than {MAX_DEPTH} levels when expanded")
        self.spend(event.start_mark, values, chars, alias=name)
        return _Alias(name, self.anchors[name], event.start_mark), values, chars, levels


def parse(text: str, file: str, budget: Budget | None = None) -> tuple[Any, dict[Path, Loc], dict[Path, Loc]]:
    """YAML text → (data, key locations, value locations), spending from `budget` (default: a
    fresh one, a whole recipe's). Raises RecipeError."""
    bad = bad_character(file, text)
    if bad is not None:
        raise RecipeError([bad])
    loader = _Loader(text)
    try:
        node = _Composer(loader, file, budget if budget is not None else Budget()).document()
    except yaml.YAMLError as exc:
        raise RecipeError([_syntax_problem(file, text, exc)]) from None
    finally:
        loader.dispose()
    keys: dict[Path, Loc] = {}
    values: dict[Path, Loc] = {}
    problems: list[Problem] = []
    data = _convert(node, (), file, keys, values, problems) if node is not None else None
    if problems:
        raise RecipeError(problems)
    return data, keys, values


def _convert(node, path, file, keys, values, problems) -> Any:
    """Plain data from a composed node; an alias gives a fresh copy of what its anchor names,
    located where the alias is written (the composer has bounded the size of every copy)."""
    values[path] = _loc(file, node.start_mark)
    node = _target(node)
    if isinstance(node, yaml.MappingNode):
        if node.tag != _CORE + "map":
            problems.append(Problem(values[path], format_path(path), _unsupported(node.tag)))
            return None
        out: dict[str, Any] = {}
        first_seen: dict[str, Loc] = {}
        for key_node, value_node in node.value:
            where = _loc(file, key_node.start_mark)
            key_node = _target(key_node)
            if key_node.tag == "tag:yaml.org,2002:merge":
                problems.append(Problem(where, format_path(path), "YAML merge keys (<<) are not supported; use extends"))
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
                shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else "a collection"
                problems.append(Problem(where, format_path(path), f"keys must be strings (got {shown})"))
                continue
            key = key_node.value
            if key in first_seen:
                problems.append(
                    Problem(where, format_path((*path, key)), f"duplicate key (first set at line {first_seen[key].line})")
                )
                continue
            first_seen[key] = where
            keys[(*path, key)] = where
            out[key] = _convert(value_node, (*path, key), file, keys, values, problems)
        return out
    if isinstance(node, yaml.SequenceNode):
        if node.tag != _CORE + "seq":
            problems.append(Problem(values[path], format_path(path), _unsupported(node.tag)))
            return None
        return [_convert(item, (*path, i), file, keys, values, problems) for i, item in enumerate(node.value)]
    try:
        return _scalar(node)
    except ValueError as exc:
        problems.append(Problem(values[path], format_path(path), str(exc)))
        return None


def parse_value(text: str, budget: Budget | None = None) -> Any:
    """A command-line value as YAML (flow style), with the same scalar rules as recipe files."""
    data, _, _ = parse(text, "--set", budget)
    return data


class _Dumper(_BaseDumper):  # type: ignore[misc, valid-type]
    # Quote a string whenever YAML 1.1 (other readers) or our 1.2 rules would read it as non-string.
    yaml_implicit_resolvers = {
        first: list(resolvers) + list(_Loader.yaml_implicit_resolvers.get(first, []))
        for first, resolvers in _BaseDumper.yaml_implicit_resolvers.items()
    } | {k: v for k, v in _Loader.yaml_implicit_resolvers.items() if k not in _BaseDumper.yaml_implicit_resolvers}


def _str_representer(dumper, value: str):
    style = None
    if "\n" in value:
        style = "|" if len(value) > 40 and not value.startswith("\n") else '"'
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def dump(data: Any) -> str:
    """Canonical YAML: key order kept, block style, unicode as is."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)
