"""APPS: generated programs run against each problem's test cases, scored as the reference
harness scores them (hendrycks/apps, eval/testing_util.py, run_test); strict accuracy, test-case
average and pass@k, overall and per difficulty.

Per test the result is -2 (the program does not compile or, call-based, does not load), -1
(runtime error or timeout: never a pass — GPT-Code-Clippy's scorer counted errors as passes),
False or True. Test-case average = mean over problems of the fraction of tests passed (a compile
error counts 0); strict accuracy = mean over problems of "all tests passed"; with several
samples, pass@k with correct = all passed.

As the reference does:
- every program runs after the reference's import HEADER (sys, time, itertools, collections,
  functools.lru_cache, math with sqrt/gcd/..., fractions, typing's List and Tuple, numpy as np,
  random, heapq): a LeetCode signature typed `List[int]` or a bare `gcd(a, b)` works;
- call-based (the problem has fn_name): the program is loaded as module `tmp_sol` (its
  `if __name__ == "__main__":` block does not run); if its text contains "class Solution" the
  function is `Solution().<fn_name>`, else the module's `<fn_name>`. A failure to load (an
  exception at the top level, a timeout there, no such function) is -2 for the whole program.
  A dict as first argument, or an expected value that is a dict (or a list whose first item is
  one), gets its JSON string keys turned back into ints; a returned tuple is compared as a list;
  the expected value may be wrapped in a one-element list (`[[1, 2]]` accepts `[1, 2]` and `(1, 2)`);
  a list of tuples equals the wrapped list of lists. The value crosses from the program to us
  typed (tuple, set, dict keys, numpy scalars as Python numbers) and is compared here with
  Python's `==`, never inside the program's interpreter.
- standard input: the output's lines are compared with the expected text, the first that holds
  decides "equal": (1) the texts after stripping, also with each output line stripped; (2) the
  output's lines equal the expected text's non-empty lines, stripped (the output's empty lines
  dropped); (3) every line one number, all close (numpy.allclose: rtol 1e-5, atol 1e-8);
  (4) the lines' whitespace-separated tokens equal; (5) all tokens numbers, equal once rounded
  to 3 decimals. A program ending with `sys.exit(...)`, any status, is judged on its output.

Deliberate differences from the reference (each one rejects what it wrongly accepts or accepts
a correct program it fails; none lets a wrong answer pass):
- (4) and (5) are compared in order; the reference compares them as *sets* (of lines, each a
  set of tokens), which accepts wrong answers: expected "1 2", output "2 1" (or "1 2 2") is
  True there and False here.
- a standard-input program runs as a whole program, `__main__`, on a real standard input. The
  reference wraps its body in a function `code()` of module `tmp_sol` and patches sys.stdin, so
  there `if __name__ == "__main__": main()` prints nothing (False), `sys.stdin.buffer.readline`
  raises (-1), `sys.stdin.readline()` returns lines without their "\\n", and a nested function's
  `global n` misses the body's `n` (-1); here each behaves as under a judge. A top-level
  `import` that fails is -1 here, -2 there (both score 0).
- a compile error is -2 for every test (the reference returns one -2; the averages are the same).
- call-based tests each run in a fresh process (the reference calls one loaded module and one
  `Solution()` for all tests, so state left by one test reaches the next there).
- a returned value of a type that is not plain data (an object, a numpy array) never equals the
  expected value here; the reference compares it with `==` (an array there usually raises: -1).
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

# The reference's header, byte for byte (testing_util.py, run_test: `sol = "import sys\n..."`).
HEADER = (
    "import sys\nimport time\nimport itertools\nfrom itertools import accumulate, product, permutations, "
    "combinations\nimport collections\nfrom collections import Counter, OrderedDict, deque, defaultdict, ChainMap\n"
    "from functools import lru_cache\nimport math\nfrom math import sqrt, sin, cos, tan, ceil, fabs, floor, gcd, exp, "
    "log, log2\nimport fractions\nfrom typing import List, Tuple\nimport numpy as np\nimport random\nimport heapq\n"
    "from heapq import *\n"
)

# Typed plain values as JSON, both ways: the parent encodes arguments, the program's harness
# decodes them and encodes the returned value, the parent decodes it. Containers are tagged so
# that a tuple stays a tuple and a dict keeps keys of any plain type; anything else is opaque.
CODEC = r"""
def _ccrun_encode(v):
    if v is None:
        return None
    for kind in (bool, int, float, str):  # subclasses (numpy.float64, IntEnum) as their base
        if isinstance(v, kind):
            return kind(v)
    for kind in (tuple, list, frozenset, set):
        if isinstance(v, kind):
            return {"t": kind.__name__, "v": [_ccrun_encode(x) for x in v]}
    if isinstance(v, dict):
        return {"t": "dict", "v": [[_ccrun_encode(k), _ccrun_encode(x)] for k, x in v.items()]}
    if type(v).__module__ == "numpy" and getattr(v, "ndim", None) == 0 and hasattr(v, "item"):
        return _ccrun_encode(v.item())  # numpy.int64, numpy.bool_: compare as the reference's == does
    return {"t": "opaque", "v": type(v).__name__}


def _ccrun_decode(v):
    if not isinstance(v, dict):
        return v
    items = v["v"]
    if v["t"] == "dict":
        return {_ccrun_decode(k): _ccrun_decode(x) for k, x in items}
    if v["t"] == "opaque":
        return object()  # equals nothing
    return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[v["t"]](_ccrun_decode(x) for x in items)
