"""Checkpoints (orbax): the latest, for resume, and the best by the recipe's metric.

Orbax's best-only cleanup can delete the newest checkpoint, so two preservation policies are
combined: LatestN(1) or BestN(1). A checkpoint holds parameters, optimizer state and a small JSON
record (step, seed, metrics); the data position and every random key follow from the step and the
seed, so a resumed run replays nothing and reaches the same weights bit for bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies


class Checkpoints:
    def __init__(self, directory: str | Path, *, keep_best_by: str | None = None, mode: str = "min"):
        keep: list[Any] = [policies.LatestN(n=1)]
        if keep_best_by is not None:
            keep.append(
                policies.BestN(
                    get_metric_fn=lambda metrics: metrics[keep_best_by],
                    reverse=(mode == "min"),  # orbax keeps the end of the sorted list
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy(keep), enable_async_checkpointing=True
        )
        self.keep_best_by = keep_best_by
        self.manager = ocp.CheckpointManager(Path(directory).absolute(), options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        return self.manager.best_step() if self.keep_best_by else None

    def save(self, step: int, params: Any, opt_state: Any, record: dict[str, Any], metrics: dict[str, float] | None,
             *, force: bool = False) -> bool:
        if self.keep_best_by is not None and (metrics is None or self.keep_best_by not in metrics):
            metrics = None
        return self.manager.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(params),
                opt_state=ocp.args.StandardSave(opt_state),
                record=ocp.args.JsonSave(record),
            ),
            metrics=metrics,
            force=force,
        )

    def restore(self, step: int, params_like: Any, opt_state_like: Any) -> tuple[Any, Any, dict[str, Any]]:
        """Restore onto the shardings of `params_like` / `opt_state_like` (arrays or ShapeDtypeStructs)."""

        def abstract(tree):
            return jax.tree_util.tree_map(
                lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree
            )

        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(abstract(params_like)),
                opt_state=ocp.args.StandardRestore(abstract(opt_state_like)),
                record=ocp.args.JsonRestore(),
            ),
        )
        return restored["params"], restored["opt_state"], restored["record"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def restore_params(directory: str | Path, step: int, params_like: Any) -> Any:
    """Only the parameters of checkpoint `step` (for evaluation), onto `params_like`'s shapes."""
    manager = ocp.CheckpointManager(Path(directory).absolute(), options=ocp.CheckpointManagerOptions(read_only=True))
    abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params_like)
    restored = manager.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract)))
    manager.close()
    return restored["params"]

