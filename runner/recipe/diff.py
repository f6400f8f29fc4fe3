"""Semantic diff of two recipes: the dotted keys whose resolved values differ."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .resolve import flatten

ABSENT = object()


@dataclass(frozen=True)
class Difference:
    key: str
    a: Any  # ABSENT when only B has the key
    b: Any


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[Difference]:
    """Keys in A's order, then keys only B has, in B's order."""
    flat_a, flat_b = flatten(a), flatten(b)
    keys = list(flat_a) + [k for k in flat_b if k not in flat_a]
    out = []
    for key in keys:
        va, vb = flat_a.get(key, ABSENT), flat_b.get(key, ABSENT)
        if va is ABSENT or vb is ABSENT or not _same(va, vb):
            out.append(Difference(key, va, vb))
    return out


def _same(a: Any, b: Any) -> bool:
    # 1 and 1.0 and True differ in a recipe; compare with their types.
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True) and type(a) is type(b)


def show(value: Any) -> str:
    """A value as one line of YAML flow style."""
    if value is ABSENT:
        return "(absent)"
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) or _needs_quotes(value) else value


def _needs_quotes(text: str) -> bool:
    return text == "" or text != text.strip() or any(c in text for c in "\n\t\"'") or text in ("null", "true", "false")


def render(diffs: list[Difference], label_a: str, label_b: str, fmt: str) -> str:
    if fmt == "json":
        body = {
            "a": label_a,
            "b": label_b,
            "same": not diffs,
            "differences": [
                {"key": d.key, "a": None if d.a is ABSENT else d.a, "b": None if d.b is ABSENT else d.b,
                 "in_a": d.a is not ABSENT, "in_b": d.b is not ABSENT}
                for d in diffs
            ],
        }
        return json.dumps(body, indent=2, ensure_ascii=False) + "\n"
    rows = [(d.key, show(d.a), show(d.b)) for d in diffs]
    if fmt == "markdown":
        out = [f"| key | {_md(label_a)} | {_md(label_b)} |", "| --- | --- | --- |"]
        out += [f"| `{k}` | {_md(a)} | {_md(b)} |" for k, a, b in rows]
        if not rows:
            out.append("| (no differences) | | |")
        return "\n".join(out) + "\n"
    if not rows:
        return f"{label_a} and {label_b} resolve to the same recipe\n"
    header = ("key", label_a, label_b)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    lines = [f"{header[0]:<{widths[0]}}  {header[1]:<{widths[1]}}  {header[2]}"]
    lines.append(f"{'-' * widths[0]}  {'-' * widths[1]}  {'-' * widths[2]}")
    lines += [f"{k:<{widths[0]}}  {a:<{widths[1]}}  {b}" for k, a, b in rows]
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "\\n")
