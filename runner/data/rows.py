"""Rows in: the reading every data input shares (sources, APPS problems, metadata files).

Local files: glob patterns, plain/.gz/.zst text, a content hash, JSON Lines rows. Generators of
rows: streamed into Arrow on disk, so nothing is held in memory.
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
    """A text stream of a plain, .gz or .zst file."""
    try:
        if path.suffix == ".gz":
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
        if path.suffix == ".zst":
            import zstandard

            raw = open(path, "rb")  # noqa: SIM115 - closed with the wrapper
            return io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True), encoding="utf-8")
        return open(path, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise DataError(f"{path}: cannot open ({exc.strerror or exc})") from None


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


def jsonl_rows(files: list[Path], text_field: str, on_error: str, counts: dict[str, int]) -> Iterator[dict]:
    """Rows of JSON Lines files; `counts` gets rows read and lines skipped."""
    for path in files:
        stream = open_text(path)
        try:
            for number, line in enumerate(stream, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise ValueError(f"a JSON {type(row).__name__}, not an object")
                    if not isinstance(row.get(text_field), str):
                        raise ValueError(f"no string field {text_field!r}")
                except ValueError as exc:  # JSONDecodeError is a ValueError
                    if on_error == "skip":
                        counts["skipped_lines"] = counts.get("skipped_lines", 0) + 1
                        continue
                    raise DataError(f"{path}:{number}: malformed line ({exc}); set on_error: skip to skip such lines") from None
                row["text"] = row.pop(text_field)
                yield flatten_meta(row)
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
        except Exception as exc:  # zstandard raises its own ZstdError
            if type(exc).__name__ == "ZstdError":
                raise DataError(f"{path}: unreadable archive ({exc})") from None
            raise
        finally:
            stream.close()



def rows_to_arrow(generator, cache_dir: Path, label: str, **kwargs):
    """Rows from a generator straight into Arrow on disk (nothing held in memory); None if it yields none."""
    from datasets import Dataset

    # A fresh cache directory every time: datasets keys generator caches on the arguments (file
    # names), not on file contents, and must never hand back a stale copy. The arguments go in
    # through a partial: datasets would take a list argument for shards to parallelise over.
    target = Path(tempfile.mkdtemp(prefix="gen-", dir=cache_dir))
    try:
        return Dataset.from_generator(functools.partial(generator, **kwargs), cache_dir=str(target))
    except Exception as exc:
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, DataError):
                raise cause from None
            if type(cause).__name__ == "SchemaInferenceError":  # the generator yielded no row
                return None
            if type(cause).__name__ in ("ArrowInvalid", "ArrowTypeError", "ArrowNotImplementedError"):
                raise DataError(f"{label}: rows disagree on a column's type ({cause})") from None
            cause = cause.__cause__ or cause.__context__
        raise