"""
_codec: dict[str, Any] = {}
exec(CODEC, _codec)  # noqa: S102 - our own source, the one definition both sides use
encode, decode = _codec["_ccrun_encode"], _codec["_ccrun_decode"]

LOADED, RESULT = "#ccrun-apps-loaded", "#ccrun-apps-result "
CALL_HARNESS = """
import json as _ccrun_json, types as _ccrun_types
{codec}
_ccrun_module = _ccrun_types.ModuleType("tmp_sol")
try:
    exec(compile({source!r}, "<solution>", "exec"), _ccrun_module.__dict__)
    _ccrun_method = getattr(_ccrun_module.Solution() if {has_class} else _ccrun_module, {fn!r})
except Exception:
    import traceback as _ccrun_traceback
    _ccrun_traceback.print_exc()
else:
    print("\\n" + {loaded!r}, flush=True)
    _ccrun_result = _ccrun_method(*_ccrun_decode(_ccrun_json.loads({args!r})))
    print("\\n" + {result!r} + _ccrun_json.dumps(_ccrun_encode(_ccrun_result)), flush=True)
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
        compile(HEADER + code, "<solution>", "exec")
    except (SyntaxError, ValueError):
        return False
    return True


def call_arguments(inputs: Any) -> Any:
    """The reference's arguments: "JSON forces dictionaries to have string keys; this undoes this
    (assuming a singleton list)" — a dict first argument becomes the only one, keys as ints."""
    try:
        if isinstance(inputs[0], dict):
            inputs = [{int(k): v for k, v in inputs[0].items()}]
    except Exception:  # as the reference: any failure leaves the inputs as they are
        pass
    return inputs


def call_expected(expected: Any) -> Any:
    """The reference's expected value: a dict, or a list whose first item is a dict, becomes
    `[dict with int keys]`."""
    try:
        if isinstance(expected, dict):
            expected = [{int(k): v for k, v in expected.items()}]
    except Exception:
        pass
    try:
        if isinstance(expected[0], dict):
            expected = [{int(k): v for k, v in expected[0].items()}]
    except Exception:
        pass
    return expected


def returns_equal(output: Any, expected: Any) -> bool:
    """The reference's call-based comparison of a returned value with `call_expected(...)`."""
    if isinstance(output, tuple):  # "ground truth sequences are not tuples"
        output = list(output)
    result = output == expected
    if isinstance(expected, list) and expected:
        result = result or output == expected[0]
    try:
        if isinstance(output[0], tuple):
            result = result or [list(x) for x in output] == expected[0]
    except Exception:
        pass
    return bool(result)


def _close(a: float, b: float) -> bool:
    """numpy.allclose for one pair (rtol 1e-5, atol 1e-8; nan equals nothing, inf only itself)."""
    if a == b:
        return True
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= 1e-8 + 1e-5 * abs(b)


def outputs_equal(got: str, expected: Any) -> bool:
    """The reference's standard-input comparison without its set leniencies (module docstring)."""
    if isinstance(expected, list):
        expected = "\n".join(str(x) for x in expected)
    expected = str(expected)
    output = got.splitlines()  # the reference captures stdout and takes .splitlines()
    if "\n".join(output).strip() == expected.strip():
        return True
    if "\n".join(line.strip() for line in output).strip() == expected.strip():
        return True
    if output == [expected]:
        return True
    lines = [x.strip() for x in expected.split("\n") if x]
    if output == lines:
        return True
    output = [line for line in output if line]
    if output == lines:
        return True
    try:
        if len(output) == len(lines) and all(_close(float(a), float(b)) for a, b in zip(output, lines, strict=True)):
            return True
    except ValueError:
        pass
    got_tokens = [t for t in (line.split() for line in output) if t]
    expected_tokens = [line.split() for line in lines]
    if got_tokens == expected_tokens:
        return True
    try:
        return ([[round(float(t), 3) for t in line] for line in got_tokens]
                == [[round(float(t), 3) for t in line] for line in expected_tokens])
    except (ValueError, OverflowError):
        return False


def _returned(stdout: str) -> Any:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT):
            return decode(json.loads(line[len(RESULT):]))
    raise ValueError("no result line")


def run_tests(code: str, problem: dict[str, Any], sandbox: Any, *, timeout_s: float) -> list[Any]:
    """Per-test results (-2, -1, False, True) of one program on one problem."""
    inputs, outputs, fn_name = tests_of(problem)
    if not compiles(code):
        return [COMPILE_ERROR] * max(len(inputs), 1)
    if fn_name:
        has_class = "class Solution" in code  # the reference decides on the text, as here
        programs = [CALL_HARNESS.format(
            codec=CODEC, source=HEADER + code, has_class=has_class, fn=fn_name, loaded=LOADED, result=RESULT,
            args=json.dumps(encode(call_arguments(x)))) for x in inputs]
        runs = sandbox.run_many(programs, timeout_s=timeout_s, workers=1)
        if any(LOADED not in r.stdout.splitlines() for r in runs):  # it did not load: one verdict for all
            return [COMPILE_ERROR] * max(len(inputs), 1)
        results: list[Any] = []
        for r, y in zip(runs, outputs, strict=False):
            try:
                results.append(returns_equal(_returned(r.stdout), call_expected(y)) if r.passed else RUNTIME_ERROR)
            except (ValueError, KeyError, TypeError):  # no result line: it printed over ours, or was cut
                results.append(RUNTIME_ERROR)
        return results
    stdins = [x if isinstance(x, str) else "\n".join(map(str, x)) for x in inputs]
    runs = sandbox.run_many([HEADER + code] * len(stdins), timeout_s=timeout_s, workers=1, stdin=stdins,
                            as_main=True)
    # The reference catches SystemExit and judges the output: a program may end with sys.exit(...).
    return [outputs_equal(r.stdout, y) if r.passed or (r.outcome == "exited_early" and r.detail.startswith(
        "SystemExit(")) else RUNTIME_ERROR for r, y in zip(runs, outputs, strict=False)]


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
