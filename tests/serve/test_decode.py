"""Shapes are buckets compiled at start: whatever clients ask (samples, token budget, prompt length),
no program is compiled after /health says ready, and a padded shape gives the tokens of exact decoding."""

import threading
import time

import httpx
import pytest

from runner.evals.sample import Sampling
from runner.serve.decode import Decoder, Shapes, compiled_programs

from .conftest import ROOT, reference_greedy


def exact(served, ids: list[int], tokens: int) -> list[int]:
    """The sampler's greedy tokens for one prompt alone: batch 1, its own prompt bucket, unpadded rows
    (conftest.reference_greedy: the sampler's first `tokens` greedy tokens)."""
    return reference_greedy(served, ids, tokens)


def test_buckets_are_few_and_known():
    shapes = Shapes.plan(max_rows=8, positions=2048, max_new_tokens=1024)
    assert shapes.rows == (1, 2, 4, 8)
    assert shapes.slots == (128, 192, 256, 384, 512, 1024, 2048, 3072)
    assert shapes.programs == 64
    assert shapes.fit(3, 80) == (4, 128) and shapes.fit(8, 3072) == (8, 3072)
    with pytest.raises(ValueError):
        shapes.fit(9, 10)
    tiny = Shapes.plan(max_rows=1, positions=256, max_new_tokens=255)
    assert tiny.rows == (1,) and tiny.slots == (128, 192, 256, 384, 511) and tiny.programs == 10
    small = Shapes.plan(max_rows=6, positions=256, max_new_tokens=16)
    assert small.rows == (1, 2, 4, 8) and small.slots == (128, 192, 272)  # 256 is within 25% of the top: left out


def test_a_padded_batch_gives_each_rows_exact_greedy_tokens(server):
    """Rows of different prompt lengths and budgets in one padded batch (3 rows → 4, prompts padded to
    a block, budgets not a multiple of the chunk) give what each gets decoded alone, unpadded."""
    s = server.served
    document = (ROOT / "runner" / "run.py").read_text()
    ids = s.tokenizer(document, add_special_tokens=False)["input_ids"]
    prompts = [ids[:5], ids[100:170], ids[-66:]]  # 5, 70, 66 tokens: the prompts pad to two blocks (128)
    limits = [40, 7, 13]  # each row within the model's 96 positions; the batch's slots: 128 + 40 → 223
    got = server.batcher.decoder.run(prompts, [Sampling(max_new_tokens=t) for t in limits], limits, seed=0)
    want = [exact(s, p, t) for p, t in zip(prompts, limits, strict=True)]
    assert got == want
    assert all(len(g) <= t for g, t in zip(got, limits, strict=True)) and any(len(g) == t for g, t in zip(got, limits))


def test_no_program_is_compiled_after_start_whatever_the_request(server):
    info = httpx.get(server.url + "/info").json()["decoding"]
    assert info["ready"] and info["programs"] == 2 * len(info["rows"]) * len(info["slots"])
    assert info["rows"] == [1, 2, 4] and info["slots"] == [128, 223]
    before = compiled_programs()
    document = (ROOT / "runner" / "run.py").read_text()
    cases = [(1, 1, "x"), (3, 7, "def f(a):"), (5, 33, document[:300]), (2, 80, document), (9, 17, "import os\n"),
             (1, 95, "class A:")]  # 9 samples: more than a batch holds (4 rows); 95: the most tokens
    for n, new, prompt in cases:
        r = httpx.post(server.url + "/v1/completions", timeout=120,
                       json={"prompt": prompt, "max_tokens": new, "n": n, "temperature": 0.7})
        assert r.status_code == 200, r.text
        assert len(r.json()["choices"]) == n
        assert all(c["finish_reason"] in ("stop", "length") for c in r.json()["choices"])
    assert compiled_programs() == before, "a request compiled a program after start"


def test_a_request_padded_to_a_bucket_is_its_exact_greedy_completion(server):
    """n=3 (rows padded to 4), 13 tokens (not a chunk multiple), a 70-token prompt (padded to 128):
    every sample is the unpadded greedy completion."""
    s = server.served
    ids = s.tokenizer((ROOT / "runner" / "run.py").read_text(), add_special_tokens=False)["input_ids"][300:370]
    prompt = s.tokenizer.decode(ids)
    ids = s.tokenizer(prompt, add_special_tokens=False)["input_ids"]  # what the server will see
    r = httpx.post(server.url + "/models/x", timeout=120, json={"inputs": prompt, "parameters": {
        "max_new_tokens": 13, "do_sample": False, "num_return_sequences": 3, "return_full_text": False}})
    assert r.status_code == 200, r.text
    expected = s.tokenizer.decode(exact(s, ids, 13))
    assert [x["generated_text"] for x in r.json()] == [expected] * 3


def test_health_says_starting_until_every_program_is_compiled(hf_dir, monkeypatch):
    from fastapi.testclient import TestClient

    from runner.serve.app import build_app
    from runner.serve.batcher import Batcher
    from runner.serve.source import open_hf

    release = threading.Event()
    monkeypatch.setattr(Decoder, "warm", lambda self, progress=None: release.wait(60))
    served = open_hf(hf_dir)
    batcher = Batcher(served.model, served.tokenizer, max_batch=2, max_new_tokens=64)
    try:
        client = TestClient(build_app(served, batcher, allow_hosts=["testserver"]))
        r = client.get("/health")
        assert r.status_code == 503 and r.json()["status"] == "starting"
        # rows 1, 2; slots 128 and the top one (the 96-position model's longest prompt, 128 padded, + 64)
        assert r.json()["compiled"]["programs"] == batcher.shapes.programs == 2 * 2 * 2
        release.set()
        deadline = time.monotonic() + 30
        while (r := client.get("/health")).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert r.json()["status"] == "ok"
        info = client.get("/info").json()["decoding"]
        assert info["ready"] and info["rows"] == [1, 2] and info["slots"] == [128, 192]
    finally:
        release.set()
        batcher.close()
