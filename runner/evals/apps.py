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
  a list of tuples equals the wrapped list of lists. One loaded module and one `Solution()`
  serve all of a sample's tests, so state left by one test reaches the next, as there.
- one sandboxed process runs all tests of a sample (the reference runs them in one process too);
  a test that kills it (timeout, crash, `os._exit`) is -1 and the tests after it run in a fresh one.

Each verdict stays the parent's, so no program can forge it (see sandbox.py): the process never
sees the expected outputs. A call's arguments go in and its returned value comes back through
the channel (runner/evals/channel.py) as plain data (tuple, set, dict keys, numpy scalars as
Python numbers), compared here with Python's `==`, never inside the program's interpreter; a
standard-input test's output comes back as text, compared here.
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
- a standard-input program's tests share the process, each in a fresh `__main__` namespace with
  its own standard input and output (files at descriptors 0 and 1): modules it imported stay
  imported, as in the reference, where the module is loaded once.
- a returned value of a type that is not plain data (an object, a numpy array) never equals the
  expected value here; the reference compares it with `==` (an array there usually raises: -1).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

from ..data.apps import fn_name_of, solutions_of
from .channel import ChannelError, decode, encode
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

# What HEADER imports, imported by a sandboxed process before its program arrives (see Sandbox._take).
HEADER_MODULES = ("time", "itertools", "collections", "functools", "math", "fractions", "typing", "numpy", "random",
                  "heapq")


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


def _restarted(problem_tests: int, timeout_s: float, ask: Callable[[Any, int], Any],
               open_session: Callable[[float], Any]) -> list[Any]:
    """Per-test results of one program served by sessions: one process for all tests, a fresh one
    after a test that killed it (timeout, crash, os._exit) for the tests after it."""
    results: list[Any] = []
    while len(results) < problem_tests:
        with open_session(timeout_s * (problem_tests - len(results) + 1)) as session:
            loaded = session.ask(None, timeout_s)
            if not isinstance(loaded, dict) or loaded.get("loaded") is not True:
                return results + [COMPILE_ERROR if not results else RUNTIME_ERROR] * (problem_tests - len(results))
            while len(results) < problem_tests and session.alive:
                results.append(ask(session, len(results)))
    return results


def run_tests(code: str, problem: dict[str, Any], sandbox: Any, *, timeout_s: float) -> list[Any]:
    """Per-test results (-2, -1, False, True) of one program on one problem."""
    inputs, outputs, fn_name = tests_of(problem)
    if not compiles(code):
        return [COMPILE_ERROR] * max(len(inputs), 1)
    count = min(len(inputs), len(outputs))
    if fn_name:
        has_class = "class Solution" in code  # the reference decides on the text, as here

        def open_call(cpu_s: float) -> Any:
            return sandbox.session(HEADER + code, mode="call", module="tmp_sol", fn=fn_name, cls=has_class,
                                   cpu_s=cpu_s, preload=HEADER_MODULES)

        def call(session: Any, i: int) -> Any:
            reply = session.ask({"args": encode(call_arguments(inputs[i]))}, timeout_s)
            if not isinstance(reply, dict) or "ok" not in reply:
                return RUNTIME_ERROR  # it raised, died, timed out or broke the channel
            try:
                return returns_equal(decode(reply["ok"]), call_expected(outputs[i]))
            except ChannelError:
                return RUNTIME_ERROR

        # A program that does not load (an exception at the top level, no such function) is -2 for all.
        return _restarted(count, timeout_s, call, open_call) if count else []
    stdins = [x if isinstance(x, str) else "\n".join(map(str, x)) for x in inputs]

    def open_stdin(cpu_s: float) -> Any:
        return sandbox.session(HEADER + code, mode="stdin", cpu_s=cpu_s, preload=HEADER_MODULES)

    def feed(session: Any, i: int) -> Any:
        reply = session.ask({"stdin": stdins[i]}, timeout_s)
        # The reference catches SystemExit and judges the output: a program may end with sys.exit(...).
        if not isinstance(reply, dict) or reply.get("status") not in ("done", "exit") or not isinstance(
                reply.get("out"), str):
            return RUNTIME_ERROR
        return outputs_equal(reply["out"], outputs[i])

    return _restarted(count, timeout_s, feed, open_stdin) if count else []


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
