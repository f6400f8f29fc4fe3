"""Request errors as a person reads them: "parameters.temperature: must be >= 0 (got -1)".

Every error answer carries the message twice: `error` (a string, what the Inference API returns
and the Code Clippy extension shows) and `detail` (FastAPI's list of {loc, msg, type}).
"""

from __future__ import annotations

import json
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

_PLAIN = {
    "missing": "required",
    "string_too_short": "must not be empty",
    "model_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
}

_BOUNDS = {
    "greater_than_equal": (">=", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("<=", "le"),
    "less_than": ("<", "lt"),
    "string_too_long": ("at most", "max_length"),
    "too_long": ("at most", "max_length"),
}


class RequestError(Exception):
    """A request the server refuses: `problems` are (location, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]], status: int = 422):
        super().__init__("; ".join(f"{where}: {msg}" if where else msg for where, msg in problems))
        self.problems, self.status = problems, status

    def body(self) -> dict[str, Any]:
        return {"error": str(self), "detail": [{"loc": where.split(".") if where else [], "msg": msg,
                                                "type": "value_error"} for where, msg in self.problems]}


def _nested(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _locate(root: type[BaseModel], loc: tuple, unknown: bool) -> tuple[str, type[BaseModel] | None]:
    """The dotted path a client wrote (union-member tags dropped) and the model that holds its last key."""
    parts: list[str] = []
    model: type[BaseModel] | None = root
    holder = root
    for i, part in enumerate(loc):
        if isinstance(part, int):
            parts.append(str(part))
        elif model is not None and part in model.model_fields:
            parts.append(part)
            holder, model = model, _nested(model.model_fields[part].annotation)
        elif unknown and i == len(loc) - 1:
            parts.append(part)
            holder = model
    return ".".join(parts), holder


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, bytes) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def from_validation(exc: ValidationError, root: type[BaseModel]) -> RequestError:
    """A pydantic error on a request body → one clear message per field."""
    problems: dict[str, list[str]] = {}
    for err in exc.errors():
        kind = err["type"]
        where, holder = _locate(root, err["loc"], kind == "extra_forbidden")
        if kind == "json_invalid":
            message = f"the body is not valid JSON ({err['msg'].removeprefix('Invalid JSON: ')})"
        elif kind == "extra_forbidden":
            accepted = ", ".join(holder.model_fields) if holder else ""
            message = f"unknown parameter (accepted: {accepted})"
        elif kind in _BOUNDS:
            sign, key = _BOUNDS[kind]
            message = f"must be {sign} {err['ctx'][key]}" + (" characters long" if kind == "string_too_long" else "")
            message += " items long" if kind == "too_long" else ""
            message += f" (got {_shown(err['input'])})" if kind not in ("string_too_long", "too_long") else ""
        else:
            message = _PLAIN.get(kind, err["msg"][:1].lower() + err["msg"][1:])
            if kind not in ("missing", "model_type", "dict_type", "string_too_short") and "input" in err:
                message += f" (got {_shown(err['input'])})"
        if message not in problems.setdefault(where, []):
            problems[where].append(message)
    return RequestError([(where, _either(msgs)) for where, msgs in problems.items()])


def _either(messages: list[str]) -> str:
    """The members of a union that all failed: "must be a string or must be a list (got 3)"."""
    got = {m[m.rfind(" (got "):] for m in messages if " (got " in m}
    if len(got) == 1 and all(m.endswith(next(iter(got))) for m in messages):
        return " or ".join(m.removesuffix(next(iter(got))) for m in messages) + next(iter(got))
    return " or ".join(messages)


def parse(body: bytes, model: type[BaseModel]) -> Any:
    """The request body as `model`, whatever its content type (the extension sends text/plain)."""
    if not body.strip():
        raise RequestError([("", "the body is empty; send a JSON object")])
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise from_validation(exc, model) from None
