"""APPS: generated programs run against each problem's test cases; strict accuracy, test-case
average and pass@k, overall and per difficulty.

Per test the result is -2 (the program does not compile), -1 (runtime error or timeout: never a
pass — GPT-Code-Clippy's scorer counted errors as passes), False or True. Test-case average =
mean over problems of the fraction of tests passed (a compile error counts 0); strict accuracy =
mean over problems of "all tests passed"; with several samples, pass@k with correct = all passed.

Comparison of outputs (standard-input problems), in order, the first that holds decides "equal":
1. the texts equal after stripping surrounding whitespace;
2. the lines equal after stripping each line and dropping blank lines at the end;
3. the whitespace-separated tokens equal, numbers compared as floats with relative and absolute
   tolerance 1e-6 (the expected output's formatting of floats varies across APPS problems).
Left out on purpose: the original's comparison of *sets* of tokens, which accepts wrong answers
(any permutation of the expected words). Call-based problems compare the returned value with the
expected one after JSON round-tripping (tuples as lists); APPS often wraps the expected return
value in a one-element list, so [result] is accepted too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from ..data.apps import fn_name_of, solutions_of
from ..recipe.schema_data import ALL_DIFFICULTIES
from .humaneval import check_known
from .passk import aggregate

DIFFICULTIES = tuple(ALL_DIFFICULTIES)  # results.json has a block per difficulty, in the schema's order
COMPILE_ERROR, RUNTIME_ERROR = -2, -1

CALL_HARNESS = """

import json as __json
__args = __json.loads({args!r})
__fn = Solution().{fn} if "Solution" in globals() and hasattr(Solution, {fn!r}) else {fn}
__result = __fn(*__args)
print(__json.dumps(__result, default=list))
"""


def tests_of(problem: dict[str, Any]) -> tuple[list[Any], list[Any], str | None]:
    """(inputs, outputs, fn_name) of a problem's input_output field."""
    raw = problem.get("input_output")
    try:
        io = json.loads(raw) if isinstance(raw, str) and raw.strip() else (raw or {})
    except ValueError:
        io = {}
    return list(io.get("inputs") or []), list(io.get("outputs") or []), fn_name_of(raw)


def compiles(code: str) -> bool:
    try:
        compile(code, "<solution>", "exec")
    except (SyntaxError, ValueError):
        return False
    return True


def _number(token: str) -> float | None:
    try:
        return float(token)
    except ValueError:
        return None


def outputs_equal(got: str, expected: Any) -> bool:
    if isinstance(expected, list):
        expected = "\n".join(str(x) for x in expected)
    expected = str(expected)
    if got.strip() == expected.strip():
        return True

    def lines(text: str) -> list[str]:
        out = [line.strip() for line in text.strip().splitlines()]
        while out and not out[-1]:
            out.pop()
        return out

    if lines(got) == lines(expected):
        return True
    a, b = got.split(), expected.split()
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if x == y:
            continue
        fx, fy = _number(x), _number(y)
        if fx is None or fy is None or not math.isclose(fx, fy, rel_tol=1e-6, abs_tol=1e-6):
            return False
    return True


def returns_equal(got_stdout: str, expected: Any) -> bool:
    try:
        got = json.loads(got_stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return False
    expected = json.loads(json.dumps(expected, default=list))
    return got == expected or [got] == expected


def run_tests(code: str, problem: dict[str, Any], sandbox: Any, *, timeout_s: float) -> list[Any]:
    """Per-test results (-2, -1, False, True) of one program on one problem."""
    inputs, outputs, fn_name = tests_of(problem)
    if not compiles(code):
        return [COMPILE_ERROR] * max(len(inputs), 1)
    if fn_name:
        programs = [code + CALL_HARNESS.format(args=json.dumps(x), fn=fn_name) for x in inputs]
        runs = sandbox.run_many(programs, timeout_s=timeout_s, workers=1)
        return [returns_equal(r.stdout, y) if r.passed else RUNTIME_ERROR for r, y in zip(runs, outputs, strict=False)]
    stdins = [x if isinstance(x, str) else "\n".join(map(str, x)) for x in inputs]
    runs = sandbox.run_many([code] * len(stdins), timeout_s=timeout_s, workers=1, stdin=stdins, as_main=True)
    # A whole program may end with sys.exit(0) after printing: a clean exit is a normal end here.
    return [outputs_equal(r.stdout, y) if r.passed or r.clean_exit else RUNTIME_ERROR
            for r, y in zip(runs, outputs, strict=False)]


def score(
    samples: Sequence[dict[str, Any]],
    problems: dict[str, dict[str, Any]],
    sandbox: Any,
    *,
    timeout_s: float = 4.0,
    workers: int = 2,
    ks: Sequence[int] = (1,),
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Score samples `{"task_id": problem_id, "completion": program}`: per sample its per-test
    results; overall and per difficulty: strict accuracy, test-case average, pass@k."""
    from concurrent.futures import ThreadPoolExecutor

    check_known(samples, problems, "problem")

    def one(sample):
        return run_tests(sample["completion"], problems[str(sample["task_id"])], sandbox, timeout_s=timeout_s)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        per_sample = list(pool.map(one, samples))
    scored = []
    for s, results in zip(samples, per_sample, strict=True):
        passed = bool(results) and all(r is True for r in results)
        scored.append({**s, "results": results, "passed": passed})
    return scored, summarise(scored, problems, ks)


def summarise(scored: list[dict[str, Any]], problems: dict[str, dict[str, Any]], ks: Sequence[int]) -> dict[str, Any]:
    by_task: dict[str, list[dict[str, Any]]] = {}
    for s in scored:
        by_task.setdefault(str(s["task_id"]), []).append(s)

    def block(tasks: list[str]) -> dict[str, Any]:
        if not tasks:
            return {"problems": 0}
        first = [by_task[t][0] for t in tasks]  # strict accuracy and test average use the first sample
        average = sum(sum(r is True for r in s["results"]) / max(len(s["results"]), 1) for s in first) / len(first)
        strict = sum(s["passed"] for s in first) / len(first)
        counts = {t: (len(by_task[t]), sum(s["passed"] for s in by_task[t])) for t in tasks}
        return {"problems": len(tasks), "strict_accuracy": strict, "test_case_average": average,
                **aggregate(counts, ks)}

    out = {"overall": block(list(by_task))}
    for level in DIFFICULTIES:
        out[level] = block([t for t in by_task if problems[t].get("difficulty") == level])
    return out


def problems_by_id(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """APPS rows keyed by problem_id (as a string), solutions decoded."""
    out = {}
    for row in rows:
        out[str(row["problem_id"])] = {**row, "solutions": solutions_of(row.get("solutions"))}
    return out
