"""Navigate the recipe schema alongside recipe data: which type lives at a dotted path.

Used for `--set` (parse a value with the type at its path), for did-you-mean on unknown keys,
and for finding the fields that hold file paths.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterator
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from .base import TAG_KEYS, Path, PathKind


class UnknownPath(Exception):
    """A path does not exist in the schema; `depth` is the index of the first bad part."""

    def __init__(self, depth: int, message: str):
        super().__init__(message)
        self.depth = depth
        self.message = message


def strip(annotation: Any) -> tuple[Any, list[Any]]:
    """Remove Annotated and Optional layers: (core type, metadata found on the way)."""
    metadata: list[Any] = []
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            args = get_args(annotation)
            # A tagged union keeps its Annotated wrapper: the discriminator lives there.
            if _discriminator(annotation) is not None:
                return annotation, metadata
            metadata.extend(args[1:])
            annotation = args[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation, metadata
            annotation = args[0]
        else:
            return annotation, metadata


def field_annotation(field: FieldInfo) -> tuple[Any, list[Any]]:
    core, metadata = strip(field.annotation)
    return core, list(field.metadata) + metadata


def _discriminator(annotation: Any) -> str | None:
    if get_origin(annotation) is not Annotated:
        return None
    for meta in get_args(annotation)[1:]:
        if isinstance(meta, FieldInfo) and isinstance(meta.discriminator, str):
            return meta.discriminator
    return None


# Schema types live as long as the program; cache look-ups on them by identity.
_VARIANTS: dict[int, tuple[Any, tuple[str, dict[str, type[BaseModel]]] | None]] = {}
_BEARS: dict[int, tuple[Any, bool]] = {}


def union_variants(annotation: Any) -> tuple[str, dict[str, type[BaseModel]]] | None:
    """For a tagged union: (tag key, {tag value: model})."""
    hit = _VARIANTS.get(id(annotation))
    if hit is None or hit[0] is not annotation:
        hit = _VARIANTS[id(annotation)] = (annotation, _union_variants(annotation))
    return hit[1]


def _union_variants(annotation: Any) -> tuple[str, dict[str, type[BaseModel]]] | None:
    key = _discriminator(annotation)
    if key is None:
        return None
    variants = {}
    for model in get_args(get_args(annotation)[0]):
        tag_type = model.model_fields[key].annotation
        for value in get_args(tag_type):
            variants[value] = model
    return key, variants


def is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def pick_model(annotation: Any, data: Any) -> type[BaseModel] | None:
    """The model class at this node, choosing a union variant by the data's tag."""
    if is_model(annotation):
        return annotation
    found = union_variants(annotation)
    if found and isinstance(data, dict):
        key, variants = found
        tag = data.get(key)
        return variants.get(tag) if isinstance(tag, str) else None  # a list there is not a tag (nor hashable)
    return None


