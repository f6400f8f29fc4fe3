"""JSON Schema of recipes, for editors (yaml-language-server) and other tools.

Two files: `recipe.schema.json` for runnable recipes, and `recipe-fragment.schema.json` for
pieces under recipes/base that other recipes extend (same keys and types, nothing required).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from .schema import Recipe

SCHEMA_URL = "https://json-schema.org/draft/2020-12/schema"


def recipe_schema() -> dict[str, Any]:
    schema = Recipe.model_json_schema(mode="validation")
    return {"$schema": SCHEMA_URL, "$id": "recipe.schema.json", **schema}


def fragment_schema() -> dict[str, Any]:
    schema = copy.deepcopy(recipe_schema())
    schema["$id"] = "recipe-fragment.schema.json"
    schema["title"] = "RecipeFragment"
    schema["description"] = "A piece of a recipe, for `extends`: every key and type of a recipe, none required."

    def drop_required(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("required"), list):
                # Union members keep their tag: editors need it to pick the member.
                tags = [k for k in node["required"] if k in ("type", "suite")]
                if tags:
                    node["required"] = tags
                else:
                    del node["required"]
            for value in node.values():
                drop_required(value)
        elif isinstance(node, list):
            for value in node:
                drop_required(value)

    drop_required(schema)
    return schema


def schema_files() -> dict[str, str]:
    def text(schema: dict[str, Any]) -> str:
        return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"

    return {"recipe.schema.json": text(recipe_schema()), "recipe-fragment.schema.json": text(fragment_schema())}
