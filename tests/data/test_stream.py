"""Training from a stream (runner/data/stream.py): the same blocks as the in-memory data stage,
deterministic for a seed whatever the number of workers, and an exact position to resume from."""

import json
import random

import numpy as np
import pytest
from datasets import load_from_disk

from runner.data import DataError, prepare_data
from runner.data.stream import CHUNK_RECORDS, open_stream
from runner.recipe.load import load_recipe

from .conftest import corpus_rows, write_jsonl

FILTERS = """
  - {type: stars, min: 11}
  - {type: license}
  - {type: digit_fraction, max: 0.8}
  - {type: max_line_length, max: 200}
"""


def recipe(tmp_path, tokenizer_dir, *, streaming, dedup="variables", shuffle=1, packing=True, extra=""):
    f = tmp_path / f"r-{streaming}-{dedup}-{shuffle}-{packing}.yaml"
    f.write_text(
        "name: s\nseed: 3\nmodel: {arch: gpt-neo, init: scratch, config: {n_layer: 1, d_model: 16, n_head: 2, "
        f"max_positions: 64}}}}\ntokenizer: {{name: {tokenizer_dir}}}\n"
        "data:\n  sources: [{type: jsonl, paths: [corpus/*.jsonl.zst]}]\n"
        f"  filters:{FILTERS}  dedup: {{type: {dedup}}}\n  seq_len: 32\n  packing: {str(packing).lower()}\n"
        f"  streaming: {str(streaming).lower()}\n  shuffle_buffer: {shuffle}\n{extra}"
        "optimizer: {type: adamw}\nschedule: {type: constant, peak_lr: 1.0e-3}\ntrain: {batch_size: 4, steps: 3}\n"
    )
    return load_recipe(f).recipe


def corpus(tmp_path, n_files=3, copies=40):
    """More rows than a chunk, in several .zst files: duplicates across chunks and files, filtered rows."""
    base = corpus_rows()
    rng = random.Random(0)
    rows = []
    for i in range(copies):
        for row in base:
            r = json.loads(json.dumps(row))
            if rng.random() < 0.7:  # most rows made distinct; the rest stay duplicates of earlier ones
                r["text"] = r["text"] + f"\nvalue_{i}_{rng.randrange(10**6)} = {i}\n"
            rows.append(r)
    per = len(rows) // n_files + 1
    for k in range(n_files):
        write_jsonl(tmp_path / "corpus" / f"part{k}.jsonl.zst", rows[k * per : (k + 1) * per], compress="zst")
    return rows


def streamed(tmp_path, r, name="stream"):
    prepare_data(r, tmp_path / name, num_proc=1, cache_dir=tmp_path / "cache")
    return open_stream(r, tmp_path / name, workers=1)


def test_the_first_epoch_is_the_in_memory_stage_block_for_block(tmp_path, tokenizer_dir):
    # The reference: the data stage's in-memory path (tests/data/test_stage.py checks it against
    # the seed's definitions), same sources, filters and dedup, blocks in data order.
    rows = corpus(tmp_path)
    assert len(rows) > 2 * CHUNK_RECORDS  # several chunks, duplicates across them
    for packing in (True, False):
        memory = prepare_data(recipe(tmp_path, tokenizer_dir, streaming=False, packing=packing),
                              tmp_path / f"memory-{packing}", num_proc=1, cache_dir=tmp_path / "cache")
        blocks = load_from_disk(str(tmp_path / f"memory-{packing}" / "tokens"))["train"].with_format("numpy")
        stream = streamed(tmp_path, recipe(tmp_path, tokenizer_dir, streaming=True, packing=packing), f"s-{packing}")
        got = stream.next_blocks(len(blocks))
        np.testing.assert_array_equal(got["input_ids"], blocks["input_ids"])
        np.testing.assert_array_equal(got["loss_weights"], blocks["loss_weights"])
        report = stream.report()
        assert report["documents"] == memory["documents"]["kept"]
        assert report["duplicates"] == memory["documents"]["dedup"]["duplicates"]
        assert report["records"] == memory["documents"]["rows"]
        # the next block starts the second epoch: the sources again, from their first document
        np.testing.assert_array_equal(stream.next_blocks(1)["input_ids"][0], blocks["input_ids"][0])
        stream.close()


