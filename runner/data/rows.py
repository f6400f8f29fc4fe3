"""Rows in: the reading every data input shares (sources, APPS problems, metadata files).

Local files: glob patterns, plain/.gz/.zst text (a cut archive is refused), a content hash, JSON
Lines rows (as they are, or checked to fit one Arrow table, refused at their line when they do
not). Generators of rows: streamed into Arrow on disk, so nothing is held in memory.
"""

from __future__ import annotations

import functools
import glob
import gzip
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..common.errors import DataError


def expand(patterns: list[str], what: str) -> list[Path]:
    """Glob patterns → existing files, in pattern order then sorted. A pattern matching nothing is an error."""
    files: list[Path] = []
    for pattern in patterns:
        matched = sorted(glob.glob(pattern, recursive=True))
        matched = [m for m in matched if os.path.isfile(m)]
        if not matched:
            raise DataError(f"{what}: no file matches {pattern}")
        files.extend(Path(m) for m in matched)
    return list(dict.fromkeys(files))


def open_text(path: Path) -> io.TextIOBase:
    """A text stream of a plain, .gz or .zst file. A compressed file cut short raises EOFError
    when the reading reaches the cut (never a silently shorter text)."""
    try:
        if path.suffix == ".gz":
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
        if path.suffix == ".zst":
            raw = open(path, "rb")  # noqa: SIM115 - closed with the wrapper
            return io.TextIOWrapper(io.BufferedReader(ZstdFrames(raw)), encoding="utf-8")
        return open(path, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise DataError(f"{path}: cannot open ({exc.strerror or exc})") from None


class ZstdFrames(io.RawIOBase):
    """The decompressed bytes of every zstd frame of `raw`, one after the other.

    zstandard's stream_reader ends quietly where a cut file ends, even inside a frame (a
    truncated download reads as fewer rows); here a frame that has not ended at the end of the
    input raises EOFError, as gzip does.
    """

    CHUNK = 1 << 16  # compressed bytes read at a time

    def __init__(self, raw: io.BufferedIOBase):
        import zstandard

        super().__init__()
        self._raw = raw
        self._decompressor = zstandard.ZstdDecompressor()
        self._frame: Any = None  # the frame being read; None between frames
        self._out = b""  # decompressed, not yet handed out
        self._at = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self._at == len(self._out):
            chunk = self._raw.read(self.CHUNK)
            if not chunk:
                if self._frame is not None:
                    raise EOFError("the file ends inside a zstd frame: it is truncated")
                return 0
            parts = []
            while chunk:
                if self._frame is None:
                    self._frame = self._decompressor.decompressobj()
                parts.append(self._frame.decompress(chunk))
                if self._frame.eof:  # the frame ended inside this chunk; the rest is the next frame
                    chunk, self._frame = self._frame.unused_data, None
                else:
                    chunk = b""
            self._out, self._at = b"".join(parts), 0
        n = min(len(buffer), len(self._out) - self._at)
        buffer[:n] = self._out[self._at:self._at + n]
        self._at += n
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def column_sum(ds: Any, name: str, *, utf8_bytes: bool = False) -> int:
    """Sum of a dataset's column over the rows it shows (a `select` or `filter` result included:
    its indices mapping applied), computed in Arrow a batch at a time, never row by row in Python.
    A list column sums its values. `utf8_bytes`: the UTF-8 byte lengths of a text column instead."""
    import pyarrow as pa
    import pyarrow.compute as pc

    total = 0
    for table in ds.select_columns([name]).with_format("arrow").iter(batch_size=65536):
        column = table.column(name)
        if utf8_bytes:
            column = pc.binary_length(column.cast(pa.large_binary()))
        elif pa.types.is_boolean(column.type):
            column = column.cast(pa.int64())
        elif pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type):
            column = pc.list_flatten(column)
        total += int(pc.sum(column).as_py() or 0)
    return total


