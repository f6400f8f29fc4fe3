"""Near-duplicate dedup: MinHash LSH over identifier-token shingles, as BigCode did for The Stack.

The definition (BigCode's near_deduplication/minhash_deduplication.py, with the choices marked *):
- tokens: the non-empty pieces of `re.split("[^A-Za-z_0-9]", text)`. All tokens are ASCII; any other
  character splits like punctuation (`größe` -> `gr`, `e`). *BigCode kept the empty pieces, so
  `a + b` -> `a+b` changed its shingles; without them the shingles depend on the identifier
  sequence only, as the `variables` key does.
- shingles: the set of runs of `ngram` consecutive tokens, each its tokens joined by one space
  (UTF-8 bytes). *A document with fewer than `ngram` tokens has one shingle, all its tokens (the
  empty string for none): short documents are duplicates when their token sequences are equal.
  BigCode gave them no shingles, whose all-maximum signature made every short file a duplicate
  of the first one.
- signature: datasketch's MinHash (its default scheme, affine32) with `num_perm` permutations drawn
  from `seed`: sha1_hash32 of each shingle, the MurmurHash3 fmix32 pre-mix, `a_k * h + b_k` mod
  2^32, the minimum over the shingles. Bit-identical to
  `datasketch.MinHash(num_perm, seed=seed).update_batch(shingles)` (tests/data/test_minhash.py),
  computed here for a batch of documents at once in numpy (datasketch hashes one at a time).
- bands: `b` bands of `r` rows, datasketch's MinHashLSH choice for `threshold` (it minimises the
  sum of the false positive and false negative probabilities, equally weighted). Band k of a
  signature is hashed with k to one 64-bit key, so a file's bands are `b` integers.
- the decision, in row order: *a file is dropped when one of its band keys is a band key of an
  earlier KEPT file. Every dropped file then has a kept file that collides with it. BigCode joined
  all colliding pairs with union-find and kept the first file of each connected component, which
  needs every file first and also drops a file whose only similar file was itself dropped
  (A ~ B ~ C, A and C dissimilar: C went too). The rule here decides each file when it arrives, so
  the batch form (`kept_in_order`, used by runner.data.dedup) and the streaming form
  (`MinHashIndex`) keep the same rows (tested).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Every word byte ([A-Za-z0-9_]) to itself, every other byte (all of UTF-8's multi-byte sequences
# included) to a space: `bytes.split()` then yields exactly the non-empty pieces of the regex split.
_WORD = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_"
_TO_SPACE = bytes(c if c in _WORD else 32 for c in range(256))
_MAX32 = np.uint32(0xFFFFFFFF)  # an empty signature's value (datasketch's affine32 maximum)
# Hashes per block of the [hashes, num_perm] permutation matrix: 256 x 256 x 4 B = 256 KiB, in a
# core's L2 cache (4096 was 4x slower on the bench machine's EPYC).
_BLOCK = 256
DEFAULT_SEED = 42  # BigCode's SEED


def tokens(text: str) -> list[bytes]:
    """The non-empty pieces of re.split("[^A-Za-z_0-9]", text), as ASCII bytes."""
    return text.encode("utf-8", "surrogatepass").translate(_TO_SPACE).split()


def shingles(text: str, ngram: int) -> list[bytes]:
    """The distinct shingles of a document (order of first appearance); one for a short document."""
    toks = tokens(text)
    if len(toks) < ngram:
        return [b" ".join(toks)]
    joined = b" ".join(toks)
    starts = [0, *itertools.accumulate(len(t) + 1 for t in toks)]  # of each token in `joined`
    return list(dict.fromkeys([joined[starts[i] : starts[i + ngram] - 1] for i in range(len(toks) - ngram + 1)]))


def shingle_hashes(text: str, ngram: int) -> np.ndarray:
    """uint32 [shingles]: datasketch's sha1_hash32 (the first 4 digest bytes, little-endian) of each."""
    digests = b"".join([hashlib.sha1(s).digest() for s in shingles(text, ngram)])  # 20 bytes each
    return np.frombuffer(digests, "<u4").reshape(-1, 5)[:, 0]


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's finalizer on uint32 (wrapping multiplication), datasketch's affine32 pre-mix."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _mix64(h: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on uint64 (a bijection): spreads a band's values over 64 bits."""
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band): datasketch MinHashLSH's optimum for the threshold (25 ms at 256
    permutations, 0.2 s at 1024: once per dedup or index)."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return int(lsh.b), int(lsh.r)