def test_minhash_streamed_keeps_the_batch_dedup_documents(tmp_path, tokenizer_dir):
    # The reference: dedup type minhash on the in-memory path (tests/data/test_minhash.py checks
    # it against datasketch's MinHashLSH); the stream compares band keys made by its workers.
    corpus(tmp_path)
    memory = prepare_data(recipe(tmp_path, tokenizer_dir, streaming=False, dedup="minhash"), tmp_path / "memory",
                          num_proc=1, cache_dir=tmp_path / "cache")
    blocks = load_from_disk(str(tmp_path / "memory" / "tokens"))["train"].with_format("numpy")
    stream = streamed(tmp_path, recipe(tmp_path, tokenizer_dir, streaming=True, dedup="minhash"))
    np.testing.assert_array_equal(stream.next_blocks(len(blocks))["input_ids"], blocks["input_ids"])
    assert stream.report()["duplicates"] == memory["documents"]["dedup"]["duplicates"] > 0
    stream.save(tmp_path / "state.npz")  # the LSH index travels with the position
    again = open_stream(recipe(tmp_path, tokenizer_dir, streaming=True, dedup="minhash"), tmp_path / "stream")
    again.restore(again.load(tmp_path / "state.npz"))
    np.testing.assert_array_equal(again.next_blocks(3)["input_ids"], stream.next_blocks(3)["input_ids"])
    stream.close()


def test_seeded_shuffle_is_deterministic_and_independent_of_the_workers(tmp_path, tokenizer_dir):
    corpus(tmp_path)
    r = recipe(tmp_path, tokenizer_dir, streaming=True, shuffle=64)
    prepare_data(r, tmp_path / "d", num_proc=1, cache_dir=tmp_path / "cache")
    one = open_stream(r, tmp_path / "d", workers=1)
    two = open_stream(r, tmp_path / "d", workers=2)  # spawned worker processes
    try:
        a, b = one.next_blocks(40), two.next_blocks(40)
    finally:
        one.close()
        two.close()
    np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    in_order = open_stream(recipe(tmp_path, tokenizer_dir, streaming=True, shuffle=1), tmp_path / "d", workers=1)
    head = in_order.next_blocks(40 + 64)["input_ids"]
    assert not np.array_equal(a["input_ids"], head[:40])  # shuffled...
    # ...draws from a buffer of 64: the first 40 come from the first 40 + 64 blocks, none twice
    drawn = {bytes(x) for x in a["input_ids"]}
    assert len(drawn) == 40 and drawn <= {bytes(x) for x in head}


def test_a_saved_position_resumes_bit_for_bit(tmp_path, tokenizer_dir):
    corpus(tmp_path)
    r = recipe(tmp_path, tokenizer_dir, streaming=True, shuffle=16)
    whole = streamed(tmp_path, r)
    expected = []
    while whole.report().get("epochs", 0) < 1 or len(expected) < 60:  # past the end of an epoch
        expected.append(whole.next_blocks(5)["input_ids"])
    whole.close()

    first = open_stream(r, tmp_path / "stream", workers=1)
    got = [first.next_blocks(5)["input_ids"] for _ in range(11)]  # mid-chunk, mid-epoch
    first.save(tmp_path / "state.npz")
    first.close()
    resumed = open_stream(r, tmp_path / "stream", workers=1)
    resumed.restore(resumed.load(tmp_path / "state.npz"))
    got += [resumed.next_blocks(5)["input_ids"] for _ in range(len(expected) - 11)]
    resumed.close()
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_array_equal(e, g)


def test_a_position_from_other_data_is_refused(tmp_path, tokenizer_dir):
    corpus(tmp_path)
    r = recipe(tmp_path, tokenizer_dir, streaming=True, shuffle=4)
    s = streamed(tmp_path, r)
    s.next_blocks(2)
    s.save(tmp_path / "state.npz")
    other = recipe(tmp_path, tokenizer_dir, streaming=True, shuffle=8)  # another data section
    with pytest.raises(DataError, match="other data"):
        open_stream(other, tmp_path / "stream").restore(s.load(tmp_path / "state.npz"))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a stream position"):
        s.load(tmp_path / "bad.npz")
    # a source file that changed since the data stage
    write_jsonl(tmp_path / "corpus" / "part0.jsonl.zst", corpus_rows()[:3], compress="zst")
    with pytest.raises(DataError, match="changed"):
        open_stream(r, tmp_path / "stream")


