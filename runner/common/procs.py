"""Several processes (jax.distributed): joining a run, which process records, broadcasts.

Every process computes; process 0 alone writes the run directory, logs and W&B. In a
single-process run none of these start a JAX backend (the data stage forks workers and should do
so before JAX starts its threads).
"""

from __future__ import annotations

import os

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


def maybe_initialize_distributed() -> None:
    """Join a multi-process run when the environment describes one (Slurm, TPU pods, or
    JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID set explicitly)."""
    import jax

    explicit = all(k in os.environ for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"))
    slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1
    if explicit:
        try:
            count, index = int(os.environ["JAX_NUM_PROCESSES"]), int(os.environ["JAX_PROCESS_ID"])
        except ValueError:
            raise DistributedError("JAX_NUM_PROCESSES and JAX_PROCESS_ID must be integers") from None
        if not 0 <= index < count:
            raise DistributedError(f"JAX_PROCESS_ID {index} is not in 0..{count - 1} (JAX_NUM_PROCESSES {count})")
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
