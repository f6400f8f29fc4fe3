"""The fast variables key is GPT-Code-Clippy's definition, on any input, whatever num_proc is."""

import re

import pyarrow as pa
from datasets import Dataset
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.data.dedup import _digest_halves, _hashes, dedup, variables_key

# Code-like text: ASCII words, punctuation and whitespace runs, with some unicode (identifiers and not).
pieces = st.sampled_from(["a", "b1", "_x", "größe", "π", "変数", " ", "  ", "\t", "\n", "\r\n", "+", "-", "(", ")",
                          "'", "#", "—", "…", "\u00a0", "\u2028", "é", "0", "99", ".", ",", ":", ""])
texts = st.lists(pieces, max_size=30).map("".join) | st.text(max_size=40)


def reference_kept(rows: list[str]) -> list[int]:
    """The original: a Python set, first file of each key kept."""
    seen, kept = set(), []
    for i, text in enumerate(rows):
        key = " ".join(re.split(r"\W+", text))
        if key not in seen:
            seen.add(key)
            kept.append(i)
    return kept


@settings(max_examples=300, deadline=None)
@given(st.lists(texts, min_size=1, max_size=20), st.integers(0, 5))
def test_keys_match_the_definition(rows, start):
    table = pa.table({"text": rows}).slice(min(start, len(rows) - 1))  # sliced arrays have offsets too
    got = _hashes(table, "variables")
    for i, text in enumerate(table.column("text").to_pylist()):
        assert (got["_h0"][i], got["_h1"][i]) == _digest_halves(variables_key(text).encode("utf-8", "surrogatepass"))


@settings(max_examples=60, deadline=None)
@given(st.lists(texts, max_size=40))
def test_kept_set_matches_the_original(rows):
    ds = Dataset.from_dict({"text": rows, "i": list(range(len(rows)))})
    kept, report = dedup(ds, "variables", None)
    assert list(kept["i"]) == reference_kept(rows)
    assert report["duplicates"] == len(rows) - len(reference_kept(rows))


def test_one_and_two_processes_keep_the_same_rows():
    base = ["def f(a, b):\n    return a + b\n", "def f( a,b ):\n  return a-b", "größe = 1", "größe=1", "x = 2\n"]
    rows = [base[i % 5] + ("" if i % 3 else f"# note {i % 400}") for i in range(4000)]
    ds = Dataset.from_dict({"text": rows, "i": list(range(len(rows)))})
    one, _ = dedup(ds, "variables", 1)
    two, _ = dedup(ds, "variables", 2)
    assert list(one["i"]) == list(two["i"]) == reference_kept(rows)
