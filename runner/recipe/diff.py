"""Semantic diff of two recipes: the dotted keys whose resolved values differ."""

import json
import re
from dataclasses import dataclass
from typing import Any

from .resolve import flatten

ABSENT = object()
TEXT_WIDTH = 48  # longest value shown in a text table cell; markdown and json show everything


@dataclass(frozen=True)
class Covered:
    """A key that is absent because an ancestor is a single value (e.g. `sweep: null`)."""

    ancestor: str
    value: Any


@dataclass(frozen=True)
class Difference:
    key: str
    a: Any  # ABSENT, Covered, or the value
    b: Any


def ancestors(key: str) -> list[str]:
    """'evals[0].sampling[1].k' → ['evals', 'evals[0]', 'evals[0].sampling', 'evals[0].sampling[1]']."""
    return [key[: m.start()] for m in re.finditer(r"[.\[]", key) if m.start() > 0]


def _lookup(flat: dict[str, Any], key: str) -> Any:
    if key in flat:
        return flat[key]
    for ancestor in reversed(ancestors(key)):
        if ancestor in flat:
            return Covered(ancestor, flat[ancestor])
    return ABSENT


def _ordered_union(first: list[str], second: list[str]) -> list[str]:
    """First's order, with second's own keys placed after their nearest predecessor in second."""
    out = list(first)
    position = {k: i for i, k in enumerate(out)}
    anchor = -1
    for key in second:
        if key in position:
            anchor = position[key]
            continue
        anchor += 1
        out.insert(anchor, key)
        position = {k: i for i, k in enumerate(out)}
    return out


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[Difference]:
    flat_a, flat_b = flatten(a), flatten(b)
    out = []
    for key in _ordered_union(list(flat_a), list(flat_b)):
        va, vb = _lookup(flat_a, key), _lookup(flat_b, key)
        if va is ABSENT or vb is ABSENT:
            # A leaf on one side whose subtree the other side spells out: its rows say it already.
            other = flat_a if va is ABSENT else flat_b
            if any(k.startswith(key) and key in ancestors(k) for k in other):
                continue
        if isinstance(va, Covered) or isinstance(vb, Covered) or va is ABSENT or vb is ABSENT or not _same(va, vb):
            out.append(Difference(key, va, vb))
    return out


def _same(a: Any, b: Any) -> bool:
    # 1 and 1.0 and true differ in a recipe: compare with their types.
    return type(a) is type(b) and json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def show(value: Any, width: int | None = None) -> str:
    """A value as one line of YAML flow style, shortened to `width` characters."""
    if value is ABSENT:
        text = "(absent)"
    elif isinstance(value, Covered):
        text = f"(absent: {value.ancestor} is {show(value.value)})"
    elif isinstance(value, str) and not _needs_quotes(value):
        text = value
    else:
        text = json.dumps(value, ensure_ascii=False)
    if width is not None and len(text) > width:
        text = text[: width - 3] + "..."
    return text


def _needs_quotes(text: str) -> bool:
    return text == "" or text != text.strip() or any(c in text for c in "\n\t\"'") or text in ("null", "true", "false")


def _plain(value: Any) -> Any:
    return None if value is ABSENT or isinstance(value, Covered) else value


def render(diffs: list[Difference], label_a: str, label_b: str, fmt: str) -> str:
    if fmt == "json":
        body = {
            "a": label_a,
            "b": label_b,
            "same": not diffs,
            "differences": [
                {
                    "key": d.key,
                    "a": _plain(d.a),
                    "b": _plain(d.b),
                    "in_a": not (d.a is ABSENT or isinstance(d.a, Covered)),
                    "in_b": not (d.b is ABSENT or isinstance(d.b, Covered)),
                }
                for d in diffs
            ],
        }
        return json.dumps(body, indent=2, ensure_ascii=False) + "\n"
    if fmt == "markdown":
        out = [f"| key | {_md(label_a)} | {_md(label_b)} |", "| --- | --- | --- |"]
        out += [f"| `{d.key}` | {_md(show(d.a))} | {_md(show(d.b))} |" for d in diffs]
        if not diffs:
            out.append("| (no differences) | | |")
        return "\n".join(out) + "\n"
    if not diffs:
        return f"{label_a} and {label_b} resolve to the same recipe\n"
    rows = [("key", label_a, label_b)] + [(d.key, show(d.a, TEXT_WIDTH), show(d.b, TEXT_WIDTH)) for d in diffs]
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    lines = [f"{k:<{widths[0]}}  {a:<{widths[1]}}  {b}".rstrip() for k, a, b in rows]
    lines.insert(1, f"{'-' * widths[0]}  {'-' * widths[1]}  {'-' * max(len(r[2]) for r in rows)}")
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "\\n")
