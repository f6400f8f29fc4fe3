"""The device mesh: axes `data` and `fsdp`. Parameters and optimizer state are sharded over
`fsdp` (each array along its largest dimension that divides evenly), batches over both axes."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ..common.errors import BadInput
from ..common.procs import multi_process

AXES = ("data", "fsdp")


class MeshError(BadInput):
    """The recipe's mesh does not fit the devices."""


def to_host(tree: Any) -> Any:
    """Arrays as numpy on every process, however they are sharded (across processes too)."""
    if not multi_process():
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