def fingerprint(path: Path) -> str:
    """Content hash of a file (blake2b, streamed)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def flatten_meta(row: dict[str, Any]) -> dict[str, Any]:
    meta = row.pop("meta", None)
    if isinstance(meta, dict):
        for key, value in meta.items():
            row.setdefault(key, value)
    elif meta is not None:
        row["meta"] = meta
    return row


MAX_LINE_CHARS = 64 << 20  # bytes; one source file per line: a longer line is a damaged or wrong file


def jsonl_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes) of a plain, .gz or .zst JSON Lines file; damaged archives and
    overlong lines raise DataError naming the file (and line)."""
    stream = open_text(path)
    raw = stream.buffer  # lines read as bytes and decoded one by one: an error names its line
    number = 0
    try:
        while data := raw.readline(MAX_LINE_CHARS + 1):
            number += 1
            if len(data) > MAX_LINE_CHARS:
                raise DataError(f"{path}:{number}: a line of more than {MAX_LINE_CHARS:,} bytes "
                                "(one JSON object per line is expected)")
            yield number, data
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # zstandard raises its own ZstdError
        if type(exc).__name__ == "ZstdError":
            raise DataError(f"{path}: unreadable archive ({exc})") from None
        raise
    finally:
        stream.close()


def jsonl_records(files: list[Path], text_field: str, on_error: str,
                  counts: dict[str, int]) -> Iterator[tuple[Path, int, dict]]:
    """(file, line number, row) of JSON Lines files; `counts` gets lines skipped."""
    for path in files:
        number = 0
        try:
            for number, data in jsonl_lines(path):
                row = parse_line(data, path, number, text_field, on_error, counts)
                if row is not None:
                    yield path, number, row
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}:{number}: not UTF-8 ({exc.reason} at byte {exc.start})") from None


def parse_line(data: bytes, path: Any, number: int, text_field: str, on_error: str,
               counts: dict[str, int]) -> dict | None:
    """One JSON Lines line as a row (its `text_field` named `text`, `meta` flattened), or None for a
    blank line or one skipped (on_error: skip, counted in `counts`). Raises UnicodeDecodeError for
    bytes that are not UTF-8, DataError naming the file and line for a malformed one."""
    line = data.decode("utf-8")
    if not line.strip():
        return None
    try:
        row = json.loads(line)
        if not isinstance(row, dict):
            raise ValueError(f"a JSON {type(row).__name__}, not an object")
        if not isinstance(row.get(text_field), str):
            raise ValueError(f"no string field {text_field!r}")
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError; too deep a nesting
        if on_error == "skip":
            counts["skipped_lines"] = counts.get("skipped_lines", 0) + 1
            return None
        why = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise DataError(f"{path}:{number}: malformed line ({why}); set on_error: skip to skip such lines") from None
    row["text"] = row.pop(text_field)
    return flatten_meta(row)


def jsonl_rows(files: list[Path], text_field: str, on_error: str, counts: dict[str, int]) -> Iterator[dict]:
    """Rows of JSON Lines files, as they are; `counts` gets lines skipped."""
    for _path, _number, row in jsonl_records(files, text_field, on_error, counts):
        yield row


# --- rows one Arrow table can hold ------------------------------------------------------------------

# Rows per Arrow batch (rows_to_arrow): without given features, the first batch fixes the table.
BATCH_ROWS = 1000
INT64 = (-(1 << 63), (1 << 63) - 1)
SAMPLES = 100  # values of a list or object column that type it when the table is given


