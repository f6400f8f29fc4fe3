"""The data stage on data the tests write: what is kept, what the manifest says, what the blocks hold."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from datasets import load_from_disk

from runner.data import DataError, apps_prompt, prepare_data
from runner.recipe.load import load_recipe

from ..helpers import ccrun_here
from .conftest import CODE, apps_rows, corpus_rows, write_jsonl

ROOT = Path(__file__).resolve().parents[2]


def recipe(tmp_path, tokenizer_dir, data: str, extra: str = ""):
    f = tmp_path / "r.yaml"
    f.write_text(
        "name: d\nmodel: {arch: gpt-neo, init: scratch, config: {n_layer: 1, d_model: 16, n_head: 2, max_positions: 256}}\n"
        f"tokenizer: {{name: {tokenizer_dir}}}\ndata:\n" + "".join(f"  {line}\n" for line in data.strip().splitlines()) + extra
    )
    return load_recipe(f).recipe


def run(tmp_path, r, name="out", **kw):
    kw.setdefault("num_proc", 1)
    kw.setdefault("cache_dir", tmp_path / "cache")
    return prepare_data(r, tmp_path / name, **kw)


SEART = """
sources: [{type: jsonl, paths: [corpus/*.jsonl.zst]}]
filters:
  - {type: stars, min: 11}
  - {type: commits, min: 3}
  - {type: license}
  - {type: fork}
  - {type: size, max: 70707}
  - {type: extension, extensions: [.py], path_column: file_name}
  - {type: max_line_length, max: 200}
  - {type: digit_fraction, max: 0.8}
dedup: {type: variables}
seq_len: 16
"""


def test_seart_filters_and_variables_dedup(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "corpus" / "part0.jsonl.zst", corpus_rows()[:8], compress="zst")
    write_jsonl(tmp_path / "corpus" / "part1.jsonl.zst", corpus_rows()[8:], compress="zst")
    manifest = run(tmp_path, recipe(tmp_path, tokenizer_dir, SEART))
    docs = load_from_disk(str(tmp_path / "out" / "documents"))["train"]
    # variables dedup: a_copy (exact) and a_spaced (same identifiers) go; b and uni_other stay;
    # "(a)" and "a" differ (the leading empty piece of re.split).
    assert docs["file_name"] == ["a.py", "b.py", "uni.py", "uni_other.py", "paren.py", "plain.py"]
    assert set(docs.column_names) >= {"text", "repo_name", "stars", "file_name", "license"}  # meta flattened
    d = manifest["documents"]
    # the kept documents' text, not the table under the filters' and dedup's selection
    assert d["kept_text_bytes"] == sum(len(t.encode()) for t in docs["text"]) < d["text_bytes"]
    assert d["rows"] == len(corpus_rows())
    removed = {f["type"]: f["removed"] for f in d["filters"]}
    assert removed == {"stars": 1, "commits": 1, "license": 1, "fork": 1, "size": 1, "extension": 1,
                       "max_line_length": 1, "digit_fraction": 1}
    assert d["dedup"] == {"type": "variables", "rows_in": 9, "duplicates": 3}
    (source,) = d["sources"]
    assert source["rows"] == len(corpus_rows()) and len(source["files"]) == 2  # one glob, two files
    assert all(len(fp) == 32 for fp in source["files"].values())
    assert manifest["cache"]["hit"] is False and len(manifest["cache_key"]) == 64
    assert len(manifest["tokenizer"]["hash"]) == 64


def test_exact_dedup_keeps_identifier_equal_files(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "corpus" / "c.jsonl", corpus_rows()[:9])
    r = recipe(tmp_path, tokenizer_dir, "sources: [{type: jsonl, paths: [corpus/c.jsonl]}]\ndedup: {type: exact}\nseq_len: 16")
    run(tmp_path, r)
    docs = load_from_disk(str(tmp_path / "out" / "documents"))["train"]
    assert "a_copy.py" not in docs["file_name"] and "a_spaced.py" in docs["file_name"]


def test_clm_packing_loses_and_duplicates_no_token(tmp_path, tokenizer_dir):
    from runner.data.tokenizer import load_tokenizer

    write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in CODE.values()] * 3)
    r = recipe(tmp_path, tokenizer_dir, "sources: [{type: jsonl, paths: [c.jsonl]}]\nseq_len: 16")
    manifest = run(tmp_path, r)
    tok = load_tokenizer(tokenizer_dir)
    expected = []
    for t in list(CODE.values()) * 3:
        expected += tok.encode(t) + [tok.eos_token_id]
    stored = load_from_disk(str(tmp_path / "out" / "tokens"))["train"]
    assert str(stored.features["input_ids"]) == "List(Value('int32'), length=16)"
    assert str(stored.features["loss_weights"]) == "List(Value('uint8'), length=16)"
    blocks = stored.with_format("numpy")
    ids, weights = np.stack(blocks["input_ids"]), np.stack(blocks["loss_weights"])
    assert ids.shape[1] == 16
    real = ids.reshape(-1)[weights.reshape(-1) == 1]
    assert real.tolist() == expected  # every token once, in order
    assert weights.reshape(-1)[len(expected):].sum() == 0  # only the tail of the last block is padding
    t = manifest["tokens"]["train"]
    assert t["real_tokens"] == t["loss_tokens"] == len(expected)
    assert t["block_tokens"] == t["real_tokens"] + t["padding_tokens"] == 16 * len(blocks)


APPS = """
sources: [{type: apps, path: apps/train.jsonl}]
format: {type: apps, loss_on: solution}
packing: false
seq_len: 256
"""


def test_apps_loss_weights_are_exactly_on_solution_tokens(tmp_path, tokenizer_dir):
    from runner.data.tokenizer import load_tokenizer

    write_jsonl(tmp_path / "apps" / "train.jsonl", apps_rows())
    manifest = run(tmp_path, recipe(tmp_path, tokenizer_dir, APPS))
    tok = load_tokenizer(tokenizer_dir)
    blocks = load_from_disk(str(tmp_path / "out" / "tokens"))["train"].with_format("numpy")
    examples = []
    for row in apps_rows():
        fn = json.loads(row["input_output"]).get("fn_name") if row["input_output"] else None
        prompt = apps_prompt(row["question"], row["starter_code"], fn)
        examples += [(prompt, s) for s in json.loads(row["solutions"])]
    assert len(blocks) == len(examples) == manifest["tokens"]["train"]["examples"] == 4
    for block, (prompt, solution) in zip(blocks, examples, strict=True):
        ids, w = block["input_ids"], block["loss_weights"]
        n_prompt, n_solution = len(tok.encode(prompt)), len(tok.encode(solution)) + 1
        assert w[:n_prompt].sum() == 0 and w[n_prompt : n_prompt + n_solution].all() and w[n_prompt + n_solution :].sum() == 0
        assert tok.decode(ids[w == 1]) == solution + "<|endoftext|>"
        assert tok.decode(ids[:n_prompt]) == prompt
    assert "Use Call-Based format" in examples[2][0] and "Use Standard Input format" in examples[0][0]
    assert examples[2][0].startswith("\nQUESTION:\nReturn the sum of a list.\nclass Solution:")


@pytest.mark.parametrize("too_long,examples,truncated,dropped", [("truncate", 4, 4, 0), ("drop", 0, 0, 4)])
def test_apps_too_long_examples_are_counted(tmp_path, tokenizer_dir, too_long, examples, truncated, dropped):
    write_jsonl(tmp_path / "apps" / "train.jsonl", apps_rows())
    data = APPS.replace("loss_on: solution}", f"loss_on: solution, too_long: {too_long}}}").replace("seq_len: 256", "seq_len: 8")
    r = recipe(tmp_path, tokenizer_dir, data)
    if too_long == "drop":
        with pytest.raises(DataError, match="no training blocks"):
            run(tmp_path, r)
        return
    t = run(tmp_path, r)["tokens"]["train"]
    assert (t["examples"], t["truncated"], t["dropped"]) == (examples, truncated, dropped)


def test_apps_packing_keeps_examples_whole_and_caps_solutions(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "apps" / "train.jsonl", apps_rows())
    data = APPS.replace("loss_on: solution}", "loss_on: solution, max_solutions: 1, layout: packed}")
    t = run(tmp_path, recipe(tmp_path, tokenizer_dir, data))["tokens"]["train"]
    assert t["examples"] == 3  # one solution per problem
    assert t["real_tokens"] + t["padding_tokens"] == t["block_tokens"]


def test_apps_difficulties_and_test_split_stay_apart(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "apps" / "train.jsonl", apps_rows())
    data = APPS.replace("path: apps/train.jsonl}", "path: apps/train.jsonl, difficulties: [interview]}")
    manifest = run(tmp_path, recipe(tmp_path, tokenizer_dir, data))
    assert manifest["documents"]["kept"] == 1 and manifest["documents"]["sources"][0]["other_difficulties"] == 2
    f = tmp_path / "t.yaml"
    f.write_text("name: t\nmodel: {arch: gpt2, checkpoint: gpt2}\ndata: {sources: [{type: apps, split: test}], format: {type: apps}}\n")
    from runner.recipe.errors import RecipeError

    with pytest.raises(RecipeError, match="test is APPS's evaluation split"):
        load_recipe(f)


def test_validation_fraction_is_seeded_and_disjoint(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "c.jsonl", [{"text": f"x_{i} = {i}\n", "i": i} for i in range(50)])
    data = "sources: [{type: jsonl, paths: [c.jsonl]}]\nseq_len: 16\nvalidation: {fraction: 0.2}"
    run(tmp_path, recipe(tmp_path, tokenizer_dir, data), "a")
    docs = load_from_disk(str(tmp_path / "a" / "documents"))
    train, val = list(docs["train"]["i"]), list(docs["validation"]["i"])
    assert len(val) == 10 and not set(train) & set(val) and sorted(train + val) == list(range(50))
    assert train == sorted(train)  # order kept
    run(tmp_path, recipe(tmp_path, tokenizer_dir, data, "seed: 1\n"), "b")
    assert list(load_from_disk(str(tmp_path / "b" / "documents"))["validation"]["i"]) != val


def test_same_result_with_one_or_two_processes(tmp_path, tokenizer_dir):
    rows = [{"text": f"def f_{i % 700}(a):\n    return a {'+-'[i % 2]} {i % 700}\n", "i": i} for i in range(2500)]
    write_jsonl(tmp_path / "c.jsonl", rows)
    data = "sources: [{type: jsonl, paths: [c.jsonl]}]\nfilters: [{type: alphanum_fraction, min: 0.3}]\ndedup: {type: variables}\nseq_len: 32"
    r = recipe(tmp_path, tokenizer_dir, data)
    one = run(tmp_path, r, "one", num_proc=1, cache_dir=tmp_path / "c1")
    two = run(tmp_path, r, "two", num_proc=2, cache_dir=tmp_path / "c2")
    assert one["documents"]["dedup"]["duplicates"] == two["documents"]["dedup"]["duplicates"] > 0
    a = load_from_disk(str(tmp_path / "one" / "tokens"))["train"].with_format("numpy")["input_ids"]
    b = load_from_disk(str(tmp_path / "two" / "tokens"))["train"].with_format("numpy")["input_ids"]
    assert np.array_equal(np.stack(a), np.stack(b))
    assert one["cache_key"] == two["cache_key"]  # num_proc is not part of what the data is


def test_cache_hit_reuses_and_a_changed_input_rebuilds(tmp_path, tokenizer_dir):
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in CODE.values()])
    r = recipe(tmp_path, tokenizer_dir, "sources: [{type: jsonl, paths: [c.jsonl]}]\nseq_len: 16")
    first = run(tmp_path, r, "1")
    second = run(tmp_path, r, "2")
    assert (first["cache"]["hit"], second["cache"]["hit"]) == (False, True)
    assert first["cache_key"] == second["cache_key"]
    assert (tmp_path / "2" / "tokens" / "dataset_dict.json").is_file()
    write_jsonl(path, [{"text": t} for t in list(CODE.values())[:-1]])  # same file name, other content
    third = run(tmp_path, r, "3")
    assert third["cache"]["hit"] is False and third["cache_key"] != first["cache_key"]
    other_spec = run(tmp_path, recipe(tmp_path, tokenizer_dir, "sources: [{type: jsonl, paths: [c.jsonl]}]\nseq_len: 32"), "4")
    assert other_spec["cache"]["hit"] is False


def test_files_source_and_trained_tokenizer(tmp_path):
    code = tmp_path / "code"
    for name, text in CODE.items():
        (code / "pkg").mkdir(parents=True, exist_ok=True)
        (code / "pkg" / name).write_text(text)
    (code / "pkg" / "blob.bin").write_bytes(b"\xff\xfe\x00")
    f = tmp_path / "r.yaml"
    f.write_text(
        "name: s\nmodel: {arch: gpt-neo, init: scratch, config: {n_layer: 1, d_model: 16, n_head: 2}}\n"
        "tokenizer: {train: {vocab_size: 300, min_frequency: 1}}\n"
        "data: {sources: [{type: files, root: code}], dedup: {type: variables}, seq_len: 16}\n"
    )
    manifest = prepare_data(load_recipe(f).recipe, tmp_path / "out", cache_dir=tmp_path / "cache", num_proc=1)
    source = manifest["documents"]["sources"][0]
    assert source["rows"] == len(CODE) and source["undecodable_files"] == 1
    docs = load_from_disk(str(tmp_path / "out" / "documents"))["train"]
    assert set(docs.column_names) == {"text", "path", "extension", "size"}
    assert manifest["tokenizer"]["source"] == "trained" and 256 < manifest["tokenizer"]["vocab_size"] <= 300
    assert (tmp_path / "out" / "tokenizer" / "tokenizer.json").is_file()


# --- bad input ------------------------------------------------------------------------------------


def test_malformed_line_names_file_and_line_or_is_skipped(tmp_path, tokenizer_dir):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "a = 1"}\n{"text": "b = 2"\n{"text": "c = 3"}\n[1, 2]\n')
    r = recipe(tmp_path, tokenizer_dir, "sources: [{type: jsonl, paths: [c.jsonl]}]\nseq_len: 16")
    with pytest.raises(DataError, match=re.escape(f"{path}:2: malformed line")):
        run(tmp_path, r)
    r = recipe(tmp_path, tokenizer_dir, "sources: [{type: jsonl, paths: [c.jsonl], on_error: skip}]\nseq_len: 16")
    manifest = run(tmp_path, r, "skipped")
    assert manifest["documents"]["sources"][0]["skipped_lines"] == 2 and manifest["documents"]["kept"] == 2


@pytest.mark.parametrize("suffix", [".gz", ".zst"])
def test_unreadable_archive_names_the_path(tmp_path, tokenizer_dir, suffix):
    path = tmp_path / f"c.jsonl{suffix}"
    path.write_bytes(b"this is not compressed at all" * 10)
    r = recipe(tmp_path, tokenizer_dir, f"sources: [{{type: jsonl, paths: [c.jsonl{suffix}]}}]\nseq_len: 16")
    with pytest.raises(DataError, match=re.escape(str(path))):
        run(tmp_path, r)


def test_missing_file_names_the_pattern(tmp_path, tokenizer_dir):
    r = recipe(tmp_path, tokenizer_dir, "sources: [{type: jsonl, paths: [nope/*.jsonl]}]\nseq_len: 16")
    with pytest.raises(DataError, match=r"data.sources\[0\]: no file matches .*nope/\*\.jsonl"):
        run(tmp_path, r)


def test_filter_on_an_absent_column_fails_before_any_work(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "c.jsonl", [{"text": "a = 1", "stars": 20}])
    r = recipe(tmp_path, tokenizer_dir,
               "sources: [{type: jsonl, paths: [c.jsonl]}]\nfilters: [{type: stars, min: 1}, {type: license}]\nseq_len: 16")
    with pytest.raises(DataError) as err:
        run(tmp_path, r)
    assert str(err.value) == "data.filters[1] (license): column 'license' is not in the data; columns: stars, text"


def test_filters_that_leave_nothing_say_which(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "c.jsonl", [{"text": "a = 1", "stars": 2}, {"text": "b = 1", "stars": 30}])
    r = recipe(tmp_path, tokenizer_dir,
               "sources: [{type: jsonl, paths: [c.jsonl]}]\nfilters: [{type: stars, min: 10}, {type: stars, min: 100}]\nseq_len: 16")
    with pytest.raises(DataError, match=r"data.filters\[1\] \(stars\) removed the last 1 rows"):
        run(tmp_path, r)


def test_cli_writes_a_new_directory_and_refuses_a_used_one(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in CODE.values()])
    recipe(tmp_path, tokenizer_dir, "sources: [{type: jsonl, paths: [c.jsonl]}]\nseq_len: 16")

    # In this process (what it prints and exits is what a fresh `ccrun` gives: tests/helpers.py); `ccrun data`
    # runs as a process of its own in tests/data/test_hostile_data.py (the build killed with SIGKILL)
    ok = ccrun_here("data", "r.yaml", "--out", "d1", "--cache-dir", "cache", "--num-proc", "1", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "dedup (none): removed 0" in ok.stdout and ok.stdout.strip().endswith("d1")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    refused = ccrun_here("data", "r.yaml", "--out", "used", "--cache-dir", "cache", "--num-proc", "1", cwd=tmp_path)
    assert refused.returncode == 2 and "not empty" in refused.stderr and "Traceback" not in refused.stderr
    assert (tmp_path / "used" / "keep.txt").read_text() == "mine"
    missing = ccrun_here("data", "r.yaml", "--out", "d2", "--set", "data.sources[0].paths=[gone.jsonl]", cwd=tmp_path)
    assert missing.returncode == 2 and "no file matches" in missing.stderr


def test_parquet_and_gzip_sources_concatenate_in_order(tmp_path, tokenizer_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"content": ["p = 1\n", "q = 2\n"], "n": [1, 2]}), tmp_path / "a.parquet")
    write_jsonl(tmp_path / "b.jsonl.gz", [{"body": "r = 3\n", "n": 3}], compress="gz")
    data = ("sources: [{type: parquet, paths: [a.parquet], text_field: content},"
            " {type: jsonl, paths: [b.jsonl.gz], text_field: body}]\nseq_len: 16")
    manifest = run(tmp_path, recipe(tmp_path, tokenizer_dir, data))
    docs = load_from_disk(str(tmp_path / "out" / "documents"))["train"]
    assert list(docs["text"]) == ["p = 1\n", "q = 2\n", "r = 3\n"] and list(docs["n"]) == [1, 2, 3]
    assert [s["rows"] for s in manifest["documents"]["sources"]] == [2, 1]


def test_hub_source_without_network_is_a_clear_error(tmp_path, tokenizer_dir):
    r = recipe(tmp_path, tokenizer_dir, "sources: [{type: hf, name: ccrun-tests/no-such-dataset}]\nseq_len: 16")
    with pytest.raises(DataError, match=r"data.sources\[0\]: cannot load 'ccrun-tests/no-such-dataset'"):
        run(tmp_path, r)


def test_rows_that_disagree_on_a_type_are_named(tmp_path, tokenizer_dir):
    # a type that changes (here after datasets' first batch of rows) is refused at its line
    write_jsonl(tmp_path / "c.jsonl", [{"text": "a", "stars": 5}] * 2500 + [{"text": "b", "stars": "many"}])
    r = recipe(tmp_path, tokenizer_dir, "sources: [{type: jsonl, paths: [c.jsonl]}]\nseq_len: 16")
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'c.jsonl'}:2501: rows disagree on a column's type")):
        run(tmp_path, r)
