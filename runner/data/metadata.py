"""Repository metadata joined onto documents (`data.metadata`), before the filters.

The Code Clippy corpus carries only `repo_name` and `stars` per file; GPT-Code-Clippy chose its
repositories with SEART GitHub Search (more than 2 commits, a licence, no forks, size < 70708).
Joining a SEART export on the repository name gives every document those columns, so the
recipe's `commits`, `license`, `fork` and `size` filters read real values.

GPT-Code-Clippy's corpus is the SEART repositories *plus* every GitHub repository of the Pile, to
which the SEART criteria never applied. `missing: unfiltered` describes that corpus: documents
whose repository is in the export meet the filters that read joined columns; the others (the
Pile's) pass those filters and meet only the file-level ones.

Metadata files are CSV (a header row) or JSON Lines, plain or gzip. Keys match after stripping
and lower-casing (GitHub names are case-insensitive); the first row of a repeated key wins (the
repeats are counted). Joined values are text (or null): the filters parse numbers and booleans.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from ..common.errors import DataError
from .rows import column_sum, expand, fingerprint, open_text
from .sources import workers

FOUND = "__ccrun_metadata_found"
# With missing: unfiltered, the documents keep this column (true: the key was in the metadata), and
# the filters that read joined columns let the rows where it is false through.
MATCHED = "metadata_matched"


def metadata_fingerprint(spec: Any) -> dict[str, Any]:
    """The cache key's and the manifest's record of the metadata files."""
    return {"files": {str(f): fingerprint(f) for f in expand(spec.paths, "data.metadata.paths")}}


def _rows(path: Path) -> tuple[list[str] | None, Any]:
    """(header or None for JSON Lines, iterator of rows) of one metadata file."""
    name = path.name.lower().removesuffix(".gz")
    stream = open_text(path)
    if name.endswith(".csv"):
        reader = csv.DictReader(stream)
        return list(reader.fieldnames or []), reader
    if name.endswith((".jsonl", ".json")):
        def rows():
            for n, line in enumerate(stream, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except ValueError as exc:
                        raise DataError(f"data.metadata: {path}:{n}: not JSON ({exc})") from None
                    if not isinstance(row, dict):
                        raise DataError(f"data.metadata: {path}:{n}: expected a JSON object per line")
                    yield row
        return None, rows()
    raise DataError(f"data.metadata: {path}: expected a .csv or .jsonl file (optionally .gz)")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, list | dict) else str(value)


def _norm(key: Any) -> str:
    return str(key).strip().lower()


def read_metadata(spec: Any, files: list[str]) -> tuple[dict[str, tuple], dict[str, Any]]:
    """{normalised key: values in spec.columns order}, and counts for the manifest. `files` are
    the ones `metadata_fingerprint` hashed (the cache key holds what is read)."""
    wanted = list(spec.columns.values())
    table: dict[str, tuple] = {}
    rows = repeated = 0
    for path in map(Path, files):
        try:
            header, reader = _rows(path)
            if header is not None:
                missing = [c for c in [spec.key, *wanted] if c not in header]
                if missing:
                    raise DataError(f"data.metadata: {path} has no column {', '.join(map(repr, missing))}; "
                                    f"columns: {', '.join(header)}")
            for n, row in enumerate(reader, 1):
                if header is None:
                    missing = [c for c in [spec.key, *wanted] if c not in row]
                    if missing:
                        raise DataError(f"data.metadata: {path}:{n}: no key {', '.join(map(repr, missing))}; "
                                        f"keys: {', '.join(row)}")
                rows += 1
                key = _norm(row[spec.key])
                if key in table:
                    repeated += 1
                    continue
                table[key] = tuple(_text(row[c]) for c in wanted)
        except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:  # a cut .gz, a broken file
            raise DataError(f"data.metadata: {path}: unreadable ({type(exc).__name__}: {exc})") from None
    return table, {"metadata_rows": rows, "repositories": len(table), "repeated_keys": repeated}


def lookup(spec: Any, table: dict[str, tuple], keys: list[Any]) -> tuple[dict[str, list], list[bool]]:
    """The joined columns (spec.columns' names → values, None where unmatched) of rows whose
    spec.on values are `keys`, and which rows matched."""
    found = [table.get(_norm(k)) if k is not None else None for k in keys]
    columns = {name: [f[i] if f is not None else None for f in found] for i, name in enumerate(spec.columns)}
    return columns, [f is not None for f in found]


def join_metadata(ds: Any, spec: Any, table: dict[str, tuple], info: dict[str, Any], where: str,
                  num_proc: int | None) -> tuple[Any, dict[str, Any]]:
    """Documents with spec.columns joined on spec.on; missing keys dropped, kept (also unfiltered,
    with a MATCHED column) or refused."""
    if spec.on not in ds.column_names:
        raise DataError(f"data.metadata.on: {where} has no column {spec.on!r}; columns: {', '.join(ds.column_names)}")
    names = list(spec.columns)

    def add(batch: dict[str, list]) -> dict[str, list]:
        out, found = lookup(spec, table, batch[spec.on])
        out[FOUND] = found
        return out

    import datasets

    features = ds.features.copy()
    for name in names:
        features[name] = datasets.Value("string")
    features[FOUND] = datasets.Value("bool")
    rows_in = len(ds)
    ds = ds.map(add, batched=True, batch_size=1000, num_proc=workers(num_proc, rows_in), features=features,
                desc="join metadata")
    matched = column_sum(ds, FOUND) if rows_in else 0
    report = {**info, "on": spec.on, "columns": dict(spec.columns), "rows_in": rows_in, "matched": matched,
              "missing": rows_in - matched, "dropped": 0, "policy": spec.missing}
    if matched < rows_in:
        if spec.missing == "fail":
            first = next(k for k, f in zip(ds[spec.on], ds[FOUND], strict=True) if not f)
            raise DataError(f"data.metadata: {rows_in - matched} document(s) of {where} have no metadata "
                            f"(e.g. {spec.on} = {first!r}); set data.metadata.missing: drop or keep")
        if spec.missing == "drop":
            ds = ds.filter(lambda batch: batch[FOUND], batched=True, batch_size=1000,
                           num_proc=workers(num_proc, rows_in), desc="drop documents without metadata")
            report["dropped"] = rows_in - matched
            if not len(ds):
                raise DataError(f"data.metadata: no document of {where} matched the metadata on {spec.on!r}")
    if spec.missing == "unfiltered":
        if MATCHED in ds.column_names:
            ds = ds.remove_columns([MATCHED])
        return ds.rename_column(FOUND, MATCHED), report
    return ds.remove_columns([FOUND]), report
