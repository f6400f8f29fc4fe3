"""Variables dedup: `runner.data.dedup.dedup` vs GPT-Code-Clippy's set inside a one-process filter;
exact and MinHash dedup throughput beside it on the same corpus.

    python bench/dedup.py [--files 60000] [--num-proc 2] [--max-lines 200] [--repeats 1] [--seed 0]
                          [--stream-files 10000]

The corpus is built in memory, deterministically from `--seed`, out of the Python standard
library's .py files (`sysconfig.get_paths()["stdlib"]`, recursive, site-packages left out, files
that are not UTF-8 or over 200 KB skipped), each cut to its first `--max-lines` lines to bound
time and memory. Rows are drawn from those files as:

  original   a stdlib file as is;
  copy       an exact copy of an earlier row;
  same-key   a stdlib file with its whitespace, indentation, operators or punctuation changed in
             ways that keep the `\\W+` key (`a + b` -> `a-b`, `x = 1` -> `x=1`, 4-space indents
             -> 2, blank lines and trailing spaces added inside the file); checked here;
  different  a stdlib file with an identifier renamed, or a comment or a line added (sometimes
             together with same-key edits), so its key differs from its source's.

The corpus depends only on the seed and on the installed stdlib (1,775 files for CPython 3.11.7;
60,000 rows at 200 lines are about 270 MB of text).

The dataset (`id`, `text`) is saved to a temporary directory and reloaded with `load_from_disk`,
so both sides read the same memory-mapped Arrow. Caching is disabled (`datasets.disable_caching()`
and `load_from_cache_file=False`) so neither side is served from a cache. The reference is exactly
the original approach: a Python set mutated inside `Dataset.filter` (not batched, `num_proc=None`),
keeping a row iff its key was not in the set yet. Ours: `dedup(ds, "variables", num_proc)`. The
kept `id`s, in order, must be identical, or the script fails.

Beside them, on the same dataset: `dedup(ds, "exact", num_proc)` and
`dedup(ds, minhash spec, num_proc)` (the recipe's defaults: threshold 0.85, 256 permutations,
5-grams), each timed `--repeats` times (median); files/s and MB/s of text, and per core (divided by
num_proc: the workers compute the keys, so the figure is per worker process) and per CPU second
(this process's and its joined workers' user + system time: the per-core figure that holds on a
machine shared with other work). The streaming form,
`MinHashIndex.are_new`, runs in this one process over the first `--stream-files` rows, in batches of
1000 as a stream worker would; it must keep exactly the rows below that count that the batch form
keeps (the rule decides each row from the rows before it), or the script fails.

Prints a short summary, then one JSON object as its last line; `speedup` = reference time / our
time (median of `--repeats`; the two sides alternate).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from common import machine  # bench/common.py (this script's directory is on sys.path)

MAX_BYTES = 200_000
IDENT = re.compile(r"\b[A-Za-z_][A-Za-z_0-9]*\b")
INDENT = re.compile(r"(?m)^((?:    )+)")


def stdlib_files(max_lines: int) -> list[str]:
    """Texts of the stdlib's .py files (sorted by path), each cut to its first `max_lines` lines."""
    root = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).parts
        if "site-packages" in rel or "dist-packages" in rel or not path.is_file():
            continue
        try:
            raw = path.read_bytes()
            if len(raw) > MAX_BYTES:
                continue
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        texts.append("".join(text.splitlines(keepends=True)[:max_lines]))
    return texts


