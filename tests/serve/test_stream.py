"""`stream: true` on /v1/completions: OpenAI's server-sent events (text_completion chunks, then
`data: [DONE]`), read by hand and by the official `openai` client. The pieces of a choice put
together are the answer the same request gets without stream (greedy), stop sequences and split
UTF-8 characters included; a client that leaves mid-stream ends its rows at the next chunk."""

import json
import time

import httpx
import pytest

from runner.evals.sample import cut_at_stop
from runner.serve.stream import TextStream, settled

PROMPT = "def add(a, b):\n"


def post(server, body: dict) -> httpx.Response:
    return httpx.post(server.url + "/v1/completions", json=body, timeout=120)


def events(response: httpx.Response) -> list:
    """The SSE events of a response, by hand: `data: ...` lines separated by blank lines."""
    assert response.headers["content-type"].startswith("text/event-stream"), response.headers
    raw = response.text
    assert raw.endswith("\n\n"), raw[-50:]
    out = []
    for block in raw[:-2].split("\n\n"):
        assert block.startswith("data: "), block
        data = block.removeprefix("data: ")
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def joined(chunks: list[dict], n: int) -> tuple[list[str], list[str | None]]:
    """Each choice's text put together, and its finish reason (from its last chunk)."""
    texts, reasons = [""] * n, [None] * n
    for c in chunks:
        for choice in c["choices"]:
            assert reasons[choice["index"]] is None, "a piece after the choice finished"
            texts[choice["index"]] += choice["text"]
            reasons[choice["index"]] = choice["finish_reason"]
    return texts, reasons


# --- the text of a sample, piece by piece (no server) -------------------------------------------


def test_a_stop_split_across_pieces_is_held_back_and_never_sent():
    pieces = ["x = 1", "\n", "de", "f g():", " pass"]
    stream = TextStream(lambda ids: "".join(pieces[i] for i in ids), ["\ndef"])
    sent = [stream.update(list(range(k))) for k in range(1, len(pieces) + 1)]
    assert sent == ["x = 1", "", "", "", ""]  # "\n", "\nde" could start the stop; then it is in
    full = "".join(pieces)
    assert stream.finish(cut_at_stop(full, ["\ndef"])) == ""
    assert settled("a\nd", ["\ndef", "dx"]) == "a"  # the longest tail any stop starts with
    assert settled("ab", ["abc"]) == ""
    assert settled("ab\ufffd", []) == "ab"  # a character still missing bytes


def test_multibyte_characters_are_never_sent_in_halves(hf_dir):
    from runner.data.tokenizer import load_tokenizer

    tok = load_tokenizer(str(hf_dir))
    text = "héllo wörld ✓ → 数字 done"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text) // 2  # a tiny vocabulary: the non-ASCII characters are several tokens
    assert any("\ufffd" in tok.decode(ids[:k]) for k in range(1, len(ids)))  # so some prefixes split one
    for stops in ((), ("数字",), ("ö", "✓")):
        stream = TextStream(tok.decode, stops)
        pieces = [stream.update(ids[:k]) for k in range(1, len(ids) + 1)]
        answer = cut_at_stop(tok.decode(ids), stops)
        pieces.append(stream.finish(answer))
        assert all("\ufffd" not in p for p in pieces), pieces
        assert "".join(pieces) == answer


# --- the server ---------------------------------------------------------------------------------


def test_streamed_text_is_the_answer_without_stream(server):
    base = {"prompt": PROMPT, "max_tokens": 60, "temperature": 0, "n": 2}
    plain = post(server, base).json()["choices"][0]
    # a stop sequence from the middle of the greedy text: the streamed answer is cut there too
    assert len(plain["text"]) >= 40 and plain["finish_reason"] == "length", plain
    stop = plain["text"][25:28]
    for extra in ({}, {"stop": [stop, "zzz"]}, {"echo": True, "n": 1}):
        body = {**base, **extra}
        want = post(server, body).json()["choices"]
        r = post(server, {**body, "stream": True})
        assert r.status_code == 200
        got = events(r)
        assert got[-1] == "[DONE]" and all(e != "[DONE]" for e in got[:-1])
        chunks = got[:-1]
        assert len({(c["id"], c["created"]) for c in chunks}) == 1
        for c in chunks:
            assert c["object"] == "text_completion" and c["model"] == server.served.name and "usage" not in c
            assert all(ch["logprobs"] is None for ch in c["choices"])
        texts, reasons = joined(chunks, len(want))
        assert texts == [w["text"] for w in want], extra
        assert reasons == [w["finish_reason"] for w in want]
        if "stop" in extra:
            assert reasons == ["stop", "stop"] and len(texts[0]) <= 25
        assert len(chunks) > len(want)  # pieces came before the end, not only the final answer


def test_the_openai_client_reads_the_stream(server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=120)
    want = client.completions.create(model=server.served.name, prompt=PROMPT, max_tokens=40, temperature=0)
    chunks = list(client.completions.create(model=server.served.name, prompt=PROMPT, max_tokens=40, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == want.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == want.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage == want.usage  # include_usage: a last chunk
    assert all(c.usage is None for c in chunks[:-1])


def test_errors_before_the_stream_are_json_with_their_status(server):
    for body, words in [({"prompt": "x", "stream": True, "max_tokens": 300}, ["max_tokens", "<= 95"]),
                        ({"prompt": "x", "stream": "yes"}, ["stream", "true or false"]),
                        ({"prompt": "x", "stream_options": {"include_usage": True}}, ["stream_options", "stream"]),
                        ({"prompt": "x", "stream": True, "stream_options": {"usage": 1}}, ["stream_options.usage"])]:
        r = post(server, body)
        assert r.status_code == 422 and r.headers["content-type"] == "application/json", r.text
        assert all(w in r.json()["error"] for w in words), (words, r.json()["error"])


def test_a_client_that_leaves_mid_stream_frees_its_rows(server, monkeypatch):
    batcher = server.batcher
    chunks_run = []
    decode = batcher._run

    def slow(*args, after_chunk, **kwargs):  # 0.2 s a chunk: the client surely leaves mid-decode
        def after(tokens, done):
            chunks_run.append(time.monotonic())
            time.sleep(0.2)
            return after_chunk(tokens, done)

        return decode(*args, after_chunk=after, **kwargs)

    monkeypatch.setattr(batcher, "_run", slow)
    dropped = batcher.stats()["dropped"]
    body = {"prompt": PROMPT, "max_tokens": 90, "temperature": 0, "n": 2, "stream": True}
    with httpx.Client(timeout=60) as client, client.stream("POST", server.url + "/v1/completions", json=body) as r:
        assert r.status_code == 200
        first = next(r.iter_lines())
        assert first.startswith("data: {")
        left = time.monotonic()
    deadline = time.monotonic() + 10
    while batcher.stats()["dropped"] == dropped:
        assert time.monotonic() < deadline, "the job of a client that left was not dropped"
        time.sleep(0.05)
    after = [t for t in chunks_run if t > left]
    assert len(after) <= 2, f"{len(after)} chunks decoded after the client left"  # 90 tokens: 6 chunks
    monkeypatch.undo()
    assert post(server, {"prompt": PROMPT, "max_tokens": 8}).status_code == 200  # and the server goes on
