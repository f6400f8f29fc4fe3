"""MinHash near-duplicate dedup: datasketch's signatures and bands, BigCode's shingles, the kept rows.

References: shingle sets computed here with `re` and Python sets (the definition in
runner/data/minhash.py), signatures from `datasketch.MinHash.update_batch`, the decision from
`datasketch.MinHashLSH` (query, then insert the kept file), exact Jaccard from the sets.
"""

import math
import random
import re

import numpy as np
import pytest
from datasets import Dataset
from datasketch import MinHash, MinHashLSH
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.data.dedup import dedup
from runner.data.minhash import DEFAULT_SEED, KeySet, MinHashIndex, MinHashScheme, shingles, tokens
from runner.recipe.schema_data import MinHashDedup

SPEC = MinHashDedup(type="minhash")  # threshold 0.85, 256 permutations, 5-grams


def ref_shingles(text: str, n: int) -> set[str]:
    """BigCode's shingles, non-empty tokens only; a short document is one shingle of all its tokens."""
    toks = [p for p in re.split("[^A-Za-z_0-9]", text) if p]
    if len(toks) < n:
        return {" ".join(toks)}
    return {" ".join(toks[i : i + n]) for i in range(len(toks) - n + 1)}


def jaccard(a: str, b: str, n: int = 5) -> float:
    x, y = ref_shingles(a, n), ref_shingles(b, n)
    return len(x & y) / len(x | y)


def datasketch_minhash(text: str, num_perm: int = 256) -> MinHash:
    m = MinHash(num_perm=num_perm, seed=DEFAULT_SEED)
    m.update_batch([s.encode() for s in ref_shingles(text, 5)])
    return m


def datasketch_kept(texts: list[str], threshold: float = 0.85, num_perm: int = 256) -> list[int]:
    """The rule with datasketch's own LSH: keep a file unless it collides with a kept one."""
    lsh, kept = MinHashLSH(threshold=threshold, num_perm=num_perm), []
    for i, text in enumerate(texts):
        m = datasketch_minhash(text, num_perm)
        if not lsh.query(m):
            lsh.insert(i, m)
            kept.append(i)
    return kept


def code_file(rng: random.Random, lines: int = 120) -> str:
    """Python-looking code over a large random vocabulary: two such files share almost no 5-gram."""
    def name():
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 8)))

    out = []
    for _ in range(lines):
        kind = rng.random()
        if kind < 0.5:
            out.append(f"    {name()} = {name()}({name()}, {rng.randint(0, 999)})")
        elif kind < 0.8:
            out.append(f"    if {name()}.{name()} > {name()}:\n        return {name()}")
        else:
            out.append(f"def {name()}({name()}, {name()}={rng.randint(0, 9)}):")
    return "\n".join(out) + "\n"


def near_copies(text: str, rng: random.Random) -> dict[str, str]:
    lines = text.split("\n")
    changed = list(lines)
    changed[len(lines) // 2] = "    replaced = something_else(42)"
    swapped = list(lines)
    k = rng.randrange(5, len(lines) - 5)
    swapped[k], swapped[k + 1] = swapped[k + 1], swapped[k]
    return {
        "whitespace": text.replace(" = ", "=").replace("    ", "\t").replace(", ", " ,  "),
        "one_line": "\n".join(changed),
        "swapped": "\n".join(swapped),
        "appended": text + "# a trailing comment\n",
    }


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60) | st.lists(st.sampled_from(["a", "_b1", "größe", "変数", " ", "\n", "+", "π", "9"])).map("".join))
def test_tokens_are_the_regex_pieces(text):
    assert tokens(text) == [p.encode() for p in re.split("[^A-Za-z_0-9]", text) if p]
    assert {s.decode() for s in shingles(text, 3)} == ref_shingles(text, 3)


def test_signatures_are_datasketchs():
    rng = random.Random(0)
    texts = [code_file(rng, rng.randint(1, 60)) for _ in range(40)]
    texts += ["", "x", "a b c d", "größe = 変数 + π", code_file(rng, 400), "tok " * 3000]  # 400 lines: > one block
    scheme = MinHashScheme.make(0.85, 256, 5)
    got = scheme.signatures(texts)
    want = np.stack([datasketch_minhash(t).hashvalues for t in texts])
    assert got.dtype == np.uint32 and np.array_equal(got, want)


