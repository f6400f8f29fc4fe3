"""Schemathesis against the running server, from its own OpenAPI description: every operation gets
generated requests, valid ones (positive mode) and ones that break the schema (negative mode); none
is answered with a 5xx. Bounded: a fixed number of derandomized examples. Schemathesis's pytest
plugin does not run under pytest 9 (`Function._nodeid`), so its case strategies are driven by
Hypothesis here. (test_fuzz.py is the same check with a hand-written generator that also sends
non-JSON bytes and other content types.)"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

schemathesis = pytest.importorskip("schemathesis")


def test_no_generated_request_gets_a_5xx(server):
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {(op.method.upper(), op.path) for op in operations} >= {
        ("POST", "/models/{name}"), ("POST", "/v1/completions"), ("POST", "/v1/solve"), ("GET", "/info")}
    cases = st.one_of([op.as_strategy(generation_mode=mode) for op in operations
                       for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)])
    seen: dict[int, int] = {}

    @settings(max_examples=120, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=cases)
    def one(case):
        response = case.call(base_url=server.url, timeout=120)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert response.status_code < 500, (case.method, case.formatted_path, case.body, response.text[:300])

    one()
    print("statuses:", dict(sorted(seen.items())))
    assert seen.get(200, 0) >= 5 and seen.get(422, 0) >= 5, seen
