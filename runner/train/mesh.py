"""The device mesh: axes `data` and `fsdp`. Parameters and optimizer state are sharded over
`fsdp` (each array along its largest dimension that divides evenly), batches over both axes."""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXES = ("data", "fsdp")


class MeshError(ValueError):
    """The recipe's mesh does not fit the devices."""


_distributed = False  # set once jax.distributed is initialised by this module


def _multi_process() -> bool:
    """Several processes? Answered without starting a JAX backend in a single-process run (the
    data stage forks workers and should do so before JAX starts its threads)."""
    return _distributed and jax.process_count() > 1


def maybe_initialize_distributed() -> None:
    """Join a multi-process run when the environment describes one (Slurm, TPU pods, or
    JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID set explicitly)."""
    explicit = all(k in os.environ for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"))
    slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1
    if explicit:
        try:
            count, index = int(os.environ["JAX_NUM_PROCESSES"]), int(os.environ["JAX_PROCESS_ID"])
        except ValueError:
            raise MeshError("JAX_NUM_PROCESSES and JAX_PROCESS_ID must be integers") from None
        if not 0 <= index < count:
            raise MeshError(f"JAX_PROCESS_ID {index} is not in 0..{count - 1} (JAX_NUM_PROCESSES {count})")
        jax.distributed.initialize(os.environ["JAX_COORDINATOR_ADDRESS"], num_processes=count, process_id=index)
    elif slurm or os.environ.get("TPU_WORKER_HOSTNAMES"):
        jax.distributed.initialize()
    else:
        return
    global _distributed
    _distributed = True


def is_primary() -> bool:
    """Process 0 of a multi-process run (or the only process): the one that writes the run
    directory's files, logs and W&B. Every process computes; only it records."""
    return not _multi_process() or jax.process_index() == 0


def broadcast_text(text: str | None, *, size: int = 4096) -> str:
    """Process 0's `text` on every process (e.g. the run directory it created); others pass None."""
    if not _multi_process():
        assert text is not None
        return text
    from jax.experimental import multihost_utils

    buf = np.zeros(size, np.uint8)
    if is_primary():
        data = np.frombuffer(text.encode(), np.uint8)
        if len(data) >= size:
            raise MeshError(f"cannot share a text of {len(data)} bytes between processes (at most {size - 1})")
        buf[: len(data)] = data
    out = np.asarray(multihost_utils.broadcast_one_to_all(buf))
    return bytes(out[: int(np.argmax(out == 0)) if (out == 0).any() else size]).decode()


def broadcast_flag(flag: bool) -> bool:
    """Process 0's flag on every process (e.g. whether its data stage succeeded)."""
    if not _multi_process():
        return flag
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(1 if flag else 0)))


def to_host(tree: Any) -> Any:
    """Arrays as numpy on every process, however they are sharded (across processes too)."""
    if not _multi_process():
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def make_mesh(spec: Any, devices: list | None = None) -> Mesh:
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    data, fsdp = spec.data, spec.fsdp
    if data == -1:
        data = n // fsdp if fsdp > 0 and n % fsdp == 0 else -1
    elif fsdp == -1:
        fsdp = n // data if n % data == 0 else -1
    if data <= 0 or fsdp <= 0 or data * fsdp != n:
        raise MeshError(f"train.mesh data={spec.data} x fsdp={spec.fsdp} does not fit {n} device(s)")
    return Mesh(np.array(devices).reshape(data, fsdp), AXES)


def _spec_for(shape: tuple[int, ...], fsdp: int) -> PartitionSpec:
    if fsdp > 1:
        for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
            if shape[axis] % fsdp == 0:
                parts: list[Any] = [None] * len(shape)
                parts[axis] = "fsdp"
                return PartitionSpec(*parts)
    return PartitionSpec()


def tree_shardings(tree: Any, mesh: Mesh) -> Any:
    """A NamedSharding per array leaf: sharded over fsdp where a dimension divides, else replicated."""
    fsdp = mesh.shape["fsdp"]
    return jax.tree_util.tree_map(lambda x: NamedSharding(mesh, _spec_for(tuple(x.shape), fsdp)), tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """[A, mb, T] micro-batched arrays: each micro-batch split over every device."""
    return NamedSharding(mesh, PartitionSpec(None, AXES, None))


def rows_sharding(mesh: Mesh) -> NamedSharding:
    """[B, T] arrays: rows split over every device."""
    return NamedSharding(mesh, PartitionSpec(AXES, None))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def place(params: Any, opt_state: Any, mesh: Mesh) -> tuple[Any, Any, tuple[Any, Any]]:
    """Put parameters and optimizer state on the mesh; returns them and their shardings."""
    shardings = (tree_shardings(params, mesh), tree_shardings(opt_state, mesh))
    return jax.device_put(params, shardings[0]), jax.device_put(opt_state, shardings[1]), shardings
