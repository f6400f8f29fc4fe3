"""The JSON Schema is generated from the models, is fresh in the repository, and documents every key."""

import json
import subprocess
import sys
from pathlib import Path

from runner.recipe.jsonschema import fragment_schema, recipe_schema, schema_files

ROOT = Path(__file__).resolve().parents[2]


def test_committed_schemas_are_fresh():
    for name, text in schema_files().items():
        assert (ROOT / "schemas" / name).read_text() == text, f"schemas/{name} is stale: run `ccrun schema`"
    out = subprocess.run([sys.executable, "-m", "runner.cli", "schema", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_check_fails_on_stale_and_schema_writes(tmp_path):
    def ccrun(*args):
        return subprocess.run([sys.executable, "-m", "runner.cli", "schema", "--out-dir", str(tmp_path), *args],
                              capture_output=True, text=True)

    assert ccrun("--check").returncode == 1  # missing counts as stale
    assert list(tmp_path.iterdir()) == []  # --check writes nothing
    wrote = ccrun()
    assert wrote.returncode == 0 and "recipe.schema.json" in wrote.stdout
    assert ccrun("--check").returncode == 0
    (tmp_path / "recipe.schema.json").write_text("{}")
    stale = ccrun("--check")
    assert stale.returncode == 1 and "stale" in stale.stderr


def _properties(node, path="$"):
    if isinstance(node, dict):
        for key, prop in (node.get("properties") or {}).items():
            yield f"{path}.{key}", prop
        for key, value in node.items():
            yield from _properties(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _properties(value, f"{path}[{i}]")


def test_every_key_is_described():
    schema = recipe_schema()
    props = list(_properties(schema))
    assert len(props) > 150
    undescribed = [p for p, prop in props if "description" not in prop]
    assert undescribed == []
    for definition in schema["$defs"].values():
        assert definition.get("description"), definition.get("title")


def test_schema_knows_the_contract_names():
    schema = json.dumps(recipe_schema())
    for name in ("warmup_cosine", "warmup_linear", "adafactor", "variables", "humaneval", "apps", "loss_on",
                 "keep_best_by", "fsdp", "alphanum_fraction", "max_line_length"):
        assert f'"{name}"' in schema
    top = recipe_schema()
    assert top["additionalProperties"] is False and set(top["required"]) == {"name", "model"}


def test_fragment_schema_requires_nothing_but_tags():
    schema = fragment_schema()

    def walk(node):
        if isinstance(node, dict):
            if "required" in node:
                assert set(node["required"]) <= {"type", "suite"}
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    assert schema["additionalProperties"] is False, "fragments still reject unknown keys"
