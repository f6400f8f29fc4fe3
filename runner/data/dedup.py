"""Deduplication: keep the first file (in source order) of each key, or of each near-duplicate group.

`variables` is GPT-Code-Clippy's key: the pieces of `re.split(r"\\W+", text)` joined by single
spaces — identifiers, keywords, numbers and comment words in order, whitespace, punctuation and
operators ignored (so `a+b` and `a-b` are duplicates). A leading or trailing non-word character
yields an empty first or last piece: "(a)" and "a" have different keys, as in the original.

The original ran that regex and a Python set inside a single-process `filter`; the regex was
almost all of its time. Here:
- ASCII rows (nearly all code) get the same key from one numpy pass over the Arrow bytes of a
  batch: word bytes ([A-Za-z0-9_], exactly what `\\w` matches in ASCII) are kept, and each run of
  non-word bytes becomes one space — a leading or trailing run too, which is the empty first or
  last piece. Rows with other characters use the regex itself (unicode identifiers included).
- Keys are hashed (blake2b, 128 bits) in `datasets.map` workers, and the first occurrence of each
  hash is chosen in one vectorised pass (numpy) over the hash column.
The kept set is the definition's, whatever num_proc is (tests/data/test_dedup.py checks both).

`minhash` (near duplicates, runner/data/minhash.py has the definition): each row's band keys are
computed in `datasets.map` workers, then the rows are decided in order by `kept_in_order`, the same
rule as the streaming `MinHashIndex`.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import numpy as np

from ..recipe.schema_data import MinHashDedup
from .minhash import MinHashScheme, kept_in_order, keys_table
from .sources import workers

NON_WORD = re.compile(r"\W+")
# Every byte to itself if it is a word byte ([A-Za-z0-9_], what \w matches in ASCII), else to a space.
_WORDS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_"
_TO_SPACE = bytes(c if c in _WORDS else 32 for c in range(256))


def variables_key(text: str) -> str:
    """The definition: `" ".join(re.split(r"\\W+", text))`."""
    return " ".join(NON_WORD.split(text))


def ascii_variables_keys(raw: bytes, offsets: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Keys of ASCII rows packed in one byte string: (key bytes, key offsets [rows + 1]).

    `offsets` int64 [rows + 1] as in an Arrow string array, starting at 0. Each run of non-word
    bytes becomes one space; a run at a row's start or end too (the empty first or last piece).
    """
    mapped = np.frombuffer(raw.translate(_TO_SPACE), np.uint8)  # [bytes]
    word = mapped != 32
    keep = word.copy()
    keep[1:] |= word[:-1]  # a word byte, or the first byte of a non-word run
    nonempty = offsets[:-1] < offsets[1:]
    starts = offsets[:-1][nonempty]
    keep[starts] = True  # a row's leading non-word run is a piece boundary too
    counts = np.zeros(len(offsets) - 1, np.int64)
    if len(starts):
        counts[nonempty] = np.add.reduceat(keep, starts, dtype=np.int64)
    key_offsets = np.zeros(len(offsets), np.int64)
    np.cumsum(counts, out=key_offsets[1:])
    return mapped[keep].tobytes(), key_offsets


def _bytes_and_offsets(column: Any) -> tuple[np.ndarray, np.ndarray]:
    """The UTF-8 bytes of a string array and its row offsets (int64, starting at 0), zero-copy."""
    import pyarrow as pa

    if column.null_count:
        column = column.fill_null("")
    if column.type != pa.large_string():
        column = column.cast(pa.large_string())  # int64 offsets; the data buffer is shared
    _, offsets_buf, data_buf = column.buffers()
    offsets = np.frombuffer(offsets_buf, np.int64)[column.offset : column.offset + len(column) + 1]
    data = np.frombuffer(data_buf, np.uint8)[offsets[0] : offsets[-1]] if data_buf is not None else np.zeros(0, np.uint8)
    return data, offsets - offsets[0]


def _digest_halves(key: bytes) -> tuple[int, int]:
    digest = hashlib.blake2b(key, digest_size=16).digest()
    return int.from_bytes(digest[:8], "little", signed=True), int.from_bytes(digest[8:], "little", signed=True)


def _hashes(table: Any, kind: str) -> dict[str, list]:
    """128-bit blake2b of each row's key, as two signed 64-bit halves (Arrow-native, numpy-readable)."""
    halves = key_hashes(table, kind)
    return {"_h0": halves[:, 0].tolist(), "_h1": halves[:, 1].tolist()}


