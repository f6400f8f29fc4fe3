"""Launching on a cluster: `ccrun launch` (a thin layer over submitit) and job arrays of sweeps
(`ccrun run` in a Slurm job array runs the point of its SLURM_ARRAY_TASK_ID).

Slurm itself is not here: submission goes through submitit's real Slurm executor to a stand-in
`sbatch` that keeps the batch script it is given and answers as sbatch does ("Submitted batch job
N"), so the tests check the script Slurm would receive. Running the jobs is tests/e2e/test_launch.py
(submitit's local executor)."""

import importlib
import json
import os
import re
import sys
from pathlib import Path

import pytest
import yaml

from runner.cli import launch

# submitit binds its log handlers to sys.stdout and sys.stderr when it is first imported. Imported
# inside a ccrun_here call, they would hold that call's captured streams, closed once it returns;
# imported here, they hold the session's.
importlib.import_module("submitit")

from .helpers import ROOT, ccrun, ccrun_here

APPS = ROOT / "recipes" / "apps-125m.yaml"


def sweep_size(path: Path) -> int:
    """The number of points of a recipe's sweep, from its YAML: the product of the value lists."""
    size = 1
    for values in yaml.safe_load(path.read_text())["sweep"].values():
        size *= len(values)
    return size


@pytest.fixture
def fake_slurm(tmp_path):
    """A PATH with `srun` (submitit checks for it) and an `sbatch` that keeps each batch script in
    tmp_path/submitted/ and answers with job id 4242."""
    bin_dir, kept = tmp_path / "bin", tmp_path / "submitted"
    bin_dir.mkdir()
    kept.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" "{kept}/$(ls {kept} | wc -l).sh"\n'
                                    'echo "Submitted batch job 4242"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    return env, kept


def sbatch_options(script: str) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([\w-]+)=(.*)$", script, re.M))


def test_a_sweep_is_submitted_as_a_job_array_one_job_per_point(tmp_path, fake_slurm):
    env, kept = fake_slurm
    n = sweep_size(APPS)
    result = ccrun_here("launch", "apps-125m", "--nodes", "2", "--gpus-per-node", "8", "--cpus-per-task", "12",
                        "--partition", "gpu", "--time", "600", "--slurm", "account=proj", "--runs-dir",
                        tmp_path / "runs", env=env)
    assert result.returncode == 0, result.stderr
    (script,) = [p.read_text() for p in kept.iterdir()]  # one sbatch for the whole array
    options = sbatch_options(script)
    # one task per GPU (jax's Slurm convention), N points as array indices 0..N-1, all at once
    assert {k: options[k] for k in ("nodes", "ntasks-per-node", "gpus-per-node", "cpus-per-task", "partition",
                                    "time", "account", "array", "job-name")} == {
        "nodes": "2", "ntasks-per-node": "8", "gpus-per-node": "8", "cpus-per-task": "12", "partition": "gpu",
        "time": "600", "account": "proj", "array": f"0-{n - 1}%{n}", "job-name": "apps-125m"}
    assert re.search(r"^srun .* -m submitit\.core\._submit ", script, re.M)  # every task runs the job's function
    lines = result.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == [f"4242_{i}" for i in range(n)]
    logs = tmp_path / "runs" / ".submitit"
    assert [Path(line.split("\t")[2]) for line in lines] == [logs / f"4242_{i}" / f"4242_{i}_0_log.out" for i in range(n)]
    assert f"{n} job(s) queued on Slurm as a job array" in result.stderr


def test_the_job_runs_ccrun_run_with_the_point_of_its_array_index(tmp_path):
    """--dry-run prints the command each job runs: `ccrun run` with the recipe, the --set values and
    its point; and the batch script on stderr."""
    runs = tmp_path / "runs"
    result = ccrun_here("launch", APPS, "--dry-run", "--runs-dir", runs, "--set", "train.log_every=5")
    assert result.returncode == 0, result.stderr
    base = [sys.executable, "-m", "runner.cli", "run", str(APPS), "--runs-dir", str(runs.resolve()),
            "--set", "train.log_every=5"]
    assert [line.split(" ") for line in result.stdout.splitlines()] == [
        [*base, "--sweep-index", str(i)] for i in range(sweep_size(APPS))]
    assert sbatch_options(result.stderr)["ntasks-per-node"] == "1"  # no GPUs asked: one task
    assert not runs.exists()  # nothing submitted, nothing written

    whole = ccrun_here("launch", APPS, "--dry-run", "--no-array", "--executor", "local", "--runs-dir", runs)
    assert whole.stdout.splitlines() == [" ".join(base[:-2])]  # the whole sweep in one job


def test_a_recipe_without_a_sweep_is_one_job(tmp_path, fake_slurm):
    env, kept = fake_slurm
    result = ccrun_here("launch", "smoke", "--gpus-per-node", "4", "--runs-dir", tmp_path / "runs",
                        "--logs", tmp_path / "logs", env=env)
    assert result.returncode == 0, result.stderr
    (script,) = [p.read_text() for p in kept.iterdir()]
    assert "array" not in sbatch_options(script) and sbatch_options(script)["ntasks-per-node"] == "4"
    assert result.stdout.strip().split("\t") == ["4242", "smoke", str(tmp_path / "logs" / "4242" / "4242_0_log.out")]