def did_you_mean(word: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def unknown_key_message(word: str, candidates: list[str]) -> str:
    hint = did_you_mean(word, candidates)
    if hint:
        return "unknown key" + hint
    return "unknown key; expected one of: " + ", ".join(candidates)


def describe_tag_choices(annotation: Any) -> str:
    found = union_variants(annotation)
    if not found:
        return ""
    return ", ".join(found[1])


def child(annotation: Any, data: Any, key: str | int, depth: int) -> tuple[Any, list[Any]]:
    """Type of `data[key]` where `data` has type `annotation`. Raises UnknownPath."""
    model = pick_model(annotation, data)
    found = union_variants(annotation)
    if model is None and found is not None:
        tag_key, variants = found
        if key == tag_key:
            return Literal[tuple(variants)], []
        tag = data.get(tag_key) if isinstance(data, dict) else None
        if tag is None:
            raise UnknownPath(depth, f"set {tag_key} first (one of: {', '.join(variants)})")
        raise UnknownPath(depth - 1, f"unknown {tag_key} {tag!r}{did_you_mean(str(tag), list(variants))}")
    if model is not None:
        if not isinstance(key, str) or key not in model.model_fields:
            names = list(model.model_fields)
            raise UnknownPath(depth, unknown_key_message(str(key), names))
        return field_annotation(model.model_fields[key])
    origin = get_origin(annotation)
    if origin is list:
        if not isinstance(key, int):
            raise UnknownPath(depth, f"is a list; use an index like [0] (got {key!r})")
        size = len(data) if isinstance(data, list) else 0
        if not 0 <= key < size:
            raise UnknownPath(depth, f"index {key} is out of range ({items(size)})")
        return strip(get_args(annotation)[0])
    if origin is dict:
        return strip(get_args(annotation)[1])
    raise UnknownPath(depth, "has no keys below it (it is a single value)")


def type_at(root: type[BaseModel], data: Any, path: Path) -> tuple[Any, list[Any]]:
    """Type at `path`, following the data for union tags. Raises UnknownPath."""
    annotation, metadata = root, []
    node = data
    for depth, key in enumerate(path):
        annotation, metadata = child(annotation, node, key, depth)
        node = _get(node, key)
    return annotation, metadata


def value_at(data: Any, path: Path) -> Any:
    """The value at `path` in recipe data, or None where the path does not exist."""
    node = data
    for key in path:
        node = _get(node, key)
    return node


def _get(node: Any, key: str | int) -> Any:
    if isinstance(node, dict):
        return node.get(key)
    if isinstance(node, list) and isinstance(key, int) and -len(node) <= key < len(node):
        return node[key]
    return None


def items(n: int) -> str:
    return "the list is empty" if n == 0 else f"the list has {n} item{'s' if n != 1 else ''}"


def is_dict_type(annotation: Any) -> bool:
    return get_origin(annotation) is dict


def path_kind(metadata: list[Any]) -> PathKind | None:
    return next((m for m in metadata if isinstance(m, PathKind)), None)


def iter_path_fields(root: type[BaseModel], data: Any) -> Iterator[tuple[Path, PathKind]]:
    """Every string in `data` that the schema marks as a file path: (its path, its kind)."""
    yield from _walk_paths(root, [], data, ())


def bears_paths(annotation: Any, metadata: list[Any] = ()) -> bool:
    """Whether a path-marked field can occur at or below this type (so the walk can skip the rest)."""
    if path_kind(list(metadata)) is not None:
        return True
    hit = _BEARS.get(id(annotation))
    if hit is not None and hit[0] is annotation:
        return hit[1]
    _BEARS[id(annotation)] = (annotation, False)  # guards against recursive schemas
    found = union_variants(annotation)
    if found is not None:
        result = any(bears_paths(model) for model in found[1].values())
    elif is_model(annotation):
        result = any(bears_paths(*field_annotation(f)) for f in annotation.model_fields.values())
    elif get_origin(annotation) in (list, dict):
        result = bears_paths(*strip(get_args(annotation)[-1]))
    else:
        result = False
    _BEARS[id(annotation)] = (annotation, result)
    return result


def _walk_paths(annotation: Any, metadata: list[Any], node: Any, path: Path) -> Iterator[tuple[Path, PathKind]]:
    kind = path_kind(metadata)
    if kind is not None and isinstance(node, str):
        yield path, kind
        return
    if not bears_paths(annotation, metadata):
        return
    if isinstance(node, dict):
        for key, value in node.items():
            try:
                sub, sub_meta = child(annotation, node, key, len(path))
            except UnknownPath:
                continue
            yield from _walk_paths(sub, sub_meta, value, (*path, key))
    elif isinstance(node, list) and get_origin(annotation) is list:
        item, item_meta = strip(get_args(annotation)[0])
        for i, value in enumerate(node):
            yield from _walk_paths(item, item_meta, value, (*path, i))


def wants_text(annotation: Any) -> bool:
    """True when a `--set` value for this type is taken verbatim rather than parsed as YAML."""
    if annotation is str:
        return True
    if get_origin(annotation) is Literal:
        return all(isinstance(a, str) for a in get_args(annotation))
    return False

