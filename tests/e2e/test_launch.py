"""`ccrun launch --executor local`: submitit's local executor runs the jobs here, in the background,
as Slurm would run them there: a sweep of the smoke recipe as an array of two jobs, each running
`ccrun run --sweep-index I` into its own run directory; launch itself returns at once."""

import importlib
import json
import os
import pickle
import time
from pathlib import Path

import pytest

from ..helpers import ccrun_here

importlib.import_module("submitit")  # its log handlers bound to the session's streams (tests/test_launch.py says why)

pytestmark = pytest.mark.e2e

SHORT = ["--set", "train.steps=10", "--set", "schedule.warmup_steps=2", "--set", "schedule.decay_steps=8",
         "--set", "train.checkpoint.every=10", "--set", "evals=[{suite: loss}]"]


def result_of(log: Path, timeout: float) -> tuple:
    """A finished job's outcome as submitit stores it beside the log: ("success", its stdout) or
    ("error", the traceback)."""
    pickled = log.with_name(log.name.replace("_log.out", "_result.pkl"))
    deadline = time.monotonic() + timeout
    while not pickled.is_file():
        assert time.monotonic() < deadline, f"no result after {timeout} s; log:\n{log.read_text()[-3000:]}"
        time.sleep(1)
    return pickle.loads(pickled.read_bytes())


def test_a_sweep_launched_here_runs_one_job_per_point(tmp_path):
    runs = tmp_path / "runs"
    started = time.monotonic()
    result = ccrun_here("launch", "smoke", "--executor", "local", "--runs-dir", runs, "--time", "10",
                        "--set", "sweep={schedule.peak_lr: [0.003, 0.002]}", *SHORT,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 30  # queued, not run: launch returns before the jobs finish
    jobs = [line.split("\t") for line in result.stdout.splitlines()]
    assert [label for _, label, _ in jobs] == ["smoke peak_lr=0.003", "smoke peak_lr=0.002"]
    assert "2 job(s) started here, in the background as a job array" in result.stderr

    outcomes = [result_of(Path(log), timeout=600) for _, _, log in jobs]
    for (status, output), (_, _, log) in zip(outcomes, jobs, strict=True):
        assert status == "success", output
        assert "--sweep-index" in Path(log).read_text()  # the command the job ran, as submitit logs it
    made = sorted(p for p in (runs / "smoke").iterdir())
    # each job's stdout ends with its run directory, as `ccrun run` prints it
    assert sorted(output.splitlines()[-1] for _, output in outcomes) == [str(p) for p in made]
    points = {json.loads((p / "sweep.json").read_text())["index"]: p for p in made}
    assert sorted(points) == [0, 1]
    for index, path in points.items():
        assert json.loads((path / "summary.json").read_text())["status"] == "succeeded"
        assert path.name.endswith(f"peak_lr={[0.003, 0.002][index]}")
