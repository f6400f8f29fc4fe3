"""Clients that leave, dawdle or crowd the server, and huge prompts: none of them stalls a normal
request. Everything on 127.0.0.1, with counts and times bounded (the fixture's timeouts are short)."""

import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from .conftest import BODY_TIMEOUT, HEADER_TIMEOUT, MAX_CONNECTIONS, POSITIONS

NORMAL = {"inputs": "def add(a, b):", "parameters": {"max_new_tokens": 16, "do_sample": False}}


def normal_request(server) -> float:
    """Seconds a normal editor request takes (it must succeed)."""
    t0 = time.perf_counter()
    r = httpx.post(server.url + "/models/x", json=NORMAL, timeout=120)
    assert r.status_code == 200, r.text
    return time.perf_counter() - t0


def connect(server) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    return sock


def raw_request(path: str, body: bytes, *, host: str = "127.0.0.1") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def read_all(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


class Logs(logging.Handler):
    """Records of uvicorn's and the server's loggers (they do not propagate to the root)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.loggers = [logging.getLogger(n) for n in ("uvicorn.error", "uvicorn", "ccrun.serve")]

    def emit(self, record):
        self.records.append(record)

    def __enter__(self):
        for logger in self.loggers:
            logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        for logger in self.loggers:
            logger.removeHandler(self)

    def tracebacks(self) -> list[str]:
        return [self.format(r) for r in self.records if r.exc_info or r.levelno >= logging.ERROR]


def test_abandoned_requests_are_not_decoded(server, monkeypatch):
    normal_request(server)  # warm
    alone = min(normal_request(server) for _ in range(3))
    batcher = server.batcher
    decode = batcher._run

    def slow(*args, after_chunk, **kwargs):  # 50 ms between chunks: the tiny model cannot finish a heavy job
        def after(tokens, done):  # before its client leaves (a normal request is one chunk: never slowed)
            time.sleep(0.05)
            return after_chunk(tokens, done)

        return decode(*args, after_chunk=after, **kwargs)

    monkeypatch.setattr(batcher, "_run", slow)
    before = batcher.stats()
    heavy = json.dumps({"inputs": "import os\n", "parameters": {
        "max_new_tokens": 95, "num_return_sequences": 64, "do_sample": True, "temperature": 1.0}}).encode()
    socks = []
    for _ in range(24):  # each would decode 64 rows x 95 tokens (16 batches of 4 rows, 6 chunks each)
        sock = connect(server)
        sock.sendall(raw_request("/models/x", heavy))
        socks.append(sock)
    deadline = time.monotonic() + 30
    while batcher.stats()["queued"] < 24:  # all read, tokenized and queued; the first is decoding
        assert time.monotonic() < deadline, batcher.stats()
        time.sleep(0.02)
    for sock in socks:
        sock.close()
    time.sleep(0.2)
    seconds = normal_request(server)
    after = batcher.stats()
    assert after["dropped"] - before["dropped"] >= 20, after
    assert after["requests"] - before["requests"] == 1, "only the normal request was answered"
    assert seconds < 5 + 10 * alone, (seconds, alone)


def test_slow_headers_are_cut_off_and_do_not_stall_others(server):
    socks = []
    for _ in range(30):  # a slowloris: request heads that never end
        sock = connect(server)
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        socks.append(sock)
    t0 = time.monotonic()
    assert normal_request(server) < 10
    answers = [read_all(s, HEADER_TIMEOUT + 5) for s in socks]
    waited = time.monotonic() - t0
    for s in socks:
        s.close()
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers[0]
    assert b"headers did not arrive within" in answers[0]
    assert waited < HEADER_TIMEOUT + 6


def test_a_slow_body_gets_408_and_the_connection_closes(server):
    sock = connect(server)
    body = json.dumps(NORMAL).encode()
    sock.sendall(raw_request("/models/x", body)[: -len(body) + 5])  # the head and 5 bytes of the body
    t0 = time.monotonic()
    answer = read_all(sock, BODY_TIMEOUT + 10)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"did not arrive within" in answer
    assert BODY_TIMEOUT - 0.5 < time.monotonic() - t0 < BODY_TIMEOUT + 5


def test_a_client_that_leaves_mid_body_logs_no_traceback(server):
    with Logs() as logs:
        for _ in range(5):
            sock = connect(server)
            body = json.dumps(NORMAL).encode()
            sock.sendall(raw_request("/models/x", body)[:-10])
            time.sleep(0.05)
            sock.close()
        time.sleep(0.5)
        assert normal_request(server) < 10
    assert logs.tracebacks() == []


def test_more_connections_than_the_cap_evict_idle_ones_and_requests_go_on(server):
    idle = [connect(server) for _ in range(MAX_CONNECTIONS + 16)]  # open, send nothing
    try:
        time.sleep(0.3)
        with ThreadPoolExecutor(4) as pool:
            assert all(t < 20 for t in pool.map(lambda _: normal_request(server), range(4)))
        answers = [read_all(sock, 0.5) for sock in idle[:16]]  # the oldest made room for the newer ones
        assert all(a.startswith(b"HTTP/1.1 408") and b"make room" in a for a in answers), answers
    finally:
        for sock in idle:
            sock.close()


def test_a_huge_prompt_is_tokenized_off_the_model_thread(server):
    big = ("def f(x):\n    return x * 2  # twice\n" * 30000)[:999_999]  # just under the 1M-character cap
    out: dict = {}

    def send_big():
        t0 = time.perf_counter()
        out["big"] = httpx.post(server.url + "/v1/completions", timeout=120,
                                json={"prompt": big, "max_tokens": 4, "temperature": 0})
        out["big_s"] = time.perf_counter() - t0

    thread = threading.Thread(target=send_big)
    thread.start()
    time.sleep(0.3)  # its body is in; its tokenization has begun
    t0 = time.perf_counter()
    normal_request(server)
    normal_done = time.perf_counter() - t0
    thread.join(timeout=120)
    assert out["big"].status_code == 200, out["big"].text
    assert out["big"].json()["usage"]["prompt_tokens"] == POSITIONS - 4
    print(f"1M-character prompt: {out['big_s']:.2f} s; a normal request meanwhile: {normal_done:.2f} s")
    assert normal_done < 5


def test_too_big_prompts_and_bodies_are_refused_not_failed(server):
    r = httpx.post(server.url + "/v1/completions", json={"prompt": "x" * 1_000_001}, timeout=60)
    assert r.status_code == 422 and "at most 1000000 characters" in r.json()["error"]
    r = httpx.post(server.url + "/v1/completions", content=b"{" + b" " * (9 << 20) + b"}",
                   headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 413
