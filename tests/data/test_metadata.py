"""`data.metadata`: SEART repository metadata joined onto a Code Clippy shaped corpus (repo_name and
stars only), so the commits / licence / fork / size filters read real values."""

import csv
import gzip
import json

import pytest
from datasets import load_from_disk

from runner.data import DataError

from .conftest import write_jsonl
from .test_stage import recipe, run

# Four repositories as SEART GitHub Search exports them (a subset of its columns).
SEART = [
    {"id": 1, "name": "Good/Repo", "isFork": "false", "commits": "120", "license": "MIT License", "size": "5000",
     "stargazers": "40"},
    {"id": 2, "name": "few/commits", "isFork": "false", "commits": "2", "license": "MIT License", "size": "10",
     "stargazers": "40"},
    {"id": 3, "name": "a/fork", "isFork": "true", "commits": "50", "license": "Apache License 2.0", "size": "10",
     "stargazers": "40"},
    {"id": 4, "name": "no/licence", "isFork": "false", "commits": "50", "license": "", "size": "10",
     "stargazers": "40"},
    {"id": 5, "name": "huge/repo", "isFork": "false", "commits": "50", "license": "GPL", "size": "80000",
     "stargazers": "40"},
    {"id": 6, "name": "good/repo", "isFork": "true", "commits": "1", "license": "", "size": "1",
     "stargazers": "0"},  # a repeat of Good/Repo (case-insensitive): the first row wins
]
FILTERS = """
filters:
  - {type: stars, min: 11}
  - {type: commits, min: 3}
  - {type: license}
  - {type: fork}
  - {type: size, max: 70707}
seq_len: 16
"""


def corpus(tmp_path):
    """Code Clippy rows: text + meta {repo_name, stars (a string), ...}; no commits/licence/fork/size."""
    repos = ["good/repo", "few/commits", "a/fork", "no/licence", "huge/repo", "not/in/seart", "GOOD/REPO"]
    rows = [{"text": f"def f_{i}(x):\n    return x + {i}\n",
             "meta": {"repo_name": r, "stars": "25", "repo_language": "Python", "file_name": f"f{i}.py"}}
            for i, r in enumerate(repos)]
    write_jsonl(tmp_path / "corpus" / "train.jsonl.zst", rows, compress="zst")


