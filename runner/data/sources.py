"""Sources: each entry of `data.sources` becomes a `datasets.Dataset` with a `text` column.

Every source is read into Arrow on disk (memory-mapped), so a corpus larger than memory streams
through. Rows keep their columns; a JSON `meta` mapping is flattened into columns (the Code
Clippy corpus keeps repo_name, stars, ... there).
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

from ..recipe.schema_data import AppsSource, FilesSource, HfSource, JsonlSource, ParquetSource


class DataError(Exception):
    """Bad data input: a missing file, an unreadable archive, a malformed line, an empty result."""


def workers(num_proc: int | None, rows: int) -> int | None:
    """Worker processes worth starting for `rows` rows: none for small inputs (start-up costs more)."""
    if num_proc is None or num_proc <= 1 or rows < 2000:
        return None
    return num_proc


# --- files ---------------------------------------------------------------------------------


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


def files_root(source: Any, where: str) -> Path:
    """The directory a `files` source reads: its root, or this interpreter's standard library."""
    if source.stdlib:
        import sysconfig

        root = Path(sysconfig.get_paths()["stdlib"])
    else:
        root = Path(source.root)
    if not root.is_dir():
        raise DataError(f"{where}: {root} is not a directory")
    return root


def file_paths(root: Path, include: list[str], exclude: list[str]) -> list[Path]:
    """The files a `files` source reads: matching an include pattern, no exclude pattern, in order."""
    paths: dict[Path, None] = {}
    for pattern in include:
        for p in sorted(root.glob(pattern)):
            if p.is_file() and not any(p.relative_to(root).match(x) for x in exclude):
                paths[p] = None
    return list(paths)


def file_rows(root: Path, include: list[str], exclude: list[str], counts: dict[str, Any]) -> Iterator[dict]:
    """One row per file under root: text, path (relative to root), extension, size (bytes)."""
    for path in file_paths(root, include, exclude):
        data = path.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            counts["undecodable_files"] = counts.get("undecodable_files", 0) + 1
            continue
        yield {"text": text, "path": path.relative_to(root).as_posix(), "extension": path.suffix, "size": len(data)}


def fingerprint_source(source: Any, where: str) -> dict[str, Any]:
    """What a source's content is, known before reading it: the cache key's part and the
    manifest's record of the inputs. Each file is hashed once per run, here."""
    if isinstance(source, (JsonlSource, ParquetSource)):
        return {"files": {str(f): fingerprint(f) for f in expand(source.paths, where)}}
    if isinstance(source, FilesSource):
        root = files_root(source, where)
        digest = hashlib.blake2b(digest_size=16)
        for p in file_paths(root, source.include, source.exclude):
            digest.update(p.relative_to(root).as_posix().encode() + b"\0" + fingerprint(p).encode())
        return {"root": str(root), "fingerprint": digest.hexdigest()}
    if isinstance(source, AppsSource) and source.path is not None:
        if not Path(source.path).is_file():
            raise DataError(f"{where}: no such file {source.path}")
        return {"files": {source.path: fingerprint(Path(source.path))}}
    if isinstance(source, AppsSource):  # the hub's file: fingerprinted once downloaded (read_apps)
        return {"hub": source.hub, "split": source.split}
    # a hub dataset: its name, config, split and revision say what it is
    return {"dataset": {"name": source.name, "config": source.config, "split": source.split,
                        "revision": source.revision}}


# --- sources → datasets ------------------------------------------------------------------------


def read_source(source: Any, where: str, cache_dir: Path) -> tuple[Any, dict[str, Any]]:
    """(dataset with a `text` column or None when empty, manifest entry: rows and counts; the
    fingerprints come from `fingerprint_source`)."""
    counts: dict[str, int] = {}
    info: dict[str, Any] = {"type": source.type}
    if isinstance(source, JsonlSource):
        files = expand(source.paths, where)
        ds = _stream(jsonl_rows, cache_dir, where, files=files, text_field=source.text_field, on_error=source.on_error,
                     counts=counts)
    elif isinstance(source, ParquetSource):
        from datasets import load_dataset

        files = expand(source.paths, where)
        try:
            ds = load_dataset("parquet", data_files=[str(f) for f in files], split="train", cache_dir=str(cache_dir))
        except Exception as exc:
            raise DataError(f"{where}: cannot read parquet ({type(exc).__name__}: {exc})") from None
        if source.text_field not in ds.column_names:
            raise DataError(f"{where}: no column {source.text_field!r}; columns: {', '.join(ds.column_names)}")
        if source.text_field != "text":
            ds = ds.rename_column(source.text_field, "text")
    elif isinstance(source, HfSource):
        ds = _read_hf(source, where, cache_dir)
    elif isinstance(source, FilesSource):
        root = files_root(source, where)
        ds = _stream(file_rows, cache_dir, where, root=root, include=source.include, exclude=source.exclude, counts=counts)
    elif isinstance(source, AppsSource):
        from .apps import read_apps

        ds, apps_info = read_apps(source, where, cache_dir, counts)
        info.update(apps_info)
    else:  # pragma: no cover - the schema admits no other type
        raise DataError(f"{where}: unknown source type {source.type}")
    info["rows"] = 0 if ds is None else len(ds)
    info.update(counts)
    return ds, info


def _stream(generator, cache_dir: Path, label: str, **kwargs):
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


def _read_hf(source: HfSource, where: str, cache_dir: Path):
    from datasets import Dataset, load_dataset

    try:
        ds = load_dataset(source.name, source.config, split=source.split, revision=source.revision,
                          streaming=source.streaming)
    except Exception as exc:
        raise DataError(
            f"{where}: cannot load {source.name!r} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "with no network, export it to JSON Lines or Parquet and use a local source"
        ) from None
    if source.streaming:
        ds = Dataset.from_generator(lambda: iter(ds), cache_dir=str(cache_dir / "gen"))
    if source.text_field not in ds.column_names:
        raise DataError(f"{where}: no column {source.text_field!r}; columns: {', '.join(ds.column_names)}")
    if source.text_field != "text":
        ds = ds.rename_column(source.text_field, "text")
    return ds