def same_key_edit(text: str, rng: random.Random) -> str:
    """Edits that change only runs of non-word characters, never removing or adding one at either end."""
    edits = rng.sample(["ops", "indent", "blank", "trailing"], rng.randint(1, 3))
    if "ops" in edits:
        text = text.replace(" + ", "-").replace(" = ", "=").replace(", ", ",").replace(" == ", " != ")
    if "indent" in edits:
        text = INDENT.sub(lambda m: "  " * (len(m.group(1)) // 4), text)
    lines = text.split("\n")
    if "trailing" in edits and len(lines) > 1:
        for i in rng.sample(range(len(lines) - 1), min(5, len(lines) - 1)):  # never the last piece
            lines[i] += "  "
    if "blank" in edits and len(lines) > 1:
        for _ in range(rng.randint(1, 4)):  # inside the file: between two existing lines
            lines.insert(rng.randrange(1, len(lines)), "")
    return "\n".join(lines)


def different_edit(text: str, rng: random.Random) -> str:
    """A change to the key: rename an identifier everywhere, or add a comment or a line."""
    what = rng.choice(["rename", "comment", "line"])
    names = IDENT.findall(text[:4000]) if what == "rename" else []
    if names:
        name = rng.choice(names)
        text = re.sub(rf"\b{re.escape(name)}\b", f"{name}_{rng.randrange(100)}", text)
    else:
        lines = text.split("\n")
        n = rng.randrange(100)  # small: the same edit of the same file recurs now and then
        new = f"# note {n}" if what == "comment" else f"value_{n} = {n}"
        lines.insert(rng.randrange(0, len(lines) + 1), new)
        text = "\n".join(lines)
    if rng.random() < 0.3:
        text = same_key_edit(text, rng)
    return text


def build_corpus(n: int, max_lines: int, seed: int) -> tuple[list[str], dict[str, int], int]:
    from runner.data.dedup import variables_key

    base = stdlib_files(max_lines)
    rng = random.Random(seed)
    texts: list[str] = []
    mix = {"original": 0, "copy": 0, "same_key": 0, "different": 0}
    for _ in range(n):
        r = rng.random()
        if r < 0.2 and texts:
            texts.append(texts[rng.randrange(len(texts))])
            mix["copy"] += 1
            continue
        source = base[rng.randrange(len(base))]
        if r < 0.45:
            text = same_key_edit(source, rng)
            if variables_key(text) != variables_key(source):
                raise AssertionError("a same-key edit changed the key")
            mix["same_key"] += 1
        elif r < 0.6:
            text = source
            mix["original"] += 1
        else:
            text = different_edit(source, rng)
            mix["different"] += 1
        texts.append(text)
    return texts, mix, len(base)


def reference(ds):
    """GPT-Code-Clippy: a set filled inside a one-process, unbatched filter."""
    seen: set[str] = set()

    def first_time(example):
        key = " ".join(re.split(r"\W+", example["text"]))
        if key in seen:
            return False
        seen.add(key)
        return True

    return ds.filter(first_time, num_proc=None, load_from_cache_file=False)


def rates(files: int, mb: float, seconds: float, procs: int) -> dict[str, float]:
    """Throughput in files/s and MB/s of text, overall and per worker process."""
    procs = max(procs, 1)
    return {"files_per_s": round(files / seconds), "mb_per_s": round(mb / seconds, 2),
            "files_per_s_per_core": round(files / seconds / procs), "mb_per_s_per_core": round(mb / seconds / procs, 2)}


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (datasets.map's workers, once joined)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def per_cpu_second(files: int, mb: float, cpu: float) -> dict[str, float]:
    """Throughput per CPU second: per core on a machine shared with other work, where wall time is not."""
    return {"files_per_cpu_s": round(files / cpu), "mb_per_cpu_s": round(mb / cpu, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=60_000, help="Rows in the corpus.")
    parser.add_argument("--num-proc", type=int, default=2, help="num_proc for ours.")
    parser.add_argument("--max-lines", type=int, default=200, help="Each stdlib file is cut to this many lines.")
    parser.add_argument("--repeats", type=int, default=1, help="Timed runs of each side; the median is reported.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stream-files", type=int, default=10_000, help="Rows fed to the streaming MinHashIndex.")
    args = parser.parse_args()

    import datasets
    import datasketch

    from runner.data.dedup import dedup
    from runner.data.minhash import MinHashIndex
    from runner.recipe.schema_data import MinHashDedup

    datasets.disable_caching()
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()

    start = time.perf_counter()
    texts, mix, n_base = build_corpus(args.files, args.max_lines, args.seed)
    mb = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts) / 1e6
    build_s = time.perf_counter() - start

    with tempfile.TemporaryDirectory(prefix="bench_dedup_") as tmp:
        datasets.Dataset.from_dict({"id": list(range(len(texts))), "text": texts}).save_to_disk(f"{tmp}/corpus")
        del texts
        ds = datasets.load_from_disk(f"{tmp}/corpus")

        t_ref, t_ours = [], []
        kept_ref = kept_ours = None
        for _ in range(args.repeats):
            start = time.perf_counter()
            out_ref = reference(ds)
            t_ref.append(time.perf_counter() - start)
            start = time.perf_counter()
            out_ours, report = dedup(ds, "variables", num_proc=args.num_proc)
            t_ours.append(time.perf_counter() - start)
            kept_ref, kept_ours = out_ref["id"], out_ours["id"]
            if kept_ref != kept_ours:
                first = next((i for i, (a, b) in enumerate(zip(kept_ref, kept_ours)) if a != b), None)
                sys.exit(f"FAIL: kept sets differ: reference keeps {len(kept_ref)}, ours {len(kept_ours)}; "
                         f"first difference at kept position {first}")
            if report["duplicates"] != len(ds) - len(kept_ours):
                sys.exit(f"FAIL: report says {report['duplicates']} duplicates, {len(ds) - len(kept_ours)} removed")
            del out_ref, out_ours

        # Exact and MinHash dedup on the same dataset (our side only: no original to compare with).
        spec = MinHashDedup(type="minhash")
        t_exact, t_minhash, c_minhash = [], [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            out_exact, exact_report = dedup(ds, "exact", num_proc=args.num_proc)
            t_exact.append(time.perf_counter() - start)
            start, cpu = time.perf_counter(), cpu_seconds()
            out_minhash, minhash_report = dedup(ds, spec, num_proc=args.num_proc)
            t_minhash.append(time.perf_counter() - start)
            c_minhash.append(cpu_seconds() - cpu)
        kept_exact, kept_minhash = len(out_exact), out_minhash["id"]

        n_stream = min(args.stream_files, len(ds))
        index = MinHashIndex(spec.threshold, spec.num_perm, spec.ngram)
        start, cpu = time.perf_counter(), cpu_seconds()
        stream_keep = []
        for lo in range(0, n_stream, 1000):
            stream_keep += index.are_new(ds[lo : min(lo + 1000, n_stream)]["text"])
        t_stream, c_stream = time.perf_counter() - start, cpu_seconds() - cpu
        stream_mb = sum(len(t.encode("utf-8")) for t in ds[:n_stream]["text"]) / 1e6
        stream_kept = [i for i, k in enumerate(stream_keep) if k]
        if stream_kept != [i for i in kept_minhash if i < n_stream]:
            sys.exit("FAIL: the streaming MinHashIndex keeps other rows than the batch minhash dedup")
        del out_exact, out_minhash

    r, o = statistics.median(t_ref), statistics.median(t_ours)
    n = len(ds)
    result = {
        "bench": "dedup_variables",
        "files": n,
        "stdlib_files": n_base,
        "max_lines": args.max_lines,
        "text_mb": round(mb, 1),
        "mix": mix,
        "kept": len(kept_ours),
        "duplicates_removed": n - len(kept_ours),
        "identical_kept_ids": True,
        "num_proc": args.num_proc,
        "repeats": args.repeats,
        "reference_s": round(r, 3),
        "ccrun_s": round(o, 3),
        "reference_files_per_s": round(n / r),
        "ccrun_files_per_s": round(n / o),
        "speedup": round(r / o, 2),
        "target_speedup": 5,
        "exact": {"kept": kept_exact, "seconds": round(statistics.median(t_exact), 3),
                  **rates(n, mb, statistics.median(t_exact), args.num_proc)},
        "minhash": {**{k: v for k, v in minhash_report.items() if k not in ("type", "rows_in")},
                    "kept": len(kept_minhash), "seconds": round(statistics.median(t_minhash), 3),
                    **rates(n, mb, statistics.median(t_minhash), args.num_proc),
                    "cpu_seconds": round(statistics.median(c_minhash), 3),
                    **per_cpu_second(n, mb, statistics.median(c_minhash))},
        "minhash_stream": {"files": n_stream, "kept": len(stream_kept), "identical_to_batch": True,
                           "seconds": round(t_stream, 3), **rates(n_stream, stream_mb, t_stream, 1),
                           "cpu_seconds": round(c_stream, 3), **per_cpu_second(n_stream, stream_mb, c_stream)},
        "machine": machine(),
        "versions": {"datasets": datasets.__version__, "datasketch": datasketch.__version__},
    }
    print(f"corpus: {n} files, {mb:.1f} MB ({n_base} stdlib files, first {args.max_lines} lines; "
          f"{mix['original']} original, {mix['copy']} copies, {mix['same_key']} same-key edits, "
          f"{mix['different']} different edits), built in {build_s:.1f} s")
    print(f"kept {len(kept_ours)}, removed {n - len(kept_ours)} duplicates; kept ids identical on both sides")
    print(f"reference (set in 1-process filter) {r:8.2f} s  {n / r:9.0f} files/s")
    print(f"ccrun dedup (num_proc={args.num_proc})        {o:8.2f} s  {n / o:9.0f} files/s  ({r / o:.2f}x)")
    e, m, st = result["exact"], result["minhash"], result["minhash_stream"]
    print(f"exact dedup (num_proc={args.num_proc})        {e['seconds']:8.2f} s  {e['files_per_s']:9.0f} files/s  "
          f"{e['mb_per_s']:6.1f} MB/s  kept {e['kept']}")
    print(f"minhash dedup (num_proc={args.num_proc})      {m['seconds']:8.2f} s  {m['files_per_s']:9.0f} files/s  "
          f"{m['mb_per_s']:6.1f} MB/s ({m['mb_per_cpu_s']:.1f} MB per CPU s)  kept {m['kept']} "
          f"({m['bands']} bands x {m['rows_per_band']}; "
          f"{m['candidates']} candidates, {m['clusters']} clusters)")
    print(f"minhash stream (1 process, {st['files']} files) {st['seconds']:6.2f} s  {st['files_per_s']:9.0f} files/s  "
          f"{st['mb_per_s']:6.1f} MB/s ({st['mb_per_cpu_s']:.1f} MB per CPU s)  kept {st['kept']}, the batch form's rows")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
