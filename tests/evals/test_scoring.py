"""HumanEval and APPS scoring through the sandbox, and `ccrun eval-samples` as a user runs it."""

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from runner.evals.apps import COMPILE_ERROR, RUNTIME_ERROR, outputs_equal, problems_by_id
from runner.evals.apps import score as score_apps
from runner.evals.humaneval import SampleError, load_problems
from runner.evals.humaneval import score as score_humaneval
from runner.evals.sandbox import Sandbox

from ..helpers import ccrun_here

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sandbox():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # e.g. the interpreter note on this machine
        return Sandbox()


def test_humaneval_scores_and_pass_at_k(sandbox):
    problems = load_problems()
    tasks = sorted(problems)[:3]
    samples = []
    for t in tasks:
        samples.append({"task_id": t, "completion": problems[t]["canonical_solution"]})  # right
        samples.append({"task_id": t, "completion": "    pass\n"})  # wrong
    samples.append({"task_id": tasks[0], "completion": "    import sys; sys.exit(0)\n"})  # exits before the tests
    scored, summary = score_humaneval(samples, problems, sandbox, workers=2, ks=(1, 2, 3))
    assert [s["passed"] for s in scored] == [True, False] * 3 + [False]
    assert scored[-1]["outcome"] == "exited_early"
    # tasks[0]: n=3, c=1 → pass@1 = 1/3, pass@2 = 2/3; others n=2, c=1 → pass@1 = 1/2, pass@2 = 1
    assert summary["per_task"][tasks[0]]["pass@1"] == pytest.approx(1 / 3)
    assert summary["pass_at_k"][1] == pytest.approx((1 / 3 + 0.5 + 0.5) / 3)
    assert summary["pass_at_k"][2] == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert 3 in summary["omitted"], "pass@3 needs 3 samples for every task"
    with pytest.raises(SampleError, match="unknown task ids: HumanEval/999"):
        score_humaneval([{"task_id": "HumanEval/999", "completion": ""}], problems, sandbox)
    with pytest.raises(SampleError, match="unknown task ids: 0"):  # an integer id is APPS's, never HumanEval's
        score_humaneval([{"task_id": 0, "completion": ""}], problems, sandbox)


STDIN_PROBLEM = {
    "problem_id": 1, "question": "sum two numbers", "difficulty": "introductory", "starter_code": "",
    "input_output": json.dumps({"inputs": ["1 2\n", "3 4\n", "10 -5\n", "0.5 0.25\n"], "outputs": ["3\n", "7\n", "5\n", "0.75\n"]}),
}
CALL_PROBLEM = {
    "problem_id": 2, "question": "double it", "difficulty": "interview", "starter_code": "class Solution:\n    def double(self, x):\n",
    "input_output": json.dumps({"fn_name": "double", "inputs": [[1], [2], [5]], "outputs": [[2], [4], [10]]}),
}

STDIN_RIGHT = "a, b = map(float, input().split())\nr = a + b\nprint(int(r) if r == int(r) else r)\n"
STDIN_MAIN = "import sys\ndef main():\n    a, b = map(float, input().split())\n    r = a + b\n    print(int(r) if r == int(r) else r)\n    sys.exit(0)\nif __name__ == '__main__':\n    main()\n"
STDIN_PARTLY = "a, b = map(int, input().split())\nprint(a + b if a < 5 else 0)\n"  # right on 2 of 4, crashes on floats
STDIN_SLOW = "while True:\n    pass\n"
STDIN_BROKEN = "print(\n"
CALL_RIGHT = "class Solution:\n    def double(self, x):\n        return 2 * x\n"
CALL_WRONG = "class Solution:\n    def double(self, x):\n        return x + 2\n"  # right only for x = 2
CALL_CRASH = "class Solution:\n    def double(self, x):\n        return 1 / 0\n"


