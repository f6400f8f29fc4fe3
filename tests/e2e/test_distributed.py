"""Several processes under jax.distributed (two CPU processes on one machine, gloo collectives):
one run directory, written by process 0 alone, with the numbers of one process driving as many devices."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ..helpers import ROOT

pytestmark = pytest.mark.e2e

SHORT = ["--set", "train.steps=20", "--set", "schedule.warmup_steps=5", "--set", "schedule.decay_steps=15",
         "--set", "train.checkpoint.every=10", "--set", "evals=[{suite: loss}]"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(runs: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "runner.cli", "run", "recipes/smoke.yaml", "--runs-dir", str(runs),
                             *SHORT], cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu", **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("throughput/")} for r in rows]


def test_two_processes_make_one_run_directory_written_by_process_0(tmp_path):
    port = free_port()
    env = {"XLA_FLAGS": "", "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2"}
    procs = [launch(tmp_path / "multi", {**env, "JAX_PROCESS_ID": str(i)}) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    (run,) = (tmp_path / "multi" / "smoke").iterdir()
    assert outs[0][0].strip().splitlines()[-1] == str(run)  # process 0 reports the run directory …
    assert str(run) not in outs[1][0] and "train:" not in outs[1][1]  # … process 1 computes quietly
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["process_count"] == 2 and sorted(d["process"] for d in prov["devices"]) == [0, 1]
    assert json.loads((run / "summary.json").read_text())["status"] == "succeeded"
    assert [r["step"] for r in metrics(run)] == [10, 20]  # each step written once
    assert len(list(run.glob("wandb/offline-run-*"))) == 1
    assert (run / "checkpoints" / "20").is_dir() and (run / "final" / "model.safetensors").is_file()

    # One process driving two devices gives the same numbers.
    single = launch(tmp_path / "single", {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    out, err = single.communicate(timeout=300)
    assert single.returncode == 0, err[-3000:]
    assert metrics(Path(out.strip().splitlines()[-1])) == metrics(run)