def test_the_data_stage_of_a_stream_writes_no_training_blocks(tmp_path, tokenizer_dir):
    corpus(tmp_path)
    write_jsonl(tmp_path / "val" / "v.jsonl", corpus_rows()[:6])
    r = recipe(tmp_path, tokenizer_dir, streaming=True,
               extra="  validation: {sources: [{type: jsonl, paths: [val/v.jsonl]}]}\n")
    manifest = prepare_data(r, tmp_path / "d", num_proc=1, cache_dir=tmp_path / "cache")
    assert manifest["streaming"] is True and manifest["tokens"]["validation"]["blocks"] >= 1
    tokens = load_from_disk(str(tmp_path / "d" / "tokens"))
    assert list(tokens) == ["validation"]
    assert (tmp_path / "d" / "tokenizer" / "tokenizer.json").is_file()


def test_a_stream_that_keeps_nothing_says_so(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "corpus" / "p.jsonl.zst", [{"text": "1234567890" * 10, "meta": {"stars": "50",
                                                                                          "license": "mit"}}],
                compress="zst")
    s = streamed(tmp_path, recipe(tmp_path, tokenizer_dir, streaming=True))
    with pytest.raises(DataError, match="no training block"):
        s.next_blocks(1)


def test_malformed_lines_name_their_file_and_line(tmp_path, tokenizer_dir):
    corpus(tmp_path, n_files=1, copies=2)
    (tmp_path / "corpus" / "zz.jsonl.zst").write_bytes(__import__("zstandard").ZstdCompressor().compress(
        b'{"text": "a = 1", "meta": {"stars": "50", "license": "mit"}}\n{not json\n'))
    s = streamed(tmp_path, recipe(tmp_path, tokenizer_dir, streaming=True))
    with pytest.raises(DataError, match=r"zz\.jsonl\.zst:2: malformed line"):
        s.next_blocks(200)


def test_workers_die_with_a_killed_trainer(tmp_path, tokenizer_dir):
    """SIGKILL of the training process (the resume test's way to stop a run) takes the stream's
    worker processes with it: none is left holding the run's pipes and memory."""
    import signal
    import subprocess
    import sys
    import time

    corpus(tmp_path)
    r = recipe(tmp_path, tokenizer_dir, streaming=True, shuffle=8)
    prepare_data(r, tmp_path / "d", num_proc=1, cache_dir=tmp_path / "cache")
    script = (
        "import sys, time\n"
        "from runner.recipe.load import load_recipe\n"
        "from runner.data.stream import open_stream\n"
        f"s = open_stream(load_recipe({str(r_file(tmp_path))!r}).recipe, {str(tmp_path / 'd')!r}, workers=2)\n"
        "s.next_blocks(4)\n"
        "print(' '.join(map(str, s._pool._processes)), flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    workers = [int(pid) for pid in proc.stdout.readline().split()]
    assert len(workers) == 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 20
    alive = workers
    while alive and time.time() < deadline:
        alive = [pid for pid in workers if _running(pid)]
        time.sleep(0.1)
    assert not alive, f"workers {alive} outlived their parent"


def _running(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def r_file(tmp_path):
    return sorted(tmp_path.glob("r-True-*.yaml"))[0]


def test_the_dedup_key_set_is_a_set():
    # The reference: Python's set of (hi, lo) pairs, on random keys, repeats, keys sharing their
    # first half (the probe position), zero and negative halves, and across the table's growth.
    from runner.data.stream import PairSet

    rng = np.random.default_rng(0)
    keys = rng.integers(-(2**63), 2**63 - 1, size=(3000, 2), dtype=np.int64)
    keys[:200, 0] = keys[0, 0]  # one probe chain
    keys[200:300] = keys[300:400]  # repeats
    keys[400] = (0, 0)
    ours, reference = PairSet(), set()
    for hi, lo in keys.tolist():
        assert ours.add(hi, lo) == ((hi, lo) not in reference)
        reference.add((hi, lo))
    assert len(ours) == len(reference)
    assert {tuple(k) for k in ours.keys().tolist()} == reference
    again = PairSet(ours.keys())  # the checkpointed form
    assert len(again) == len(reference) and not any(again.add(hi, lo) for hi, lo in reference)
    assert again.add(1, 2) == ((1, 2) not in reference)
