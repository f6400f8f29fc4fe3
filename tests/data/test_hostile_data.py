"""Hostile data and a hostile world around the data cache: cut archives, rows Arrow cannot hold,
edited outputs and cache entries, a builder killed with SIGKILL. Each ends in a located error
(file:line: what) or in the original bytes, never in a traceback or a changed output."""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from datasets import load_from_disk

from runner.data import DataError, prepare_data
from runner.data.cache import build_dir, clean_stale

from ..helpers import ccrun_here
from .conftest import CODE, write_jsonl
from .test_stage import recipe, run

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def jsonl_source(tmp_path, tokenizer_dir, name, extra=""):
    return recipe(tmp_path, tokenizer_dir, f"sources: [{{type: jsonl, paths: [{name}]{extra}}}]\nseq_len: 16")


# --- cut archives ---------------------------------------------------------------------------------


def two_frames(rows_a, rows_b):
    """A .zst of two frames: one with its size in the header, one streamed (no size, as zstd -c | does)."""
    import zstandard

    a = "".join(json.dumps(r) + "\n" for r in rows_a).encode()
    b = "".join(json.dumps(r) + "\n" for r in rows_b).encode()
    first = zstandard.ZstdCompressor().compress(a)
    streamed = zstandard.ZstdCompressor().compressobj()
    second = streamed.compress(b) + streamed.flush()
    return first, second


def test_every_frame_of_a_zst_is_read(tmp_path, tokenizer_dir):
    rows = [{"text": f"x_{i} = {i}\n"} for i in range(300)]
    first, second = two_frames(rows[:100], rows[100:])
    (tmp_path / "c.jsonl.zst").write_bytes(first + second)
    manifest = run(tmp_path, jsonl_source(tmp_path, tokenizer_dir, "c.jsonl.zst"))
    assert manifest["documents"]["rows"] == 300


@pytest.mark.parametrize("cut", ["header", "first frame", "second frame's header", "second frame", "last byte"])
def test_a_cut_zst_is_refused_naming_the_file(tmp_path, tokenizer_dir, cut):
    rows = [{"text": f"def f_{i}(a):\n    return a * {i}\n", "i": i} for i in range(400)]
    first, second = two_frames(rows[:200], rows[200:])
    whole = first + second
    at = {"header": 3, "first frame": len(first) // 2, "second frame's header": len(first) + 2,
          "second frame": len(first) + len(second) // 2, "last byte": len(whole) - 1}[cut]
    path = tmp_path / "c.jsonl.zst"
    path.write_bytes(whole[:at])
    with pytest.raises(DataError, match=re.escape(f"{path}: unreadable (EOFError: ") + ".*truncated"):
        run(tmp_path, jsonl_source(tmp_path, tokenizer_dir, "c.jsonl.zst"))
    assert not (tmp_path / "out").exists()


def test_a_cut_zst_is_refused_by_the_cli_without_a_traceback(tmp_path, tokenizer_dir):
    rows = [{"text": t} for t in CODE.values()] * 20
    first, second = two_frames(rows, rows)
    (tmp_path / "c.jsonl.zst").write_bytes((first + second)[:-5])
    jsonl_source(tmp_path, tokenizer_dir, "c.jsonl.zst")
    # In this process (the data command's own process is test_a_sigkilled_build_leaves_nothing_a_later_run_trips_on's)
    done = ccrun_here("data", "r.yaml", "--out", "o", "--cache-dir", "cache", "--num-proc", "1", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "c.jsonl.zst: unreadable" in done.stderr and "truncated" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "o").exists()


def test_a_cut_gz_is_refused_naming_the_file(tmp_path, tokenizer_dir):
    path = write_jsonl(tmp_path / "c.jsonl.gz", [{"text": f"x_{i} = {i}\n"} for i in range(500)], compress="gz")
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError, match=re.escape(f"{path}: unreadable (EOFError: ")):
        run(tmp_path, jsonl_source(tmp_path, tokenizer_dir, "c.jsonl.gz"))


def test_a_cut_metadata_file_is_refused_naming_it(tmp_path, tokenizer_dir):
    from .test_metadata import SEART, corpus, data, write_csv

    corpus(tmp_path)
    path = tmp_path / "seart.csv.gz"
    write_csv(path, SEART * 50, compress=True)
    path.write_bytes(path.read_bytes()[:-30])
    meta = "metadata: {paths: [seart.csv.gz], columns: {stars: stargazers}}\n"
    with pytest.raises(DataError, match=re.escape(f"data.metadata: {path}: unreadable (EOFError: ")):
        run(tmp_path, recipe(tmp_path, tokenizer_dir, data(meta)))


# --- rows Arrow cannot hold -----------------------------------------------------------------------


