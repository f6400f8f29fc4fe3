"""Sources: each entry of `data.sources` becomes a `datasets.Dataset` with a `text` column.

Every source is read into Arrow on disk (memory-mapped), so a corpus larger than memory streams
through. Rows keep their columns; a JSON `meta` mapping is flattened into columns (the Code
Clippy corpus keeps repo_name, stars, ... there).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..common.errors import DataError
from ..recipe.schema_data import AppsSource, FilesSource, HfSource, JsonlSource, ParquetSource
from .apps import problems_file, read_apps
from .rows import expand, fingerprint, jsonl_table, rows_to_arrow


def workers(num_proc: int | None, rows: int) -> int | None:
    """Worker processes worth starting for `rows` rows: none for small inputs (start-up costs more)."""
    if num_proc is None or num_proc <= 1 or rows < 2000:
        return None
    return num_proc


# --- files ---------------------------------------------------------------------------------


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
        path = problems_file(source.path, hub=source.hub, split=source.split, where=where)
        return {"files": {source.path: fingerprint(path)}}
    if isinstance(source, AppsSource):  # the hub's file: fingerprinted once downloaded (read_apps)
        return {"hub": source.hub, "split": source.split}
    # a hub dataset: its name, config, split and revision say what it is
    return {"dataset": {"name": source.name, "config": source.config, "split": source.split,
                        "revision": source.revision}}


# --- sources → datasets ------------------------------------------------------------------------


def read_source(source: Any, where: str, cache_dir: Path, num_proc: int | None = None) -> tuple[Any, dict[str, Any]]:
    """(dataset with a `text` column or None when empty, manifest entry: rows and counts; the
    fingerprints come from `fingerprint_source`). num_proc: processes reading a JSON Lines source's
    files (one per file at most); the same rows in the same order as one process."""
    counts: dict[str, int] = {}
    info: dict[str, Any] = {"type": source.type}
    if isinstance(source, JsonlSource):
        files = expand(source.paths, where)
        ds = jsonl_table(files, source.text_field, source.on_error, counts, cache_dir, where, num_proc=num_proc)
    elif isinstance(source, ParquetSource):
        from datasets import load_dataset

        files = expand(source.paths, where)
        try:
            ds = load_dataset("parquet", data_files=[str(f) for f in files], split="train", cache_dir=str(cache_dir))
        except Exception as exc:
            raise DataError(f"{where}: cannot read parquet ({type(exc).__name__}: {exc})") from None
        ds = _text_column(ds, source.text_field, where)
    elif isinstance(source, HfSource):
        ds = _read_hf(source, where, cache_dir)
    elif isinstance(source, FilesSource):
        root = files_root(source, where)
        ds = rows_to_arrow(file_rows, cache_dir, where, root=root, include=source.include, exclude=source.exclude,
                           counts=counts)
    elif isinstance(source, AppsSource):
        ds, apps_info = read_apps(source, where, cache_dir, counts)
        info.update(apps_info)
    else:  # pragma: no cover - the schema admits no other type
        raise DataError(f"{where}: unknown source type {source.type}")
    info["rows"] = 0 if ds is None else len(ds)
    info.update(counts)
    return ds, info


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
    return _text_column(ds, source.text_field, where)


def _text_column(ds: Any, text_field: str, where: str) -> Any:
    """The dataset with its `text_field` column named `text`, the column every later stage reads."""
    if text_field not in ds.column_names:
        raise DataError(f"{where}: no column {text_field!r}; columns: {', '.join(ds.column_names)}")
    return ds if text_field == "text" else ds.rename_column(text_field, "text")
