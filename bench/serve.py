"""Serving under load: `ccrun serve` with dynamic batching on (--max-batch N) and off (--max-batch 1).

    python bench/serve.py [--requests 96] [--concurrency 8] [--max-batch 8] [--new 16] [--n 1]
                          [--d-model 256] [--layers 4] [--vocab 1024] [--time-limit 120]

A small GPT-Neo (random weights, a tokenizer trained on ccrun's own source) is saved as a Hugging
Face directory and served by `ccrun serve` in a subprocess on 127.0.0.1. `--concurrency` client
threads each send the code-clippy extension's request (sampling, T=0.8, top_p 0.95) with a prompt
cut from a source file, one after another, until `--requests` are answered or `--time-limit`
seconds pass. Before measuring, bursts of 1..concurrency requests compile every batch shape. The
load only goes to the loopback address and stops by itself. Prints one JSON object as its last
line: requests/s and p50/p95 latency in each mode, and the ratios on/off.

    python bench/serve.py --stall [--abandoned 40] [--slow 200] [--server-root DIR]

instead measures what bad clients cost a normal one: the latency of a normal editor request alone,
then right after `--abandoned` clients sent an n=64, 255-token request and left, `--slow` clients
opened connections and sent half a request head, and one client sent a 1M-character prompt. Also
the latency of the first request of a new (n, max_new_tokens) shape (compiled on demand, or not at
all when the server compiles its buckets at start). `--server-root` (either mode) serves another
checkout's `runner` (e.g. `git archive HEAD runner | tar -x -C /tmp/old`: the numbers before a change).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import machine  # bench/common.py (this script's directory is on sys.path)

ROOT = Path(__file__).resolve().parents[1]


def build_model(out: Path, args) -> None:
    from flax import nnx

    from runner.data.tokenizer import train_tokenizer
    from runner.model import GPTConfig, GPTNeo, save_pretrained

    texts = [p.read_text() for p in sorted((ROOT / "runner").rglob("*.py"))]
    tok = train_tokenizer(texts, vocab_size=args.vocab, out_dir=out)
    layers = tuple("global" if i % 2 == 0 else "local" for i in range(args.layers))
    config = GPTConfig("gpt-neo", len(tok), 512, args.d_model, args.layers, 4, 4 * args.d_model, layers,
                       window_size=128, eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    save_pretrained(GPTNeo(config, rngs=nnx.Rngs(0)), out)


def prompts(count: int, model_dir: Path) -> list[str]:
    """Editor-like documents: the text before a cursor in ccrun's source files, 65..128 tokens (one
    prompt bucket, so that the batch sizes are the only shapes to compile before measuring)."""
    from runner.data.tokenizer import load_tokenizer

    tok = load_tokenizer(model_dir)
    files = [ids for p in sorted((ROOT / "runner").rglob("*.py"))
             if len(ids := tok(p.read_text(), add_special_tokens=False)["input_ids"]) > 200]
    out = []
    for i in range(count):
        ids = files[i % len(files)]
        end = 130 + (i * 53) % (len(ids) - 130)
        out.append(tok.decode(ids[end - 65 - (i * 7) % 60 : end]))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir: Path, port: int, max_batch: int, max_new_tokens: int, root: Path = ROOT):
    """`ccrun serve` in a subprocess, once /health answers 200 (every program compiled): (process, seconds)."""
    import httpx

    server = subprocess.Popen(
        [sys.executable, "-m", "runner.cli", "serve", str(model_dir), "--port", str(port),
         "--max-batch", str(max_batch), "--max-new-tokens", str(max_new_tokens)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root)
    started = time.monotonic()
    while True:
        if server.poll() is not None:
            raise SystemExit(f"ccrun serve exited with {server.returncode}")
        if time.monotonic() - started > 600:
            server.kill()
            raise SystemExit("ccrun serve was not ready in 600 s")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server, time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.2)


def stop_server(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def measure(model_dir: Path, max_batch: int, args) -> dict:
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}/models/bench"
    root = Path(args.server_root).resolve() if args.server_root else ROOT
    server, _ready_s = start_server(model_dir, port, max_batch, args.new, root)
    try:
        texts = prompts(args.requests, model_dir)
        params = {"max_new_tokens": args.new, "return_full_text": False, "do_sample": True, "temperature": 0.8,
                  "top_p": 0.95, "max_time": 10.0, "num_return_sequences": args.n}

        def one(text: str, client: httpx.Client) -> float:
            t0 = time.perf_counter()
            r = client.post(url, json={"inputs": text, "parameters": params}, timeout=120)
            r.raise_for_status()
            return time.perf_counter() - t0

        with httpx.Client() as client, ThreadPoolExecutor(args.concurrency) as pool:  # compile every shape
            for burst in [*range(1, args.concurrency + 1)] * 2:
                list(pool.map(lambda t: one(t, client), texts[:burst]))
        before = httpx.get(f"http://127.0.0.1:{port}/health").json()["batching"]

        latencies: list[float] = []
        lock = threading.Lock()
        next_index = iter(range(args.requests))
        stop_at = time.monotonic() + args.time_limit

        def worker() -> None:
            with httpx.Client() as client:
                while time.monotonic() < stop_at:
                    with lock:
                        i = next(next_index, None)
                    if i is None:
                        return
                    seconds = one(texts[i], client)
                    with lock:
                        latencies.append(seconds)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        after = httpx.get(f"http://127.0.0.1:{port}/health").json()["batching"]
    finally:
        stop_server(server)
    batches = after["batches"] - before["batches"]
    q = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else latencies * 19
    return {
        "max_batch": max_batch,
        "requests": len(latencies),
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(latencies) / wall, 2),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p95_ms": round(q[18] * 1000, 1),
        "mean_batch": round((after["requests"] - before["requests"]) / max(batches, 1), 2),
        "largest_batch": after["largest_batch"],
    }


def stall(model_dir: Path, args) -> dict:
    """A normal request's latency alone, for a new shape, and right after a burst of bad clients."""
    import httpx

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    root = Path(args.server_root).resolve() if args.server_root else ROOT
    server, ready_s = start_server(model_dir, port, args.max_batch, 255, root)
    normal = {"inputs": prompts(1, model_dir)[0], "parameters": {"max_new_tokens": 16, "do_sample": False}}

    def timed(body: dict, timeout: float = 600) -> float:
        t0 = time.perf_counter()
        httpx.post(base + "/models/bench", json=body, timeout=timeout).raise_for_status()
        return time.perf_counter() - t0

    def send_and_leave(raw: bytes) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(raw)
        return sock

    def raw_post(body: bytes) -> bytes:
        return (f"POST /models/bench HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    try:
        timed(normal)  # its shape compiled, if the server compiles on demand
        alone = statistics.median(timed(normal) for _ in range(5))
        new_shape = timed({**normal, "parameters": {"max_new_tokens": 37, "do_sample": False,
                                                    "num_return_sequences": 3}})
        heavy = json.dumps({"inputs": normal["inputs"], "parameters": {
            "max_new_tokens": 255, "num_return_sequences": 64, "do_sample": True, "temperature": 1.0}}).encode()
        timed(json.loads(heavy), timeout=600)  # its shapes compiled too: only the waiting is measured below
        slow = [send_and_leave(b"POST /models/bench HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ") for _ in range(args.slow)]
        gone = [send_and_leave(raw_post(heavy)) for _ in range(args.abandoned)]
        big = threading.Thread(target=lambda: httpx.post(base + "/models/bench", timeout=600, json={
            "inputs": ("x = 1\n" * 200_000)[:999_999], "parameters": {"max_new_tokens": 4}}))
        big.start()
        time.sleep(1.0)
        for sock in gone:
            sock.close()
        after_burst = timed(normal)
        big.join(timeout=600)
        for sock in slow:
            sock.close()
        health = httpx.get(base + "/health").json()
        info = httpx.get(base + "/info").json()
    finally:
        stop_server(server)
    return {"bench": "serve_stall", "server_root": str(root), "ready_s": round(ready_s, 1),
            "normal_alone_ms": round(alone * 1000, 1), "new_shape_ms": round(new_shape * 1000, 1),
            "normal_after_burst_ms": round(after_burst * 1000, 1), "abandoned": args.abandoned, "slow": args.slow,
            "dropped": health["batching"].get("dropped"), "programs": info.get("decoding", {}).get("programs"),
            "machine": machine()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--new", type=int, default=16, help="max_new_tokens per request (the extension's 16)")
    parser.add_argument("--n", type=int, default=1, help="num_return_sequences per request")
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds of load per mode, at most")
    parser.add_argument("--stall", action="store_true", help="measure what bad clients cost a normal request")
    parser.add_argument("--abandoned", type=int, default=40, help="--stall: clients that send n=64 and leave")
    parser.add_argument("--slow", type=int, default=200, help="--stall: clients that send half a request head")
    parser.add_argument("--server-root", default=None, help="serve the runner package of this checkout")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    with tempfile.TemporaryDirectory() as d:
        model_dir = Path(d) / "model"
        build_model(model_dir, args)
        if args.stall:
            result = stall(model_dir, args)
            print(json.dumps(result))
            return
        on = measure(model_dir, args.max_batch, args)
        off = measure(model_dir, 1, args)
    for name, r in (("batching on ", on), ("batching off", off)):
        print(f"{name} (--max-batch {r['max_batch']}): {r['requests_per_s']:6.2f} req/s  p50 {r['p50_ms']:7.1f} ms  "
              f"p95 {r['p95_ms']:7.1f} ms  mean batch {r['mean_batch']}")
    result = {
        "bench": "serve",
        "config": {"d_model": args.d_model, "layers": args.layers, "vocab": args.vocab, "new_tokens": args.new,
                   "n": args.n, "concurrency": args.concurrency, "requests": args.requests},
        "on": on,
        "off": off,
        "throughput_ratio": round(on["requests_per_s"] / off["requests_per_s"], 2),
        "p50_ratio": round(on["p50_ms"] / off["p50_ms"], 2),
        "p95_ratio": round(on["p95_ms"] / off["p95_ms"], 2),
        "machine": machine(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