@dataclass(frozen=True, eq=False)
class MinHashScheme:
    """Everything that maps a text to its band keys; plain data, so datasets.map workers receive it."""

    threshold: float
    num_perm: int
    ngram: int
    seed: int
    bands: int
    rows: int
    a: np.ndarray  # uint32 [num_perm], odd: datasketch's affine32 multipliers for `seed`
    b: np.ndarray  # uint32 [num_perm]

    @classmethod
    def make(cls, threshold: float, num_perm: int, ngram: int, seed: int = DEFAULT_SEED) -> MinHashScheme:
        from datasketch import MinHash

        if not 0 < threshold < 1 or num_perm < 1 or ngram < 1:
            raise ValueError(f"minhash: need 0 < threshold < 1, num_perm >= 1, ngram >= 1 "
                             f"(got {threshold}, {num_perm}, {ngram})")
        a, b = MinHash(num_perm=num_perm, seed=seed).permutations  # uint32 [2, num_perm]
        bands, rows = lsh_bands(float(threshold), int(num_perm))
        return cls(float(threshold), int(num_perm), int(ngram), int(seed), bands, rows,
                   np.ascontiguousarray(a, np.uint32), np.ascontiguousarray(b, np.uint32))

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        """uint32 [len(texts), num_perm]: each text's MinHash signature."""
        hashes = [shingle_hashes(t, self.ngram) for t in texts]
        return signatures_of(hashes, self.a, self.b)

    def keys(self, texts: Sequence[str]) -> np.ndarray:
        """uint64 [len(texts), bands]: each text's band keys."""
        return band_keys(self.signatures(texts), self.bands, self.rows)