def jsonl_table(files: list[Path], text_field: str, on_error: str, counts: dict[str, int], cache_dir: Path,
                label: str, num_proc: int | None = None) -> Any:
    """JSON Lines files as one Arrow table (a Dataset; None when they hold no row): every column any
    row has, null where a row leaves it out. One pass when the first batch of rows shows every
    column and type (datasets infers the table from it); else a second one with the table the
    first pass saw (a column only later rows have, a column null throughout the first batch).
    With num_proc > 1 and several files, the files are read by up to num_proc processes
    (`parallel_table`): the same rows in the same order, the same table, counts and errors."""
    from datasets import Features

    if num_proc is not None and num_proc > 1 and len(files) > 1:
        ds = parallel_table(files, text_field, on_error, counts, cache_dir, label, num_proc)
        if ds is not ONE_PROCESS:
            return ds
        counts.clear()
    args = {"files": files, "text_field": text_field, "on_error": on_error}
    try:
        return rows_to_arrow(table_rows, cache_dir, label, counts=counts, **args)
    except Reshape as seen:
        counts.clear()
        return rows_to_arrow(table_rows, cache_dir, label, features=Features.from_arrow_schema(seen.schema),
                             counts=counts, schema=seen.schema, **args)


class Reshape(Exception):
    """The rows need a table their first batch does not show: `schema`, from all of them."""

    def __init__(self, schema: Any):
        super().__init__("the rows need another table")
        self.schema = schema


def table_rows(files: list[Path], text_field: str, on_error: str, counts: dict[str, int],
               schema: Any = None) -> Iterator[dict]:
    """Rows of JSON Lines files, each with every column (None where it has none), in the order
    of `schema` or of first appearance. What Arrow cannot hold is refused at its line ("file:line:
    what"), or skipped (counted in skipped_lines) with on_error: skip: a column whose values change
    kind (text, number, boolean, list, object), an integer beyond 64 bits. Without `schema`, when
    the first batch of rows cannot make the table (a later row adds a column, a column's first
    value or first fraction comes after it), the rest is only checked and Reshape raised at the end."""
    columns = TableColumns(schema)
    for path, number, row in jsonl_records(files, text_field, on_error, counts):
        try:
            fitted = columns.fit(row, f"{path}:{number}")
        except ValueError as exc:
            if on_error == "skip":
                counts["skipped_lines"] = counts.get("skipped_lines", 0) + 1
                continue
            raise DataError(f"{path}:{number}: {exc}; set on_error: skip to skip such lines") from None
        if not columns.reshape:
            yield fitted
    if columns.reshape:
        raise Reshape(columns.schema())


class KindConflict(ValueError):
    """A row's value is of another kind than the column's first value (TableColumns.fit)."""


class TableColumns:
    """What the rows so far hold: columns in order of first appearance, the kind of each one's
    values and where it was first seen, a few values of list and object columns, the number
    columns with fractions. `fit` checks a row (ValueError), records it and fills its missing
    columns; `reshape` turns true when the first batch of rows cannot make the table."""

    def __init__(self, schema: Any = None) -> None:
        self.fixed = schema is not None
        self.order: dict[str, None] = dict.fromkeys(schema.names) if schema is not None else {}
        self.kinds: dict[str, tuple[str, str]] = {}
        self.samples: dict[str, list] = {}
        self.fractions: set[str] = set()
        self.rows = 0
        self.reshape = False

    def fit(self, row: dict[str, Any], where: str) -> dict[str, Any]:
        late = self.rows >= BATCH_ROWS  # the first batch, which fixes an inferred table, is written
        kinds, fractions, reshape = {}, set(), False
        for name, value in row.items():
            if name not in self.order:
                if self.fixed:
                    raise ValueError(f"column {name!r} was not there when the files were first read; did they change?")
                reshape = reshape or self.rows > 0
            big = _beyond_int64(value)
            if big is not None:
                shown = str(big) if len(str(big)) <= 40 else str(big)[:37] + "..."
                raise ValueError(f"column {name!r}: the integer {shown} does not fit in 64 bits; write it as a string")
            if value is None:
                continue
            kind, seen = _kind(value), self.kinds.get(name)
            if seen is None:
                kinds[name] = (kind, where)
                reshape = reshape or late
            elif seen[0] != kind:
                raise KindConflict(f"rows disagree on a column's type: {name!r} is {kind} here, {seen[0]} at {seen[1]}")
            if isinstance(value, float) and name not in self.fractions:
                fractions.add(name)
                reshape = reshape or (late and seen is not None)  # an int64 column of the first batch
        for name, value in row.items():
            if isinstance(value, (list, dict)) and len(self.samples.setdefault(name, [])) < SAMPLES:
                self.samples[name].append(value)
        self.order.update(dict.fromkeys(row))
        self.kinds.update(kinds)
        self.fractions |= fractions
        self.reshape = self.reshape or (reshape and not self.fixed)
        self.rows += 1
        return {name: row.get(name) for name in self.order}

    def schema(self) -> Any:
        """The Arrow schema of every row seen."""
        import pyarrow as pa

        def arrow_type(name: str) -> Any:
            kind = self.kinds.get(name, ("null",))[0]
            simple = {"null": pa.null(), "text": pa.string(), "a boolean": pa.bool_(),
                      "a number": pa.float64() if name in self.fractions else pa.int64()}
            return simple[kind] if kind in simple else pa.array(self.samples[name]).type

        return pa.schema([pa.field(name, arrow_type(name)) for name in self.order])


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):  # Arrow stores a batch of both as doubles
        return "a number"
    if isinstance(value, str):
        return "text"
    return "a list" if isinstance(value, list) else "an object"


