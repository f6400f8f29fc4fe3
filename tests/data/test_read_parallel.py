"""JSON Lines sources read by several processes give what one process gives; int32 token examples.

The reference is the one-process read (`jsonl_table` with num_proc 1, the path every earlier test
checks): the same rows in the same order, the same table (features), the same counts, the same
error. Each case also says whether the parallel read decided itself or handed the files back to
one process (rows.ONE_PROCESS), so a case meant to run in parallel cannot pass by falling back.
"""

import json
import re

import pytest
from datasets import load_from_disk

from runner.common.errors import DataError
from runner.data import rows as rows_mod
from runner.data.rows import BATCH_ROWS, jsonl_table

from .conftest import CODE, apps_rows, write_jsonl
from .test_stage import recipe, run

PER_FILE = 700  # three files of 700 rows: more than a batch (BATCH_ROWS), so the files are spread


def docs(k, n=PER_FILE):
    return [{"text": f"def f_{k}_{i}(a):\n    return a + {i}\n", "n": i, "tag": f"file{k}"} for i in range(n)]


def write(path, rows, compress=None):
    """Rows as JSON Lines; a str row is written as it is (a malformed line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    if compress == "zst":
        import zstandard

        path.write_bytes(zstandard.ZstdCompressor().compress(text.encode()))
    else:
        path.write_text(text)
    return path


def corpus(tmp_path, case):
    """Three files (.zst, plain, .zst) with what `case` plants; on_error is skip unless the case says fail."""
    a, b, c = docs(0), docs(1), docs(2)
    if case in ("skip", "fail"):
        b.insert(400, '{"text": "cut short')  # a malformed line in the second file, after the first batch
    elif case == "late column":
        c[-1]["only_last"] = [1, 2]  # a column only the last file's last row has
    elif case == "null first batch":
        for r in a + b:
            r["maybe"] = None
        c[5]["maybe"] = "now"  # null throughout the first batch, text in the third file
    elif case == "fraction":
        c[3]["n"] = 2.5  # integers in the first batch, a fraction in the third file
    elif case == "early column":
        a[1]["extra"] = True  # the first batch itself cannot make the table
    elif case == "kind in a file":
        b[4]["tag"] = 7  # text in the first file and before it in the second: refused (skipped) there
    elif case in ("kind across files", "kind across files fail"):
        c[0]["tag"] = 7  # text in the first files, a number first in the third: refused (skipped) there
    elif case == "everything":
        b.insert(10, "[1, 2]")
        b[50]["tag"] = None
        c[-1]["only_last"] = {"k": "v"}
        c[3]["n"] = 2.5
    tmp = tmp_path / "src"
    return [write(tmp / "p0.jsonl.zst", a, "zst"), write(tmp / "p1.jsonl", b), write(tmp / "p2.jsonl.zst", c, "zst")]


def read(tmp_path, files, num_proc, on_error="skip"):
    """(table, counts, how the parallel read ended) or the DataError's message."""
    ended = []
    original = rows_mod.parallel_table

    def spy(*args, **kwargs):
        ended.append("parallel")  # it decides (returns the table or raises) unless it hands back
        result = original(*args, **kwargs)
        if result is rows_mod.ONE_PROCESS:
            ended[-1] = "one process"
        return result

    counts = {}
    cache = tmp_path / f"cache{num_proc}"
    cache.mkdir(exist_ok=True)
    rows_mod.parallel_table = spy
    try:
        ds = jsonl_table(files, "text", on_error, counts, cache, "src", num_proc=num_proc)
    except DataError as exc:
        return str(exc), ended
    finally:
        rows_mod.parallel_table = original
    return (ds, counts), ended


def same(one, two):
    (ds1, counts1), (ds2, counts2) = one, two
    assert ds2.features == ds1.features
    assert ds2.data.table.equals(ds1.data.table)  # every value, in order (chunking aside)
    assert counts2 == counts1


@pytest.mark.parametrize("case, decides", [
    ("plain", "parallel"), ("skip", "parallel"), ("late column", "parallel"), ("null first batch", "parallel"),
    ("fraction", "parallel"), ("early column", "parallel"), ("everything", "parallel"), ("kind in a file", "parallel"),
    # a value of another kind than an earlier file's first one: only one process sees that it is refused
    ("kind across files", "one process"),
])
def test_two_processes_read_what_one_reads(tmp_path, case, decides):
    files = corpus(tmp_path, case)
    one, _ = read(tmp_path, files, 1)
    two, ended = read(tmp_path, files, 2)
    same(one, two)
    assert ended == [decides]
    ds, counts = two
    assert len(ds) == 3 * PER_FILE - (case in ("kind in a file", "kind across files"))
    assert ds["tag"][:2] == ["file0", "file0"] and ds["tag"][-1] == "file2"  # files in order
    assert ds["n"][PER_FILE - 1 : PER_FILE + 1] == [PER_FILE - 1, 0]  # lines in order
    assert counts == ({"skipped_lines": 1} if case in ("skip", "everything", "kind in a file", "kind across files")
                      else {})
    if case in ("late column", "everything"):
        assert ds["only_last"][-2:] == [None, [1, 2] if case == "late column" else {"k": "v"}]
    if case == "null first batch":
        assert str(ds.features["maybe"]) == "Value('string')" and ds["maybe"][2 * PER_FILE + 5] == "now"
    if case in ("fraction", "everything"):
        assert str(ds.features["n"]) == "Value('float64')" and ds["n"][2 * PER_FILE + 3] == 2.5


