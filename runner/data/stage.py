"""The data stage: sources → filters → dedup → split → tokenizer → tokenize → pack, cached by content.

`prepare_data(recipe, out_dir)` writes
  out_dir/manifest.json   rows in and out of every stage, what each filter removed, duplicates,
                          tokens, input fingerprints, tokenizer hash, cache key
  out_dir/documents/      kept documents with their original columns (DatasetDict train/validation)
  out_dir/tokens/         blocks: input_ids, loss_weights (DatasetDict train/validation)
  out_dir/tokenizer/      the tokenizer the tokens were made with
The result is built once per content key (source fingerprints, data spec, tokenizer, seed, data
code version) under the cache directory (cache.py: checked on every reuse, rebuilt when it fails)
and copied into out_dir, never linked: an edit of out_dir cannot reach the cache or another output.
out_dir appears whole or not at all (built beside it, then renamed).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import glob
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..common.errors import DataError
from ..recipe.schema import Recipe
from .cache import build_dir, clean_stale, copy_out, lookup, publish
from .dedup import dedup
from .filters import apply_filters, filter_fingerprints, prepare_filters
from .metadata import join_metadata, metadata_fingerprint, read_metadata
from .pack import pack, tokenize
from .rows import column_sum
from .sources import fingerprint_source, read_source

STREAM_TOKENIZER_DOCS = 100_000  # a tokenizer trained for a stream learns from this many first documents
SPLITS = ("train", "validation")


def default_cache_dir() -> Path:
    return Path(os.environ.get("CCRUN_CACHE", Path.home() / ".cache" / "ccrun")) / "data"


def code_version() -> str:
    """Hash of the data stage's own code: a change to it rebuilds every cached result."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):  # every module of the data stage
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def tokenizer_hash(tokenizer: Any) -> str:
    state = tokenizer.backend_tokenizer.to_str() + json.dumps(tokenizer.special_tokens_map, sort_keys=True)
    return hashlib.sha256(state.encode()).hexdigest()


def source_fingerprints(recipe: Recipe) -> dict[str, list[dict[str, Any]]]:
    """Every source's fingerprint, by where it is in the recipe (read once per run)."""
    data = recipe.data
    out = {"data.sources": [fingerprint_source(s, f"data.sources[{i}]") for i, s in enumerate(data.sources)]}
    if data.validation is not None and data.validation.sources:
        where = "data.validation.sources"
        out[where] = [fingerprint_source(s, f"{where}[{i}]") for i, s in enumerate(data.validation.sources)]
    if data.metadata is not None:
        out["data.metadata"] = [metadata_fingerprint(data.metadata)]
    benchmarks = filter_fingerprints(data.filters)  # decontamination: the benchmark files and versions
    if benchmarks:
        out["data.filters"] = benchmarks
    return out