def test_a_missing_column_reads_as_null(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "c.jsonl", [{"text": "a = 1", "stars": 3, "meta": {"lang": "py"}},
                                       {"text": "b = 2"}, {"text": "c = 3", "stars": None, "meta": {}}])
    run(tmp_path, jsonl_source(tmp_path, tokenizer_dir, "c.jsonl"))
    docs = load_from_disk(str(tmp_path / "out" / "documents"))["train"]
    assert docs.to_list() == [{"text": "a = 1", "stars": 3, "lang": "py"}, {"text": "b = 2", "stars": None, "lang": None},
                              {"text": "c = 3", "stars": None, "lang": None}]


def test_a_column_only_later_rows_have_is_null_in_the_others(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "c.jsonl", [{"text": "a = 1"}, {"text": "b = 2"}, {"text": "c = 3", "license": "mit"},
                                       {"text": "d = 4", "tags": ["x"]}])
    manifest = run(tmp_path, jsonl_source(tmp_path, tokenizer_dir, "c.jsonl"))
    docs = load_from_disk(str(tmp_path / "out" / "documents"))["train"]
    assert docs.column_names == ["text", "license", "tags"] and manifest["documents"]["rows"] == 4
    assert list(docs["license"]) == [None, None, "mit", None] and list(docs["tags"]) == [None, None, None, ["x"]]


def test_a_first_file_without_columns_the_next_has(tmp_path, tokenizer_dir):
    """The Code Clippy corpus: the Pile's files carry fewer meta keys than the GitHub crawl's,
    and the first batch of rows can hold none of the latter."""
    write_jsonl(tmp_path / "corpus" / "a.jsonl.zst", [{"text": f"p{i}", "meta": {"repo_name": f"pile/{i}"}}
                                                      for i in range(1200)], compress="zst")
    write_jsonl(tmp_path / "corpus" / "b.jsonl.zst", [{"text": "g", "meta": {"repo_name": "gh/r", "stars": 12,
                                                                            "license": "mit", "size": 2.5}}],
                compress="zst")
    manifest = run(tmp_path, jsonl_source(tmp_path, tokenizer_dir, "corpus/*.jsonl.zst"))
    docs = load_from_disk(str(tmp_path / "out" / "documents"))["train"]
    assert manifest["documents"]["rows"] == 1201
    assert docs[1199] == {"text": "p1199", "repo_name": "pile/1199", "stars": None, "license": None, "size": None}
    assert docs[1200] == {"text": "g", "repo_name": "gh/r", "stars": 12, "license": "mit", "size": 2.5}


def test_a_fraction_after_a_batch_of_integers_keeps_both(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "c.jsonl", [{"text": f"v{i}", "score": i} for i in range(1100)] + [{"text": "w", "score": 0.5}])
    run(tmp_path, jsonl_source(tmp_path, tokenizer_dir, "c.jsonl"))
    scores = list(load_from_disk(str(tmp_path / "out" / "documents"))["train"]["score"])
    assert scores[:3] == [0, 1, 2] and scores[-1] == 0.5


def test_a_row_arrow_cannot_hold_is_skipped_with_on_error_skip(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "c.jsonl", [{"text": "a", "n": 1}, {"text": "b", "n": 2**64}, {"text": "c", "n": "x"},
                                       {"text": "d"}])
    manifest = run(tmp_path, jsonl_source(tmp_path, tokenizer_dir, "c.jsonl", ", on_error: skip"))
    assert manifest["documents"]["sources"][0]["skipped_lines"] == 2 and manifest["documents"]["kept"] == 2


@pytest.mark.parametrize(("fine", "value"), [(2**63 - 1, 2**63), (-(2**63), -(2**63) - 1), (1, 10**30),
                                             ([1], [1, 2**64]), ({"deep": [1]}, {"deep": [2**70]})])
def test_an_integer_beyond_int64_is_refused_at_its_line(tmp_path, tokenizer_dir, fine, value):
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": "a = 1", "n": fine}, {"text": "b = 2", "n": value}])
    with pytest.raises(DataError, match=re.escape(f"{path}:2: column 'n': the integer ") + ".* does not fit in 64 bits"):
        run(tmp_path, jsonl_source(tmp_path, tokenizer_dir, "c.jsonl"))


def test_the_largest_int64_is_kept(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "c.jsonl", [{"text": "a = 1", "n": 2**63 - 1}, {"text": "b = 2", "n": -(2**63)}])
    run(tmp_path, jsonl_source(tmp_path, tokenizer_dir, "c.jsonl"))
    assert list(load_from_disk(str(tmp_path / "out" / "documents"))["train"]["n"]) == [2**63 - 1, -(2**63)]


