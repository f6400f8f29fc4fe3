"""The HTTP API fuzzed from its own OpenAPI description (`app.openapi()`): bodies drawn from each
request schema (valid ones, and ones broken at a random spot: wrong types, out-of-range numbers,
unknown keys, truncated or non-JSON bytes), odd path parameters and content types. Whatever comes,
the answer is never a 5xx. Hypothesis drives it with a fixed budget of examples and a derandomized
seed, so the run is bounded and repeatable."""

import json
import string

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


def from_schema(schema: dict, spec: dict, depth: int = 0) -> st.SearchStrategy:
    """Values valid for a JSON Schema as pydantic writes it (the subset the API uses)."""
    if "$ref" in schema:
        return from_schema(spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]], spec, depth)
    if len(schema.get("allOf", ())) == 1:
        return from_schema(schema["allOf"][0], spec, depth)
    if "anyOf" in schema:
        return st.one_of([from_schema(s, spec, depth) for s in schema["anyOf"]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**40)), schema.get("maximum", 2**40))
    if kind == "number":
        low = schema.get("minimum", schema.get("exclusiveMinimum", -1e6))
        high = schema.get("maximum", schema.get("exclusiveMaximum", 1e6))
        return st.floats(low, high, exclude_min="exclusiveMinimum" in schema, exclude_max="exclusiveMaximum" in schema)
    if kind == "string":
        return st.text(string.printable + "é€\u2028𝕏", min_size=schema.get("minLength", 0),
                       max_size=min(schema.get("maxLength", 40), 40))
    if kind == "array":
        items = from_schema(schema.get("items", {}), spec, depth + 1)
        return st.lists(items, max_size=min(schema.get("maxItems", 4), 4))
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries(
            {k: from_schema(v, spec, depth + 1) for k, v in props.items() if k in required},
            optional={k: from_schema(v, spec, depth + 1) for k, v in props.items() if k not in required})
    return ANY_JSON


@st.composite
def broken(draw, valid: st.SearchStrategy) -> bytes:
    """A valid body, or one broken at one spot."""
    body = draw(valid)
    how = draw(st.sampled_from(["valid", "valid", "value", "unknown key", "drop key", "bytes", "truncate",
                                "other json"]))
    if how in ("value", "unknown key", "drop key") and isinstance(body, dict):
        target = body
        if body and draw(st.booleans()):  # one level down, where there is an object
            inner = [v for v in body.values() if isinstance(v, dict)]
            target = draw(st.sampled_from(inner)) if inner else body
        if how == "value" and target:
            target[draw(st.sampled_from(sorted(target)))] = draw(ANY_JSON)
        elif how == "unknown key":
            target[draw(st.text(max_size=8))] = draw(ANY_JSON)
        elif target:
            del target[draw(st.sampled_from(sorted(target)))]
    if how == "bytes":
        return draw(st.binary(max_size=64))
    if how == "other json":
        return json.dumps(draw(ANY_JSON)).encode()
    raw = json.dumps(body).encode()
    if how == "truncate":
        return raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    return raw


def test_the_api_never_answers_5xx(server):
    spec = httpx.get(server.url + "/openapi.json").json()
    posts = {path: ops["post"] for path, ops in spec["paths"].items() if "post" in ops}
    assert set(posts) == {"/models/{name}", "/v1/completions", "/v1/solve"}
    gets = [path for path, ops in spec["paths"].items() if "get" in ops]
    bodies = {path: broken(from_schema(op["requestBody"]["content"]["application/json"]["schema"], spec))
              for path, op in posts.items()}
    seen: dict[int, int] = {}

    @settings(max_examples=150, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def one(data):
        path = data.draw(st.sampled_from(sorted(posts) + gets))
        if path in gets:
            r = httpx.get(server.url + path, timeout=60)
        else:
            url = path.replace("{name}", data.draw(st.text(string.ascii_letters + "-_./~", min_size=1, max_size=30)))
            kind = data.draw(st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain",
                                              None, "application/xml"]))
            headers = {"content-type": kind} if kind else {}
            r = httpx.post(server.url + url, content=data.draw(bodies[path]), headers=headers, timeout=120)
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert r.status_code < 500, (path, r.status_code, r.text[:500])

    one()
    print("statuses:", dict(sorted(seen.items())))
    assert seen.get(200, 0) >= 10 and sum(v for k, v in seen.items() if 400 <= k < 500) >= 10, seen