def signatures_of(hashes: Sequence[np.ndarray], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """uint32 [docs, num_perm]: min over each document's shingle hashes of fmix32(h) * a + b (mod 2^32).

    `hashes`: one uint32 array of shingle hashes per document, at least one each (as `shingles`
    gives). Documents are taken in blocks of about _BLOCK hashes: one [hashes, num_perm] matrix,
    reduced per document with np.minimum.reduceat; a document larger than a block, block by block.
    """
    n, p = len(hashes), len(a)
    out = np.full((n, p), _MAX32, np.uint32)
    if n == 0:
        return out
    lengths = np.fromiter((len(h) for h in hashes), np.int64, count=n)
    if not lengths.all():  # reduceat would give an empty range the next row's value, not the maximum
        raise ValueError("minhash: every document needs at least one shingle hash")
    ends = np.cumsum(lengths)
    i = 0
    while i < n:
        start = ends[i] - lengths[i]
        j = max(int(np.searchsorted(ends, start + _BLOCK, side="right")), i + 1)  # docs [i, j)
        if j == i + 1 and lengths[i] > _BLOCK:  # one big document, in blocks
            mixed = _fmix32(hashes[i])
            for s in range(0, len(mixed), _BLOCK):
                block = mixed[s : s + _BLOCK, None] * a + b  # [block, num_perm]
                np.minimum(out[i], block.min(axis=0), out=out[i])
        else:
            mixed = _fmix32(np.concatenate(hashes[i:j]))
            block = mixed[:, None] * a + b  # [hashes of docs i..j, num_perm]
            out[i:j] = np.minimum.reduceat(block, ends[i:j] - lengths[i:j] - start, axis=0)
        i = j
    return out


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """uint64 [docs, bands]: band k (signature values k*rows .. (k+1)*rows - 1) hashed with k, 0 -> 1."""
    n = len(signatures)
    values = signatures[:, : bands * rows].reshape(n, bands, rows).astype(np.uint64)
    h = np.broadcast_to(_mix64(np.arange(1, bands + 1, dtype=np.uint64)), (n, bands))
    for j in range(rows):
        h = _mix64(h ^ values[:, :, j])
    return np.maximum(h, np.uint64(1))  # never 0: KeySet's empty slot


def kept_in_order(keys: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """Which rows to keep, by the rule above, and counts. `keys`: uint64 [rows, bands].

    Returns (bool [rows], {"candidates": rows sharing a band key with an earlier row, "clusters":
    kept rows that some dropped row collides with}). A row whose keys all appear first at itself
    has no earlier row to collide with and is kept; only the others (duplicates and LSH false
    candidates) are decided one by one, against the keys of the rows kept before them.
    """
    n, nb = keys.shape
    keep = np.ones(n, bool)
    counts = {"candidates": 0, "clusters": 0}
    if n == 0:
        return keep, counts
    _, first, inverse = np.unique(keys.ravel(), return_index=True, return_inverse=True)
    bucket = inverse.reshape(n, nb)  # [rows, bands]: ids of distinct keys
    candidate = (first[bucket] // nb < np.arange(n)[:, None]).any(axis=1)  # a key seen at an earlier row
    owner = np.full(len(first), -1, np.int64)  # the kept row that holds each key, -1: none yet
    sure = np.flatnonzero(~candidate)
    owner[bucket[sure]] = sure[:, None]
    has_duplicate = np.zeros(n, bool)
    for i in np.flatnonzero(candidate):
        held = owner[bucket[i]]
        held = held[held >= 0]
        if len(held):
            keep[i] = False
            has_duplicate[held.min()] = True
        else:
            owner[bucket[i]] = i
    counts["candidates"] = int(candidate.sum())
    counts["clusters"] = int(has_duplicate.sum())
    return keep, counts


class KeySet:
    """A set of nonzero 64-bit keys in one numpy array: open addressing, linear probing, at most half
    full, 0 marks an empty slot. 16-32 bytes per key, where a Python set of ints takes about 70; and
    the array is the state a checkpoint saves."""

    def __init__(self, table: np.ndarray | None = None, count: int = 0) -> None:
        self.table = np.zeros(1 << 10, np.uint64) if table is None else table  # uint64 [power of 2]
        if len(self.table) & (len(self.table) - 1):
            raise ValueError(f"key set: the table's length {len(self.table)} is not a power of 2")
        self.count = count
        self._slots = memoryview(self.table)  # Python ints per element: ~4x faster than numpy scalars

    def __len__(self) -> int:
        return self.count

    def __contains__(self, key: int) -> bool:
        slots, mask = self._slots, len(self.table) - 1
        i = key & mask
        while True:
            v = slots[i]
            if v == key:
                return True
            if v == 0:
                return False
            i = (i + 1) & mask

    def add(self, keys: Sequence[int]) -> None:
        if 2 * (self.count + len(keys)) > len(self.table):
            self._grow(2 * len(self.table))
        slots, mask = self._slots, len(self.table) - 1
        for key in keys:
            i = key & mask
            while slots[i] != 0 and slots[i] != key:
                i = (i + 1) & mask
            if slots[i] == 0:
                slots[i] = key
                self.count += 1

    def _grow(self, size: int) -> None:
        """Re-place every key in a table of `size` slots, all keys at once: in each round, every key
        not yet placed claims its current slot; of the claims on a free slot the first wins, the
        others move one slot on. Slots only fill, so every slot between a key's home and its place
        is taken, which is all a lookup needs."""
        keys = self.table[self.table != 0]
        table = np.zeros(size, np.uint64)
        mask = np.uint64(size - 1)
        slot = keys & mask
        while len(keys):
            free = table[slot] == 0
            _, first = np.unique(slot[free], return_index=True)
            won = np.flatnonzero(free)[first]
            table[slot[won]] = keys[won]
            rest = np.ones(len(keys), bool)
            rest[won] = False
            keys, slot = keys[rest], (slot[rest] + np.uint64(1)) & mask
        self.table, self._slots = table, memoryview(table)


class MinHashIndex:
    """The streaming form: documents one at a time, each kept unless it collides with a kept one.

        index = MinHashIndex(threshold=0.85, num_perm=256, ngram=5)
        keep = [index.is_new(text) for text in stream]      # True: keep it; it is now remembered
        saved = index.state()                                # dict of numpy arrays and ints
        index = MinHashIndex.from_state(saved)               # resumes exactly

    Memory: the band keys of every kept document in a KeySet, `bands` keys of 16-32 bytes per kept
    document (13 bands at the defaults: 0.2-0.4 KB per kept document, 2-4 GB per 10 million).
    """

    def __init__(self, threshold: float, num_perm: int = 256, ngram: int = 5, seed: int = DEFAULT_SEED) -> None:
        self.scheme = MinHashScheme.make(threshold, num_perm, ngram, seed)
        self.keys = KeySet()
        self.seen = 0  # documents offered
        self.kept = 0  # documents kept

    def is_new(self, text: str) -> bool:
        """True if no kept document collides with `text` in a band; then `text` is kept (remembered)."""
        return self.add_keys(self.scheme.keys([text])[0])

    def are_new(self, texts: Sequence[str]) -> list[bool]:
        """is_new for each text in order (signatures computed together: faster than one by one)."""
        return [self.add_keys(k) for k in self.scheme.keys(texts)] if len(texts) else []

    def add_keys(self, keys: np.ndarray | Sequence[int]) -> bool:
        """is_new for a document given its band keys (uint64 [bands], from `scheme.keys`)."""
        ks = [int(k) for k in keys]
        self.seen += 1
        if any(k in self.keys for k in ks):
            return False
        self.keys.add(ks)
        self.kept += 1
        return True

    def state(self) -> dict[str, Any]:
        """The whole index as numpy arrays and ints (a copy: the index may go on)."""
        s = self.scheme
        return {"table": self.keys.table.copy(), "count": self.keys.count, "seen": self.seen, "kept": self.kept,
                "threshold": np.float64(s.threshold), "num_perm": s.num_perm, "ngram": s.ngram, "seed": s.seed,
                "bands": s.bands, "rows": s.rows}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> MinHashIndex:
        index = cls(float(state["threshold"]), int(state["num_perm"]), int(state["ngram"]), int(state["seed"]))
        if (index.scheme.bands, index.scheme.rows) != (int(state["bands"]), int(state["rows"])):
            raise ValueError(f"minhash state: saved with {int(state['bands'])} bands of {int(state['rows'])} rows, "
                             f"this datasketch chooses {index.scheme.bands} of {index.scheme.rows}")
        index.keys = KeySet(np.array(state["table"], np.uint64), int(state["count"]))  # a writable copy
        index.seen, index.kept = int(state["seen"]), int(state["kept"])
        return index


def keys_table(table: Any, scheme: MinHashScheme) -> Any:
    """datasets.map (batched, Arrow format): a batch's band keys (`_keys`, fixed-size list of uint64)
    and whether each document has fewer than `ngram` tokens (`_short`)."""
    import pyarrow as pa

    texts = [t if t is not None else "" for t in table.column("text").to_pylist()]
    keys = scheme.keys(texts)  # [batch, bands]
    column = pa.FixedSizeListArray.from_arrays(pa.array(keys.ravel(), pa.uint64()), scheme.bands)
    short = pa.array([len(tokens(t)) < scheme.ngram for t in texts], pa.bool_())
    return pa.table({"_keys": column, "_short": short})
