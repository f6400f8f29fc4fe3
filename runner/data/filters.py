"""Row filters of `data.filters`, applied in order, each counted.

A filter whose column is absent is an error before any work (naming the filter and the columns
that are there): a silent pass would keep rows the recipe meant to drop.
"""

from __future__ import annotations

from typing import Any


from ..common.errors import DataError
from ..recipe.base import format_path
from .decontaminate import Benchmark, benchmark_fingerprint, build_benchmark
from .metadata import MATCHED
from .rows import column_sum
from .sources import workers

# Filters that read a metadata column, and the spec attribute naming it.
COLUMN_OF = {"stars": "column", "commits": "column", "license": "column", "fork": "column", "size": "column"}
NO_LICENSE = {"", "none", "null", "noassertion", "other", "unknown"}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value).strip().replace(",", ""))
    except ValueError:
        return None


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def needed_columns(spec: Any) -> list[str]:
    if spec.type in COLUMN_OF:
        return [getattr(spec, COLUMN_OF[spec.type])]
    if spec.type == "extension":
        return ([spec.path_column] if spec.extensions else []) + ([spec.language_column] if spec.languages else [])
    return ["text"]


def check_columns(filters: list[Any], columns: list[str]) -> None:
    problems = []
    for i, spec in enumerate(filters):
        missing = [c for c in needed_columns(spec) if c not in columns]
        if missing:
            problems.append(
                f"{format_path(('data', 'filters', i))} ({spec.type}): column {', '.join(map(repr, missing))} "
                f"is not in the data; columns: {', '.join(columns)}"
            )
    if problems:
        raise DataError("\n".join(problems))


def _where(i: int) -> str:
    return format_path(("data", "filters", i))


def filter_fingerprints(filters: list[Any]) -> list[dict[str, Any]]:
    """The inputs of filters that read more than the rows (decontamination's benchmarks), for the cache key."""
    return [benchmark_fingerprint(spec, _where(i)) for i, spec in enumerate(filters) if spec.type == "decontaminate"]


def prepare_filters(filters: list[Any], fingerprints: list[dict[str, Any]]) -> dict[int, Benchmark]:
    """What filters need before the rows (decontamination's benchmark n-grams), by filter index;
    built once per data stage from the inputs `filter_fingerprints` hashed."""
    inputs = {fp["filter"]: fp for fp in fingerprints}
    return {i: build_benchmark(spec, inputs[_where(i)]) for i, spec in enumerate(filters) if spec.type == "decontaminate"}


def keep(spec: Any, batch: dict[str, list], benchmark: Benchmark | None = None) -> list[bool]:
    """Which rows of a batch the filter keeps."""
    kind = spec.type
    if kind == "decontaminate":
        assert benchmark is not None, "prepare_filters builds the benchmark"
        return (~benchmark.contaminated(batch["text"])).tolist()
    if kind in ("stars", "commits"):
        return [(n := _number(v)) is not None and n >= spec.min for v in batch[spec.column]]
    if kind == "size":
        return [(n := _number(v)) is not None and n <= spec.max for v in batch[spec.column]]
    if kind == "license":
        allowed = {a.lower() for a in spec.allowed} if spec.allowed else None
        out = []
        for v in batch[spec.column]:
            name = str(v).strip().lower() if v is not None else ""
            out.append(name not in NO_LICENSE and (allowed is None or name in allowed))
        return out
    if kind == "fork":
        return [not _truthy(v) for v in batch[spec.column]]
    if kind == "extension":
        n = len(next(iter(batch.values())))
        ok = [True] * n
        if spec.extensions:
            exts = tuple(e.lower() for e in spec.extensions)
            ok = [o and str(p or "").lower().endswith(exts) for o, p in zip(ok, batch[spec.path_column], strict=True)]
        if spec.languages:
            langs = {x.lower() for x in spec.languages}
            ok = [o and str(v or "").lower() in langs for o, v in zip(ok, batch[spec.language_column], strict=True)]
        return ok
    texts = batch["text"]
    if kind == "max_line_length":
        out = []
        for t in texts:
            lengths = [len(line) for line in t.splitlines()] or [0]
            good = spec.max is None or max(lengths) <= spec.max
            out.append(good and (spec.mean is None or sum(lengths) / len(lengths) <= spec.mean))
        return out
    if kind == "alphanum_fraction":
        return [bool(t) and sum(c.isalnum() for c in t) / len(t) >= spec.min for t in texts]
    if kind == "digit_fraction":
        return [not t or sum(c.isdigit() for c in t) / len(t) <= spec.max for t in texts]
    raise DataError(f"unknown filter type {kind}")  # pragma: no cover - the schema admits no other


def _keep_unmatched(spec: Any, batch: dict[str, list], benchmark: Benchmark | None) -> list[bool]:
    """`keep`, except that rows without metadata pass (a join with missing: unfiltered)."""
    return [k or not m for k, m in zip(keep(spec, batch, benchmark), batch[MATCHED], strict=True)]


def exempts_unmatched(spec: Any, columns: list[str], unfiltered: list[str]) -> bool:
    """Whether the filter lets rows without metadata through: it reads only columns joined with
    missing: unfiltered (and the rows carry the MATCHED column)."""
    return MATCHED in columns and set(needed_columns(spec)) <= set(unfiltered)


def keep_rows(spec: Any, batch: dict[str, list], benchmark: Benchmark | None, unfiltered: list[str]) -> list[bool]:
    """`keep` as `apply_filters` applies it to a batch (rows without metadata let through where
    `exempts_unmatched`)."""
    if exempts_unmatched(spec, list(batch), unfiltered):
        return _keep_unmatched(spec, batch, benchmark)
    return keep(spec, batch, benchmark)


def apply_filters(ds: Any, filters: list[Any], num_proc: int | None, *, prepared: dict[int, Benchmark] | None = None,
                  unfiltered: list[str] = ()) -> tuple[Any, list[dict[str, Any]]]:
    """The rows every filter keeps, and per filter: rows in, rows removed. `prepared`: from
    `prepare_filters`. `unfiltered`: columns joined with missing: unfiltered; a filter reading only
    those lets rows without metadata through (counted as `unfiltered`)."""
    check_columns(filters, ds.column_names)
    prepared = prepared or {}
    report = []
    for i, spec in enumerate(filters):
        before = len(ds)
        exempt = exempts_unmatched(spec, ds.column_names, unfiltered)
        entry = {"filter": _where(i), "type": spec.type, "rows_in": before}
        if exempt:
            entry["unfiltered"] = before - (column_sum(ds, MATCHED) if before else 0)
        if before:
            fn = _keep_unmatched if exempt else keep
            ds = ds.filter(lambda batch, spec=spec, fn=fn, bench=prepared.get(i): fn(spec, batch, bench),
                           batched=True, batch_size=1000, num_proc=workers(num_proc, before),
                           desc=f"filter {spec.type}")
        entry["removed"] = before - len(ds)
        if i in prepared:
            entry["benchmark"] = prepared[i].info
        report.append(entry)
        if before and not len(ds):
            raise DataError(
                f"{_where(i)} ({spec.type}) removed the last {before} rows: nothing is left"
            )
    return ds, report