@pytest.mark.parametrize("case, message", [
    ("fail", r"p1.jsonl:401: malformed line"),
    ("kind across files fail", r"p2.jsonl.zst:1: rows disagree on a column's type: 'tag' is a number here, text at .*p0.jsonl.zst:1;"),
    ("cut", r"p2.jsonl.zst: unreadable \(EOFError: .*truncated"),
])
def test_two_processes_raise_what_one_raises(tmp_path, case, message):
    files = corpus(tmp_path, case.replace("cut", "plain"))
    if case == "cut":  # the last file's archive cut in the middle
        files[2].write_bytes(files[2].read_bytes()[: files[2].stat().st_size // 2])
    one, _ = read(tmp_path, files, 1, on_error="fail")
    two, ended = read(tmp_path, files, 2, on_error="fail")
    assert isinstance(one, str) and re.search(message, one)
    assert two == one
    assert ended == (["one process"] if case == "kind across files fail" else ["parallel"])


def test_a_corpus_of_less_than_a_batch_is_read_by_one_process(tmp_path):
    files = [write(tmp_path / f"s{k}.jsonl", docs(k, 10)) for k in range(2)]
    one, _ = read(tmp_path, files, 1)
    two, ended = read(tmp_path, files, 2)
    same(one, two)
    assert ended == ["one process"] and len(two[0]) == 20 < BATCH_ROWS


def test_prepare_data_num_proc_2_builds_what_num_proc_1_builds(tmp_path, tokenizer_dir, monkeypatch):
    """The whole stage on a three-file corpus (a skipped line in the second file, a column only the
    last has, more than a batch of rows): the same documents, blocks and manifest at 1 and 2."""
    files = corpus(tmp_path, "everything")
    r = recipe(tmp_path, tokenizer_dir, f"sources: [{{type: jsonl, paths: ['{tmp_path}/src/*'], on_error: skip}}]\n"
               "seq_len: 64")
    ended = []
    original = rows_mod.parallel_table
    monkeypatch.setattr(rows_mod, "parallel_table", lambda *a, **k: ended.append(1) or original(*a, **k))
    manifests = [run(tmp_path, r, name=f"out{p}", num_proc=p, cache_dir=tmp_path / f"c{p}") for p in (1, 2)]
    if not ended:
        pytest.skip("runner/data/stage.py does not pass num_proc to read_source yet")
    for m in manifests:  # when and where each was built: the only fields that may differ
        del m["created_utc"], m["cache"]["path"]
    assert manifests[1] == manifests[0]
    (source,) = manifests[0]["documents"]["sources"]
    assert source["skipped_lines"] == 1 and len(source["files"]) == len(files)  # the "[1, 2]" line
    for part in ("documents", "tokens"):
        a, b = (load_from_disk(str(tmp_path / f"out{p}" / part)) for p in (1, 2))
        for split in a:
            assert b[split].features == a[split].features and b[split].data.table.equals(a[split].data.table)


# --- int32 token examples ---------------------------------------------------------------------------


@pytest.mark.parametrize("data", [
    "sources: [{type: jsonl, paths: [c.jsonl]}]\nseq_len: 16",
    "sources: [{type: apps, path: apps/train.jsonl}]\nformat: {type: apps, loss_on: solution, layout: packed}\nseq_len: 64",
])
def test_int32_examples_pack_into_the_blocks_int64_examples_made(tmp_path, tokenizer_dir, monkeypatch, data):
    """The reference is the stage before int32 features: datasets inferring int64 from the Python
    ints (example_features → None). The blocks must be the same, value for value."""
    from datasets import Dataset

    from runner.data import pack
    from runner.data.tokenizer import load_tokenizer

    write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in CODE.values()] * 3)
    write_jsonl(tmp_path / "apps" / "train.jsonl", apps_rows())
    r = recipe(tmp_path, tokenizer_dir, data)
    run(tmp_path, r, name="new", cache_dir=tmp_path / "c-new")
    monkeypatch.setattr(pack, "example_features", lambda apps: None)
    run(tmp_path, r, name="old", cache_dir=tmp_path / "c-old")
    new, old = (load_from_disk(str(tmp_path / name / "tokens")) for name in ("new", "old"))
    for split in old:
        assert len(old[split]) and new[split].features == old[split].features
        assert new[split].data.table.equals(old[split].data.table)
    monkeypatch.undo()
    apps = r.data.format.type == "apps"
    docs = Dataset.from_list([{**row, "text": row["question"]} for row in apps_rows()]) if apps else Dataset.from_dict({"text": list(CODE.values())})
    examples, _ = pack.tokenize(docs, load_tokenizer(tokenizer_dir), r.data.format, 16, None)
    assert examples.features["ids"].feature.dtype == "int32"
    assert str(examples.data.column("ids").type) == "list<item: int32>"  # what is stored, 4 bytes a token
    if apps:
        assert examples.features["weights"].feature.dtype == "uint8"
