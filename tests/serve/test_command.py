"""`ccrun serve` as a user runs it: a run directory served in a subprocess, and bad arguments
refused with exit 2 and a one-line reason (no traceback): one in a fresh process, the others in this
one (`ccrun_in_process`: the same exit code and output, without a new interpreter importing jax)."""

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def ccrun(cwd, *args, timeout=120):
    return subprocess.run([sys.executable, "-m", "runner.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def ccrun_in_process(cwd, *args) -> subprocess.CompletedProcess:
    """`ccrun ARGS` run here (runner.cli.main, in `cwd`): its exit code, stdout and stderr."""
    from runner.cli import main

    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main([str(a) for a in args])
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    finally:
        os.chdir(old)
    return subprocess.CompletedProcess(["ccrun", *args], code, out.getvalue(), err.getvalue())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def run_dir(hf_dir, tmp_path_factory) -> Path:
    """A run directory as `ccrun run --dry-run` makes it, with the tiny model as its final/ export."""
    work = tmp_path_factory.mktemp("serve-run")
    shutil.copytree(hf_dir, work / "ckpt")
    (work / "r.yaml").write_text("name: tiny-serve\nmodel: {arch: gpt-neo, checkpoint: ./ckpt}\n")
    out = ccrun_in_process(work, "run", "r.yaml", "--dry-run", "--runs-dir", "runs")  # setup: no new process
    assert out.returncode == 0, out.stderr
    run = work / out.stdout.strip().splitlines()[-1]
    shutil.copytree(hf_dir, run / "final")
    return run


def test_serve_a_run_directory(run_dir):
    port = free_port()
    # --max-batch 1 (the default --max-new-tokens, capped at 95): rows 1 x slots 128, 223, 4 programs to
    # compile before /health says ready (the default --max-batch 8: 16); the package's server fixture compiled
    # the same ones, so with the session's JAX compilation cache they are found there when it ran first
    proc = subprocess.Popen([sys.executable, "-m", "runner.cli", "serve", str(run_dir), "--port", str(port),
                             "--max-batch", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        starting = False
        while True:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "ccrun serve did not answer in time"
            try:
                health = httpx.get(url + "/health", timeout=2)
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            if health.status_code == 200:
                break
            assert health.status_code == 503 and health.json()["status"] == "starting", health.text
            starting = True
            time.sleep(0.05)
        assert starting, "/health said ready before compiling"
        info = httpx.get(url + "/info").json()
        assert info["decoding"]["programs"] == 4 and info["decoding"]["slots"] == [128, 223], info["decoding"]
        provenance = json.loads((run_dir / "provenance.json").read_text())
        assert info["kind"] == "run" and info["model"]["name"] == "tiny-serve"
        assert info["source"] == str(run_dir.resolve())
        assert info["recipe_hash"] == provenance["recipe_hash"] and run_dir.name.endswith(info["recipe_hash"][:8])
        r = httpx.post(url + "/models/tiny-serve", timeout=120,
                       json={"inputs": "def add(a, b):", "parameters": {"max_new_tokens": 8, "do_sample": False}})
        assert r.status_code == 200 and r.json()[0]["generated_text"].startswith("def add(a, b):")
        assert "Problem statement" in httpx.get(url + "/").text
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            output = proc.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            output = proc.communicate()[0]
    assert f"on http://127.0.0.1:{port}/" in output and "/models/tiny-serve" in output
    assert "compiling 4 programs" in output
    assert "Traceback" not in output


def test_bad_arguments_exit_2_with_the_reason(run_dir, hf_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    cases = [
        (["serve", str(tmp_path / "missing")], "no such directory"),
        (["serve", str(tmp_path / "empty")], "neither a run directory"),
        (["serve", str(run_dir), "--checkpoint", "newest"], "--checkpoint: best or latest"),
        (["serve", str(hf_dir), "--checkpoint", "best"], "--checkpoint applies to a run directory"),
        (["serve", str(run_dir), "--checkpoint", "latest", "--port", str(free_port())], "nothing to serve"),
        (["serve", str(hf_dir), "--host", "no-such-host.invalid"], "--host"),
    ]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cases.append((["serve", str(hf_dir), "--port", str(busy.getsockname()[1])], "in use; pick another with --port"))
        # the first in a fresh process, as a user meets it; the rest here (each would import jax anew)
        outs = [ccrun(tmp_path, *cases[0][0])] + [ccrun_in_process(tmp_path, *args) for args, _ in cases[1:]]
    for (args, message), out in zip(cases, outs, strict=True):
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert message in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)
