"""The loop as a process: exact resume after SIGKILL, SIGTERM saves and exits, NaN stops the run."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def start(run_dir, *overrides, sleep=None):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    if sleep:
        env["CCRUN_PROBE_SLEEP"] = str(sleep)
    args = [a for o in overrides for a in ("--set", o)]
    return subprocess.Popen([sys.executable, "-m", "tests.train.train_probe", str(run_dir), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc, timeout=240):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def steps_logged(run_dir):
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line)["step"] for line in path.read_text().splitlines()] if path.exists() else []


def checkpoints(run_dir):
    d = Path(run_dir) / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


def wait_for(predicate, proc, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before the condition: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError("timed out")


def final(run_dir):
    with np.load(Path(run_dir) / "final.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    code, _, err = finish(start(run_dir))
    assert code == 0, err
    assert steps_logged(run_dir) == list(range(1, 13))
    return final(run_dir)


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k  # bitwise


def test_killed_run_resumes_to_the_same_weights(tmp_path, reference):
    proc = start(tmp_path, sleep=0.3)
    wait_for(lambda: any(s >= 6 for s in checkpoints(tmp_path)), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "final.npz").exists()
    code, _, err = finish(start(tmp_path))
    assert code == 0, err
    assert "resumed from step" in err
    assert steps_logged(tmp_path) == list(range(1, 13)), "no missing or repeated step"
    assert_same(final(tmp_path), reference)


def test_sigterm_saves_a_checkpoint_and_exits(tmp_path, reference):
    proc = start(tmp_path, sleep=0.3)
    wait_for(lambda: len(steps_logged(tmp_path)) >= 3, proc)
    proc.send_signal(signal.SIGTERM)
    code, _, err = finish(proc)
    assert code == 3, err
    assert "checkpoint saved" in err
    last = steps_logged(tmp_path)[-1]
    assert max(checkpoints(tmp_path)) == last  # saved where it stopped, not at the last "every"
    code, _, err = finish(start(tmp_path))
    assert code == 0, err
    assert steps_logged(tmp_path) == list(range(1, 13))
    assert_same(final(tmp_path), reference)


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    code, _, err = finish(start(tmp_path, "schedule.peak_lr=1.0e+12", "schedule.warmup_steps=0"))
    assert code == 4, err
    assert "the training loss is nan" in err or "the training loss is inf" in err
    kept = checkpoints(tmp_path)
    assert "last good checkpoint (step" in err or "No checkpoint" in err
    stopped = int(re.search(r"step (\d+): the training loss is", err).group(1))  # not a progress line
    assert all(s < stopped for s in kept)


def test_loss_falls_and_best_checkpoint_is_kept(tmp_path):
    code, _, err = finish(start(tmp_path, "train.steps=30", "schedule.decay_steps=40"))
    assert code == 0, err
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert losses[-1] < 0.7 * losses[0]
    vals = [r for r in records if "val/loss" in r]
    # eval_every 4, and every checkpoint (every 2) too: each one is a candidate for the best
    assert [r["step"] for r in vals] == list(range(2, 31, 2))
    assert all(r["val/perplexity"] == pytest.approx(np.exp(r["val/loss"])) for r in vals)
    first = records[0]
    assert first["throughput/device_kind"] and first["throughput/tokens_per_s"] > 0 and "throughput/mfu" in first
    kept = checkpoints(tmp_path)
    assert 30 in kept and len(kept) <= 2  # the latest, and the best by val/loss
    lowest = min(vals, key=lambda r: r["val/loss"])["step"]
    assert lowest in kept  # the best (orbax scored every checkpoint: none was deleted for a stale metric)
