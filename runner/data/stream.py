"""Training from a stream (`data.streaming: true`): documents are read, joined, filtered,
deduplicated, tokenized and packed while training runs, through a seeded shuffle buffer.

    records of the sources, in order ─ chunks of CHUNK_RECORDS ─▶ workers: parse, metadata join,
    filters, dedup keys, tokenize (what a chunk determines by itself) ─ in chunk order ─▶
    the consumer: dedup, pack, shuffle buffer (sequential) ─▶ blocks [T] for the train loop

An epoch reads the sources once; the next reads them again (its dedup starts afresh, so it keeps
the same documents). Workers compute only what their chunk determines, and their results are
taken in chunk order, so their number changes nothing.

The consumer's state is the stream's position: the epoch, the chunks consumed, the dedup keys
seen this epoch, the packer's unfinished block, the blocks made but not yet in the buffer, the
buffer and its random generator. `state()` is saved with every checkpoint and `restore()` goes on
from it bit for bit: the reader passes over the records of the chunks already consumed
(decompressing and splitting lines, nothing more) and the workers take over from there.

With shuffle_buffer 1 the first epoch's blocks are the data stage's in-memory `train` blocks for
the same recipe (tests/data/test_stream.py checks it block by block).
"""

from __future__ import annotations

import collections
import functools
import hashlib
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..common.errors import DataError
from ..common.procs import die_with_parent
from ..recipe.schema_data import HfSource, JsonlSource
from .dedup import key_hashes
from .filters import check_columns, keep_rows
from .metadata import MATCHED, lookup
from .pack import clm_ids
from .rows import expand, jsonl_lines, parse_line
from .sources import read_source

CHUNK_RECORDS = 256  # records per worker task: the unit of the stream's position
STATE_VERSION = 1


# --- reading ------------------------------------------------------------------------------------


