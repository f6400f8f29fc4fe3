"""APPS: problems in, prompt + solution examples out. The problems reader (`read_problems`) and
the prompt are shared with the eval.

APPS rows: problem_id, question, solutions (a JSON list of strings), starter_code, input_output
(JSON {"inputs", "outputs", "fn_name"?}), difficulty, url. A problem is call-based iff its
input_output names an fn_name; otherwise the program reads standard input.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..common.errors import DataError
from ..recipe.schema_data import AppsPrompt, AppsSource
from .rows import fingerprint, jsonl_rows, rows_to_arrow



def apps_prompt(question: str, starter_code: str | None, fn_name: str | None, style: AppsPrompt = "apps") -> str:
    r"""The prompt of one APPS problem, for training and evaluation alike.

    "apps": the APPS generation prompt (hendrycks/apps eval/generate_gpt_codes.py, generate_prompt):
    "\nQUESTION:\n" + question, then "\n" + starter code when there is any (empty counts as none),
    then "\nUse Call-Based format" when the tests name an fn_name, else "\nUse Standard Input format",
    then "\nANSWER:\n".
    "code-clippy": GPT-Code-Clippy's training prompt (its data_processing/apps.py), to train or evaluate
    as its released checkpoints were: "\nQUESTION:\n" + question + "\n" + starter code + "\n" +
    answer type + "\nANSWER:\n", the answer type "\nUse Call-Based format\n" when there is starter
    code (it looked for a starter_code.py file, not at fn_name), else "\nUse Standard Input format\n".
    """
    if style == "code-clippy":
        kind = "\nUse Call-Based format\n" if starter_code else "\nUse Standard Input format\n"
        return "\nQUESTION:\n" + question + "\n" + (starter_code or "") + "\n" + kind + "\nANSWER:\n"
    if style != "apps":
        raise ValueError(f"unknown APPS prompt style {style!r}")
    kind = "\nUse Call-Based format" if fn_name else "\nUse Standard Input format"
    return "\nQUESTION:\n" + question + ("\n" + starter_code if starter_code else "") + kind + "\nANSWER:\n"


def fn_name_of(input_output: Any) -> str | None:
    """The function name of a call-based problem, or None (standard input, or no tests given)."""
    if isinstance(input_output, str):
        if not input_output.strip():
            return None
        try:
            input_output = json.loads(input_output)
        except ValueError:
            return None
    if isinstance(input_output, dict):
        name = input_output.get("fn_name")
        return name if isinstance(name, str) and name else None
    return None


def solutions_of(solutions: Any) -> list[str]:
    """The solutions of a problem (a JSON list in a string, or a list); malformed → none."""
    if isinstance(solutions, str):
        if not solutions.strip():
            return []
        try:
            solutions = json.loads(solutions)
        except ValueError:
            return []
    return [s for s in solutions if isinstance(s, str)] if isinstance(solutions, list) else []


def problems_file(path: str | Path | None, *, hub: str | None, split: str | None, where: str) -> Path:
    """The APPS problems file: the local JSON Lines file `path`, or (no path) the hub dataset's
    `{split}.jsonl`, downloaded into the Hugging Face cache. A missing file or an unreachable hub is a
    DataError naming `where`."""
    if path is not None:
        if not Path(path).is_file():
            raise DataError(f"{where}: no such file {path}")
        return Path(path)
    if hub is None or split is None:
        raise ValueError("problems_file: give a path, or a hub dataset and a split")
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(hub, f"{split}.jsonl", repo_type="dataset"))
    except Exception as exc:
        raise DataError(
            f"{where}: cannot fetch {split}.jsonl of {hub!r} ({type(exc).__name__}); with no network, "
            f"give a local copy: path: ./apps/{split}.jsonl"
        ) from None


def problem_rows(path: Path, difficulties: Sequence[str] | None, on_error: str,
                 counts: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The APPS rows of a JSON Lines file, each with its `question`; rows of a difficulty not in
    `difficulties` (None: all) are counted in counts["other_difficulties"], not yielded."""
    for row in jsonl_rows([path], "question", on_error, counts):
        row["question"] = row.pop("text")
        if difficulties is not None and row.get("difficulty") not in difficulties:
            counts["other_difficulties"] = counts.get("other_difficulties", 0) + 1
            continue
        yield row


