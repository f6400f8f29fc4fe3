"""Several processes (jax.distributed): joining a run, which process records, broadcasts.

Every process computes; process 0 alone writes the run directory, logs and W&B. In a
single-process run none of these start a JAX backend (the data stage forks workers and should do
so before JAX starts its threads).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from .errors import BadInput

# jax and numpy are imported inside the functions: a single-process run, and the commands that
# never touch a device (`ccrun run --dry-run`), must not pay for importing jax.

_distributed = False  # set once jax.distributed is initialised by this module


class DistributedError(BadInput):
    """The environment describes a multi-process run that cannot be joined as described."""


def multi_process() -> bool:
    """Several processes? Answered without starting a JAX backend in a single-process run."""
    if not _distributed:
        return False
    import jax

    return jax.process_count() > 1


EXPLICIT = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
# What jax's SlurmCluster (jax/_src/clusters/slurm_cluster.py) needs to find the coordinator (the
# first host of SLURM_STEP_NODELIST, port 61440 + SLURM_JOB_ID % 4096), the process count and index,
# and the device of each process (the SLURM_LOCALID-th GPU). srun sets them all in each task; the
# batch script of sbatch, and salloc's shell, have no SLURM_STEP_NODELIST.
SLURM = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")


def distributed_arguments(environ: Mapping[str, str], *, on_cloud_tpu: bool = False) -> dict[str, Any] | None:
    """The keyword arguments of `jax.distributed.initialize` for the multi-process run `environ`
    describes ({} where jax reads everything itself), or None for a single process.

    In order: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID all set; an srun step
    of more than one task (jax's Slurm detection; JAX_COORDINATOR_ADDRESS alone may replace the
    coordinator it derives); a Cloud TPU VM (`on_cloud_tpu`: jax asks the TPU metadata, or GKE's
    TPU_WORKER_HOSTNAMES, for the hosts). Anything half-described is a DistributedError naming
    what is missing, before any process waits for the others."""
    given = [k for k in EXPLICIT if k in environ]
    if "JAX_COORDINATOR_ADDRESS" in environ:
        _address(environ["JAX_COORDINATOR_ADDRESS"])
    slurm_tasks = _integer(environ, "SLURM_NTASKS", 1) if "SLURM_JOB_ID" in environ else 1
    args: dict[str, Any] = {}
    if len(given) == len(EXPLICIT):
        count, index = _integer(environ, "JAX_NUM_PROCESSES"), _integer(environ, "JAX_PROCESS_ID")
        if count < 1:
            raise DistributedError(f"JAX_NUM_PROCESSES must be at least 1 (got {count})")
        if not 0 <= index < count:
            raise DistributedError(f"JAX_PROCESS_ID {index} is not in 0..{count - 1} (JAX_NUM_PROCESSES {count})")
        args = {"coordinator_address": environ["JAX_COORDINATOR_ADDRESS"], "num_processes": count, "process_id": index}
    elif given and given != ["JAX_COORDINATOR_ADDRESS"]:
        # jax itself reads JAX_COORDINATOR_ADDRESS only; the other two would be silently ignored
        missing = ", ".join(k for k in EXPLICIT if k not in environ)
        raise DistributedError(f"{', '.join(given)} set but not {missing}: set all three to join a multi-process "
                               "run, or none")
    elif slurm_tasks > 1:
        absent = [k for k in SLURM if k not in environ]
        if absent:
            raise DistributedError(
                f"a Slurm job of {slurm_tasks} tasks, but this process is not one of its srun tasks ({', '.join(absent)} "
                f"unset): start it with `srun ccrun run ...` (one task per GPU), or as one process with SLURM_NTASKS=1")
    elif on_cloud_tpu:
        pass  # jax finds the TPU hosts itself; on a single-host TPU VM it joins a run of one process
    elif given:
        raise DistributedError("JAX_COORDINATOR_ADDRESS set but not JAX_NUM_PROCESSES, JAX_PROCESS_ID (and no Slurm "
                               "job of several tasks or TPU pod to tell them): set all three, or none")
    else:
        return None
    if slurm_tasks > 1 and all(k in environ for k in SLURM):  # where jax's Slurm detection picks devices
        devices = slurm_local_devices(environ)
        if devices is not None:
            args["local_device_ids"] = devices
    return args


def slurm_local_devices(environ: Mapping[str, str]) -> list[int] | None:
    """The GPUs (ordinals among the visible ones) an srun task drives where jax's own choice, the
    SLURM_LOCALID-th, would be wrong; None to keep jax's choice (every task of a node sees the
    node's GPUs and drives one, JAX_LOCAL_DEVICE_IDS given, or no GPU list to go by).

    Wrong when Slurm binds GPUs to tasks (--gpus-per-task, --gpu-bind): a task sees fewer GPUs than
    the step has on its node (SLURM_GPUS_ON_NODE), or than there are tasks on it, and drives all
    of them. And wrong when every node runs one task (--ntasks-per-node=1): that task drives all its
    node's GPUs, as one process drives all local devices in a single-host run."""
    if "JAX_LOCAL_DEVICE_IDS" in environ:
        return None
    listed = environ.get("CUDA_VISIBLE_DEVICES") or environ.get("ROCR_VISIBLE_DEVICES") or ""
    visible = [d for d in listed.split(",") if d.strip()]
    if not visible:
        return None
    local = _integer(environ, "SLURM_LOCALID")
    per_node = _tasks_per_node(environ.get("SLURM_STEP_TASKS_PER_NODE") or environ.get("SLURM_TASKS_PER_NODE", ""))
    tasks_here = per_node[0] if per_node and len(set(per_node)) == 1 else None  # the same on every node
    on_node = _integer(environ, "SLURM_GPUS_ON_NODE") if "SLURM_GPUS_ON_NODE" in environ else None
    bound = local >= len(visible) or (on_node is not None and len(visible) < on_node) or (
        tasks_here is not None and len(visible) < tasks_here)
    if bound or (tasks_here == 1 and len(visible) > 1):
        return list(range(len(visible)))
    return None