def cheap_fingerprints(sources: list[Any], where: str) -> list[Any]:
    """What the stream's local files are, known without reading them (size and modification time:
    hashing hundreds of GB would delay the first step by minutes); a resumed stream refuses
    files that changed."""
    out = []
    for i, source in enumerate(sources):
        if hasattr(source, "paths"):  # jsonl, parquet: local files
            files = expand(source.paths, f"{where}[{i}]")
            out.append([[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files])
        else:
            out.append(source.model_dump(mode="json"))
    return out


def records(sources: list[Any], where: str, work: Path) -> Iterator[tuple[int, Any, Any]]:
    """(source index, (file, line) or None, raw line bytes or a row) of every record, in order.
    JSON Lines files are read line by line and parsed by the workers; a hub dataset with
    `streaming: true` is iterated as it downloads; other sources (local, bounded) are read
    into Arrow as the data stage reads them and iterated."""
    for i, source in enumerate(sources):
        if isinstance(source, JsonlSource):
            for path in expand(source.paths, f"{where}[{i}]"):
                for number, data in jsonl_lines(path):
                    yield i, (str(path), number), data
        elif isinstance(source, HfSource) and source.streaming:
            from datasets import load_dataset

            try:
                ds = load_dataset(source.name, source.config, split=source.split, revision=source.revision,
                                  streaming=True)
            except Exception as exc:
                raise DataError(f"{where}[{i}]: cannot stream {source.name!r} ({type(exc).__name__})") from None
            for row in ds:
                yield i, None, row
        else:
            ds, _ = read_source(source, f"{where}[{i}]", work)
            for row in ds if ds is not None else ():
                yield i, None, row


# --- the workers' part: one chunk --------------------------------------------------------------


@dataclass(frozen=True)
class Transform:
    """What a worker needs to turn a chunk of records into token sequences (picklable; sent once)."""

    tokenizer_dir: str
    sources: tuple[tuple[str, str], ...]  # (text_field, on_error) per source
    filters: tuple[Any, ...]
    prepared: dict[int, Any]  # decontamination benchmarks by filter index
    metadata: tuple[Any, dict[str, tuple]] | None  # (spec, table)
    dedup: str  # none, exact, variables or minhash: the keys are made here, the consumer compares them
    minhash: Any = None  # runner.data.minhash.MinHashScheme for minhash dedup


@functools.lru_cache(maxsize=2)
def _tokenizer(directory: str) -> Any:
    from .tokenizer import load_tokenizer

    return load_tokenizer(directory)


def _select(batch: dict[str, list], mask: list[bool]) -> dict[str, list]:
    return {k: [v for v, m in zip(values, mask, strict=True) if m] for k, values in batch.items()}


def process_chunk(t: Transform, chunk: list[tuple[int, Any, Any]]) -> dict[str, Any]:
    """A chunk's kept documents as token ids (each + EOS), their dedup keys (or texts for minhash)
    and counts: the same rows, filters and tokens as the in-memory data stage."""
    counts: collections.Counter = collections.Counter(records=len(chunk))
    rows = []
    for i, loc, payload in chunk:
        text_field, on_error = t.sources[i]
        if isinstance(payload, bytes):
            try:
                row = parse_line(payload, loc[0], loc[1], text_field, on_error, counts)
            except UnicodeDecodeError as exc:
                raise DataError(f"{loc[0]}:{loc[1]}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
            if row is None:
                continue
        else:
            row = dict(payload)
            if text_field != "text":
                if text_field not in row:
                    raise DataError(f"data.sources[{i}]: no column {text_field!r}; columns: {', '.join(row)}")
                row["text"] = row.pop(text_field)
        rows.append(row)
    counts["rows"] = len(rows)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    batch = {c: [row.get(c) for row in rows] for c in columns}
    unfiltered: list[str] = []
    if t.metadata is not None and rows:
        spec, table = t.metadata
        if spec.on not in batch:
            raise DataError(f"data.metadata.on: the documents have no column {spec.on!r}; columns: {', '.join(columns)}")
        joined, found = lookup(spec, table, batch[spec.on])
        batch.update(joined)
        counts["metadata_matched"] += sum(found)
        if spec.missing == "fail" and not all(found):
            first = next(k for k, f in zip(batch[spec.on], found, strict=True) if not f)
            raise DataError(f"data.metadata: a document has no metadata ({spec.on} = {first!r}); "
                            "set data.metadata.missing: drop or keep")
        if spec.missing == "drop":
            batch = _select(batch, found)
            counts["metadata_dropped"] += len(found) - sum(found)
        elif spec.missing == "unfiltered":
            batch[MATCHED] = found
            unfiltered = list(spec.columns)
    if batch.get("text"):
        check_columns(list(t.filters), list(batch))
    for index, spec in enumerate(t.filters):
        if not batch.get("text"):
            break
        mask = keep_rows(spec, batch, t.prepared.get(index), unfiltered)
        counts[f"filter_{index}_removed"] += len(mask) - sum(mask)
        batch = _select(batch, mask)
    texts = batch.get("text") or []
    counts["kept_after_filters"] = len(texts)
    counts["text_bytes"] = sum(len(x.encode("utf-8")) for x in texts)
    keys = None  # int64 [n, 2] key hashes (exact, variables) or uint64 [n, bands] LSH band keys (minhash)
    if t.dedup in ("exact", "variables"):
        import pyarrow as pa

        keys = key_hashes(pa.table({"text": pa.array(texts, pa.large_string())}), t.dedup)
    elif t.dedup == "minhash":
        keys = t.minhash.keys(texts)
    tokenizer = _tokenizer(t.tokenizer_dir)
    ids = [np.asarray(x, np.int32) for x in clm_ids(texts, tokenizer, tokenizer.eos_token_id)] if texts else []
    return {"ids": ids, "keys": keys, "counts": dict(counts)}


_WORKER: dict[str, Transform] = {}  # a worker process's Transform, set once by its initializer


def _init_worker(t: Transform, parent: int) -> None:
    die_with_parent(parent)  # a SIGKILLed trainer takes its workers with it
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _WORKER["t"] = t


def _work(chunk: list) -> dict[str, Any]:
    return process_chunk(_WORKER["t"], chunk)


# --- the consumer: dedup, pack, shuffle ---------------------------------------------------------


class PairSet:
    """A set of 128-bit dedup keys (the int64 halves of `key_hashes`) in three numpy arrays: open
    addressing, linear probing, at most half full. 17-34 bytes per key where a Python set of
    16-byte strings takes about 90 (hundreds of millions of documents are read in a pass), and
    its keys are a plain array to checkpoint."""

    def __init__(self, keys: np.ndarray | None = None):
        keys = np.zeros((0, 2), np.int64) if keys is None else np.asarray(keys, np.int64).reshape(-1, 2)
        size = 1 << 10
        while 2 * len(keys) > size:
            size *= 2
        self._place(keys, size)

    def __len__(self) -> int:
        return self.count

    def _place(self, keys: np.ndarray, size: int) -> None:
        """A table of `size` slots holding `keys` (distinct), placed all at once: each round, every
        key not yet placed claims its slot; of the claims on a free slot the first wins, the others
        move one slot on (slots only fill, so a lookup's probe sequence reaches every key)."""
        hi, lo, used = np.zeros(size, np.int64), np.zeros(size, np.int64), np.zeros(size, np.uint8)
        slot = keys[:, 0].view(np.uint64) & np.uint64(size - 1)
        while len(keys):
            free = used[slot] == 0
            _, first = np.unique(slot[free], return_index=True)
            won = np.flatnonzero(free)[first]
            hi[slot[won]], lo[slot[won]], used[slot[won]] = keys[won, 0], keys[won, 1], 1
            rest = np.ones(len(keys), bool)
            rest[won] = False
            keys, slot = keys[rest], (slot[rest] + np.uint64(1)) & np.uint64(size - 1)
        self.hi, self.lo, self.used = hi, lo, used
        self.count = int(used.sum())
        self._views = (memoryview(hi), memoryview(lo), memoryview(used))  # Python ints per element: fast

    def add(self, hi: int, lo: int) -> bool:
        """Add a key; True when it was not there yet."""
        if 2 * (self.count + 1) > len(self.hi):
            self._place(self.keys(), 2 * len(self.hi))
        his, los, used = self._views
        mask = len(self.hi) - 1
        i = hi & mask
        while used[i]:
            if his[i] == hi and los[i] == lo:
                return False
            i = (i + 1) & mask
        his[i], los[i], used[i] = hi, lo, 1
        self.count += 1
        return True

    def keys(self) -> np.ndarray:
        """int64 [count, 2], in table order."""
        taken = self.used.astype(bool)
        return np.stack([self.hi[taken], self.lo[taken]], axis=1)


class _Packer:
    """Token sequences → blocks of seq_len, exactly as pack.py's clm blocks: packed, documents run
    on across blocks and the last block of an epoch is padded; unpacked, each document is cut into
    its own blocks (its last one padded)."""

    def __init__(self, seq_len: int, pad: int, packing: bool):
        self.seq_len, self.pad, self.packing = seq_len, pad, packing
        self.carry = np.zeros(0, np.int32)

    def _padded(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = np.full(self.seq_len, self.pad, np.int32)
        weights = np.zeros(self.seq_len, np.uint8)
        out[: len(ids)] = ids
        weights[: len(ids)] = 1
        return out, weights

    def add(self, ids: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        T = self.seq_len
        if not self.packing:
            return [self._padded(ids[start : start + T]) for start in range(0, len(ids), T)]
        joined = np.concatenate([self.carry, ids])
        whole = len(joined) // T * T
        self.carry = joined[whole:]
        return [(joined[s : s + T].copy(), np.ones(T, np.uint8)) for s in range(0, whole, T)]

    def flush(self) -> list[tuple[np.ndarray, np.ndarray]]:
        out = [self._padded(self.carry)] if len(self.carry) else []
        self.carry = np.zeros(0, np.int32)
        return out


@dataclass
class StreamSpec:
    """Everything that makes the stream what it is (its identity is checked on restore)."""

    sources: list[Any]
    transform: Transform
    seq_len: int
    packing: bool
    seed: int
    shuffle_buffer: int
    dedup: Any  # the recipe's data.dedup
    identity: str  # hash of the data spec, tokenizer, seed and source fingerprints
    workers: int = 1


class BlockStream:
    """An endless, seeded stream of training blocks. `next_blocks(n)` → input_ids int32 [n, T],
    loss_weights uint8 [n, T]; `state()` / `restore(state)` its exact position."""

    def __init__(self, spec: StreamSpec, work: Path):
        self.spec = spec
        self.seq_len = spec.seq_len
        self.work = work
        self._pool: ProcessPoolExecutor | None = None
        self._reset_position()

    # -- position ------------------------------------------------------------------------------

    def _reset_position(self) -> None:
        self.epoch = 0
        self.rng = np.random.default_rng([self.spec.seed, 0x7374726D])  # the "strm" stream of the seed
        self.buffer: list[tuple[np.ndarray, np.ndarray]] = []
        self.counts: collections.Counter = collections.Counter(epochs=0)  # passes over the sources completed
        self._start_epoch(0, chunk=0)

    def _start_epoch(self, epoch: int, *, chunk: int) -> None:
        self.epoch, self.chunk = epoch, chunk
        self.epoch_blocks = 0
        self.seen = PairSet()  # exact / variables keys of the documents kept in this pass
        self.minhash = self._new_minhash()
        eos = _tokenizer(self.spec.transform.tokenizer_dir).eos_token_id
        self.packer = _Packer(self.seq_len, eos, self.spec.packing)
        self.pending: collections.deque = collections.deque()
        self._feed: Iterator | None = None  # opened on first use (a restore may move it first)
        self._inflight: collections.deque[Future | dict] = collections.deque()

    def _new_minhash(self) -> Any:
        if self.spec.dedup.type != "minhash":
            return None
        from .minhash import MinHashIndex

        d = self.spec.dedup
        return MinHashIndex(threshold=d.threshold, num_perm=d.num_perm, ngram=d.ngram)

    # -- the chunk feed ------------------------------------------------------------------------

    def _chunks(self) -> Iterator[list]:
        self.work.mkdir(parents=True, exist_ok=True)  # removed by close()
        stream = records(self.spec.sources, "data.sources", self.work)
        while chunk := list(itertools.islice(stream, CHUNK_RECORDS)):
            yield chunk

    def _next_result(self) -> dict[str, Any] | None:
        """The next chunk's result in order, keeping `workers` * 2 chunks in flight; None at the
        end of the epoch."""
        if self._feed is None:
            self._feed = self._chunks()
            for _ in range(self.chunk):  # a restored position: pass over the chunks consumed
                if next(self._feed, None) is None:
                    raise DataError("the stream's sources hold fewer records than the checkpoint consumed; "
                                    "they changed since it was saved")
        window = 2 * self.spec.workers if self.spec.workers > 1 else 1
        while len(self._inflight) < window:
            chunk = next(self._feed, None)
            if chunk is None:
                break
            if self.spec.workers > 1:
                self._inflight.append(self._executor().submit(_work, chunk))
            else:
                self._inflight.append(process_chunk(self.spec.transform, chunk))
        if not self._inflight:
            return None
        head = self._inflight.popleft()
        return head.result() if isinstance(head, Future) else head

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            import multiprocessing

            # spawn: JAX's threads are running in this process; a fork could inherit a held lock
            self._pool = ProcessPoolExecutor(self.spec.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker, initargs=(self.spec.transform, os.getpid()))
        return self._pool

    def _advance(self) -> None:
        """Consume one chunk (or end the epoch): dedup, pack, into `pending`."""
        result = self._next_result()
        if result is None:  # the epoch's end: its last block, then the sources again
            self.pending.extend(self.packer.flush())
            self.epoch_blocks += len(self.pending)
            if not self.epoch_blocks:
                raise DataError("data: the stream made no training block in a whole pass over the sources "
                                "(every document was dropped)")
            self.counts["epochs"] += 1
            pending = self.pending
            self._start_epoch(self.epoch + 1, chunk=0)
            self.pending = pending
            return
        self.chunk += 1
        for key, value in result["counts"].items():
            self.counts[key] += value
        kept = 0
        for n, ids in enumerate(result["ids"]):
            if self.minhash is not None:
                if not self.minhash.add_keys(result["keys"][n]):
                    continue
            elif result["keys"] is not None and not self.seen.add(*result["keys"][n].tolist()):
                continue
            kept += 1
            blocks = self.packer.add(ids)
            self.epoch_blocks += len(blocks)
            self.pending.extend(blocks)
        self.counts["duplicates"] += len(result["ids"]) - kept
        self.counts["documents"] += kept

    def _block(self) -> tuple[np.ndarray, np.ndarray]:
        while len(self.buffer) < self.spec.shuffle_buffer:
            if not self.pending:
                self._advance()
                continue
            self.buffer.append(self.pending.popleft())
        j = int(self.rng.integers(len(self.buffer)))
        block = self.buffer[j]
        self.buffer[j] = self.buffer[-1]
        self.buffer.pop()
        return block

    def next_blocks(self, n: int) -> dict[str, np.ndarray]:
        blocks = [self._block() for _ in range(n)]
        self.counts["blocks"] += n
        return {"input_ids": np.stack([b[0] for b in blocks]), "loss_weights": np.stack([b[1] for b in blocks])}

    def report(self) -> dict[str, int]:
        """Counts so far: records read, rows, filtered, duplicates, documents kept, blocks given, epochs."""
        return {k: int(v) for k, v in sorted(self.counts.items())}

    # -- state -----------------------------------------------------------------------------------

    def state(self) -> dict[str, np.ndarray]:
        """The stream's exact position, as numpy arrays (`meta`: its JSON)."""
        T = self.seq_len

        def stacked(blocks) -> tuple[np.ndarray, np.ndarray]:
            ids = np.stack([b[0] for b in blocks]) if blocks else np.zeros((0, T), np.int32)
            w = np.stack([b[1] for b in blocks]) if blocks else np.zeros((0, T), np.uint8)
            return ids, w

        meta = {"version": STATE_VERSION, "identity": self.spec.identity, "epoch": self.epoch, "chunk": self.chunk,
                "epoch_blocks": self.epoch_blocks, "rng": self.rng.bit_generator.state, "counts": self.report()}
        seen = self.seen.keys()
        buffer_ids, buffer_w = stacked(self.buffer)
        pending_ids, pending_w = stacked(list(self.pending))
        out = {"meta": np.frombuffer(json.dumps(meta).encode(), np.uint8), "seen": seen, "carry": self.packer.carry,
               "buffer_ids": buffer_ids, "buffer_w": buffer_w, "pending_ids": pending_ids, "pending_w": pending_w}
        if self.minhash is not None:
            out.update({f"minhash.{k}": np.asarray(v) for k, v in self.minhash.state().items()})
        return out

    def restore(self, state: dict[str, np.ndarray]) -> None:
        meta = json.loads(bytes(state["meta"]).decode())
        if meta.get("version") != STATE_VERSION:
            raise DataError(f"the stream state has version {meta.get('version')}, this ccrun reads {STATE_VERSION}")
        if meta["identity"] != self.spec.identity:
            raise DataError("the checkpoint's stream was made from other data (sources, data section, tokenizer or "
                            "seed changed since it was saved); it cannot be resumed exactly")
        self.close()
        self._start_epoch(meta["epoch"], chunk=meta["chunk"])
        self.epoch_blocks = meta["epoch_blocks"]
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = meta["rng"]
        self.counts = collections.Counter(meta["counts"])
        self.seen = PairSet(state["seen"])
        self.packer.carry = np.asarray(state["carry"], np.int32)
        self.buffer = list(zip(state["buffer_ids"], state["buffer_w"], strict=True))
        self.pending = collections.deque(zip(state["pending_ids"], state["pending_w"], strict=True))
        if self.minhash is not None:
            from .minhash import MinHashIndex

            prefix = "minhash."
            self.minhash = MinHashIndex.from_state({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})

    def save(self, path: Path) -> None:
        """state() written atomically to `path` (.npz)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **self.state())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @staticmethod
    def load(path: Path) -> dict[str, np.ndarray]:
        """A state saved by `save`."""
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"{path}: not a stream position ({type(exc).__name__}: {exc})") from None

    def close(self) -> None:
        """Stop the workers and remove the scratch copies of local sources (a restore, the end of
        training); the position is kept, and a later use starts them again."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._inflight.clear()
        self._feed = None
        shutil.rmtree(self.work, ignore_errors=True)


# --- building one from a recipe ------------------------------------------------------------------


def stream_identity(recipe: Any, tokenizer_hash: str, fingerprints: list[Any]) -> str:
    key = {"data": recipe.data.model_dump(mode="json", exclude={"num_proc", "validation"}), "seed": recipe.seed,
           "tokenizer": tokenizer_hash, "sources": fingerprints, "chunk": CHUNK_RECORDS}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def open_stream(recipe: Any, data_dir: str | os.PathLike, *, workers: int | None = None) -> BlockStream:
    """The training stream of a streaming recipe whose data stage wrote `data_dir` (its tokenizer
    and manifest). Workers: data.num_proc, else the cores this process may run on but one (the
    train step's)."""
    from .filters import prepare_filters
    from .metadata import read_metadata

    data_dir = Path(data_dir)
    manifest = json.loads((data_dir / "manifest.json").read_text())
    data = recipe.data
    fingerprints = cheap_fingerprints(data.sources, "data.sources")
    if fingerprints != manifest["stream"]["sources"]:
        raise DataError("data.sources: the files changed since the data stage of this run (size or modification "
                        "time); the stream cannot be resumed exactly")
    metadata = None
    if data.metadata is not None:
        files = list(manifest["stream"]["metadata_files"])
        table, _ = read_metadata(data.metadata, files)
        metadata = (data.metadata, table)
    prepared = prepare_filters(data.filters, manifest["stream"]["filter_inputs"])
    scheme = None
    if data.dedup.type == "minhash":
        from .minhash import MinHashScheme

        scheme = MinHashScheme.make(data.dedup.threshold, data.dedup.num_perm, data.dedup.ngram)
    transform = Transform(
        tokenizer_dir=str(data_dir / "tokenizer"),
        sources=tuple((getattr(s, "text_field", "text"), getattr(s, "on_error", "fail")) for s in data.sources),
        filters=tuple(data.filters), prepared=prepared, metadata=metadata, dedup=data.dedup.type, minhash=scheme,
    )
    # The cores this process may use (under Slurm: its task's --cpus-per-task), less the train step's.
    procs = workers or data.num_proc or max(1, len(os.sched_getaffinity(0)) - 1)
    spec = StreamSpec(sources=list(data.sources), transform=transform, seq_len=data.seq_len, packing=data.packing,
                      seed=recipe.seed, shuffle_buffer=data.shuffle_buffer, dedup=data.dedup,
                      identity=stream_identity(recipe, manifest["tokenizer"]["hash"], fingerprints), workers=procs)
    work = Path(tempfile.mkdtemp(prefix="ccrun-stream-"))  # non-jsonl local sources are read into Arrow here
    return BlockStream(spec, work)


def sample_texts(sources: list[Any], count: int, work: Path) -> Iterator[str]:
    """The first `count` document texts of the sources (a tokenizer trained for a stream learns
    from them), as the workers parse them."""
    skipped: dict[str, int] = {}
    fields = [(getattr(s, "text_field", "text"), getattr(s, "on_error", "fail")) for s in sources]
    n = 0
    for i, loc, payload in records(sources, "data.sources", work):
        if n >= count:
            return
        if isinstance(payload, bytes):
            try:
                row = parse_line(payload, loc[0], loc[1], *fields[i], skipped)
            except UnicodeDecodeError as exc:
                raise DataError(f"{loc[0]}:{loc[1]}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
            text = row["text"] if row is not None else None
        else:
            text = payload.get(fields[i][0])
        if isinstance(text, str):
            n += 1
            yield text