def test_apps_strict_accuracy_and_test_case_average(sandbox):
    problems = problems_by_id([STDIN_PROBLEM, CALL_PROBLEM])
    samples = [
        {"task_id": "1", "completion": STDIN_PARTLY},
        {"task_id": "2", "completion": CALL_WRONG},
    ]
    scored, summary = score_apps(samples, problems, sandbox, timeout_s=2.0, workers=2)
    assert scored[0]["results"] == [True, True, False, RUNTIME_ERROR]
    assert scored[1]["results"] == [False, True, False]
    o = summary["overall"]
    assert o["strict_accuracy"] == 0.0
    assert o["test_case_average"] == pytest.approx((2 / 4 + 1 / 3) / 2)
    assert summary["introductory"]["test_case_average"] == pytest.approx(0.5)
    assert summary["interview"]["test_case_average"] == pytest.approx(1 / 3)
    assert summary["competition"] == {"problems": 0}


def test_apps_right_crashing_slow_and_broken_programs(sandbox):
    problems = problems_by_id([STDIN_PROBLEM, CALL_PROBLEM])
    samples = [
        {"task_id": "1", "completion": STDIN_RIGHT},
        {"task_id": "1", "completion": STDIN_MAIN},  # a __main__ block and sys.exit(0): a normal whole program
        {"task_id": "1", "completion": STDIN_SLOW},
        {"task_id": "1", "completion": STDIN_BROKEN},
        {"task_id": "2", "completion": CALL_RIGHT},
        {"task_id": "2", "completion": CALL_CRASH},
    ]
    # 0.6 s: the endless program is cut off 4 times; the others answer each test in milliseconds
    scored, summary = score_apps(samples, problems, sandbox, timeout_s=0.6, workers=2, ks=(1, 2))
    results = [s["results"] for s in scored]
    assert results[0] == results[1] == [True] * 4
    assert results[2] == [RUNTIME_ERROR] * 4  # timeouts are never passes
    assert results[3] == [COMPILE_ERROR] * 4
    assert results[4] == [True] * 3 and results[5] == [RUNTIME_ERROR] * 3
    # strict accuracy and test-case average count each problem's first sample; pass@k all of them
    assert summary["overall"]["strict_accuracy"] == 1.0
    assert summary["overall"]["pass_at_k"][1] == pytest.approx((2 / 4 + 1 / 2) / 2)


def test_output_comparison_leniencies():
    assert outputs_equal("3\n", "3")
    assert outputs_equal("1 2\n3 4   \n\n", "1 2\n3 4")
    assert outputs_equal("0.3333333", "0.33333333")  # one number a line: numpy.allclose, as the reference
    assert outputs_equal("a b", ["a b"])
    assert not outputs_equal("b a", "a b"), "no set comparison: order matters"
    assert not outputs_equal("", "0")


