"""APPS scoring against the reference harness (hendrycks/apps, eval/testing_util.py, run_test).

Each row: a problem's tests, a program, the verdict list the reference's run_test returns for
it, and the reference's line that decides it (quoted from testing_util.py). Ours must equal it
on every row. A compile error is one -2 in the reference's list; ours repeats it per test (the
averages are the same), so ours is compared after folding an all -2 list to one -2.
The last table holds the deliberate differences listed in runner/evals/apps.py.
"""

import json
import warnings

import pytest

from runner.evals.apps import HEADER, outputs_equal, run_tests
from runner.evals.sandbox import Sandbox

TIMEOUT_S = 4.0  # the reference's `timeout = 4  # seconds`
# The rows whose program never ends are cut off at this instead: the verdict of a program that never
# ends does not depend on how long one waits for it (4 s each only made the table slow).
ENDLESS_TIMEOUT_S = 0.5

HEADER_LINE = 'sol = "import sys\\nimport time\\n ... from typing import List, Tuple\\nimport numpy as np\\n ...'
LOAD = 'tmp_sol = RuntimeModule.from_string("tmp_sol", "", sol)'
WITH_CLASS = 'if "class Solution" not in test: tmp = tmp_sol  else: tmp = tmp_sol.Solution()'
EQUAL = 'tmp_result = output == in_outs["outputs"][index]'
WRAPPED = 'tmp_result = tmp_result or (output == in_outs["outputs"][index][0])'
TUPLE = 'if isinstance(output, tuple): output = list(output)'
TUPLES = 'tmp_result = tmp_result or ([list(x) for x in output] == in_outs["outputs"][index][0])'
DICT_IN = 'inputs = [{int(k): v for k,v in inputs[0].items()}]'
DICT_OUT = 'in_outs["outputs"][index] = [{int(k): v for k,v in in_outs["outputs"][index].items()}]'
CALL_ERROR = 'except Exception as e: ... print(f"Standard input runtime error or time limit exceeded error = {e}"); results.append(-1)'
LOAD_ERROR = 'except Exception as e: ... print(f"type 0 compilation error = {e}"); results.append(-2); return results'
NO_METHOD = 'method = getattr(tmp, method_name) / except: ... print(f"unable to get function error = {e}"); results.append(-2)'
STDIN_COMPILE = 'print(f"type 1 compilation error = {e}"); results.append(-2)'
STDIN_ERROR = 'print(f"Call-based runtime error or time limit exceeded error = {repr(e)}{e}"); results.append(-1)'
SYSTEM_EXIT = "def _inner_call_method(_method): try: return _method() except SystemExit as e: pass"
STRIPPED = 'custom_compare_: output_2 = [o.lstrip().rstrip() for o in output]; stripped_string_compare("\\n".join(output_2), ground_truth)'
LINES = ('in_outs["outputs"][index] = list(map(lambda x:x.strip(), list(filter(len, ...split("\\n")))));'
         ' tmp_result = tmp_result or (output == in_outs["outputs"][index])')
NONEMPTY = 'output = list(filter(len, output)) ... tmp_result = tmp_result or (output == in_outs["outputs"][index])'
FLOATS = "tmp_result = tmp_result or ((len(output_float) == len(gt_float)) and np.allclose(output_float, gt_float))"
TOKENS = "tmp_result = (set(frozenset(s) for s in output) == set(frozenset(s) for s in in_outs[\"outputs\"][index]))"
ROUNDED = "set(frozenset(round(float(t),3) for t in s) for s in output) == set(frozenset(round(float(t),3) ...)))"
NOTHING = "results.append(tmp_result)  # no check held: False"


def call(fn, inputs, outputs):
    return {"fn_name": fn, "inputs": inputs, "outputs": outputs}


def stdin(inputs, outputs):
    return {"inputs": inputs, "outputs": outputs}


