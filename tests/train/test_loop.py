"""The loop as a process: exact resume after SIGKILL, SIGTERM saves and exits, NaN stops the run.

Three processes in all: a run stopped by SIGTERM; its resume, SIGKILLed after its first checkpoint;
and one that resumes that to the end, then makes the uninterrupted reference run (its metrics and
checkpoints are also the best-checkpoint test's), then a run whose loss becomes NaN. Each
interrupted run's resume continues from the checkpoint the interruption left, so the last one
reaching the reference's weights bit for bit checks both.
"""

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
STEPS = 8  # train_probe's recipe
# JAX's switch for programs cheaper to run than to optimize (LLVM's optimizations off): the steps
# compile in about half the time; every run compared (the resumed ones and the reference) is
# compiled alike, and the loop's state (data order, keys, optimizer state, checkpoints) does not
# depend on it.
FAST_COMPILE = {"JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
SLEEP = 0.5  # seconds per step of an interrupted run: time to see a step or checkpoint and signal it


def start(run_dir, *overrides, sleep=None, then=()):
    """The probe on run_dir; `then`: (run_dir, *overrides) of further runs in the same process."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **FAST_COMPILE}
    if sleep:
        env["CCRUN_PROBE_SLEEP"] = str(sleep)
    args = [str(run_dir), *(a for o in overrides for a in ("--set", o))]
    for more_dir, *more in then:
        args += ["--then", str(more_dir), *(a for o in more for a in ("--set", o))]
    return subprocess.Popen([sys.executable, "-m", "tests.train.train_probe", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc, timeout=240):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def outcome(run_dir):
    """(exit code, log) of one run of a process that made several."""
    run_dir = Path(run_dir)
    return int((run_dir / "probe.code").read_text()), (run_dir / "probe.log").read_text()


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
def terminated(tmp_path_factory):
    """A run stopped by SIGTERM after its third step: (run_dir, exit code, stderr)."""
    run_dir = tmp_path_factory.mktemp("interrupted")
    proc = start(run_dir, sleep=SLEEP)
    wait_for(lambda: len(steps_logged(run_dir)) >= 3, proc)
    proc.send_signal(signal.SIGTERM)
    code, _, err = finish(proc)
    return run_dir, code, err


@pytest.fixture(scope="module")
def killed(terminated):
    """The SIGTERMed run resumed, and SIGKILLed after its first checkpoint: whether final.npz was
    written all the same."""
    run_dir, code, err = terminated
    assert code == 3, err
    saved = max(checkpoints(run_dir))
    proc = start(run_dir, sleep=SLEEP)
    wait_for(lambda: any(s > saved for s in checkpoints(run_dir)), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return {"final_written": (run_dir / "final.npz").exists()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, terminated, killed):
    """One process: the killed run resumed to its end; then, uninterrupted, the reference run; then
    a run whose loss becomes NaN."""
    resumed = terminated[0]
    reference, nan = tmp_path_factory.mktemp("uninterrupted"), tmp_path_factory.mktemp("nan")
    remat = tmp_path_factory.mktemp("remat")
    diverging = (nan, "schedule.peak_lr=1.0e+12", "schedule.warmup_steps=0")
    code, _, err = finish(start(resumed, then=[(reference,), (remat, "train.remat=block"), diverging]))
    assert code == 4, err  # the last run's
    code, err = outcome(reference)
    assert code == 0, err
    assert steps_logged(reference) == list(range(1, STEPS + 1))
    return {"resumed": resumed, "reference": reference, "nan": nan, "remat": remat}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k  # bitwise


def test_sigterm_saves_a_checkpoint_and_exits(terminated):
    run_dir, code, err = terminated
    assert code == 3, err
    assert "checkpoint saved" in err
    last = steps_logged(run_dir)[-1]
    assert last < STEPS
    assert max(checkpoints(run_dir)) == last  # saved where it stopped, not at the last "every"
    # its resume (then killed, then resumed again) to the reference's weights: the next test


def test_killed_run_resumes_to_the_same_weights(killed, runs):
    assert not killed["final_written"]
    run_dir = runs["resumed"]
    code, err = outcome(run_dir)
    assert code == 0, err
    assert "resumed from step" in err
    assert steps_logged(run_dir) == list(range(1, STEPS + 1)), "no missing or repeated step"
    assert_same(final(run_dir), final(runs["reference"]))


def test_the_recipes_remat_trains_the_same_weights(runs):
    # train.remat: block recomputes each block's forward in the backward pass: the same gradients
    # up to float32 rounding (tests/model/test_remat.py compares them op by op), so after 8 AdamW
    # steps the weights agree to ~1e-5 with the uncheckpointed reference run.
    code, err = outcome(runs["remat"])
    assert code == 0, err
    a, b = final(runs["remat"]), final(runs["reference"])
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(runs):
    code, err = outcome(runs["nan"])
    assert code == 4, err
    assert "the training loss is nan" in err or "the training loss is inf" in err
    kept = checkpoints(runs["nan"])
    assert "last good checkpoint (step" in err or "No checkpoint" in err
    stopped = int(re.search(r"step (\d+): the training loss is", err).group(1))  # not a progress line
    assert all(s < stopped for s in kept)


def test_loss_falls_and_best_checkpoint_is_kept(runs):
    run_dir = runs["reference"]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert losses[-1] < 0.7 * losses[0]
    vals = [r for r in records if "val/loss" in r]
    # eval_every 4, and every checkpoint (every 2) too: each one is a candidate for the best
    assert [r["step"] for r in vals] == list(range(2, STEPS + 1, 2))
    assert all(r["val/perplexity"] == pytest.approx(np.exp(r["val/loss"])) for r in vals)
    first = records[0]
    assert first["throughput/device_kind"] and first["throughput/tokens_per_s"] > 0 and "throughput/mfu" in first
    kept = checkpoints(run_dir)
    assert STEPS in kept and len(kept) <= 2  # the latest, and the best by val/loss
    lowest = min(vals, key=lambda r: r["val/loss"])["step"]
    assert lowest in kept  # the best (orbax scored every checkpoint: none was deleted for a stale metric)
