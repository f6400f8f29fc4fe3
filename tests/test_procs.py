"""Joining a multi-process run from the environment people launch in (runner.common.procs): an srun
step, a Cloud TPU pod, or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID.

The reference is jax itself: `jax.distributed.initialize` is replaced by a recorder that resolves
what it was given with jax's own cluster detection (jax/_src/clusters), so each test checks the
coordinator, process count, index and devices jax would really use, without joining anything."""

import os
import socket
import subprocess
import sys

import jax
import pytest
from jax._src import clusters

from runner.common import procs
from runner.common.procs import DistributedError, distributed_arguments

from .helpers import ROOT, ccrun_here

JAX_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "JAX_LOCAL_DEVICE_IDS",
            "JAX_COORDINATOR_PORT")


def srun_task(tasks: int, index: int, *, job: int = 123456, nodes: str = "gpu[003-004]", per_node: int = 2,
              **extra: str) -> dict[str, str]:
    """The Slurm variables srun sets in task `index` of a step of `tasks` tasks, `per_node` a node."""
    count = -(-tasks // per_node)
    return {"SLURM_JOB_ID": str(job), "SLURM_STEP_NODELIST": nodes, "SLURM_NTASKS": str(tasks),
            "SLURM_PROCID": str(index), "SLURM_LOCALID": str(index % per_node), "SLURM_NODEID": str(index // per_node),
            "SLURM_STEP_NUM_NODES": str(count), "SLURM_STEP_TASKS_PER_NODE": f"{per_node}(x{count})", **extra}


def batch_script(tasks: int) -> dict[str, str]:
    """The batch script of `sbatch --ntasks=N` (and salloc's shell): no step, no SLURM_STEP_NODELIST."""
    return {"SLURM_JOB_ID": "77", "SLURM_NTASKS": str(tasks), "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
            "SLURM_NODELIST": "gpu[003-004]", "SLURM_TASKS_PER_NODE": f"{tasks // 2}(x2)"}


@pytest.fixture
def environ(monkeypatch):
    """A clean environment for the cluster variables; returns a setter for a test's own."""
    for key in list(os.environ):
        if key.startswith(("SLURM_", "TPU_", "MEGASCALE_")) or key in JAX_VARS or key.endswith("_VISIBLE_DEVICES"):
            monkeypatch.delenv(key)

    def put(env: dict[str, str]) -> None:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
    return put


@pytest.fixture
def joined(monkeypatch):
    """jax.distributed.initialize replaced: records what jax would use (its own detection fills
    what it was not given, exactly as initialize does before it connects)."""
    calls = []

    def initialize(coordinator_address=None, num_processes=None, process_id=None, local_device_ids=None):
        coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
        if local_device_ids is None and os.environ.get("JAX_LOCAL_DEVICE_IDS"):
            local_device_ids = [int(i) for i in os.environ["JAX_LOCAL_DEVICE_IDS"].split(",")]
        calls.append(clusters.ClusterEnv.auto_detect_unset_distributed_params(
            coordinator_address, num_processes, process_id, local_device_ids, None, 300))

    monkeypatch.setattr(jax.distributed, "initialize", initialize)
    monkeypatch.setattr(procs, "_distributed", False)  # this module's flag, restored after the test
    return calls


def jax_port(job: int) -> int:
    # jax/_src/clusters/slurm_cluster.py: a port in [65535 - 2**12 + 1, 65535] from the job id
    return job % 2**12 + 65535 - 2**12 + 1


def test_an_srun_step_joins_as_jax_detects_it(environ, joined):
    environ(srun_task(4, 3))
    assert jax._src.clusters.SlurmCluster.is_env_present()  # jax's own test of the same environment
    procs.maybe_initialize_distributed()
    # the first host of the step, the port from the job id; task 3 of 4 drives its node's GPU 1
    assert joined == [(f"gpu003:{jax_port(123456)}", 4, 3, [1])]
    assert procs._distributed


@pytest.mark.parametrize("env", [srun_task(1, 0), {}, {"SLURM_JOB_ID": "5", "SLURM_NTASKS": "1"}],
                         ids=["srun-one-task", "no-cluster", "sbatch-one-task"])
def test_one_process_joins_nothing(environ, joined, env):
    environ(env)
    procs.maybe_initialize_distributed()
    assert joined == [] and not procs._distributed and procs.is_primary()


def test_our_slurm_detection_is_jaxs(environ, monkeypatch):
    """Several tasks: we join exactly when jax's SlurmCluster sees the step; a batch script of
    several tasks (no srun) is an error naming srun, not a wait for processes that never come."""
    cases = [srun_task(2, 0), srun_task(8, 5, per_node=8, nodes="node001"), srun_task(2, 1, nodes="a,b")]
    for env in cases:
        environ(env)
        assert clusters.SlurmCluster.is_env_present() and distributed_arguments(os.environ) == {}
        for key in env:
            monkeypatch.delenv(key)
    environ(batch_script(4))
    assert not clusters.SlurmCluster.is_env_present()
    with pytest.raises(DistributedError, match=r"a Slurm job of 4 tasks.*SLURM_STEP_NODELIST unset.*srun ccrun run"):
        distributed_arguments(os.environ)


def test_the_coordinator_address_may_replace_the_one_slurm_gives(environ, joined):
    environ({**srun_task(2, 1), "JAX_COORDINATOR_ADDRESS": "10.0.0.7:4321"})  # e.g. the InfiniBand address
    procs.maybe_initialize_distributed()
    assert joined == [("10.0.0.7:4321", 2, 1, [1])]


@pytest.mark.parametrize(("extra", "per_node", "devices"), [
    # every task of a node sees the node's GPUs: jax's choice, the LOCALID-th (task 1 of its node: 1)
    ({"CUDA_VISIBLE_DEVICES": "0,1"}, 2, [1]),
    ({"CUDA_VISIBLE_DEVICES": "0,1", "SLURM_GPUS_ON_NODE": "2"}, 2, [1]),
    ({"CUDA_VISIBLE_DEVICES": "2,3"}, 2, [1]),  # the node's other two GPUs for this job: ordinals 0, 1
    # Slurm binds GPUs to tasks: each drives what it sees
    ({"CUDA_VISIBLE_DEVICES": "5"}, 2, [0]),  # --gpus-per-task=1
    ({"CUDA_VISIBLE_DEVICES": "2,3"}, 4, [0, 1]),  # --gpus-per-task=2, four tasks a node
    ({"CUDA_VISIBLE_DEVICES": "2,3", "SLURM_GPUS_ON_NODE": "4"}, 2, [0, 1]),  # --gpus-per-task=2, two tasks a node
    ({"CUDA_VISIBLE_DEVICES": "0,1,2,3"}, 1, [0, 1, 2, 3]),  # --ntasks-per-node=1: the task drives all four
    ({"CUDA_VISIBLE_DEVICES": "0,1,2,3", "JAX_LOCAL_DEVICE_IDS": "2"}, 1, [2]),  # the user's choice wins
    ({}, 1, [0]),  # no GPU list to go by: jax's choice
])
def test_each_task_drives_the_gpus_slurm_gave_it(environ, joined, extra, per_node, devices):
    environ(srun_task(4, 1 if per_node > 1 else 3, per_node=per_node, **extra))
    procs.maybe_initialize_distributed()
    assert joined[0][3] == devices


def test_tasks_per_node_as_slurm_writes_it():
    assert procs._tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    assert procs._tasks_per_node("8") == [8] and procs._tasks_per_node("") == [] and procs._tasks_per_node("x") == []


def test_a_cloud_tpu_pod_joins_as_jax_finds_it(environ, joined, monkeypatch):
    """A TPU VM (jax's running_in_cloud_tpu_vm, set at import when libtpu sees chips): jax finds the
    hosts itself, from the metadata server on GCE (`gcloud ... ssh --worker=all`) or GKE's env."""
    for module in (jax._src.cloud_tpu_init, clusters.cluster, clusters.cloud_tpu_cluster):
        monkeypatch.setattr(module, "running_in_cloud_tpu_vm", True)
    # GKE's variables for worker 2 of 4 hosts of one slice. No metadata server here: TPU_SKIP_MDS_QUERY
    # (not GCE), and the multislice values jax would otherwise ask it for set empty (one slice).
    environ({"TPU_WORKER_HOSTNAMES": "localhost,t1,t2,t3", "TPU_WORKER_ID": "2", "TPU_SKIP_MDS_QUERY": "1",
             "MEGASCALE_COORDINATOR_ADDRESS": "", "MEGASCALE_NUM_SLICES": "", "MEGASCALE_SLICE_ID": ""})
    procs.maybe_initialize_distributed()
    # jax/_src/clusters/cloud_tpu_cluster.py: the first worker on port 8482; no device restriction on TPUs
    assert joined == [("localhost:8482", 4, 2, None)]


def test_a_tpu_vm_jax_cannot_place_is_a_clear_error(environ, monkeypatch):
    monkeypatch.setattr(jax._src.cloud_tpu_init, "running_in_cloud_tpu_vm", True)
    monkeypatch.setattr(jax.distributed, "initialize", lambda: (_ for _ in ()).throw(
        ValueError("coordinator_address should be defined.")))  # what jax raises when no cluster matches
    with pytest.raises(DistributedError, match="cannot join .*coordinator_address should be defined.*set JAX_"):
        procs.maybe_initialize_distributed()


def test_the_explicit_environment(environ, joined):
    environ({"JAX_COORDINATOR_ADDRESS": "host0:1234", "JAX_NUM_PROCESSES": "3", "JAX_PROCESS_ID": "2"})
    procs.maybe_initialize_distributed()
    assert joined == [("host0:1234", 3, 2, None)]  # no cluster: every local device stays visible


def test_the_explicit_environment_in_a_batch_script_keeps_every_device(environ, joined):
    """No srun step: jax does not pick a device per task, and neither does ccrun."""
    environ({**batch_script(4), "SLURM_LOCALID": "3", "CUDA_VISIBLE_DEVICES": "0",
             "JAX_COORDINATOR_ADDRESS": "host0:1234", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"})
    procs.maybe_initialize_distributed()
    assert joined == [("host0:1234", 2, 1, None)]


EXPLICIT = {"JAX_COORDINATOR_ADDRESS": "host0:1234", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}
BAD = [
    ({"JAX_COORDINATOR_ADDRESS": "host0:1234"}, "JAX_COORDINATOR_ADDRESS set but not JAX_NUM_PROCESSES, JAX_PROCESS_ID"),
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}, "JAX_NUM_PROCESSES, JAX_PROCESS_ID set but not JAX_COORD"),
    ({**EXPLICIT, "JAX_NUM_PROCESSES": "two"}, "JAX_NUM_PROCESSES must be an integer (got 'two')"),
    ({**EXPLICIT, "JAX_PROCESS_ID": "1.0"}, "JAX_PROCESS_ID must be an integer (got '1.0')"),
    ({**EXPLICIT, "JAX_PROCESS_ID": "2"}, "JAX_PROCESS_ID 2 is not in 0..1 (JAX_NUM_PROCESSES 2)"),
    ({**EXPLICIT, "JAX_PROCESS_ID": "-1"}, "JAX_PROCESS_ID -1 is not in 0..1"),
    ({**EXPLICIT, "JAX_NUM_PROCESSES": "0", "JAX_PROCESS_ID": "0"}, "JAX_NUM_PROCESSES must be at least 1 (got 0)"),
    ({**EXPLICIT, "JAX_COORDINATOR_ADDRESS": "host0"}, "JAX_COORDINATOR_ADDRESS must be HOST:PORT"),
    ({**EXPLICIT, "JAX_COORDINATOR_ADDRESS": "host0:99999"}, "JAX_COORDINATOR_ADDRESS must be HOST:PORT"),
    ({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "many"}, "SLURM_NTASKS must be an integer"),
    ({**srun_task(2, 0), "SLURM_LOCALID": ""}, "SLURM_LOCALID must be an integer"),
]


@pytest.mark.parametrize(("env", "message"), BAD)
def test_a_half_described_run_is_refused_before_joining(environ, joined, env, message):
    environ({**env, "CUDA_VISIBLE_DEVICES": "0"})
    with pytest.raises(DistributedError) as caught:
        procs.maybe_initialize_distributed()
    assert message in str(caught.value) and joined == []


@pytest.mark.parametrize(("env", "message"), [BAD[0], BAD[4], (batch_script(4), "not one of its srun tasks")])
def test_ccrun_run_says_it_in_one_line_exit_2(tmp_path, env, message):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in JAX_VARS}
    result = ccrun_here("run", "recipes/smoke.yaml", "--runs-dir", tmp_path / "runs", env={**clean, **env})
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("ccrun: ") and message in line and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing was made


TWO = """
from runner.common.procs import broadcast_text, is_primary, maybe_initialize_distributed
maybe_initialize_distributed()
import jax
print(jax.process_count(), jax.process_index(), broadcast_text("from 0" if is_primary() else None))
"""


def free_slurm_job_id() -> int:
    """A job id whose coordinator port (jax's formula) is free here."""
    for job in range(4096 * 7 + 17, 4096 * 8):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", jax_port(job)))
            except OSError:
                continue
            return job
    raise AssertionError("no free port in jax's Slurm range")


def test_two_srun_tasks_really_join(tmp_path):
    """Two processes with the variables srun gives the tasks of a one-node step (the node is this
    machine, 127.0.0.1): jax's Slurm detection connects them; process 0's text reaches process 1."""
    job = free_slurm_job_id()
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in JAX_VARS}
    base.update(JAX_PLATFORMS="cpu", XLA_FLAGS="", PYTHONPATH=str(ROOT))
    tasks = [subprocess.Popen([sys.executable, "-c", TWO], cwd=tmp_path, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE,
                              env={**base, **srun_task(2, i, job=job, nodes="127.0.0.1", per_node=2)})
             for i in range(2)]
    outs = [t.communicate(timeout=120) for t in tasks]
    for task, (out, err) in zip(tasks, outs, strict=True):
        assert task.returncode == 0, err[-2000:]
    # (gloo, the CPU collectives, prints a line of its own before ours)
    assert [out.splitlines()[-1] for out, _ in outs] == ["2 0 from 0", "2 1 from 0"]