def test_cli_eval_samples(tmp_path):
    problems = load_problems()
    tasks = sorted(problems)[:2]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": t, "completion": problems[t]["canonical_solution"]}) + "\n"
                               for t in tasks))

    def ccrun(*args):
        return subprocess.run([sys.executable, "-m", "runner.cli", "eval-samples", *args], cwd=tmp_path,
                              capture_output=True, text=True)

    ok = ccrun("samples.jsonl", "--k", "1", "--out", "res")
    assert ok.returncode == 0, ok.stderr
    assert "humaneval: 2 samples; pass@1 1.0000" in ok.stdout
    rows = [json.loads(line) for line in (tmp_path / "res" / "results.jsonl").read_text().splitlines()]
    assert [r["passed"] for r in rows] == [True, True] and rows[0]["outcome"] == "passed"
    assert json.loads((tmp_path / "res" / "results.json").read_text())["pass_at_k"] == {"1": 1.0}
    # the refusals in this process (what they print and exit is what a fresh `ccrun` gives: tests/helpers.py)
    again = ccrun_here("eval-samples", "samples.jsonl", "--k", "1", "--out", "res", cwd=tmp_path)
    assert again.returncode == 2 and "not empty" in again.stderr
    (tmp_path / "bad.jsonl").write_text('{"task_id": "HumanEval/0"}\n')
    bad = ccrun_here("eval-samples", "bad.jsonl", "--out", "r2", cwd=tmp_path)
    assert bad.returncode == 2 and "bad.jsonl:1: needs string fields" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_eval_samples_warns_in_plain_lines_and_says_which_k_was_left_out(tmp_path):
    """No bubblewrap on PATH: the sandbox's warning is one `warning:` line (not Python's
    `file:line: RuntimeWarning`); a k larger than the samples per task is left out, and said so."""
    import os

    problems = load_problems()
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"task_id": "HumanEval/0", "completion": problems["HumanEval/0"]["canonical_solution"]})
                       + "\n")
    out = subprocess.run([sys.executable, "-m", "runner.cli", "eval-samples", "samples.jsonl", "--k", "1,10",
                          "--out", "res"], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PATH": str(tmp_path / "no-such-dir")})
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert any(line.startswith("warning: sandbox: bubblewrap (bwrap) is missing") for line in lines), out.stderr
    assert "warning: pass@10 needs 10 samples per task; 1 of 1 tasks have fewer (HumanEval/0 has 1): left out" in lines
    assert "RuntimeWarning" not in out.stderr and "Traceback" not in out.stderr
    assert "pass@1 1.0000" in out.stdout


def test_cli_eval_samples_apps(tmp_path):
    (tmp_path / "apps.jsonl").write_text("".join(json.dumps(p) + "\n" for p in (STDIN_PROBLEM, CALL_PROBLEM)))
    # APPS's own problem_id is an integer: a sample may name it as one (compared as strings)
    (tmp_path / "s.jsonl").write_text(json.dumps({"task_id": 1, "completion": STDIN_RIGHT}) + "\n"
                                      + json.dumps({"task_id": "2", "completion": CALL_WRONG}) + "\n")
    # in this process (test_cli_eval_samples and tests/evals/test_attacks.py run `ccrun eval-samples` as a process)
    out = ccrun_here("eval-samples", "s.jsonl", "--suite", "apps", "--problems", "apps.jsonl", "--k", "1", "--out", "res",
                     cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "apps: 2 samples; pass@1 0.5000, strict_accuracy 0.5000" in out.stdout
    rows = [json.loads(line) for line in (tmp_path / "res" / "results.jsonl").read_text().splitlines()]
    assert [(r["task_id"], r["passed"]) for r in rows] == [(1, True), ("2", False)]
    (tmp_path / "bool.jsonl").write_text(json.dumps({"task_id": True, "completion": ""}) + "\n")
    bad = ccrun_here("eval-samples", "bool.jsonl", "--suite", "apps", "--problems", "apps.jsonl", "--out", "r2",
                     cwd=tmp_path)
    assert bad.returncode == 2 and "bool.jsonl:1: needs string fields" in bad.stderr


def test_shipped_apps_problems_are_solved_by_their_solutions(sandbox):
    """tests/fixtures/apps-smoke.jsonl (the smoke recipe's APPS suite): every reference solution
    passes every test, and a wrong program passes none of the standard-input ones."""
    rows = [json.loads(line) for line in (ROOT / "tests" / "fixtures" / "apps-smoke.jsonl").read_text().splitlines()]
    problems = problems_by_id(rows)
    assert {p["difficulty"] for p in rows} == {"introductory", "interview", "competition"}
    assert any("fn_name" in json.loads(p["input_output"]) for p in rows)
    samples = [{"task_id": str(p["problem_id"]), "completion": s} for p in rows for s in json.loads(p["solutions"])]
    samples += [{"task_id": str(p["problem_id"]), "completion": "print(0)\n"} for p in rows]
    scored, summary = score_apps(samples, problems, sandbox, timeout_s=4.0, workers=2)
    n_right = len(samples) - len(rows)
    for s in scored[:n_right]:
        assert s["results"] and all(r is True for r in s["results"]), s
    for s, p in zip(scored[n_right:], rows, strict=True):
        assert not all(r is True for r in s["results"]), p["problem_id"]
