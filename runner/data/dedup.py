"""Deduplication: keep the first file (in source order) of each key.

`variables` is GPT-Code-Clippy's key: the pieces of `re.split(r"\\W+", text)` joined by single
spaces — identifiers, keywords, numbers and comment words in order, whitespace, punctuation and
operators ignored (so `a+b` and `a-b` are duplicates). Note that a leading or trailing non-word
character yields an empty first or last piece: "(a)" and "a" have different keys, as in the original.

The original ran a Python set inside a single-process `filter`. Here the keys are hashed
(blake2b, 128 bits) in parallel by `datasets.map`, and the first occurrence of each hash is
chosen in one vectorised pass (numpy) over the hash column: the same kept set, whatever num_proc.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import numpy as np

from .sources import workers

NON_WORD = re.compile(r"\W+")


def variables_key(text: str) -> str:
    return " ".join(NON_WORD.split(text))


def _hashes(batch: dict[str, list], kind: str) -> dict[str, list]:
    """128-bit blake2b of each key, as two signed 64-bit halves (Arrow-native, numpy-readable)."""
    lo, hi = [], []
    for text in batch["text"]:
        key = variables_key(text) if kind == "variables" else text
        digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        lo.append(int.from_bytes(digest[:8], "little", signed=True))
        hi.append(int.from_bytes(digest[8:], "little", signed=True))
    return {"_h0": lo, "_h1": hi}


def first_occurrences(hashes: np.ndarray) -> np.ndarray:
    """Indices of the first row of each distinct hash, in row order. `hashes`: [N, 2] int64."""
    if len(hashes) == 0:
        return np.zeros(0, dtype=np.int64)
    keys = np.ascontiguousarray(hashes).view(np.dtype((np.void, hashes.dtype.itemsize * hashes.shape[1]))).ravel()
    _, first = np.unique(keys, return_index=True)  # np.unique reports the first index of each value
    return np.sort(first)


def dedup(ds: Any, kind: str, num_proc: int | None) -> tuple[Any, dict[str, Any]]:
    """The kept rows and a report: rows in, duplicates removed."""
    before = len(ds)
    if kind == "none" or before == 0:
        return ds, {"type": kind, "rows_in": before, "duplicates": 0}
    hashed = ds.map(
        _hashes, fn_kwargs={"kind": kind}, batched=True, batch_size=1000, num_proc=workers(num_proc, before),
        remove_columns=[c for c in ds.column_names if c != "text"], desc=f"dedup keys ({kind})",
    )
    table = hashed.data  # Arrow, memory-mapped: no Python objects per row
    pairs = np.stack([table.column("_h0").to_numpy(), table.column("_h1").to_numpy()], axis=1)
    keep = first_occurrences(pairs)
    kept = ds.select(keep) if len(keep) != before else ds
    return kept, {"type": kind, "rows_in": before, "duplicates": before - len(kept)}