# (name, input_output, program, the reference's verdicts, the reference's deciding line)
CASES = [
    ("class Solution, typing names from the header",
     call("total", [[[1, 2, 3]], [[]]], [[6], [0]]),
     "class Solution:\n    def total(self, nums: List[int]) -> int:\n        return sum(nums)\n",
     [True, True], f"{HEADER_LINE} / {WITH_CLASS} / {WRAPPED}"),
    ("module function, gcd and Tuple from the header, wrapped and bare expected values",
     call("g", [[12, 18], [8, 12]], [[6], 4]),
     "def g(a: int, b: int) -> int:\n    t: Tuple[int, int] = (a, b)\n    return gcd(*t)\n",
     [True, True], f"{HEADER_LINE} / {EQUAL} / {WRAPPED}"),
    ("np and sqrt from the header",
     call("f", [[4], [9]], [[6], [3]]),
     "def f(n):\n    return int(np.sum(np.arange(n))) if n == 4 else int(sqrt(n))\n",
     [True, True], f"{HEADER_LINE} / {WRAPPED}"),
    ("a dict argument gets int keys",
     call("weigh", [[{"2": 3, "10": 1}]], [[16]]),
     "def weigh(d):\n    return sum(k * v for k, v in d.items())\n",
     [True], f"{DICT_IN} / {WRAPPED}"),
    ("a dict expected value gets int keys",
     call("invert", [[{"1": 2}], [{"5": 7}]], [{"2": 1}, [{"7": 5}]]),
     "def invert(d):\n    return {v: k for k, v in d.items()}\n",
     [True, True], f"{DICT_IN} / {DICT_OUT} / {WRAPPED}"),
    ("a returned tuple is a list",
     call("mm", [[[3, 1, 2]], [[5, 4]]], [[[1, 3]], [4, 5]]),
     "def mm(xs):\n    return (min(xs), max(xs))\n",
     [True, True], f"{TUPLE} / {WRAPPED} / {EQUAL}"),
    ("a list of tuples equals only the wrapped list of lists",
     call("pairs", [[2], [2]], [[[[0, 0], [1, 1]]], [[0, 0], [1, 1]]]),
     "def pairs(n):\n    return [(i, i) for i in range(n)]\n",
     [True, False], f"{TUPLES} (only against outputs[index][0])"),
    ("a set is not a list",
     call("uniq", [[[1, 2, 2]]], [[[1, 2]]]),
     "def uniq(xs):\n    return set(xs)\n",
     [False], f"{EQUAL} / {WRAPPED}: a set never equals a list"),
    ("a wrong answer",
     call("total", [[[1, 2]]], [[4]]),
     "class Solution:\n    def total(self, nums):\n        return sum(nums)\n",
     [False], f"{EQUAL} / {WRAPPED}"),
    ("the program's __main__ block does not run (module tmp_sol)",
     call("f", [[1]], [[1]]),
     "def f(x):\n    return x\nif __name__ == '__main__':\n    raise ValueError\n",
     [True], LOAD),
    ("a runtime error in one call",
     call("inv", [[1], [0]], [[1], [0]]),
     "def inv(x):\n    return 1 // x\n",
     [True, -1], CALL_ERROR),
    ("a timeout in a call",
     call("f", [[1]], [[1]]),
     "def f(x):\n    while True:\n        pass\n",
     [-1], f"signal.alarm(timeout) ... {CALL_ERROR}"),
    ("an error at load time",
     call("f", [[1], [2]], [[1], [2]]),
     "def f(x):\n    return x\nprint(undefined_name)\n",
     [-2], LOAD_ERROR),
    ("a timeout at load time",
     call("f", [[1]], [[1]]),
     "def f(x):\n    return x\nwhile True:\n    pass\n",
     [-2], f"signal.alarm(timeout) / {LOAD} / {LOAD_ERROR}"),
    ("no such function",
     call("f", [[1]], [[1]]),
     "def g(x):\n    return x\n",
     [-2], NO_METHOD),
    ("a syntax error, call-based",
     call("f", [[1]], [[1]]),
     "def f(x)\n    return x\n",
     [-2], LOAD_ERROR),
    ("standard input, several lines",
     stdin(["3\n1\n2\n3\n", "1\n5\n"], ["2\n4\n6\n", "10\n"]),
     "n = int(input())\nfor _ in range(n):\n    print(2 * int(input()))\n",
     [True, True], STRIPPED),
    ("standard input, header names gcd, sqrt, np, Counter",
     stdin(["12 18\n"], ["6 4 24 2\n"]),
     "a, b = map(int, input().split())\nprint(gcd(a, b), int(sqrt(a + 4)), np.prod([2, 3, 4]), "
     "Counter([a, a, b])[a])\n",
     [True], f"{HEADER_LINE} / {STRIPPED}"),
    ("trailing spaces in the output",
     stdin(["1\n"], ["1 2\n3\n"]),
     "input()\nprint('1 2 ')\nprint('3   ')\n",
     [True], STRIPPED),
    ("trailing spaces in the expected output",
     stdin(["1\n"], ["1 2 \n3\n"]),
     "input()\nprint('1 2')\nprint(3)\n",
     [True], LINES),
    ("an empty line inside the output",
     stdin(["1\n"], ["1\n2\n"]),
     "input()\nprint(1)\nprint()\nprint(2)\n",
     [True], NONEMPTY),
    ("a float per line, close",
     stdin(["3\n"], ["0.3333333333\n"]),
     "print(round(1 / int(input()), 6))\n",
     [True], FLOATS),
    ("a float per line, not close",
     stdin(["3\n"], ["0.33\n"]),
     "print(0.34)\n",
     [False], NOTHING),
    ("several floats on a line, equal to 3 decimals",
     stdin(["2\n"], ["0.500 0.250\n"]),
     "input()\nprint(0.5, 0.25)\n",
     [True], ROUNDED),
    ("extra spaces between tokens",
     stdin(["2\n"], ["1 2\n"]),
     "input()\nprint('1  2')\n",
     [True], TOKENS),
    ("a wrong answer on standard input",
     stdin(["2 2\n", "1 1\n"], ["4\n", "3\n"]),
     "a, b = map(int, input().split())\nprint(a + b)\n",
     [True, False], NOTHING),
    ("sys.exit after the answer, any status",
     stdin(["1\n", "2\n"], ["1\n", "2\n"]),
     "import sys\nx = input()\nprint(x)\nsys.exit(0 if x == '1' else 3)\n",
     [True, True], SYSTEM_EXIT),
    ("a runtime error on standard input",
     stdin(["1\n", "0\n"], ["1\n", "0\n"]),
     "print(1 // int(input()))\n",
     [True, -1], STDIN_ERROR),
    ("a timeout on standard input",
     stdin(["1\n"], ["1\n"]),
     "while True:\n    pass\n",
     [-1], f"signal.alarm(timeout) ... {STDIN_ERROR}"),
    ("a syntax error on standard input",
     stdin(["1\n", "2\n"], ["1\n", "2\n"]),
     "print(int(input())\n",
     [-2], STDIN_COMPILE),
]

