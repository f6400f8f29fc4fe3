"""Documents → model-ready blocks: tokenize, build loss weights, pack into seq_len blocks.

Every block is `input_ids` int32 [seq_len] and `loss_weights` uint8 [seq_len]. `loss_weights[t]`
says whether token t is a training target (predicted from the tokens before it): the train step
scores logits[:, :-1] against input_ids[:, 1:] with loss_weights[:, 1:]. Padding (the EOS id)
has weight 0, so no token is counted twice and none is lost.

- Every example follows the tokenizer's conventions (data/tokenizer.py): it starts with the
  tokenizer's own prefix (BOS for Llama-family tokenizers, nothing for GPT-2's) and ends with EOS.
- clm: documents joined with EOS; packed (data.packing), they are cut into consecutive blocks
  (the last one padded); unpacked, each document is cut into its own blocks.
- apps: one example per solution, prompt (weight 0 with loss_on: solution) + solution + EOS
  (weight 1), prompt + solution tokenized as one text (tokenizer.encode_pairs: the ids are the
  tokenizer's for that text; a token straddling the boundary is the solution's); the first token of an example has weight 0 (nothing of its example precedes it);
  an example longer than seq_len is truncated or dropped. format.layout:
  row     one example per block, padded (GPT-Code-Clippy's: a batch of B rows is B examples).
  packed  the examples, shuffled with the recipe's seed (the "pack" stream), fill blocks whole
          (an example never straddles two blocks), and the blocks also carry `segment_ids` int32
          [seq_len] (1, 2, ... per example, 0 on padding) and `positions` int32 [seq_len]
          (restarting at 0 with every segment): the model attends within a segment only, so a
          block's loss is the sum of its examples' losses computed one per row.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .apps import apps_examples
from .rows import column_sum
from .sources import workers
from .tokenizer import encode_documents, encode_pairs, eos_id

OK, TRUNCATED, DROPPED = 0, 1, 2


SEGMENT_COLUMNS = ("segment_ids", "positions")  # packed apps blocks only


def block_features(seq_len: int, segments: bool = False):
    from datasets import Features, List, Value

    columns = {"input_ids": List(Value("int32"), length=seq_len), "loss_weights": List(Value("uint8"), length=seq_len)}
    if segments:
        columns.update({name: List(Value("int32"), length=seq_len) for name in SEGMENT_COLUMNS})
    return Features(columns)


def clm_ids(texts: list[str], tokenizer: Any, eos: int | None) -> list[list[int]]:
    """Each document's tokens, after the tokenizer's BOS if it puts one, followed by EOS (clm
    examples). `eos` None (a tokenizer without one) is a TokenizerError."""
    return encode_documents(tokenizer, texts, eos_id(tokenizer) if eos is None else eos)


def _clm_tokens(batch: dict[str, list], tokenizer: Any, eos: int) -> dict[str, list]:
    return {"ids": clm_ids(batch["text"], tokenizer, eos)}


def _apps_tokens(batch: dict[str, list], tokenizer: Any, eos: int, fmt: Any, seq_len: int) -> dict[str, list]:
    rows = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
    out: dict[str, list] = {"ids": [], "weights": [], "status": []}
    pairs = [pair for row in rows for pair in apps_examples(row, fmt.max_solutions, fmt.prompt)]
    if not pairs:
        return out
    prompt_weight = 0 if fmt.loss_on == "solution" else 1
    # One text per example, not prompt and solution apart: with byte-level BPE (GPT-2's) the two
    # differ only when a pre-token straddles the boundary (a solution starting with spaces merges
    # them with the prompt's last newline); with SentencePiece-style tokenizers the solution alone
    # would start with a spurious "▁" (a space the model would learn to emit).
    for ids, n_prompt in encode_pairs(tokenizer, pairs, eos):
        weights = [prompt_weight] * n_prompt + [1] * (len(ids) - n_prompt)
        weights[0] = 0  # never a target: in a row it has no predecessor, packed it must not have one
        status = OK
        if len(ids) > seq_len:
            if fmt.too_long == "drop":
                ids, weights, status = [], [], DROPPED
            else:
                ids, weights, status = ids[:seq_len], weights[:seq_len], TRUNCATED
        out["ids"].append(ids)
        out["weights"].append(weights)
        out["status"].append(status)
    return out


def example_features(apps: bool):
    """The tokenized examples' columns: ids int32 (what the blocks hold; datasets would infer int64
    from Python ints, 8 bytes a token on the scratch disk), apps loss weights uint8 (0 or 1) and
    status (OK, TRUNCATED, DROPPED)."""
    from datasets import Features, List, Value

    if not apps:
        return Features({"ids": List(Value("int32"))})
    return Features({"ids": List(Value("int32")), "weights": List(Value("uint8")), "status": Value("int64")})


def tokenize(docs: Any, tokenizer: Any, fmt: Any, seq_len: int, num_proc: int | None) -> tuple[Any, dict[str, Any]]:
    """Documents → examples (ids, and for apps weights and status), with counts."""
    eos = eos_id(tokenizer)
    if fmt.type == "clm":
        examples = docs.map(_clm_tokens, fn_kwargs={"tokenizer": tokenizer, "eos": eos}, batched=True,
                            batch_size=256, num_proc=workers(num_proc, len(docs)), remove_columns=docs.column_names,
                            features=example_features(apps=False), desc="tokenize")
        lengths = _lengths(examples)
        return examples, {"examples": len(examples), "tokens": int(lengths.sum())}
    examples = docs.map(_apps_tokens, fn_kwargs={"tokenizer": tokenizer, "eos": eos, "fmt": fmt, "seq_len": seq_len},
                        batched=True, batch_size=64, num_proc=workers(num_proc, len(docs)), remove_columns=docs.column_names,
                        features=example_features(apps=True), desc="tokenize apps")
    status = examples.data.column("status").to_numpy() if len(examples) else np.zeros(0, int)
    counts = {"examples": int(np.sum(status != DROPPED)), "truncated": int(np.sum(status == TRUNCATED)),
              "dropped": int(np.sum(status == DROPPED))}
    if counts["dropped"]:
        examples = examples.select(np.flatnonzero(status != DROPPED))
    counts["tokens"] = int(_lengths(examples).sum())
    return examples, counts


def _lengths(examples: Any) -> np.ndarray:
    if not len(examples):
        return np.zeros(0, np.int64)
    column = examples.data.column("ids")
    return np.concatenate([np.diff(c.offsets.to_numpy()) for c in column.chunks]) if column.num_chunks else np.zeros(0)


def _iter_column(examples: Any, name: str) -> Iterator[np.ndarray]:
    """A list column, one numpy array per row, streamed from Arrow."""
    for table in examples.with_format("arrow").iter(batch_size=4096):
        column = table.column(name)
        for chunk in column.chunks:
            offsets, values = chunk.offsets.to_numpy(), chunk.values.to_numpy(zero_copy_only=False)
            for i in range(len(chunk)):
                yield values[offsets[i] : offsets[i + 1]]


def _blocks(examples: Any, seq_len: int, pad: int, packing: bool, whole: bool) -> Iterator[dict[str, np.ndarray]]:
    """Blocks from examples in order. `whole`: never split an example across blocks, and give each
    example its own segment (apps packed)."""
    has_weights = "weights" in examples.column_names
    ids_iter = _iter_column(examples, "ids")
    weights_iter = _iter_column(examples, "weights") if has_weights else None
    buf_ids: list[np.ndarray] = []
    buf_w: list[np.ndarray] = []
    filled = 0

    def emit(ids_parts, w_parts):
        ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, np.int32)
        w = np.concatenate(w_parts) if w_parts else np.zeros(0, np.uint8)
        out_ids = np.full(seq_len, pad, np.int32)
        out_w = np.zeros(seq_len, np.uint8)
        out_ids[: len(ids)] = ids
        out_w[: len(w)] = w
        block = {"input_ids": out_ids, "loss_weights": out_w}
        if packing and whole:
            lengths = [len(part) for part in ids_parts]
            segments = np.zeros(seq_len, np.int32)  # padding: segment 0, after the examples
            segments[: len(ids)] = np.repeat(np.arange(1, len(lengths) + 1, dtype=np.int32), lengths)
            starts = np.cumsum([0, *lengths])  # each segment's first slot, padding's last
            positions = np.arange(seq_len, dtype=np.int32)
            positions -= np.repeat(starts, [*lengths, seq_len - len(ids)]).astype(np.int32)
            block.update({"segment_ids": segments, "positions": positions})
        return block

    for ids in ids_iter:
        weights = next(weights_iter) if has_weights else np.ones(len(ids), np.uint8)
        ids = ids.astype(np.int32)
        weights = weights.astype(np.uint8)
        if not packing:
            for start in range(0, len(ids), seq_len):
                yield emit([ids[start : start + seq_len]], [weights[start : start + seq_len]])
            continue
        if whole:
            if filled + len(ids) > seq_len and filled:
                yield emit(buf_ids, buf_w)
                buf_ids, buf_w, filled = [], [], 0
            buf_ids.append(ids)
            buf_w.append(weights)
            filled += len(ids)
            continue
        while len(ids):
            take = seq_len - filled
            buf_ids.append(ids[:take])
            buf_w.append(weights[:take])
            filled += len(ids[:take])
            ids, weights = ids[take:], weights[take:]
            if filled == seq_len:
                yield emit(buf_ids, buf_w)
                buf_ids, buf_w, filled = [], [], 0
    if filled:
        yield emit(buf_ids, buf_w)


def pack(examples: Any, fmt: Any, seq_len: int, pad: int, packing: bool, work_dir: Path,
         seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """Examples → a Dataset of blocks, with token counts. `packing` is data.packing (clm); apps
    follows fmt.layout, its packed examples shuffled by `seed` (the recipe's)."""
    from datasets import Dataset

    apps = fmt.type == "apps"
    if apps:
        packing = fmt.layout == "packed"
        if packing and len(examples) > 1:
            examples = examples.select(np.random.default_rng([seed, 0x7061636B]).permutation(len(examples)))  # "pack"
    features = block_features(seq_len, segments=apps and packing)
    if not len(examples):
        empty = {"blocks": 0, "block_tokens": 0, "real_tokens": 0, "padding_tokens": 0, "loss_tokens": 0}
        return Dataset.from_dict({name: [] for name in features}, features=features), empty
    path = Path(tempfile.mkdtemp(prefix="pack-", dir=work_dir)) / "blocks.arrow"
    write_blocks(_blocks(examples, seq_len, pad, packing, whole=apps), features, path)
    blocks = Dataset.from_file(str(path))
    real = int(_lengths(examples).sum())
    return blocks, {
        "blocks": len(blocks),
        "block_tokens": len(blocks) * seq_len,
        "real_tokens": real,
        "padding_tokens": len(blocks) * seq_len - real,
        "loss_tokens": column_sum(blocks, "loss_weights"),
    }


WRITE_BLOCKS = 256  # blocks per Arrow record batch


def write_blocks(blocks: Iterator[dict[str, np.ndarray]], features: Any, path: Path) -> None:
    """Blocks (dicts of [seq_len] arrays, the columns of `features`) → an Arrow stream file that
    `datasets.Dataset.from_file` reads. Record batches are built from numpy, a batch of blocks at a
    time: `Dataset.from_generator` would encode every block through Python lists (95% of the
    packing time on 18M tokens)."""
    import pyarrow as pa

    schema = features.arrow_schema
    names = list(features)

    def batch(rows: list[dict[str, np.ndarray]]) -> pa.RecordBatch:
        columns = []
        for name, field in zip(names, schema, strict=True):
            values = np.concatenate([row[name] for row in rows])
            columns.append(pa.FixedSizeListArray.from_arrays(pa.array(values, field.type.value_type),
                                                             field.type.list_size))
        return pa.RecordBatch.from_arrays(columns, schema=schema)

    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        rows: list[dict[str, np.ndarray]] = []
        for block in blocks:
            rows.append(block)
            if len(rows) == WRITE_BLOCKS:
                writer.write_batch(batch(rows))
                rows = []
        if rows:
            writer.write_batch(batch(rows))
