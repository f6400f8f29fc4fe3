"""APPS as the references have it: the prompt byte for byte, one example per row by default, and
packed rows whose examples never see each other (issue 13, items 4 and 5)."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from datasets import load_from_disk
from flax import nnx

from runner.data import apps_prompt
from runner.recipe.load import load_recipe

from .conftest import write_jsonl
from .test_stage import APPS, ROOT, recipe, run

# hendrycks/apps eval/generate_gpt_codes.py, generate_prompt: "\nQUESTION:\n" + question; if there
# is starter code (the caller turns "" into None), "\n" + starter_code; then "\nUse Standard Input
# format" when the test case has no fn_name, else "\nUse Call-Based format"; then "\nANSWER:\n".
QUESTION = "Given n, print n + 1.\n\n-----Input-----\n\nOne integer n.\n"
STARTER = "class Solution:\n    def plus(self, n: int) -> int:\n        "
REFERENCE = {
    "call-based with starter code": (
        (QUESTION, STARTER, "plus"),
        "\nQUESTION:\nGiven n, print n + 1.\n\n-----Input-----\n\nOne integer n.\n"
        "\nclass Solution:\n    def plus(self, n: int) -> int:\n        "
        "\nUse Call-Based format\nANSWER:\n",
    ),
    "standard input": (
        (QUESTION, "", None),
        "\nQUESTION:\nGiven n, print n + 1.\n\n-----Input-----\n\nOne integer n.\n"
        "\nUse Standard Input format\nANSWER:\n",
    ),
    "standard input, starter code None": ((QUESTION, None, None), "\nQUESTION:\n" + QUESTION + "\nUse Standard Input format\nANSWER:\n"),
}
# CodedotAl/gpt-code-clippy data_processing/apps.py (the "formatted" config it trained on):
# "\nQUESTION:\n" + question + "\n" + starter_code + "\n" + answer_type + "\nANSWER:\n", answer_type
# "\nUse Call-Based format\n" if the problem has a starter_code.py, else "\nUse Standard Input format\n".
CODE_CLIPPY = {
    "call-based with starter code": (
        (QUESTION, STARTER, "plus"),
        "\nQUESTION:\n" + QUESTION + "\n" + STARTER + "\n\nUse Call-Based format\n\nANSWER:\n",
    ),
    "standard input": ((QUESTION, "", None), "\nQUESTION:\n" + QUESTION + "\n\n\nUse Standard Input format\n\nANSWER:\n"),
}


@pytest.mark.parametrize("case", list(REFERENCE))
def test_the_prompt_is_the_apps_generation_prompt_byte_for_byte(case):
    args, expected = REFERENCE[case]
    assert apps_prompt(*args) == expected
    assert apps_prompt(*args, "apps") == expected


@pytest.mark.parametrize("case", list(CODE_CLIPPY))
def test_code_clippy_prompt_is_a_named_option(case):
    args, expected = CODE_CLIPPY[case]
    assert apps_prompt(*args, "code-clippy") == expected


@pytest.mark.parametrize("name", ["apps-125m.yaml", "apps-1.3b.yaml"])
def test_the_apps_recipes_train_one_example_per_row_with_the_reference_prompt(name):
    fmt = load_recipe(ROOT / "recipes" / name).recipe.data.format
    assert (fmt.type, fmt.layout, fmt.prompt) == ("apps", "row", "apps")


def many_problems(n=8):
    rows = []
    for i in range(n):
        call = i % 2 == 1
        rows.append({
            "problem_id": i, "question": f"Problem {i}: add {i} to the input.",
            "solutions": json.dumps([f"print(int(input()) + {i})\n", f"x = int(input())\nprint(x + {i})\n",
                                     f"def f(a):\n    return a + {i}\nprint(f(int(input())))\n"][: 1 + i % 3]),
            "starter_code": "class Solution:\n    def add(self, a):\n" if call else "",
            "input_output": json.dumps({"inputs": ["1\n"], "outputs": [f"{1 + i}\n"], **({"fn_name": "add"} if call else {})}),
            "difficulty": "introductory", "url": f"u{i}",
        })
    return rows


def blocks_of(tmp_path, tokenizer_dir, data, name, extra=""):
    manifest = run(tmp_path, recipe(tmp_path, tokenizer_dir, data, extra), name)
    return manifest, load_from_disk(str(tmp_path / name / "tokens"))["train"].with_format("numpy")


def test_rows_by_default_and_packed_segments_shuffled_by_the_seed(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "apps" / "train.jsonl", many_problems())
    data = APPS.replace("packing: false\n", "")  # data.packing (true by default) is clm's: apps rows stay rows
    m_rows, rows = blocks_of(tmp_path, tokenizer_dir, data, "rows")
    n = m_rows["tokens"]["train"]["examples"]
    assert len(rows) == n == 15 and rows.column_names == ["input_ids", "loss_weights"]
    packed_data = data.replace("loss_on: solution}", "loss_on: solution, layout: packed}")
    m_packed, packed = blocks_of(tmp_path, tokenizer_dir, packed_data, "packed")
    assert set(packed.column_names) == {"input_ids", "loss_weights", "segment_ids", "positions"}
    assert len(packed) < n and m_packed["tokens"]["train"]["loss_tokens"] == m_rows["tokens"]["train"]["loss_tokens"]

    def examples(blocks):  # every example's ids, in block order, from the segments
        out = []
        for b in blocks:
            seg, pos = b["segment_ids"], b["positions"]
            for s in range(1, seg.max() + 1):
                where = np.flatnonzero(seg == s)
                assert np.array_equal(pos[where], np.arange(len(where)))  # positions restart per example
                out.append(tuple(b["input_ids"][where]))
            assert np.all(seg[seg.argmin():] == 0) if (seg == 0).any() else True  # padding only at the end
        return out

    in_rows = [tuple(r["input_ids"][: np.flatnonzero(r["loss_weights"]).max() + 1]) for r in rows]
    got = examples(packed)
    assert sorted(got) == sorted(in_rows) and got != in_rows  # each example once, shuffled
    _, again = blocks_of(tmp_path, tokenizer_dir, packed_data, "again", "")
    assert examples(again) == got  # the same seed packs the same way
    _, other = blocks_of(tmp_path, tokenizer_dir, packed_data, "seed1", "seed: 1\n")
    assert examples(other) != got


def test_a_packed_block_loses_what_its_examples_lose_one_per_row(tmp_path, tokenizer_dir):
    """The acceptance number: each packed block's token-weighted loss sum equals the sum of its
    examples' loss sums computed one example per row (fp32), and the weights agree exactly."""
    from runner.data.tokenizer import load_tokenizer
    from runner.model import GPTConfig, GPTNeo
    from runner.train.step import make_eval_step

    write_jsonl(tmp_path / "apps" / "train.jsonl", many_problems())
    data = APPS.replace("loss_on: solution}", "loss_on: all}")
    _, rows = blocks_of(tmp_path, tokenizer_dir, data, "rows")
    _, packed = blocks_of(tmp_path, tokenizer_dir, data.replace("loss_on: all}", "loss_on: all, layout: packed}"), "packed")
    vocab = len(load_tokenizer(tokenizer_dir))
    config = GPTConfig("gpt-neo", vocab, 256, 32, 2, 4, 64, ("global", "local"), window_size=8)
    graphdef, params = nnx.split(GPTNeo(config, rngs=nnx.Rngs(0)))
    evaluate = make_eval_step(graphdef)

    def loss(block, *segments):
        s, w = evaluate(params, *(jnp.asarray(block[k])[None] for k in ("input_ids", "loss_weights", *segments)))
        return float(s), float(w)

    by_ids = {tuple(r["input_ids"][: np.flatnonzero(r["loss_weights"]).max() + 1]): loss(r) for r in rows}
    totals = []
    for b in packed:
        s, w = loss(b, "segment_ids", "positions")
        parts = [by_ids[tuple(b["input_ids"][b["segment_ids"] == k])] for k in range(1, b["segment_ids"].max() + 1)]
        assert w == sum(p[1] for p in parts)
        np.testing.assert_allclose(s, sum(p[0] for p in parts), rtol=1e-5)
        totals.append((s, w, len(parts)))
    assert sum(n for *_, n in totals) == len(rows) and sum(n >= 2 for *_, n in totals) >= len(totals) - 1
    assert sum(w for _, w, _ in totals) == sum(w for _, w in by_ids.values())
