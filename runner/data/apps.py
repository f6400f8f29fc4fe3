"""APPS: problems in, prompt + solution examples out. The prompt function is shared with the eval.

APPS rows: problem_id, question, solutions (a JSON list of strings), starter_code, input_output
(JSON {"inputs", "outputs", "fn_name"?}), difficulty, url. A problem is call-based iff its
input_output names an fn_name; otherwise the program reads standard input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..recipe.schema_data import AppsSource
from .sources import DataError, fingerprint, jsonl_rows


def apps_prompt(question: str, starter_code: str | None, fn_name: str | None) -> str:
    """The prompt of the APPS paper (Hendrycks et al. 2021), used for training and evaluation alike."""
    kind = "Use Call-Based format" if fn_name else "Use Standard Input format"
    return "\nQUESTION:\n" + question + "\n" + (starter_code or "") + "\n" + kind + "\nANSWER:\n"


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


def read_apps(source: AppsSource, where: str, cache_dir: Path, counts: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """APPS problems of `source.split` and `source.difficulties`: local JSON Lines or the hub's file."""
    from .sources import _stream

    info: dict[str, Any] = {}
    if source.path is not None:
        path = Path(source.path)
        if not path.is_file():
            raise DataError(f"{where}: no such file {path}")
    else:  # a local path was fingerprinted before reading; the hub's file only now
        path = _download(source, where)
        info["files"] = {str(path): fingerprint(path)}
    ds = _stream(
        _problems, cache_dir, where, path=path, split=source.split, difficulties=list(source.difficulties),
        on_error=source.on_error, counts=counts,
    )
    return ds, info


def _problems(path: Path, split: str, difficulties: list[str], on_error: str, counts: dict[str, Any]):
    for row in jsonl_rows([path], "question", on_error, counts):
        row["question"] = row.pop("text")
        if row.get("difficulty") not in difficulties:
            counts["other_difficulties"] = counts.get("other_difficulties", 0) + 1
            continue
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


def _download(source: AppsSource, where: str) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(source.hub, f"{source.split}.jsonl", repo_type="dataset"))
    except Exception as exc:
        raise DataError(
            f"{where}: cannot fetch {source.split}.jsonl of {source.hub!r} ({type(exc).__name__}); with no network, "
            "give a local copy: path: ./apps/train.jsonl"
        ) from None


def apps_examples(row: dict[str, Any], max_solutions: int | None) -> list[tuple[str, str]]:
    """(prompt, solution) pairs of one problem, at most `max_solutions` of them."""
    prompt = apps_prompt(row["text"], row.get("starter_code"), fn_name_of(row.get("input_output")))
    solutions = solutions_of(row.get("solutions"))
    if max_solutions is not None:
        solutions = solutions[:max_solutions]
    return [(prompt, s) for s in solutions]