def test_estimate_is_within_minhash_error_of_exact_jaccard():
    # The estimate (the fraction of equal signature values) has standard deviation
    # sqrt(J (1 - J) / num_perm) <= 0.5 / sqrt(num_perm); allow 4 of those: 2 / sqrt(num_perm).
    rng = random.Random(1)
    scheme = MinHashScheme.make(0.85, 256, 5)
    base = code_file(rng, 200)
    lines = base.split("\n")
    pairs = []
    for frac in (0.0, 0.02, 0.1, 0.25, 0.5, 0.75, 1.0):  # fraction of lines rewritten
        other = [code_file(rng, 1).rstrip("\n") if rng.random() < frac else line for line in lines]
        pairs.append((base, "\n".join(other)))
    js = []
    for a, b in pairs:
        sig = scheme.signatures([a, b])
        estimate = float(np.mean(sig[0] == sig[1]))
        exact = jaccard(a, b)
        js.append(exact)
        assert abs(estimate - exact) <= 2 / math.sqrt(256), (exact, estimate)
    assert min(js) < 0.1 and max(js) == 1.0  # the pairs span the range


def corpus(seed: int = 2, originals: int = 40):
    """(texts, kinds): distinct files, near copies of earlier ones (exact J >= 0.9), exact copies."""
    rng = random.Random(seed)
    texts, kinds = [], []
    for _ in range(originals):
        texts.append(code_file(rng))
        kinds.append("original")
    for i in range(originals):
        for kind, text in near_copies(texts[i], rng).items():
            texts.append(text)
            kinds.append(kind)
    texts.append(texts[3])
    kinds.append("exact")
    order = list(range(originals))
    copies = list(range(originals, len(texts)))
    rng.shuffle(copies)  # the copies come after all originals, in random order
    order += copies
    return [texts[i] for i in order], [kinds[i] for i in order]


def test_planted_near_duplicates_go_and_distinct_files_stay():
    texts, kinds = corpus()
    originals = [i for i, k in enumerate(kinds) if k == "original"]
    sets = [ref_shingles(t, 5) for t in texts]
    for i, kind in enumerate(kinds):  # the corpus is what it claims: copies close, originals far apart
        if kind != "original":
            assert max(len(sets[i] & sets[j]) / len(sets[i] | sets[j]) for j in originals) >= 0.9, kind
    assert max(len(sets[i] & sets[j]) / len(sets[i] | sets[j]) for i in originals for j in originals if i < j) < 0.05
    ds = Dataset.from_dict({"text": texts, "i": list(range(len(texts)))})
    kept, report = dedup(ds, SPEC, None)
    assert list(kept["i"]) == originals == datasketch_kept(texts)
    assert report["duplicates"] == len(texts) - len(originals) == report["candidates"]
    assert report["clusters"] == len(originals) and report["short_documents"] == 0
    assert (report["bands"], report["rows_per_band"]) == (MinHashLSH(0.85, 256).b, MinHashLSH(0.85, 256).r)


def test_files_below_the_threshold_stay():
    rng = random.Random(3)
    base = code_file(rng, 100)
    lines = base.split("\n")
    half = "\n".join(code_file(rng, 1).rstrip("\n") if i % 2 else line for i, line in enumerate(lines))
    assert jaccard(base, half) < 0.5
    kept, _ = dedup(Dataset.from_dict({"text": [base, half]}), SPEC, None)
    assert len(kept) == 2


def drift(rng: random.Random, steps: int = 40) -> list[str]:
    """A file rewritten 3 lines more at each step: neighbours near-duplicates, far ends unrelated."""
    lines = code_file(rng, 100).split("\n")
    out = []
    for _ in range(steps):
        for k in rng.sample(range(len(lines)), 3):
            lines[k] = code_file(rng, 1).rstrip("\n")
        out.append("\n".join(lines))
    return out


def test_batch_and_stream_keep_the_same_rows_and_stream_resumes_exactly(tmp_path):
    texts, _ = corpus(seed=4, originals=30)
    texts += ["", "", "?!", "x", "x", "größe", "a b c", "a  b  c"]  # short documents: equal token sequences go
    chain = drift(random.Random(8))
    texts += chain
    kept, _ = dedup(Dataset.from_dict({"text": texts, "i": list(range(len(texts)))}), SPEC, None)
    reference = datasketch_kept(texts)
    assert list(kept["i"]) == reference
    # The chain (neighbours at J ~ 0.91): dropping a file that collides with ANY earlier file, kept
    # or not, would keep few of it (here 4 of 40); a file is dropped here only against a kept one,
    # so the chain keeps a file again once it has drifted from the last kept (here 19).
    start = len(texts) - len(chain)
    lsh, any_earlier = MinHashLSH(threshold=0.85, num_perm=256), 0
    for i, text in enumerate(chain):
        m = datasketch_minhash(text)
        any_earlier += not lsh.query(m)
        lsh.insert(i, m)
    assert sum(i >= start for i in reference) > 2 * any_earlier > 2

    whole = MinHashIndex(0.85, 256, 5)
    assert [i for i, t in enumerate(texts) if whole.is_new(t)] == reference

    half = len(texts) // 2
    first = MinHashIndex(0.85, 256, 5)
    keep = first.are_new(texts[:half])
    np.savez(tmp_path / "index.npz", **first.state())  # as a checkpoint would hold it
    with np.load(tmp_path / "index.npz") as saved:
        resumed = MinHashIndex.from_state(dict(saved))
    keep += [resumed.is_new(t) for t in texts[half:]]
    assert [i for i, k in enumerate(keep) if k] == reference
    a, b = resumed.state(), whole.state()
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert resumed.kept == len(reference) and resumed.seen == len(texts)