def test_an_input_missing_from_here_is_a_warning_and_the_job_is_queued(tmp_path, fake_slurm):
    """The nodes may see what this machine does not (node-local disks, their own caches)."""
    env, kept = fake_slurm
    missing = tmp_path / "elsewhere" / "apps.jsonl"
    result = ccrun_here("launch", "smoke", "--runs-dir", tmp_path / "runs", "--set",
                        f"evals=[{{suite: apps, path: {missing}, max_new_tokens: 64}}]", env=env)
    assert result.returncode == 0, result.stderr
    assert f"ccrun: warning: not found from here (the job stops at once if its nodes do not see it either): " \
           f"{missing} (evals[0].path): missing" in result.stderr
    assert len(list(kept.iterdir())) == 1 and result.stdout.startswith("4242\t")


def test_what_sbatch_refuses_it_says_in_one_line(tmp_path, fake_slurm):
    env, _ = fake_slurm
    refusal = "sbatch: error: Batch job submission failed: Requested time limit is invalid (missing or exceeds some limit)"
    sbatch = Path(env["PATH"].split(os.pathsep)[0]) / "sbatch"
    sbatch.write_text(f'#!/bin/sh\necho "{refusal}" >&2\nexit 1\n')  # what Slurm answers a --time over the limit
    result = ccrun_here("launch", "smoke", "--time", "100000", "--runs-dir", tmp_path / "runs", env=env)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == f"ccrun: sbatch refused the job: {refusal}"


@pytest.mark.parametrize(("args", "message"), [
    (["smoke", "--array"], "--array: recipes/smoke.yaml has no sweep"),
    (["smoke", "--executor", "pbs"], "--executor: slurm or local (got 'pbs')"),
    (["smoke", "--executor", "local", "--nodes", "2"], "--executor local runs on this machine: --nodes 1"),
    (["smoke", "--slurm", "account"], "--slurm: expected KEY=VALUE"),
    (["smoke", "--set", "train.steps=-1"], "train.steps"),
    (["no-such-recipe"], "no such file"),
    (["smoke"], "--executor slurm: Could not detect \"srun\""),  # no Slurm here (PATH without srun)
])
def test_bad_launches_exit_2_before_anything_is_queued(tmp_path, args, message):
    env = {**os.environ, "PATH": os.path.dirname(sys.executable)}  # python, but no srun or sbatch
    result = ccrun_here("launch", *args, "--runs-dir", tmp_path / "runs", env=env)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs" / ".submitit").exists() or not any((tmp_path / "runs" / ".submitit").rglob("*.pkl"))


def test_without_submitit_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` raises ImportError
    result = ccrun_here("launch", "smoke", "--runs-dir", tmp_path / "runs")
    assert result.returncode == 2
    assert result.stderr.strip() == "ccrun: ccrun launch needs submitit: pip install 'ccrun[slurm]'"
    assert launch.INSTALL in result.stderr


def test_ccrun_lists_launch():
    assert re.search(r"^\s*launch\s", ccrun("--help").stdout, re.M)


# Job arrays written by hand (sbatch --array=0-N-1 around `srun ccrun run RECIPE`): the array index
# picks the sweep point when no --sweep-index is given.

def made(runs: Path) -> list[dict]:
    """sweep.json of each run directory made under runs/ ({} for a run that is not a sweep point)."""
    found = sorted(p for p in runs.glob("*/*") if (p / "resolved.yaml").is_file())
    return [json.loads((p / "sweep.json").read_text()) if (p / "sweep.json").is_file() else {} for p in found]


def test_in_a_job_array_ccrun_run_runs_the_point_of_its_index(tmp_path):
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "2"}
    result = ccrun_here("run", APPS, "--dry-run", "--runs-dir", tmp_path / "a", env=env)
    assert result.returncode == 0, result.stderr
    peak = yaml.safe_load(APPS.read_text())["sweep"]["schedule.peak_lr"][2]
    assert [(s["index"], s["point"]) for s in made(tmp_path / "a")] == [(2, {"schedule.peak_lr": peak})]

    explicit = ccrun_here("run", APPS, "--dry-run", "--sweep-index", "0", "--runs-dir", tmp_path / "b", env=env)
    assert explicit.returncode == 0 and [s["index"] for s in made(tmp_path / "b")] == [0]  # --sweep-index wins

    plain = ccrun_here("run", "smoke", "--dry-run", "--runs-dir", tmp_path / "c", env=env)
    assert plain.returncode == 0 and made(tmp_path / "c") == [{}]  # no sweep: the recipe as it is


@pytest.mark.parametrize("index", ["3", "-1", "x"])
def test_an_array_index_that_names_no_point_is_refused(tmp_path, index):
    n = sweep_size(APPS)
    result = ccrun_here("run", APPS, "--dry-run", "--runs-dir", tmp_path / "runs",
                        env={**os.environ, "SLURM_ARRAY_TASK_ID": index})
    assert result.returncode == 2 and not (tmp_path / "runs").exists()
    expected = ("SLURM_ARRAY_TASK_ID must be an integer (got 'x')" if index == "x" else
                f"SLURM_ARRAY_TASK_ID {index}: the sweep has {n} point(s); submit the array as --array=0-{n - 1}")
    assert result.stderr.strip() == f"ccrun: {expected}"
