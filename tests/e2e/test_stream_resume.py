"""A streaming run (data.streaming) killed with SIGKILL after a checkpoint and resumed gives the
uninterrupted run's weights bit for bit, as the in-memory path does (tests/e2e/test_resume.py)."""

import json
from pathlib import Path

import pytest

from ..helpers import SHORT, ccrun, killed_after_checkpoint

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

    killed = killed_after_checkpoint(tmp_path / "b", 10, "run", "recipes/smoke.yaml", *STREAM, seconds_per_step=0.3)
    resumed = ccrun("resume", str(killed))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step" in resumed.stderr
    from safetensors.numpy import load_file

    a, b = load_file(str(reference / "final" / "model.safetensors")), load_file(str(killed / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), "bitwise the same weights"
    losses = {r["step"]: r.get("train/loss") for r in map(json.loads, (killed / "metrics.jsonl").read_text().splitlines())}
    assert losses == {r["step"]: r.get("train/loss") for r in records}