def test_a_column_changing_kind_is_refused_at_its_line(tmp_path, tokenizer_dir):
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": "a", "stars": 5}, {"text": "b", "stars": 2.5},
                                              {"text": "c", "stars": "many"}])
    with pytest.raises(DataError) as err:
        run(tmp_path, jsonl_source(tmp_path, tokenizer_dir, "c.jsonl"))
    assert str(err.value).startswith(f"{path}:3: rows disagree on a column's type: 'stars' is text here, "
                                     f"a number at {path}:1")


def test_a_first_value_after_the_first_batch_is_kept(tmp_path, tokenizer_dir):
    # datasets types a column null when the first batch of rows has no value for it
    rows = [{"text": f"v{i}", "license": None} for i in range(1000)] + [{"text": "w", "license": "mit"}]
    write_jsonl(tmp_path / "c.jsonl", rows)
    manifest = run(tmp_path, jsonl_source(tmp_path, tokenizer_dir, "c.jsonl"))
    docs = load_from_disk(str(tmp_path / "out" / "documents"))["train"]
    assert manifest["documents"]["rows"] == 1001 and list(docs["license"])[-2:] == [None, "mit"]


# --- the cache: outputs are copies, entries are checked -------------------------------------------


def tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def entry_of(manifest) -> Path:
    return Path(manifest["cache"]["path"])


def test_editing_an_output_changes_neither_the_cache_nor_another_output(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in CODE.values()])
    r = jsonl_source(tmp_path, tokenizer_dir, "c.jsonl")
    first = run(tmp_path, r, "run1")
    second = run(tmp_path, r, "run2")
    assert (first["cache"]["hit"], second["cache"]["hit"]) == (False, True)
    entry, run1, run2 = entry_of(first), tmp_path / "run1", tmp_path / "run2"
    cached, original = tree(entry), tree(run2)
    for path in run1.rglob("*"):  # copies, not links: one name per file, the user's to edit
        if path.is_file():
            assert path.stat().st_nlink == 1 and os.access(path, os.W_OK)

    config = run1 / "tokenizer" / "tokenizer_config.json"
    config.write_text(config.read_text().replace("}", ', "edited": true}', 1))
    arrow = next((run1 / "tokens" / "train").glob("*.arrow"))
    with open(arrow, "r+b") as f:
        f.seek(arrow.stat().st_size // 2)
        f.write(b"\x00\xff" * 8)

    assert tree(entry) == cached and tree(run2) == original
    third = run(tmp_path, r, "run3")
    assert third["cache"]["hit"] is True  # nothing rebuilt
    assert tree(tmp_path / "run3") == original


@pytest.mark.parametrize("damage", ["edited", "cut", "removed", "no contents"])
def test_a_damaged_entry_is_rebuilt_with_a_warning_never_used(tmp_path, tokenizer_dir, damage):
    write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in CODE.values()])
    r = jsonl_source(tmp_path, tokenizer_dir, "c.jsonl")
    first = run(tmp_path, r, "run1")
    entry = entry_of(first)
    target = entry / "tokenizer" / "tokenizer_config.json"
    if damage == "no contents":
        target = entry / "contents.json"
    target.chmod(0o644)  # entries are read-only: damage takes intent (or a broken disk)
    if damage == "edited":  # same size: only the hash tells
        content = target.read_bytes()
        target.write_bytes(content[:-2] + content[-1:] + content[-2:-1])
    elif damage == "cut":
        target.write_bytes(target.read_bytes()[:-3])
    else:
        target.unlink()
    warnings: list[str] = []
    again = run(tmp_path, r, "run2", warn=warnings.append)
    assert again["cache"]["hit"] is False and len(warnings) == 1
    assert warnings[0].startswith(f"data cache entry {entry} failed its check (") and "rebuilding it" in warnings[0]
    config = Path("tokenizer") / "tokenizer_config.json"
    assert (tmp_path / "run2" / config).read_bytes() == (tmp_path / "run1" / config).read_bytes()
    rows = lambda d: list(load_from_disk(str(d / "tokens"))["train"]["input_ids"])  # noqa: E731
    assert rows(tmp_path / "run2") == rows(tmp_path / "run1")
    third = run(tmp_path, r, "run3", warn=warnings.append)
    assert third["cache"]["hit"] is True and len(warnings) == 1
    assert not [p for p in entry.parent.iterdir() if p.name.startswith(".")]


def test_entry_files_are_read_only_and_listed_with_sizes_and_hashes(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in CODE.values()])
    entry = entry_of(run(tmp_path, jsonl_source(tmp_path, tokenizer_dir, "c.jsonl")))
    contents = json.loads((entry / "contents.json").read_text())["files"]
    on_disk = {p.relative_to(entry).as_posix() for p in entry.rglob("*") if p.is_file()} - {"contents.json"}
    assert set(contents) == on_disk and "manifest.json" in contents
    for rel, f in contents.items():
        path = entry / rel
        assert path.stat().st_size == f["size"] and hashlib.sha256(path.read_bytes()).hexdigest() == f["sha256"]
        assert not os.access(path, os.W_OK) or os.geteuid() == 0