def write_csv(path, rows, *, compress=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if compress else open
    with opener(path, "wt", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def data(metadata: str) -> str:
    return "sources: [{type: jsonl, paths: [corpus/*.jsonl.zst]}]\n" + metadata + FILTERS


@pytest.mark.parametrize("compress", [False, True])
def test_seart_join_lets_the_seart_filters_act(tmp_path, tokenizer_dir, compress):
    corpus(tmp_path)
    name = "seart/export.csv" + (".gz" if compress else "")
    write_csv(tmp_path / name, SEART, compress=compress)
    manifest = run(tmp_path, recipe(tmp_path, tokenizer_dir, data(f"metadata: {{paths: [{name}]}}\n")))
    docs = load_from_disk(str(tmp_path / "out" / "documents"))["train"]
    assert docs["repo_name"] == ["good/repo", "GOOD/REPO"]  # keys match case-insensitively
    assert docs["commits"] == ["120", "120"] and docs["fork"] == ["false", "false"]  # the first SEART row wins
    d = manifest["documents"]
    m = d["metadata"]
    assert (m["rows_in"], m["matched"], m["missing"], m["dropped"]) == (7, 6, 1, 1)
    assert (m["metadata_rows"], m["repositories"], m["repeated_keys"]) == (6, 5, 1)
    assert len(m["files"]) == 1
    removed = {f["type"]: f["removed"] for f in d["filters"]}
    assert removed == {"stars": 0, "commits": 1, "license": 1, "fork": 1, "size": 1}
    key = manifest["cache_key"]
    rows = list(SEART)
    rows[1] = {**rows[1], "commits": "30"}  # other metadata: another cache key, one more document kept
    write_csv(tmp_path / name, rows, compress=compress)
    again = run(tmp_path, recipe(tmp_path, tokenizer_dir, data(f"metadata: {{paths: [{name}]}}\n")), "again")
    assert again["cache_key"] != key and again["documents"]["kept"] == 3


def test_missing_keep_and_fail_and_json_lines(tmp_path, tokenizer_dir):
    corpus(tmp_path)
    rows = [{**r, "isFork": r["isFork"] == "true", "commits": int(r["commits"])} for r in SEART]
    write_jsonl(tmp_path / "seart.jsonl", rows)
    keep = run(tmp_path, recipe(tmp_path, tokenizer_dir, data("metadata: {paths: [seart.jsonl], missing: keep}\n")))
    assert keep["documents"]["metadata"]["dropped"] == 0
    assert {f["type"]: f["removed"] for f in keep["documents"]["filters"]}["commits"] == 2  # no metadata: no commits
    docs = load_from_disk(str(tmp_path / "out" / "documents"))["train"]
    assert docs["fork"] == ["false", "false"] and docs["commits"] == ["120", "120"]  # JSON values as text
    with pytest.raises(DataError, match=r"1 document\(s\) of data.sources have no metadata \(e.g. repo_name = 'not/in/seart'\)"):
        run(tmp_path, recipe(tmp_path, tokenizer_dir, data("metadata: {paths: [seart.jsonl], missing: fail}\n")), "f")


def test_missing_unfiltered_keeps_the_piles_repositories_past_the_seart_filters(tmp_path, tokenizer_dir):
    """GPT-Code-Clippy's corpus: SEART repositories meeting the SEART criteria *plus* every Pile
    repository (not in the export), which the criteria never applied to; file filters apply to all."""
    corpus(tmp_path)
    write_jsonl(tmp_path / "corpus" / "pile.jsonl.zst",
                [{"text": "1234567890\n" * 20, "meta": {"repo_name": "pile/digits", "stars": "0"}}], compress="zst")
    write_csv(tmp_path / "seart.csv", SEART)
    meta = ("metadata: {paths: [seart.csv], missing: unfiltered,\n"
            "  columns: {stars: stargazers, commits: commits, license: license, fork: isFork, size: size}}\n")
    manifest = run(tmp_path, recipe(tmp_path, tokenizer_dir, data(meta).replace("seq_len", "  - {type: digit_fraction, max: 0.8}\nseq_len")))
    docs = load_from_disk(str(tmp_path / "out" / "documents"))["train"]
    assert docs["repo_name"] == ["good/repo", "not/in/seart", "GOOD/REPO"]
    assert docs["metadata_matched"] == [True, False, True]
    assert docs["stars"] == ["40", None, "40"]  # SEART's stargazers replaced the corpus's stars
    d = manifest["documents"]
    assert (d["metadata"]["dropped"], d["metadata"]["missing"], d["metadata"]["policy"]) == (0, 2, "unfiltered")
    by_type = {f["type"]: f for f in d["filters"]}
    assert {t: f["removed"] for t, f in by_type.items()} == {
        "stars": 0, "commits": 1, "license": 1, "fork": 1, "size": 1, "digit_fraction": 1}  # the Pile's digits file
    assert by_type["commits"]["unfiltered"] == 2 and "unfiltered" not in by_type["digit_fraction"]


def test_metadata_mistakes_are_named(tmp_path, tokenizer_dir):
    corpus(tmp_path)
    write_csv(tmp_path / "seart.csv", [{k: v for k, v in r.items() if k != "isFork"} for r in SEART])
    with pytest.raises(DataError, match=r"seart.csv has no column 'isFork'; columns: id, name, commits"):
        run(tmp_path, recipe(tmp_path, tokenizer_dir, data("metadata: {paths: [seart.csv]}\n")), "a")
    write_csv(tmp_path / "seart.csv", SEART)
    with pytest.raises(DataError, match=r"data.metadata.on: data.sources has no column 'repo'; columns: text"):
        run(tmp_path, recipe(tmp_path, tokenizer_dir, data("metadata: {paths: [seart.csv], on: repo}\n")), "b")
    with pytest.raises(DataError, match=r"data.metadata.paths: no file matches .*nothing\*.csv"):
        run(tmp_path, recipe(tmp_path, tokenizer_dir, data("metadata: {paths: [nothing*.csv]}\n")), "c")
    (tmp_path / "seart.parquet").write_bytes(b"x")
    with pytest.raises(DataError, match=r"expected a .csv or .jsonl file"):
        run(tmp_path, recipe(tmp_path, tokenizer_dir, data("metadata: {paths: [seart.parquet]}\n")), "d")
    (tmp_path / "other.csv").write_text("name,commits,license,isFork,size\nx/y,5,mit,false,1\n")
    with pytest.raises(DataError, match=r"no document of data.sources matched the metadata on 'repo_name'"):
        run(tmp_path, recipe(tmp_path, tokenizer_dir, data("metadata: {paths: [other.csv]}\n")), "e")


def test_the_code_clippy_recipe_data_stage_runs_on_corpus_and_seart_files(tmp_path, tokenizer_dir):
    """recipes/code-clippy-125m.yaml as shipped, its paths pointed at files shaped like the real ones."""
    from ..helpers import ccrun_here
    from .test_stage import ROOT

    corpus(tmp_path)
    write_jsonl(tmp_path / "corpus" / "validation.jsonl.zst",
                [{"text": "def g(y):\n    return y * 2\n", "meta": {"repo_name": "good/repo", "stars": "25"}}],
                compress="zst")
    write_csv(tmp_path / "seart" / "export.csv", SEART)
    sets = {"data.sources[0].paths": f"[{tmp_path}/corpus/train.jsonl.zst]",
            "data.validation.sources[0].paths": f"[{tmp_path}/corpus/validation.jsonl.zst]",
            "data.metadata.paths": f"[{tmp_path}/seart/*.csv]", "tokenizer.name": str(tokenizer_dir),
            "data.filters[7].apps.path": str(ROOT / "tests" / "fixtures" / "apps-smoke.jsonl"),
            "data.seq_len": "16", "data.num_proc": "1", "data.streaming": "false"}  # the in-memory stage
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    out = ccrun_here("data", "recipes/code-clippy-125m.yaml", *args, "--out", str(tmp_path / "out"), "--cache-dir",
                     str(tmp_path / "cache"), cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "metadata: 5 repositories; 6 of 7 rows matched on repo_name" in out.stdout
    assert "filter data.filters[1] (commits): removed 1 of 7 (1 without metadata let through)" in out.stdout
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    # good/repo and GOOD/REPO (SEART, meeting its criteria) and not/in/seart (taken as the Pile's)
    assert manifest["documents"]["kept"] == 3 and manifest["split"]["validation_rows"] == 1
    decontaminate = manifest["documents"]["filters"][7]
    assert decontaminate["type"] == "decontaminate" and decontaminate["benchmark"]["humaneval"]["problems"] == 164

    # The recipe as shipped streams: the same documents reach training, block for block (the
    # stream's metadata join, SEART filters and decontamination are the in-memory stage's).
    from datasets import load_from_disk

    from runner.data import prepare_data
    from runner.data.stream import open_stream
    from runner.recipe.load import load_recipe

    sets.update({"data.streaming": "true", "data.shuffle_buffer": "1"})
    streaming = load_recipe(ROOT / "recipes" / "code-clippy-125m.yaml", [f"{k}={v}" for k, v in sets.items()]).recipe
    prepare_data(streaming, tmp_path / "streamed", cache_dir=tmp_path / "cache")
    stream = open_stream(streaming, tmp_path / "streamed", workers=1)
    blocks = load_from_disk(str(tmp_path / "out" / "tokens"))["train"].with_format("numpy")
    got = stream.next_blocks(len(blocks))
    assert (got["input_ids"] == blocks["input_ids"]).all() and (got["loss_weights"] == blocks["loss_weights"]).all()
    report = stream.report()
    assert report["documents"] == manifest["documents"]["kept"]
    assert report["metadata_matched"] == manifest["documents"]["metadata"]["matched"]
    stream.close()
