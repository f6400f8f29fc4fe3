"""Every e2e test's run directories: their summary.json validates against the generated JSON Schema
(schemas/summary.schema.json, an independent check of the Pydantic models that write it)."""

import json

import jsonschema
import pytest

from ..helpers import ROOT

SCHEMA = json.loads((ROOT / "schemas" / "summary.schema.json").read_text())


@pytest.fixture(autouse=True)
def summaries_follow_the_schema(tmp_path, request):
    yield
    found = sorted(tmp_path.rglob("summary.json"))
    if not getattr(request.module, "MAKES_RUN_DIRS", True):  # a benchmark's smoke run
        assert not found
        return
    assert found, "an e2e test makes at least one run directory"
    for path in found:
        try:
            jsonschema.validate(json.loads(path.read_text()), SCHEMA)
        except jsonschema.ValidationError as exc:
            pytest.fail(f"{path}: {exc.message} at {list(exc.absolute_path)}")
