"""A streaming run (data.streaming) killed with SIGKILL after a checkpoint and resumed gives the
uninterrupted run's weights bit for bit, as the in-memory path does (tests/e2e/test_resume.py)."""

import json
import signal
import subprocess as sp
import sys
import time
from pathlib import Path

import pytest

from ..helpers import ROOT, SHORT, ccrun

pytestmark = pytest.mark.e2e

# The smoke recipe, streamed: a few standard-library packages (the stream wraps into a second
# epoch within the run), validation from a source of its own, two worker processes.
STREAM = [*SHORT, "--set", "data.streaming=true", "--set", "data.shuffle_buffer=48", "--set", "data.num_proc=2",
          "--set", "data.sources[0].include=[json/*.py]",
          "--set", "data.validation={sources: [{type: files, stdlib: true, include: [tomllib/*.py]}]}",
          "--set", "tokenizer.train.vocab_size=300"]


def test_a_killed_streaming_run_resumes_to_the_same_weights(tmp_path):
    done = ccrun("run", "recipes/smoke.yaml", "--runs-dir", str(tmp_path / "a"), *STREAM)
    assert done.returncode == 0, done.stderr[-3000:]
    reference = Path(done.stdout.strip())
    assert "training blocks are made while training" in done.stderr
    records = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if "data/epochs" in r]
    assert last and last[-1]["data/epochs"] >= 1, "the run reads its sources more than once"
    assert sorted(p.name for p in (reference / "stream").glob("*.npz"))  # the stream's positions

    slow = Path(__file__).with_name("ccrun_slow.py")
    proc = sp.Popen([sys.executable, str(slow), "0.3", "run", "recipes/smoke.yaml", "--runs-dir", str(tmp_path / "b"),
                     *STREAM], cwd=ROOT, stdout=sp.PIPE, stderr=sp.PIPE, text=True)
    deadline = time.time() + 300
    killed = None
    while time.time() < deadline and proc.poll() is None:
        found = list((tmp_path / "b").glob("smoke/*/checkpoints/10"))
        if found:
            proc.send_signal(signal.SIGKILL)
            killed = found[0].parent.parent
            break
        time.sleep(0.05)
    proc.communicate()
    assert killed is not None, "the run finished before it could be killed"
    resumed = ccrun("resume", str(killed))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step" in resumed.stderr
    from safetensors.numpy import load_file

    a, b = load_file(str(reference / "final" / "model.safetensors")), load_file(str(killed / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), "bitwise the same weights"
    losses = {r["step"]: r.get("train/loss") for r in map(json.loads, (killed / "metrics.jsonl").read_text().splitlines())}
    assert losses == {r["step"]: r.get("train/loss") for r in records}