# (name, input_output, program, the reference's verdicts, ours, why) — runner/evals/apps.py lists them
DELIBERATE = [
    ("tokens compared in order, not as a set", stdin(["1\n"], ["1 2\n"]), "print('2 1')\n",
     [True], [False], TOKENS),
    ("lines compared in order, not as a set", stdin(["1\n"], ["1\n2\n"]), "print(2)\nprint(1)\n",
     [True], [False], TOKENS),
    ("a repeated number is not the number", stdin(["1\n"], ["1.5\n"]), "print(1.5, 1.5)\n",
     [True], [False], TOKENS),
    ("a __main__ block runs", stdin(["2\n"], ["4\n"]),
     "def main():\n    print(2 * int(input()))\nif __name__ == '__main__':\n    main()\n",
     [False], [True], "new_test += \"def code():\\n\" / RuntimeModule.from_string(\"tmp_sol\", ...): __name__ is tmp_sol"),
    ("sys.stdin.buffer is there", stdin(["2\n"], ["4\n"]),
     "import sys\nprint(2 * int(sys.stdin.buffer.readline()))\n",
     [-1], [True], "@patch('sys.stdin', StringIO(inputs)): a StringIO has no .buffer"),
]


@pytest.fixture(scope="module")
def sandbox():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return Sandbox()


def folded(results):
    return [-2] if results and all(r == -2 for r in results) else results


def verdicts(sandbox, rows):
    from concurrent.futures import ThreadPoolExecutor

    def one(row):
        timeout_s = ENDLESS_TIMEOUT_S if "timeout" in row[0] else TIMEOUT_S
        return run_tests(row[2], {"input_output": json.dumps(row[1])}, sandbox, timeout_s=timeout_s)

    with ThreadPoolExecutor(2) as pool:
        return [folded(r) for r in pool.map(one, rows)]


def test_ours_equals_the_reference_on_every_case(sandbox):
    ours = verdicts(sandbox, CASES)
    wrong = [(name, f"reference {want} ({why})", f"ours {got}")
             for (name, _, _, want, why), got in zip(CASES, ours, strict=True) if got != want]
    assert not wrong, wrong


def test_deliberate_differences_are_as_documented(sandbox):
    ours = verdicts(sandbox, DELIBERATE)
    for (name, _, _, reference, want, why), got in zip(DELIBERATE, ours, strict=True):
        assert got == want != reference, (name, why, got)


def test_header_is_the_references():
    assert HEADER.splitlines() == [
        "import sys", "import time", "import itertools",
        "from itertools import accumulate, product, permutations, combinations", "import collections",
        "from collections import Counter, OrderedDict, deque, defaultdict, ChainMap",
        "from functools import lru_cache", "import math",
        "from math import sqrt, sin, cos, tan, ceil, fabs, floor, gcd, exp, log, log2", "import fractions",
        "from typing import List, Tuple", "import numpy as np", "import random", "import heapq",
        "from heapq import *",
    ]
    assert HEADER.endswith("\n")


@pytest.mark.parametrize(("got", "expected", "equal"), [
    ("3\n", "3", True),
    ("1 2\n3 4   \n\n", "1 2\n3 4", True),
    ("a b", ["a b"], True),
    ("", "0", False),
    ("1e-9\n", "0\n", True),  # numpy.allclose's atol 1e-8
    ("nan\n", "nan\n", True),  # the stripped texts are equal before any number is read
    ("inf 1\n", "inf 1.0\n", True),
    ("0.0004\n", "0.0006\n", False),  # rtol 1e-5 of 0.0006 + 1e-8 is far less
])
def test_output_comparison(got, expected, equal):
    assert outputs_equal(got, expected) is equal
