"""The resolved form of a recipe: canonical YAML with every default and derived value explicit,
its hash, and its flattening into dotted keys."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from typing import Any

from . import walk, yamlio
from .base import PathKind, format_path, looks_local
from .schema import NOT_MEANING, Recipe

HEADER = "# Resolved by ccrun: defaults filled, derived values explicit, extends merged.\n"


def resolved_dict(recipe: Recipe) -> dict[str, Any]:
    """Plain data in schema order; loading it again gives the same recipe."""
    return recipe.model_dump(mode="json", exclude={"extends"})


def to_yaml(recipe: Recipe, *, header: bool = True) -> str:
    return (HEADER if header else "") + yamlio.dump(resolved_dict(recipe))


@functools.lru_cache(maxsize=256)
def _project_root(directory: str) -> str | None:
    """Nearest ancestor that holds a .git or pyproject.toml: the checkout a path belongs to."""
    current = directory
    while True:
        if os.path.exists(os.path.join(current, ".git")) or os.path.exists(os.path.join(current, "pyproject.toml")):
            return current
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def portable_path(path: str) -> str:
    """A local path as it reads inside its checkout, so another clone hashes the same."""
    root = _project_root(os.path.dirname(path) or "/")
    if root is None:
        return path
    return "<checkout>/" + os.path.relpath(path, root)


def meaning(recipe: Recipe) -> dict[str, Any]:
    """What the recipe computes: the resolved data without naming and logging, paths made portable."""
    data = resolved_dict(recipe)
    for path, kind in walk.iter_path_fields(Recipe, data):
        node = data
        for part in path[:-1]:
            node = node[part]
        value = node[path[-1]]
        if kind is PathKind.LOCAL or looks_local(value):
            node[path[-1]] = portable_path(value)
    for key in NOT_MEANING:
        data.pop(key, None)
    return data


def recipe_hash(recipe: Recipe) -> str:
    """sha256 of the recipe's meaning (hex). Names, descriptions and logging do not change it."""
    text = json.dumps(meaning(recipe), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def flatten(data: Any, prefix: tuple = ()) -> dict[str, Any]:
    """Dotted keys → leaf values. Lists of mappings are walked by index; other lists are leaves."""
    out: dict[str, Any] = {}
    if isinstance(data, dict) and data:
        for key, value in data.items():
            out.update(flatten(value, (*prefix, key)))
    elif isinstance(data, list) and data and all(isinstance(v, dict) for v in data):
        for i, value in enumerate(data):
            out.update(flatten(value, (*prefix, i)))
    else:
        out[format_path(prefix)] = data
    return out
