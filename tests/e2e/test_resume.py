"""`ccrun resume` of a killed run gives the uninterrupted run's weights bit for bit; `ccrun reproduce`."""

import json
import sys
from pathlib import Path

import pytest

from ..helpers import ROOT, SHORT, ccrun, killed_after_checkpoint

pytestmark = pytest.mark.e2e


def test_resume_and_reproduce(tmp_path):
    done = ccrun("run", "recipes/smoke.yaml", "--runs-dir", str(tmp_path / "a"), *SHORT)
    assert done.returncode == 0, done.stderr[-2000:]
    reference = Path(done.stdout.strip())
    # A run killed after its first checkpoint, then resumed in place.
    killed = killed_after_checkpoint(tmp_path / "b", 10, "run", "recipes/smoke.yaml", *SHORT)
    assert json.loads((killed / "summary.json").read_text())["status"] == "running"
    resumed = ccrun("resume", str(killed))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from step" in resumed.stderr and "data: reused" in resumed.stderr
    from safetensors.numpy import load_file

    a, b = load_file(str(reference / "final" / "model.safetensors")), load_file(str(killed / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), "bitwise the same weights"
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 30
    again = ccrun("reproduce", str(reference), "--runs-dir", str(tmp_path / "c"))
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.startswith("reproduced: ")


def test_resume_runs_a_dry_run_directory(tmp_path):
    """`ccrun run --dry-run` makes what a launch makes first (plan.json included); `ccrun resume` runs it."""
    import subprocess as sp

    from runner.track.rundir import PLAN_FILE, RunDir

    runs = tmp_path / "runs"
    tiny = ["--set", "train.steps=2", "--set", "schedule.warmup_steps=1", "--set", "schedule.decay_steps=1",
            "--set", "train.eval_every=null", "--set", "train.checkpoint.every=null", "--set", "evals=[]",
            "--set", "train.checkpoint.keep_best_by=null", "--set", "data.validation=null",
            "--set", "data.sources[0].include=[json/*.py]", "--set", "tokenizer.train.vocab_size=300"]
    made = sp.run([sys.executable, "-m", "runner.cli", "run", "recipes/smoke.yaml", "--dry-run", "--runs-dir",
                   str(runs), *tiny], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    run = Path(made.stdout.strip().splitlines()[-1])
    assert RunDir(run).dry_run() and "steps        2" in made.stderr
    plan = (run / PLAN_FILE).read_text()
    done = sp.run([sys.executable, "-m", "runner.cli", "resume", str(run)], cwd=ROOT, capture_output=True,
                  text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"succeeded: {run}"
    assert not RunDir(run).dry_run() and (run / PLAN_FILE).read_text() == plan
    assert json.loads((run / "summary.json").read_text())["train"]["steps"] == 2
