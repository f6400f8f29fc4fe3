"""`sweep:` in a recipe: one run directory per point, grouped in W&B; `--sweep-index` for job arrays."""

import json
from pathlib import Path

import pytest
import yaml

from ..helpers import ccrun

pytestmark = pytest.mark.e2e


def test_a_sweep_runs_every_point_into_its_own_directory(tmp_path):
    args = ["run", "recipes/smoke.yaml", "--runs-dir", str(tmp_path), "--set", "train.steps=20",
            "--set", "schedule.warmup_steps=5", "--set", "schedule.decay_steps=15", "--set", "evals=[{suite: loss}]",
            "--set", "sweep={schedule.peak_lr: [1.0e-3, 3.0e-3]}"]
    out = ccrun(*args)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = [Path(line) for line in out.stdout.split()]
    assert len(runs) == 2 and len(set(runs)) == 2
    lrs = [yaml.safe_load((r / "resolved.yaml").read_text())["schedule"]["peak_lr"] for r in runs]
    assert lrs == [1e-3, 3e-3]
    assert all(yaml.safe_load((r / "resolved.yaml").read_text())["sweep"] is None for r in runs)
    assert "sweep:\n  schedule.peak_lr=0.001  succeeded  val/loss" in out.stderr
    assert [r.name.split("-", 3)[-1] for r in runs] == ["peak_lr=0.001", "peak_lr=0.003"]  # named by the point
    sweeps = [json.loads((r / "sweep.json").read_text()) for r in runs]
    assert [s["index"] for s in sweeps] == [0, 1] and sweeps[0]["point"] == {"schedule.peak_lr": 1e-3}
    group = sweeps[0]["group"]
    assert group.startswith("smoke-sweep-") and sweeps[1]["group"] == group
    for r in runs:  # grouped together in W&B
        assert group.encode() in next(r.glob("wandb/offline-run-*/run-*.wandb")).read_bytes()
    one = ccrun(*args, "--sweep-index", "1")
    assert one.returncode == 0 and len(one.stdout.split()) == 1
    assert json.loads((Path(one.stdout.strip()) / "sweep.json").read_text())["group"] == group  # a job array's point
    assert ccrun(*args, "--sweep-index", "2").returncode == 2
