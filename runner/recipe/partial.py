"""Cross-field checks of a recipe that failed validation, run over the fields that did validate.

Pydantic runs a spec's checks (`Spec.check`, an after-validator) only when every field of that
spec validated, and a parent's only when all its children did: an error in `optimizer.b1` alone
would hide `train.micro_batch_size` not dividing `train.batch_size` until it is fixed. So when
validation fails, this module builds the recipe again, spec by spec, from the same data:

- a subtree without errors is validated as usual (its own checks run, and passed);
- a spec with errors below it is built field by field: each valid field validated on its own
  (pydantic's `validate_assignment`, so values are exactly what validation makes of them), each
  field that failed set to INVALID, specs below it built the same way;
- then its derivations and checks run, bottom-up as in validation. A check that touches an
  INVALID value raises Unusable and is skipped: no "must divide batch_size" when batch_size is
  itself wrong. Checks that do not depend on each other go through `base.each`, so one skipped
  check takes no other with it;
- a field a check found wrong is INVALID from then on, for the checks of the specs above it
  (`model.checkpoint` missing for a pretrained model must not read as a scratch model's
  missing tokenizer), and a spec wrong as a whole is INVALID in its parent.

The problems found this way are added to validation's own (duplicates are dropped when the
problems are printed). Only a failing recipe pays for this; a valid one is validated once.
"""

from __future__ import annotations

from typing import Any, get_args, get_origin

from pydantic import ValidationError

from . import walk
from .base import ASSIGNING, INVALID, Path, Problems, Spec, Unusable
from .errors import Positions, Problem, data_path, located


def unreached_problems(
    root: type[Spec], data: dict[str, Any], exc: ValidationError, positions: Positions
) -> list[Problem]:
    """The cross-field problems `exc` (the failed validation of `data` as `root`) did not get to check."""
    failed: set[Path] = set()  # fields whose value is wrong
    below: set[Path] = set()  # every path with a problem at or under it
    for error in exc.errors():
        path = data_path(error["loc"], data)
        if not isinstance((error.get("ctx") or {}).get("error"), Problems):  # a check's problems: the fields are fine
            failed.add(path)
        below.update(path[:i] for i in range(len(path) + 1))
    found: list[tuple[Path, tuple]] = []
    _Builder(failed, below, found).spec(root, data, ())
    return [located(path, problem, positions) for path, problem in found]


class _Builder:
    def __init__(self, failed: set[Path], below: set[Path], found: list[tuple[Path, tuple]]):
        self.failed, self.below, self.found = failed, below, found

    def spec(self, model: type[Spec], data: dict[str, Any], path: Path) -> Spec:
        """A spec whose fields are as validated where they are valid, and INVALID where not; its checks run."""
        spec = model.model_construct()
        context = {ASSIGNING: spec}
        for name, field in model.model_fields.items():
            where = (*path, name)
            if where in self.failed:
                value = INVALID
            elif where in self.below:
                annotation, _ = walk.field_annotation(field)
                value = self.value(annotation, data.get(name), where)
            else:
                raw = data[name] if name in data else field.get_default(call_default_factory=True)
                try:
                    model.__pydantic_validator__.validate_assignment(spec, name, raw, context=context)
                    continue
                except ValidationError:  # valid in the whole but not alone: nothing here depends on that
                    value = INVALID
            object.__setattr__(spec, name, value)
        return spec if self.run_checks(spec, path) else INVALID

    def value(self, annotation: Any, raw: Any, path: Path) -> Any:
        """A value with a problem below it: a spec or a list of specs is built around it; anything else is INVALID."""
        model = walk.pick_model(annotation, raw)
        if model is not None and isinstance(raw, dict):
            return self.spec(model, raw, path)
        if get_origin(annotation) is list and isinstance(raw, list):
            item, _ = walk.strip(get_args(annotation)[0])
            if walk.is_model(item) or walk.union_variants(item) is not None:
                return [self.item(item, value, (*path, i)) for i, value in enumerate(raw)]
        return INVALID

    def item(self, annotation: Any, raw: Any, path: Path) -> Any:
        if path in self.failed:
            return INVALID
        if path in self.below:
            return self.value(annotation, raw, path)
        model = walk.pick_model(annotation, raw)
        try:
            return model.model_validate(raw) if model is not None else INVALID
        except ValidationError:
            return INVALID

    def run_checks(self, spec: Spec, path: Path) -> bool:
        """Run the spec's checks; False when it is wrong as a whole."""
        try:
            spec.complete()  # derivations that touch INVALID make their fields INVALID (base.deriving)
        except Unusable:
            return True  # a derivation without that guard: what it would set is unknown, so nothing is checked
        problems = spec.problems()
        self.found.extend((path, problem) for problem in problems)
        for problem in problems:
            if not problem[0]:
                return False
            _invalidate(spec, tuple(problem[0]))
        return True


def _invalidate(spec: Spec, rel: Path) -> None:
    """Set the field at `rel` below `spec` to INVALID."""
    node: Any = spec
    try:
        for part in rel[:-1]:
            node = node[part] if isinstance(part, int) else getattr(node, part)
    except (Unusable, AttributeError, IndexError, TypeError):
        return  # already INVALID on the way, or not there
    last = rel[-1]
    if isinstance(node, Spec) and isinstance(last, str) and last in type(node).model_fields:
        object.__setattr__(node, last, INVALID)
    elif type(node) is list and isinstance(last, int) and -len(node) <= last < len(node):
        node[last] = INVALID