def cache_key(recipe: Recipe, tokenizer_id: str, fingerprints: dict[str, list[dict[str, Any]]]) -> str:
    key = {
        "data": recipe.data.model_dump(mode="json", exclude={"num_proc"}),
        "sources": fingerprints,
        "tokenizer": tokenizer_id,
        "seed": recipe.seed,
        "code": code_version(),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


# --- the pipeline ---------------------------------------------------------------------------------


def _documents(sources: list[Any], where: str, fingerprints: list[dict[str, Any]], filters: list[Any],
               dedup_spec: Any, num_proc: int | None, work: Path,
               metadata: tuple[Any, dict, dict] | None = None,
               prepared: dict[int, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    from datasets import concatenate_datasets

    parts, infos = [], []
    for i, (source, fp) in enumerate(zip(sources, fingerprints, strict=True)):
        ds, info = read_source(source, f"{where}[{i}]", work, num_proc=num_proc)
        infos.append({"source": f"{where}[{i}]", **fp, **info})
        if ds is not None and len(ds):
            parts.append(ds)
    if not parts:
        raise DataError(f"{where}: the sources hold no rows")
    try:
        ds = parts[0] if len(parts) == 1 else concatenate_datasets(parts)
    except ValueError as exc:
        raise DataError(f"{where}: the sources' columns do not fit together ({exc})") from None
    rows_in, bytes_in = len(ds), _text_bytes(ds)
    joined, unfiltered = None, []
    if metadata is not None:
        spec, table, info = metadata
        ds, joined = join_metadata(ds, spec, table, info, where, num_proc)
        unfiltered = list(spec.columns) if spec.missing == "unfiltered" else []
    ds, filter_report = apply_filters(ds, filters, num_proc, prepared=prepared, unfiltered=unfiltered)
    ds, dedup_report = dedup(ds, dedup_spec, num_proc)
    report = {
        "sources": infos,
        "rows": rows_in,
        "text_bytes": bytes_in,
        **({"metadata": joined} if joined is not None else {}),
        "kept_text_bytes": _text_bytes(ds),
        "filters": filter_report,
        "after_filters": dedup_report["rows_in"],
        "dedup": dedup_report,
        "kept": len(ds),
    }
    return ds, report


def _text_bytes(ds: Any) -> int:
    """UTF-8 bytes of the text of the rows `ds` shows (not of the table under a filter's result)."""
    return column_sum(ds, "text", utf8_bytes=True) if len(ds) else 0


def _split(recipe: Recipe, train: Any, fingerprints: dict[str, list[dict[str, Any]]], num_proc: int | None,
           work: Path, metadata: tuple[Any, dict, dict] | None = None,
           prepared: dict[int, Any] | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """Train and validation documents: a seeded fraction of the kept rows, or separate sources."""
    spec = recipe.data.validation
    if spec is None:
        return train, None, {"method": "none"}
    if spec.sources:
        where = "data.validation.sources"
        val, report = _documents(spec.sources, where, fingerprints[where], recipe.data.filters,
                                 recipe.data.dedup, num_proc, work, metadata, prepared)
        info = {"method": "sources", **report}
    else:
        n = len(train)
        n_val = min(max(1, round(n * spec.fraction)), n - 1) if n > 1 else 0
        if n_val == 0:
            raise DataError(f"data.validation.fraction: {n} kept row(s) cannot be split into train and validation")
        rng = np.random.default_rng([recipe.seed, 0x76616C])  # the "val" stream of the recipe's seed
        chosen = np.zeros(n, bool)
        chosen[rng.permutation(n)[:n_val]] = True
        val = train.select(np.flatnonzero(chosen))
        train = train.select(np.flatnonzero(~chosen))
        info = {"method": "fraction", "fraction": spec.fraction}
    if spec.max_rows is not None and len(val) > spec.max_rows:
        val = val.select(range(spec.max_rows))
        info["capped_to"] = spec.max_rows
    info.update({"train_rows": len(train), "validation_rows": len(val)})
    return train, val, info


def _tokenizer(recipe: Recipe, train_docs: Any, out: Path) -> Any:
    from .tokenizer import build_tokenizer

    texts = (row["text"] for row in train_docs.select_columns(["text"]))
    return build_tokenizer(recipe.tokenizer, texts=texts, out_dir=out)


def _build(recipe: Recipe, tokenizer: Any, fingerprints: dict[str, list[dict[str, Any]]], target: Path,
           num_proc: int | None) -> dict[str, Any]:
    from datasets import DatasetDict

    data = recipe.data
    work = Path(tempfile.mkdtemp(prefix="work-", dir=target))
    metadata = None
    if data.metadata is not None:
        (fingerprint,) = fingerprints["data.metadata"]
        table, info = read_metadata(data.metadata, list(fingerprint["files"]))
        metadata = (data.metadata, table, {**fingerprint, **info})
    prepared = prepare_filters(data.filters, fingerprints.get("data.filters", []))  # benchmark n-grams, built once
    docs, doc_report = _documents(data.sources, "data.sources", fingerprints["data.sources"], data.filters,
                                  data.dedup, num_proc, work, metadata, prepared)
    train_docs, val_docs, split_report = _split(recipe, docs, fingerprints, num_proc, work, metadata, prepared)
    if tokenizer is None:
        tokenizer = _tokenizer(recipe, train_docs, target / "tokenizer")
    else:
        tokenizer.save_pretrained(str(target / "tokenizer"))
    documents = {"train": train_docs} if val_docs is None else {"train": train_docs, "validation": val_docs}
    DatasetDict(documents).save_to_disk(str(target / "documents"))
    blocks, token_reports = {}, {}
    for split, ds in documents.items():
        examples, tok_report = tokenize(ds, tokenizer, data.format, data.seq_len, num_proc)
        blocks[split], pack_report = pack(examples, data.format, data.seq_len, tokenizer.eos_token_id,
                                          data.packing, work, seed=recipe.seed)
        token_reports[split] = {"documents": len(ds), **tok_report, **pack_report}
    if not len(blocks["train"]):
        raise DataError("data: no training blocks were made (every example was dropped)")
    DatasetDict(blocks).save_to_disk(str(target / "tokens"))
    shutil.rmtree(work, ignore_errors=True)
    return {
        "documents": doc_report,
        "split": split_report,
        "tokens": token_reports,
        "tokenizer": tokenizer_report(recipe, tokenizer),
    }


def tokenizer_report(recipe: Recipe, tokenizer: Any) -> dict[str, Any]:
    """The manifest's tokenizer: where it came from, its hash and size, the EOS that ends every
    example and the ids that start one (BOS for Llama-style tokenizers; none for GPT-2's)."""
    from .tokenizer import prefix_ids

    return {
        "source": recipe.tokenizer.name or "trained",
        "hash": tokenizer_hash(tokenizer),
        "vocab_size": len(tokenizer),
        "eos_token_id": tokenizer.eos_token_id,
        "prefix_ids": prefix_ids(tokenizer),
    }


def _warn(line: str) -> None:
    print(f"ccrun: warning: {line}", file=sys.stderr, flush=True)


def prepare_data(
    recipe: Recipe,
    out_dir: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    num_proc: int | None = None,
    warn: Callable[[str], None] = _warn,
) -> dict[str, Any]:
    """Run (or reuse) the data stage for `recipe` into `out_dir`; returns the manifest."""
    if not sys.stderr.isatty():  # a log file, not a terminal: no progress bars from datasets
        import datasets

        datasets.disable_progress_bars()
    if recipe.data is None:
        raise DataError("the recipe has no data section")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out}: exists and is not empty; give a new directory (nothing was overwritten)")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # workers are processes, not threads
    procs = num_proc or recipe.data.num_proc or os.cpu_count() or 1
    procs = procs if procs > 1 else None

    if recipe.data.streaming:
        return _prepare_stream(recipe, out, procs)
    tokenizer = None
    if recipe.tokenizer.name is not None:
        from .tokenizer import load_tokenizer

        tokenizer = load_tokenizer(recipe.tokenizer.name, revision=recipe.tokenizer.revision)
        tokenizer_id = tokenizer_hash(tokenizer)
    else:
        tokenizer_id = json.dumps(recipe.tokenizer.model_dump(mode="json"), sort_keys=True)
    fingerprints = source_fingerprints(recipe)
    key = cache_key(recipe, tokenizer_id, fingerprints)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    clean_stale(cache)  # what killed builders left
    found = lookup(cache, key, warn)
    hit = found is not None
    if found is None:
        with build_dir(cache, key) as building:
            report = _build(recipe, tokenizer, fingerprints, building, procs)
            manifest = {
                "cache_key": key,
                "code_version": code_version(),
                "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "seed": recipe.seed,
                "seq_len": recipe.data.seq_len,
                "format": recipe.data.format.model_dump(mode="json"),
                "packing": recipe.data.packing,
                **report,
            }
            (building / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
            found = publish(building, cache, key, warn)
    entry, files = found
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["cache"] = {"key": key, "hit": hit, "path": str(entry)}
    with _staging(out) as staging:
        copy_out(entry, files, staging, skip=("manifest.json",))
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


@contextlib.contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A directory beside out_dir, renamed into place when the block ends: out_dir is whole or
    absent, never half-written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for partial in out.parent.glob(f".{glob.escape(out.name)}.partial-*"):  # a killed copy into this out_dir
        shutil.rmtree(partial, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield staging
        staging.chmod(0o777 & ~_umask())  # mkdtemp makes 0700 directories
        try:
            os.rename(staging, out)  # onto an empty out_dir, or none
        except OSError:
            raise DataError(f"{out}: written meanwhile by another process; give a new directory") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _prepare_stream(recipe: Recipe, out: Path, num_proc: int | None) -> dict[str, Any]:
    """A streaming recipe's data stage: the tokenizer, the validation blocks (from validation
    sources) and what the stream needs to start and to be resumed exactly; the training blocks are
    made while training (runner/data/stream.py). Nothing is cached: there is nothing big to keep."""
    from .stream import CHUNK_RECORDS, cheap_fingerprints, sample_texts

    data = recipe.data
    with _staging(out) as staging:
        work = Path(tempfile.mkdtemp(prefix="work-", dir=staging))
        if recipe.tokenizer.name is not None:
            from .tokenizer import load_tokenizer

            tokenizer = load_tokenizer(recipe.tokenizer.name, revision=recipe.tokenizer.revision)
            tokenizer.save_pretrained(str(staging / "tokenizer"))
        else:
            from .tokenizer import build_tokenizer

            count = recipe.tokenizer.train.max_documents or STREAM_TOKENIZER_DOCS
            tokenizer = build_tokenizer(recipe.tokenizer, texts=sample_texts(data.sources, count, work),
                                        out_dir=staging / "tokenizer")
        filter_inputs = filter_fingerprints(data.filters)
        metadata_files: list[str] = []
        metadata = None
        if data.metadata is not None:
            fingerprint = metadata_fingerprint(data.metadata)
            metadata_files = list(fingerprint["files"])
            table, info = read_metadata(data.metadata, metadata_files)
            metadata = (data.metadata, table, {**fingerprint, **info})
        split: dict[str, Any] = {"method": "none"}
        tokens: dict[str, Any] = {}
        if data.validation is not None:
            from datasets import DatasetDict

            where = "data.validation.sources"
            fps = [fingerprint_source(s, f"{where}[{i}]") for i, s in enumerate(data.validation.sources)]
            prepared = prepare_filters(data.filters, filter_inputs)
            val, report = _documents(data.validation.sources, where, fps, data.filters, data.dedup, num_proc, work,
                                     metadata, prepared)
            split = {"method": "sources", **report}
            if data.validation.max_rows is not None and len(val) > data.validation.max_rows:
                val = val.select(range(data.validation.max_rows))
                split["capped_to"] = data.validation.max_rows
            split["validation_rows"] = len(val)
            examples, tok_report = tokenize(val, tokenizer, data.format, data.seq_len, num_proc)
            blocks, pack_report = pack(examples, data.format, data.seq_len, tokenizer.eos_token_id, data.packing,
                                       work, seed=recipe.seed)
            tokens["validation"] = {"documents": len(val), **tok_report, **pack_report}
            DatasetDict({"validation": blocks}).save_to_disk(str(staging / "tokens"))
        shutil.rmtree(work, ignore_errors=True)
        manifest = {
            "streaming": True,
            "code_version": code_version(),
            "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "seed": recipe.seed,
            "seq_len": data.seq_len,
            "format": data.format.model_dump(mode="json"),
            "packing": data.packing,
            "stream": {"sources": cheap_fingerprints(data.sources, "data.sources"), "metadata_files": metadata_files,
                       "filter_inputs": filter_inputs, "shuffle_buffer": data.shuffle_buffer,
                       "chunk_records": CHUNK_RECORDS, "dedup": data.dedup.model_dump(mode="json")},
            "split": split,
            "tokens": tokens,
            "tokenizer": tokenizer_report(recipe, tokenizer),
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def describe(manifest: dict[str, Any]) -> str:
    """One line per stage, for the terminal."""
    if manifest.get("streaming"):
        stream = manifest["stream"]
        lines = [f"streaming: {len(stream['sources'])} source(s), {stream['dedup']['type']} dedup, shuffle buffer "
                 f"{stream['shuffle_buffer']} blocks of {manifest['seq_len']} tokens; training blocks are made "
                 "while training"]
        for name, r in manifest["tokens"].items():
            lines.append(f"{name}: {r['examples']} examples, {r.get('blocks', 0)} blocks of {manifest['seq_len']} "
                         f"tokens, {r.get('loss_tokens', 0)} loss tokens")
        return "\n".join(lines)
    d, t = manifest["documents"], manifest["tokens"]
    lines = [f"sources: {d['rows']} rows from {len(d['sources'])} source(s)"]
    if "metadata" in d:
        m = d["metadata"]
        lines.append(f"metadata: {m['repositories']} repositories; {m['matched']} of {m['rows_in']} rows matched on "
                     f"{m['on']}" + (f", {m['dropped']} without metadata dropped" if m["dropped"] else ""))
    for f in d["filters"]:
        lines.append(f"filter {f['filter']} ({f['type']}): removed {f['removed']} of {f['rows_in']}"
                     + (f" ({f['unfiltered']} without metadata let through)" if f.get("unfiltered") else ""))
    lines.append(f"dedup ({d['dedup']['type']}): removed {d['dedup']['duplicates']}, kept {d['kept']}")
    split = manifest["split"]
    if split["method"] != "none":
        lines.append(f"validation ({split['method']}): {split['validation_rows']} rows, train {split['train_rows']}")
    for name, r in t.items():
        lines.append(f"{name}: {r['examples']} examples, {r.get('blocks', 0)} blocks of {manifest['seq_len']} tokens, "
                     f"{r.get('loss_tokens', 0)} loss tokens")
    lines.append(f"cache {'hit' if manifest['cache']['hit'] else 'miss'}: {manifest['cache']['key'][:12]}")
    return "\n".join(lines)