# --- killed builders ------------------------------------------------------------------------------


def test_a_live_build_is_kept_and_a_dead_one_cleaned(tmp_path):
    cache = tmp_path / "cache"
    with build_dir(cache, "k" * 64) as building:
        (building / "half.arrow").write_bytes(b"x")
        assert clean_stale(cache) == [] and building.is_dir()  # its builder (this process) holds the lock
    assert not building.exists()
    (cache / ".stale-abc").mkdir()
    (cache / ".build-old-unlocked").mkdir()  # a builder that died before taking its lock, long ago
    os.utime(cache / ".build-old-unlocked", (0, 0))
    (cache / ".build-new-unlocked").mkdir()  # one taking its lock right now
    assert clean_stale(cache) == [".build-old-unlocked", ".stale-abc"]
    assert [p.name for p in cache.iterdir()] == [".build-new-unlocked"]


def test_a_sigkilled_build_leaves_nothing_a_later_run_trips_on(tmp_path, tokenizer_dir):
    rows = [{"text": f"def f_{i}(a, b):\n    return a * {i} + b - {i % 7}\n", "i": i} for i in range(3000)]
    write_jsonl(tmp_path / "c.jsonl", rows)
    jsonl_source(tmp_path, tokenizer_dir, "c.jsonl")
    cache = tmp_path / "cache"

    def ccrun(out):
        return subprocess.Popen([sys.executable, "-m", "runner.cli", "data", "r.yaml", "--out", out, "--cache-dir",
                                 "cache", "--num-proc", "1"], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    killed = ccrun("o1")
    deadline = time.monotonic() + 120
    while not list(cache.glob(".build-*/.lock")):  # the build has begun: its lock is taken
        assert killed.poll() is None, killed.communicate()
        assert time.monotonic() < deadline, "the build never started"
        time.sleep(0.01)
    time.sleep(0.1)  # into the reading of the sources
    assert killed.poll() is None, "the build finished before it could be killed"
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    assert killed.returncode == -signal.SIGKILL
    assert list(cache.glob(".build-*")) and not list(cache.glob("[!.]*"))  # a leftover, no entry
    assert not (tmp_path / "o1").exists()

    # the next run in this process (what it prints, exits and writes is what a fresh `ccrun` gives)
    again = ccrun_here("data", "r.yaml", "--out", "o1", "--cache-dir", "cache", "--num-proc", "1", cwd=tmp_path)
    out, err = again.stdout, again.stderr
    assert again.returncode == 0, err
    assert "cache miss" in out and "Traceback" not in err
    assert sorted(p.name for p in cache.iterdir() if p.name.startswith(".")) == []
    assert load_from_disk(str(tmp_path / "o1" / "tokens"))["train"].num_rows > 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".o1")] == []


def test_prepare_data_refuses_a_used_out_dir_and_leaves_it(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in CODE.values()])
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        prepare_data(jsonl_source(tmp_path, tokenizer_dir, "c.jsonl"), tmp_path / "used", cache_dir=tmp_path / "cache",
                     num_proc=1)
    assert [p.name for p in (tmp_path / "used").iterdir()] == ["keep.txt"]


def test_two_builders_of_one_key_publish_one_entry(tmp_path):
    from runner.data.cache import publish

    cache, key, warnings = tmp_path / "cache", "f" * 64, []
    with build_dir(cache, key) as a, build_dir(cache, key) as b:
        (a / "x").write_text("same")
        (b / "x").write_text("same")
        first_entry, _ = publish(a, cache, key, warnings.append)
        second_entry, files = publish(b, cache, key, warnings.append)
    assert first_entry == second_entry == cache / key and list(files) == ["x"] and warnings == []
    assert sorted(p.name for p in cache.iterdir()) == [key]  # the loser's build is gone
    assert sorted(p.name for p in (cache / key).iterdir()) == ["contents.json", "x"]  # no lock left in it


def test_jsonl_lines_deeply_nested_or_not_utf8_are_located(tmp_path):
    """Deep nesting (RecursionError in json) and bytes that are not UTF-8 name file and line."""
    from runner.common.errors import BadInput
    from runner.data.rows import jsonl_records

    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"content": "a"}\n' + "[" * 100_000 + "\n")
    with pytest.raises(BadInput, match=r"deep\.jsonl:2: malformed line \(nested too deeply\)"):
        list(jsonl_records([deep], "content", "raise", {}))
    counts: dict = {}
    assert len(list(jsonl_records([deep], "content", "skip", counts))) == 1 and counts["skipped_lines"] == 1
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"content": "a"}\n{"content": "\xe9t\xe9"}\n')
    with pytest.raises(BadInput, match=r"latin\.jsonl:2: not UTF-8"):
        list(jsonl_records([latin], "content", "raise", {}))