@pytest.mark.parametrize("spread", [True, False])
def test_key_set_is_a_set(spread):
    # Against a Python set. spread=False: keys that share their low 20 bits, so all want one slot
    # (long probe runs, and every growth re-places them).
    rng = np.random.default_rng(7)
    keys = rng.integers(1, 2**63, 3000, dtype=np.uint64)
    if not spread:
        keys = (keys << np.uint64(20)) | np.uint64(5)
    ks, ref = KeySet(), set()
    for chunk in np.array_split(keys, 400):
        chunk = chunk.tolist() + chunk[:1].tolist()  # a key twice in one call counts once
        ks.add(chunk)
        ref.update(chunk)
    assert len(ks) == len(ref) and len(ks.table) >= 2 * len(ref)
    assert all(k in ks for k in ref)
    others = rng.integers(1, 2**63, 3000, dtype=np.uint64).tolist()
    assert [k in ks for k in others] == [k in ref for k in others]
    assert sorted(ks.table[ks.table != 0].tolist()) == sorted(ref)


def test_from_state_refuses_other_bands():
    state = MinHashIndex(0.85, 256, 5).state()
    state["bands"] = 7
    with pytest.raises(ValueError, match="bands"):
        MinHashIndex.from_state(state)


def test_one_and_two_processes_keep_the_same_rows():
    rng = random.Random(5)
    pool = [code_file(rng, 8) for _ in range(300)]
    texts = [pool[rng.randrange(300)] + ("" if rng.random() < 0.5 else f"x_{rng.randrange(3)} = 1\n")
             for _ in range(2100)]  # 2000 rows or more start workers
    ds = Dataset.from_dict({"text": texts, "i": list(range(len(texts)))})
    one, r1 = dedup(ds, SPEC, 1)
    two, r2 = dedup(ds, SPEC, 2)
    assert list(one["i"]) == list(two["i"]) and r1 == r2 and r1["duplicates"] > 1000


def test_hostile_inputs():
    many = ["def f(x):\n    return x * 2\n"] * 3000
    texts = ["", None, "x" * 2_000_000, "y" * 2_000_000, "変数 = 1", "変数 = 2", "π", "…", *many]
    kept, report = dedup(Dataset.from_dict({"text": texts}), SPEC, None)
    # "" and None: no tokens; x.../y...: one token each, different; 変数 = 1 / 2: tokens [1] and [2];
    # "π" and "…" have no ASCII word character: no tokens, as "": duplicates of it. Of the copies, one.
    assert kept["text"] == ["", "x" * 2_000_000, "y" * 2_000_000, "変数 = 1", "変数 = 2", many[0]]
    assert report["duplicates"] == len(texts) - 6 and report["short_documents"] == 8
    empty, report = dedup(Dataset.from_dict({"text": []}), "minhash", None)  # the name alone: the defaults
    assert len(empty) == 0 and report == {**dedup(Dataset.from_dict({"text": ["a"]}), SPEC, None)[1], "rows_in": 0,
                                          "short_documents": 0}
    index = MinHashIndex(0.85, 256, 5)  # str that is not valid UTF-8 (a lone surrogate) is read too
    assert index.is_new("\ud800 lone surrogate") and not index.is_new("\udfff lone surrogate")


def test_through_the_data_stage(tmp_path, tokenizer_dir):
    from .conftest import write_jsonl
    from .test_stage import recipe, run

    texts, kinds = corpus(seed=6, originals=6)
    write_jsonl(tmp_path / "c.jsonl", [{"text": t, "kind": k} for t, k in zip(texts, kinds)])
    data = "sources: [{type: jsonl, paths: [c.jsonl]}]\ndedup: {type: minhash, threshold: 0.8, num_perm: 128}\nseq_len: 16"
    manifest = run(tmp_path, recipe(tmp_path, tokenizer_dir, data))
    d = manifest["documents"]["dedup"]
    b, r = MinHashLSH(0.8, 128).b, MinHashLSH(0.8, 128).r
    assert d == {"type": "minhash", "rows_in": len(texts), "duplicates": len(texts) - 6, "threshold": 0.8,
                 "num_perm": 128, "ngram": 5, "seed": DEFAULT_SEED, "bands": b, "rows_per_band": r,
                 "candidates": len(texts) - 6, "clusters": 6, "short_documents": 0}
    assert manifest["documents"]["kept"] == 6