def problem_fault(row: dict[str, Any]) -> str | None:
    """What makes an APPS row unfit to be evaluated, or None: problem_id an integer or a string;
    input_output empty (no tests), or {"inputs": [...], "outputs": [...], "fn_name"?: str} (as
    JSON text or as an object), standard-input tests' inputs strings or lists of lines;
    starter_code text or none."""
    problem_id = row.get("problem_id")
    if isinstance(problem_id, bool) or not isinstance(problem_id, int | str) or problem_id == "":
        return "needs problem_id, an integer or a string"
    if row.get("starter_code") is not None and not isinstance(row["starter_code"], str):
        return "starter_code must be text"
    tests = row.get("input_output")
    if tests is None or tests == "":
        return None
    if isinstance(tests, str):
        try:
            tests = json.loads(tests)
        except (ValueError, RecursionError):
            return "input_output is not JSON"
    if not isinstance(tests, dict):
        return 'input_output must be {"inputs": [...], "outputs": [...]} (a JSON object)'
    for key in ("inputs", "outputs"):
        if tests.get(key) is not None and not isinstance(tests[key], list):
            return f"input_output.{key} must be a list"
    if tests.get("fn_name") is not None and not isinstance(tests["fn_name"], str):
        return "input_output.fn_name must be a string"
    if not tests.get("fn_name") and not all(isinstance(x, str | list) for x in tests.get("inputs") or []):
        return "input_output.inputs of a standard-input problem must be strings (or lists of lines)"
    return None


def _line_of(path: Path, index: int) -> str:
    """The line number of the `index`-th (from 0) non-blank line of `path`, for a message (read
    only when one is raised)."""
    from .rows import open_text

    seen = -1
    with open_text(path) as stream:
        for number, line in enumerate(stream, 1):
            seen += bool(line.strip())
            if seen == index:
                return str(number)
    return "?"


def read_problems(path: str | Path | None, *, hub: str | None = None, split: str | None = None,
                  difficulties: Sequence[str] | None = None, limit: int | None = None, on_error: str = "fail",
                  where: str = "APPS") -> list[dict[str, Any]]:
    """APPS problems (rows with the APPS fields, `question` among them) of the local file `path` or
    the hub's `{split}.jsonl`, of `difficulties` (None: all), the first `limit` of them (None: all).
    Raises DataError for a missing, unreachable or malformed file, or a row that cannot be
    evaluated (`problem_fault`; with on_error "skip" such rows are left out), naming file and line."""
    source = problems_file(path, hub=hub, split=split, where=where)
    rows = []
    try:
        for index, row in enumerate(problem_rows(source, None, on_error, {})):
            fault = problem_fault(row)
            if fault is not None:
                if on_error == "skip":
                    continue
                raise DataError(f"{source}:{_line_of(source, index)}: {fault}")
            if difficulties is None or row.get("difficulty") in difficulties:
                rows.append(row)
    except RecursionError:
        raise DataError(f"{source}: a line is nested too deeply to read") from None
    return rows[:limit]


def read_apps(source: AppsSource, where: str, cache_dir: Path, counts: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The data stage's APPS source: a dataset of problems, the question as its `text` column."""
    info: dict[str, Any] = {}
    path = problems_file(source.path, hub=source.hub, split=source.split, where=where)
    if source.path is None:  # a local path was fingerprinted before reading; the hub's file only now
        info["files"] = {str(path): fingerprint(path)}
    ds = rows_to_arrow(
        _documents, cache_dir, where, path=path, split=source.split, difficulties=list(source.difficulties),
        on_error=source.on_error, counts=counts,
    )
    return ds, info


def _documents(path: Path, split: str, difficulties: list[str], on_error: str, counts: dict[str, Any]):
    for row in problem_rows(path, difficulties, on_error, counts):
        # The documents stage wants a text column: the question is the document's text.
        yield {
            "text": row["question"],
            "problem_id": row.get("problem_id"),
            "solutions": row.get("solutions") if isinstance(row.get("solutions"), str) else json.dumps(row.get("solutions") or []),
            "starter_code": row.get("starter_code") or "",
            "input_output": row.get("input_output") if isinstance(row.get("input_output"), str) else json.dumps(row.get("input_output") or {}),
            "difficulty": row.get("difficulty"),
            "url": row.get("url") or "",
            "split": split,
        }


def apps_examples(row: dict[str, Any], max_solutions: int | None, prompt_style: AppsPrompt = "apps") -> list[tuple[str, str]]:
    """(prompt, solution) pairs of one problem, at most `max_solutions` of them."""
    prompt = apps_prompt(row["text"], row.get("starter_code"), fn_name_of(row.get("input_output")), prompt_style)
    solutions = solutions_of(row.get("solutions"))
    if max_solutions is not None:
        solutions = solutions[:max_solutions]
    return [(prompt, s) for s in solutions]
