"""YAML in and out, the recipe way.

Reading keeps the line and column of every key and value, rejects duplicate keys (PyYAML keeps
the last one silently), and resolves plain scalars by YAML 1.2's core rules: `5e-5` is a float,
`yes`/`no`/`on`/`off` are strings, dates stay strings.
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml

from .base import Path
from .errors import Loc, Problem, RecipeError

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BaseDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


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


def _scalar(node: yaml.ScalarNode) -> Any:
    tag, text = node.tag, node.value
    if tag == "tag:yaml.org,2002:str":
        return text
    if tag == "tag:yaml.org,2002:null":
        return None
    if tag == "tag:yaml.org,2002:bool":
        return text.lower() == "true"
    if tag == "tag:yaml.org,2002:int":
        return int(text.replace("_", ""), 0) if text[:2] in ("0o", "0x") else int(text.replace("_", ""))
    if tag == "tag:yaml.org,2002:float":
        lowered = text.replace("_", "").lower()
        if lowered.endswith("inf"):
            return -math.inf if lowered.startswith("-") else math.inf
        if lowered.endswith("nan"):
            return math.nan
        return float(lowered)
    raise ValueError(f"unsupported YAML tag {tag}")


def _loc(file: str, mark: Any) -> Loc:
    return Loc(file, mark.line + 1, mark.column + 1)


def _syntax_problem(file: str, text: str, exc: yaml.YAMLError) -> Problem:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
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


def parse(text: str, file: str) -> tuple[Any, dict[Path, Loc], dict[Path, Loc]]:
    """YAML text → (data, key locations, value locations). Raises RecipeError."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
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
    values[path] = _loc(file, node.start_mark)
    from .base import format_path

    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        first_seen: dict[str, Loc] = {}
        for key_node, value_node in node.value:
            where = _loc(file, key_node.start_mark)
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
        return [_convert(item, (*path, i), file, keys, values, problems) for i, item in enumerate(node.value)]
    try:
        return _scalar(node)
    except ValueError as exc:
        problems.append(Problem(values[path], format_path(path), str(exc)))
        return None


def parse_value(text: str) -> Any:
    """A command-line value as YAML (flow style), with the same scalar rules as recipe files."""
    data, _, _ = parse(text, "--set")
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
