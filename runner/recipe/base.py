"""Building blocks shared by every part of the recipe schema.

Every spec is frozen, forbids unknown keys and validates strictly: the YAML loader already
gives real ints, floats and bools, so a quoted "100" where a number belongs is a mistake to
report, not to coerce.
"""


import enum
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

# One element of a path into a recipe: a mapping key or a list index.
PathPart = str | int
Path = tuple[PathPart, ...]


class PathKind(enum.Enum):
    """Marks string fields that name files, so the loader resolves them against the recipe file."""

    LOCAL = "local"  # always a local path (may hold glob characters)
    HUB_OR_LOCAL = "hub_or_local"  # a hub id, or a local path when it starts with ./ ../ / or ~


LocalPath = Annotated[
    str, PathKind.LOCAL, Field(min_length=1, json_schema_extra={"x-ccrun-path": "local"})
]
HubOrLocal = Annotated[
    str, PathKind.HUB_OR_LOCAL, Field(min_length=1, json_schema_extra={"x-ccrun-path": "hub-or-local"})
]


def looks_local(value: str) -> bool:
    """A hub-or-local value is a local path when it says so explicitly."""
    return value.startswith(("./", "../", "/", "~")) or value in (".", "..")


class Problems(ValueError):
    """Cross-field problems found by a spec, each at a path relative to that spec.

    A problem is (path, message) or (path, message, at): `at` is where to point the reader when
    the path itself was never written (e.g. a missing section that another section needs).
    Raised from validators; pydantic keeps the exception in the error's context, and
    `errors.py` turns each problem into its own located message.
    """

    def __init__(self, problems: list[tuple]):
        self.problems = [(p[0], p[1], p[2] if len(p) > 2 else None) for p in problems]
        super().__init__("; ".join(f"{format_path(p) or '(recipe)'}: {m}" for p, m, _ in self.problems))


class Unusable(Exception):
    """Raised by any use of INVALID: the check (or derivation) that touched it cannot say anything."""


class _Invalid:
    """A field whose value failed validation, as a spec holds it while its other fields are checked.

    Every use (comparison, arithmetic, truth, attributes, iteration, formatting) raises Unusable;
    only `is None` answers, and truthfully: the field was written. So a cross-field check runs on
    whatever validated and is skipped, never misled, where one of its inputs did not.
    """

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise Unusable

    __bool__ = __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __hash__ = _refuse
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _refuse
    __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = __pow__ = __rpow__ = __neg__ = __abs__ = _refuse
    __len__ = __iter__ = __contains__ = __getitem__ = __index__ = __int__ = __float__ = _refuse
    __str__ = __repr__ = __format__ = __getattr__ = _refuse


INVALID: Any = _Invalid()


def each(*checks: Callable[[], Iterable[tuple]]) -> Iterator[tuple]:
    """The problems of independent checks: one that touches an invalid value is skipped, the others still run."""
    for check in checks:
        try:
            yield from check()
        except Unusable:
            continue


@contextmanager
def deriving(spec: Any, *names: str) -> Iterator[None]:
    """Derive `names` of `spec` in the block; where the derivation touches an invalid value, they are invalid too
    (so no check reads a default that a valid input would have replaced)."""
    try:
        yield
    except Unusable:
        if isinstance(spec, Spec):
            spec.derive(**dict.fromkeys(names, INVALID))


def format_path(path: Path) -> str:
    """('evals', 0, 'sampling', 1, 'k') -> 'evals[0].sampling[1].k'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


class Spec(BaseModel):
    """Base of every recipe model. Subclasses yield cross-field problems from `check`.

    Numbers are bounded where the runner would otherwise fail later, far from the recipe: floats
    must be finite (`.inf` and `.nan` are valid YAML floats, and no setting means either), and
    integers must fit in 64 bits (NumPy and JAX hold them as int64; Python would take any size).
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, defer_build=True, allow_inf_nan=False
    )

    def complete(self) -> None:
        """Fill derived values (e.g. gradient accumulation steps) so the resolved form shows them."""

    def check(self) -> Iterator[tuple]:
        """Yield (relative path, message[, where to point]) for each cross-field problem. Default: none.

        Also runs on a spec some of whose fields failed validation: those hold INVALID, and a
        check that touches one raises Unusable. Checks that do not depend on each other go through
        `each`, so that one skipped check does not take the others with it.
        """
        return iter(())

    def warn(self) -> Iterator[tuple]:
        """Yield (relative path, message) for each valid setting that is likely not what was meant. Default: none."""
        return iter(())

    def problems(self) -> list[tuple]:
        """Every problem `check` finds, and integers out of 64-bit range."""
        problems = list(each(self.check))
        said = {tuple(p[0]) for p in problems}  # a field's own bound says it better
        return problems + [p for p in each(self._int64_problems) if p[0] not in said]

    def specs(self, path: Path = ()) -> Iterator[tuple[Path, "Spec"]]:
        """This spec and every spec below it, each with its path."""
        yield path, self
        for name, value in self.__dict__.items():
            if isinstance(value, Spec):
                yield from value.specs((*path, name))
            elif type(value) is list:
                for i, item in enumerate(value):
                    if isinstance(item, Spec):
                        yield from item.specs((*path, name, i))

    def derive(self, **values: Any) -> None:
        """Set derived fields; frozen models allow it only here, from `complete`, before anyone sees self."""
        for name, value in values.items():
            object.__setattr__(self, name, value)
            self.__pydantic_fields_set__.add(name)

    def _int64_problems(self) -> Iterator[tuple]:
        for name, value in self.__dict__.items():  # runs for every spec of every recipe: kept cheap
            if type(value) is int:
                if not -INT64 <= value < INT64:
                    yield (name,), _int64_message(value)
            elif type(value) is list:
                for i, item in enumerate(value):
                    if type(item) is int and not -INT64 <= item < INT64:
                        yield (name, i), _int64_message(item)

    @model_validator(mode="after")
    def _run_checks(self, info: ValidationInfo):
        if info.context is not None and info.context.get(ASSIGNING) is self:
            return self  # one field set into a partly valid spec (runner/recipe/partial.py): checked later
        self.complete()
        problems = self.problems()
        if problems:
            raise Problems(problems)
        return self


# Validation context key: the spec being filled field by field, whose checks wait until it is whole.
ASSIGNING = "ccrun-assigning"


INT64 = 2**63


def _int64_message(value: int) -> str:
    return f"must be {'< 2**63' if value > 0 else '>= -2**63'}, a 64-bit integer (got {value})"


def at_most(spec: Spec, bounds: dict[str, int]) -> Iterator[tuple[Path, str]]:
    """A problem for each field of `spec` above its bound in `bounds` (unset fields pass)."""
    for name, bound in bounds.items():
        value = getattr(spec, name)
        try:
            if value is not None and value > bound:
                shown = int(bound) if isinstance(bound, float) and bound.is_integer() else bound
                yield (name,), f"must be <= {shown} (got {value})"
        except Unusable:
            continue


def tagged(*variants: type, key: str = "type") -> Any:
    """A union told apart by its `key` field (`type:` or `suite:`)."""
    from typing import Union

    return Annotated[Union[variants], Field(discriminator=key)]  # noqa: UP007


TAG_KEYS = ("type", "suite")