def _beyond_int64(value: Any) -> int | None:
    """The first integer in `value` (a JSON value) that int64 cannot hold, or None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return None if INT64[0] <= value <= INT64[1] else value
    if isinstance(value, (list, dict)):
        for item in value.values() if isinstance(value, dict) else value:
            big = _beyond_int64(item)
            if big is not None:
                return big
    return None


# --- several files in parallel ----------------------------------------------------------------------
#
# `Dataset.from_generator(gen_kwargs={"files": [...]}, num_proc=N)` calls the generator once per file,
# in N processes each taking a contiguous run of the files, and concatenates their Arrow shards in
# file order. What the one-process read decides from the rows before a row (the table, fixed by the
# first batch; a column's kind, fixed by its first value; the counts) a process reading a later
# file cannot see. So:
#   1. the first batch is read here, as the one-process read reads it, and datasets infers its
#      table (`features`) from it exactly as it does there. When that batch itself cannot make the
#      table (a row in it adds a column), 2 only checks the rows and the second pass of 3 writes;
#   2. the files are read in parallel into that table. Each file's reader checks its rows as the
#      one-process read does, against the kinds its own file shows first, and writes what it saw
#      (columns, kinds, samples, counts, the first error) to a side file. A row the table cannot
#      hold as it is (a column it lacks, a value in a column null throughout the first batch, a
#      fraction in an integer column) is not written: the one-process read would reshape there;
#   3. here the side files are merged in file order. A file whose first kind of a column differs
#      from an earlier file's (a row the one-process read refuses or skips that the file's reader
#      kept) or a kind conflict raised as an error (named against the first value in the file, not
#      in the corpus) sends the read to one process, which decides as it always did; another error
#      is raised as it stands (the rows before it in file order passed); a row left out in 2 means
#      a second parallel pass with the table of all rows, as the one-process "Reshape" pass does.
# Anything else going wrong in the worker processes (an Arrow cast the table refuses) also falls
# back to the one-process read, which raises the error it always raised.

ONE_PROCESS = object()  # parallel_table's answer when the one-process read must decide


def parallel_table(files: list[Path], text_field: str, on_error: str, counts: dict[str, int], cache_dir: Path,
                   label: str, num_proc: int) -> Any:
    """`jsonl_table` with the files read by up to num_proc processes, or ONE_PROCESS when the
    one-process read must decide (fewer rows than a batch, see the notes above)."""
    from datasets import Features

    head: dict[str, Any] = {"end": False, "schema": None}
    first = rows_to_arrow(_head_rows, cache_dir, label, files=files, text_field=text_field, on_error=on_error,
                          state=head)
    if head["end"]:  # all rows fit in one batch: nothing worth spreading
        return ONE_PROCESS
    reshape = head["schema"] is not None  # the first batch itself cannot make the table
    features = Features.from_arrow_schema(head["schema"]) if reshape else first.features
    ds, seen = _read_files(files, text_field, on_error, cache_dir, num_proc, features, write=not reshape)
    if seen is None:
        return ONE_PROCESS
    merged = _merge(seen)
    if merged is None:
        return ONE_PROCESS
    columns, file_counts, left_out = merged
    if reshape or left_out:
        schema = columns.schema()
        ds, seen = _read_files(files, text_field, on_error, cache_dir, num_proc, Features.from_arrow_schema(schema),
                               write=True, schema=schema)
        merged = None if seen is None else _merge(seen)
        if merged is None or merged[2]:  # the files changed between the passes
            return ONE_PROCESS
        file_counts = merged[1]
    counts.update(file_counts)
    return ds if len(ds) else None


def _head_rows(files: list[Path], text_field: str, on_error: str, state: dict[str, Any]) -> Iterator[dict]:
    """The first BATCH_ROWS rows `table_rows` yields (the batch that fixes the table), as it yields
    them. state["end"]: the files hold no more; state["schema"]: the rows so far, when the first
    batch cannot make the table (table_rows would reshape)."""
    columns = TableColumns()
    rows = 0
    for path, number, row in jsonl_records(files, text_field, on_error, {}):
        try:
            fitted = columns.fit(row, f"{path}:{number}")
        except ValueError as exc:
            if on_error == "skip":
                continue
            raise DataError(f"{path}:{number}: {exc}; set on_error: skip to skip such lines") from None
        if columns.reshape:
            state["schema"] = columns.schema()
            return
        yield fitted
        rows += 1
        if rows == BATCH_ROWS:
            return
    state["end"] = True


def _read_files(files: list[Path], text_field: str, on_error: str, cache_dir: Path, num_proc: int, features: Any,
                write: bool, schema: Any = None) -> tuple[Any, list[dict] | None]:
    """(the files' rows in `features`' table, what each file's reader saw in file order), or
    (None, None) when the worker processes failed."""
    import pickle

    from datasets import Dataset

    target = Path(tempfile.mkdtemp(prefix="gen-", dir=cache_dir))  # fresh: see rows_to_arrow
    side = target / "seen"
    side.mkdir()
    generator = functools.partial(_file_rows, text_field=text_field, on_error=on_error, table=features.arrow_schema,
                                  write=write, schema=schema, side=str(side))
    try:
        ds = Dataset.from_generator(generator, features=features, cache_dir=str(target), writer_batch_size=BATCH_ROWS,
                                    gen_kwargs={"files": list(files), "index": list(range(len(files)))},
                                    num_proc=min(num_proc, len(files)))
        seen = []
        for i in range(len(files)):
            with open(side / f"{i:08d}.pkl", "rb") as f:
                seen.append(pickle.load(f))
    except Exception:  # noqa: BLE001 - the one-process read raises the error it always raised
        return None, None
    return ds, seen


def _file_rows(files: list[Path], index: list[int], text_field: str, on_error: str, table: Any, write: bool,
               schema: Any, side: str) -> Iterator[dict]:
    """One file's rows (datasets calls this once per file, `files` and `index` of one item) in
    `table`'s columns, checked as `table_rows` checks them; what it saw goes to side/<index>.pkl."""
    import pickle

    import pyarrow as pa

    (path,), (i,) = files, index
    columns = TableColumns(schema)
    counts: dict[str, int] = {}
    seen: dict[str, Any] = {"columns": columns, "counts": counts, "error": None, "conflict": False, "left_out": False}
    names = set(table.names)
    nulls = {f.name for f in table if pa.types.is_null(f.type)}
    integers = {f.name for f in table if pa.types.is_integer(f.type)}
    if not write and i == 0:  # a table of no rows is no dataset: one empty row, thrown away with it
        yield dict.fromkeys(table.names)
    try:
        for where, number, row in jsonl_records([path], text_field, on_error, counts):
            try:
                columns.fit(row, f"{where}:{number}")
            except ValueError as exc:
                if on_error == "skip":
                    counts["skipped_lines"] = counts.get("skipped_lines", 0) + 1
                    continue
                seen["conflict"] = isinstance(exc, KindConflict)
                raise DataError(f"{where}:{number}: {exc}; set on_error: skip to skip such lines") from None
            if not write or seen["left_out"]:
                continue
            if any(name not in names or (value is not None and (name in nulls or (name in integers and isinstance(value, float))))
                   for name, value in row.items()):
                seen["left_out"] = True  # the one-process read would reshape: the table needs this row's
                continue
            yield {name: row.get(name) for name in table.names}
    except DataError as exc:
        seen["error"] = str(exc)
    with open(Path(side) / f"{i:08d}.pkl", "wb") as f:
        pickle.dump(seen, f)


def _merge(seen: list[dict]) -> tuple[TableColumns, dict[str, int], bool] | None:
    """The files' readers' findings in file order → (the columns of all rows as one reader would
    have found them, summed counts, whether a row was left out), None when the one-process read
    must decide; the first error it would raise is raised."""
    total = TableColumns()
    counts: dict[str, int] = {}
    left_out = False
    for one in seen:
        columns = one["columns"]
        for name, (kind, where) in columns.kinds.items():
            first = total.kinds.setdefault(name, (kind, where))
            if first[0] != kind:
                return None
        if one["error"] is not None:
            if one["conflict"]:
                return None
            raise DataError(one["error"])
        total.order.update(columns.order)
        total.fractions |= columns.fractions
        for name, values in columns.samples.items():
            total.samples.setdefault(name, []).extend(values[: SAMPLES - len(total.samples[name])])
        total.rows += columns.rows
        for key, n in one["counts"].items():
            counts[key] = counts.get(key, 0) + n
        left_out = left_out or one["left_out"]
    return total, counts, left_out


def rows_to_arrow(generator, cache_dir: Path, label: str, features: Any = None, **kwargs):
    """Rows from a generator straight into Arrow on disk (nothing held in memory); None if it yields
    none. Without `features`, the first BATCH_ROWS rows fix the columns and their types."""
    from datasets import Dataset

    # A fresh cache directory every time: datasets keys generator caches on the arguments (file
    # names), not on file contents, and must never hand back a stale copy. The arguments go in
    # through a partial: datasets would take a list argument for shards to parallelise over.
    target = Path(tempfile.mkdtemp(prefix="gen-", dir=cache_dir))
    try:
        return Dataset.from_generator(functools.partial(generator, **kwargs), cache_dir=str(target),
                                      features=features, writer_batch_size=BATCH_ROWS)
    except Exception as exc:
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, (DataError, Reshape)):
                raise cause from None
            if type(cause).__name__ == "SchemaInferenceError":  # the generator yielded no row
                return None
            if type(cause).__name__ in ("ArrowInvalid", "ArrowTypeError", "ArrowNotImplementedError"):
                raise DataError(f"{label}: rows disagree on a column's type ({cause})") from None
            if isinstance(cause, OverflowError):
                raise DataError(f"{label}: a number too large for Arrow ({cause})") from None
            if isinstance(cause, TypeError) and "Couldn't write column" in str(cause):  # first batch all null
                raise DataError(f"{label}: rows disagree on a column's type ({cause})") from None
            if isinstance(cause, KeyError) and _raised_in(cause, "arrow_writer.py"):  # a row without a column
                raise DataError(f"{label}: a row has no column {cause} that the rows before it have") from None
            cause = cause.__cause__ or cause.__context__
        raise


def _raised_in(exc: BaseException, filename: str) -> bool:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename.endswith(filename)