def _tasks_per_node(text: str) -> list[int]:
    """Slurm's tasks-per-node list, "2(x3),1" → [2, 2, 2, 1]; [] if it cannot be read."""
    counts = []
    for part in filter(None, text.split(",")):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not match:
            return []
        counts += [int(match[1])] * int(match[2] or 1)
    return counts


def _integer(environ: Mapping[str, str], key: str, default: int | None = None) -> int:
    text = environ.get(key)
    if text is None and default is not None:
        return default
    try:
        return int(str(text).strip())
    except ValueError:
        raise DistributedError(f"{key} must be an integer (got {text!r})") from None


def _address(text: str) -> None:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DistributedError(f"JAX_COORDINATOR_ADDRESS must be HOST:PORT, the address of process 0 (got {text!r})")


def on_cloud_tpu_vm() -> bool:
    """jax's own answer (set when jax is imported: libtpu present and TPU chips on the PCI bus)."""
    try:
        from jax._src import cloud_tpu_init
    except ImportError:  # a jax that moved it: TPU pods then join through the explicit environment
        return False
    return bool(getattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False))


def maybe_initialize_distributed() -> None:
    """Join a multi-process run when the environment describes one (`distributed_arguments`: an
    srun step of several tasks, a Cloud TPU VM, or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
    JAX_PROCESS_ID set explicitly)."""
    import jax

    args = distributed_arguments(os.environ, on_cloud_tpu=on_cloud_tpu_vm())
    if args is None:
        return
    try:
        jax.distributed.initialize(**args)
    except ValueError as exc:  # jax found no coordinator, process count or index where we expected it to
        raise DistributedError(f"cannot join the multi-process run: {exc} (set JAX_COORDINATOR_ADDRESS, "
                               "JAX_NUM_PROCESSES and JAX_PROCESS_ID)") from None
    global _distributed
    _distributed = True


def is_primary() -> bool:
    """Process 0 of a multi-process run (or the only process): the one that writes the run
    directory's files, logs and W&B. Every process computes; only it records."""
    if not multi_process():
        return True
    import jax

    return jax.process_index() == 0


def broadcast_text(text: str | None, *, size: int = 4096) -> str:
    """Process 0's `text` on every process (e.g. the run directory it created); others pass None."""
    if not multi_process():
        assert text is not None
        return text
    import numpy as np
    from jax.experimental import multihost_utils

    buf = np.zeros(size, np.uint8)
    if is_primary():
        data = np.frombuffer(text.encode(), np.uint8)
        if len(data) >= size:
            raise DistributedError(f"cannot share a text of {len(data)} bytes between processes (at most {size - 1})")
        buf[: len(data)] = data
    out = np.asarray(multihost_utils.broadcast_one_to_all(buf))
    return bytes(out[: int(np.argmax(out == 0)) if (out == 0).any() else size]).decode()


def broadcast_flag(flag: bool) -> bool:
    """Process 0's flag on every process (e.g. whether its data stage succeeded)."""
    if not multi_process():
        return flag
    import numpy as np
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(1 if flag else 0)))


def die_with_parent(parent_pid: int) -> None:
    """Make this process (a worker) get SIGKILL when its parent dies, however the parent ends
    (a SIGKILLed trainer leaves no orphaned workers holding its pipes and memory). Linux's
    PR_SET_PDEATHSIG; elsewhere, nothing."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the call: nobody would send the signal
        os._exit(1)