def key_hashes(table: Any, kind: str) -> np.ndarray:
    """int64 [rows, 2]: the 128-bit blake2b of each row's key (`kind` exact or variables) of an Arrow
    table's `text` column, as two signed 64-bit halves."""
    column = table.column("text").combine_chunks()
    n = len(column)
    if n == 0:
        return np.zeros((0, 2), np.int64)
    data, offsets = _bytes_and_offsets(column)
    raw = data.tobytes()
    if kind == "variables":
        if raw.isascii():
            ascii_row = None
        else:
            starts = offsets[:-1][offsets[:-1] < offsets[1:]]
            ascii_row = np.ones(n, bool)
            ascii_row[offsets[:-1] < offsets[1:]] = np.maximum.reduceat(data, starts) < 128
        blob, key_offsets = ascii_variables_keys(raw, offsets)
        keys = [blob[key_offsets[i] : key_offsets[i + 1]] for i in range(n)]
        if ascii_row is not None:  # other rows: the definition itself, on the decoded text
            for i in np.flatnonzero(~ascii_row):
                keys[i] = variables_key(raw[offsets[i] : offsets[i + 1]].decode("utf-8")).encode("utf-8")
    else:  # exact
        keys = [raw[offsets[i] : offsets[i + 1]] for i in range(n)]
    return np.array([_digest_halves(k) for k in keys], np.int64).reshape(n, 2)


def first_occurrences(hashes: np.ndarray) -> np.ndarray:
    """Indices of the first row of each distinct hash, in row order. `hashes`: [N, 2] int64."""
    if len(hashes) == 0:
        return np.zeros(0, dtype=np.int64)
    keys = np.ascontiguousarray(hashes).view(np.dtype((np.void, hashes.dtype.itemsize * hashes.shape[1]))).ravel()
    _, first = np.unique(keys, return_index=True)  # np.unique reports the first index of each value
    return np.sort(first)


def dedup(ds: Any, spec: Any, num_proc: int | None) -> tuple[Any, dict[str, Any]]:
    """The kept rows and a report: rows in, duplicates removed (and for minhash its parameters and
    counts). `spec`: the recipe's data.dedup (or its type's name)."""
    kind = getattr(spec, "type", spec)
    before = len(ds)
    if kind == "minhash":
        return _minhash(ds, spec, num_proc)
    if kind == "none" or before == 0:
        return ds, {"type": kind, "rows_in": before, "duplicates": 0}
    hashed = ds.select_columns(["text"]).with_format("arrow").map(
        _hashes, fn_kwargs={"kind": kind}, batched=True, batch_size=2000, num_proc=workers(num_proc, before),
        remove_columns=["text"], desc=f"dedup keys ({kind})",
    )
    table = hashed.data  # Arrow, memory-mapped: no Python objects per row
    pairs = np.stack([table.column("_h0").to_numpy(), table.column("_h1").to_numpy()], axis=1)
    keep = first_occurrences(pairs)
    kept = ds.select(keep) if len(keep) != before else ds
    return kept, {"type": kind, "rows_in": before, "duplicates": before - len(kept)}


def _minhash(ds: Any, spec: Any, num_proc: int | None) -> tuple[Any, dict[str, Any]]:
    if isinstance(spec, str):  # the type's name alone: the schema's defaults
        spec = MinHashDedup(type="minhash")
    scheme = MinHashScheme.make(spec.threshold, spec.num_perm, spec.ngram)
    before = len(ds)
    report = {"type": "minhash", "rows_in": before, "duplicates": 0, "threshold": scheme.threshold,
              "num_perm": scheme.num_perm, "ngram": scheme.ngram, "seed": scheme.seed, "bands": scheme.bands,
              "rows_per_band": scheme.rows, "candidates": 0, "clusters": 0, "short_documents": 0}
    if before == 0:
        return ds, report
    # Signatures cost ~0.4 ms of CPU per 4.5 KB file (SHA-1 of each shingle): the map's workers carry it.
    keyed = ds.select_columns(["text"]).with_format("arrow").map(
        keys_table, fn_kwargs={"scheme": scheme}, batched=True, batch_size=500,
        num_proc=workers(num_proc, before), remove_columns=["text"], desc="dedup keys (minhash)",
    )
    table = keyed.data
    keys = table.column("_keys").combine_chunks().flatten().to_numpy().reshape(before, scheme.bands)
    keep, counts = kept_in_order(keys)
    kept = ds.select(np.flatnonzero(keep)) if not keep.all() else ds
    report.update(counts, duplicates=before - len(kept),
                  short_documents=int(table.column("_short").to_numpy(zero_copy_only=False).sum()))
    return kept, report
