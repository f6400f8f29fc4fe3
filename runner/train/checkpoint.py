"""Checkpoints (orbax): the latest, for resume, and the best by the recipe's metric; and loading a
run's model back (its final/ export or one of its checkpoints) for `ccrun eval` and `ccrun serve`.

Orbax's best-only cleanup can delete the newest checkpoint, so two preservation policies are
combined: LatestN(1) or BestN(1). A checkpoint holds the parameters and the optimizer state (the
nnx.State trees the train step uses), a small JSON record (step, seed) and, when the recipe keeps
a best checkpoint, orbax's metrics of that step. The data position and every random key follow
from the step and the seed, so a resumed run replays nothing and reaches the same weights bit for
bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import jax
import orbax.checkpoint as ocp
from flax import nnx
from orbax.checkpoint import checkpoint_managers as policies

from ..common.errors import RunFailed
from ..model import build_model, from_pretrained, load_params
from .step import trainable_state


class ModelMissing(RunFailed):
    """A run directory without the model asked for: no final/ export, no checkpoint, or no
    checkpoint scored by the metric that picks the best one."""


def _options(keep_best_by: str | None, mode: str, **kwargs) -> ocp.CheckpointManagerOptions:
    """Orbax records a step's metrics (and answers best_step()) only with a `best_fn`; the
    preservation policy, which decides what is deleted, says the same once more."""
    best = {}
    if keep_best_by is not None:
        best = dict(best_fn=lambda metrics: metrics[keep_best_by], best_mode=mode)
    return ocp.CheckpointManagerOptions(**best, **kwargs)


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
        options = _options(keep_best_by, mode, preservation_policy=policies.AnyPreservationPolicy(keep),
                           enable_async_checkpointing=True)
        self.keep_best_by = keep_best_by
        self.manager = ocp.CheckpointManager(Path(directory).absolute(), options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        return self.manager.best_step() if self.keep_best_by else None

    def save(self, step: int, params: nnx.State, opt_state: Any, record: dict[str, Any],
             metrics: dict[str, float] | None, *, force: bool = False) -> bool:
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

    def restore(self, step: int, params_like: nnx.State, opt_state_like: Any) -> tuple[nnx.State, Any, dict[str, Any]]:
        """Restore onto the shapes and shardings of `params_like` / `opt_state_like` (arrays or
        ShapeDtypeStructs)."""
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(_abstract(params_like)),
                opt_state=ocp.args.StandardRestore(_abstract(opt_state_like)),
                record=ocp.args.JsonRestore(),
            ),
        )
        return restored["params"], restored["opt_state"], restored["record"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _abstract(tree: Any) -> Any:
    """ShapeDtypeStructs (with the arrays' shardings) for orbax to restore onto."""
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree
    )


def _reader(directory: Path, keep_best_by: str | None = None, mode: str = "min") -> ocp.CheckpointManager:
    return ocp.CheckpointManager(directory.absolute(), options=_options(keep_best_by, mode, read_only=True))


def select_step(directory: str | Path, which: Literal["best", "latest"], keep_best_by: str | None,
                mode: str = "min") -> int:
    """The step of the latest checkpoint in `directory`, or of the best by `keep_best_by` (`mode`
    "min" or "max"). Raises ModelMissing when there is none (or none scored by that metric)."""
    directory = Path(directory)
    manager = _reader(directory, keep_best_by if which == "best" else None, mode)
    try:
        if not manager.all_steps():
            raise ModelMissing(f"{directory}: no checkpoint")
        if which == "latest":
            step = manager.latest_step()
        else:  # without a best_fn, orbax's best_step() would answer the latest
            step = manager.best_step() if keep_best_by is not None else None
    finally:
        manager.close()
    if step is None:
        raise ModelMissing(f"{directory}: no checkpoint carries {keep_best_by!r}; use --checkpoint latest")
    return step


def restore_params(model: nnx.Module, directory: str | Path, step: int) -> nnx.Module:
    """Checkpoint `step`'s parameters put into `model` (in place, onto its shapes and shardings);
    returns the model. A LoRA model's checkpoints hold its adapters (what trained) only."""
    manager = _reader(Path(directory))
    try:
        restored = manager.restore(
            step, args=ocp.args.Composite(params=ocp.args.StandardRestore(_abstract(trainable_state(model))))
        )
    finally:
        manager.close()
    return load_params(model, restored["params"])


def load_run_model(run_dir: str | Path, recipe: Any, *, checkpoint: Literal["best", "latest"] | None = None
                   ) -> tuple[Any, Any]:
    """(model, tokenizer) to evaluate or serve. For a run directory: its final/ export, or with
    `checkpoint` ("latest" | "best" by the recipe's train.checkpoint.keep_best_by) one of its
    checkpoints (also when final/ is missing: the latest); the tokenizer of final/ or of its data
    stage. For anything else (a recipe file): the recipe's own model and tokenizer.

    Raises ModelMissing (exit 1) when the run holds no such model; CheckpointError, ModelError and
    TokenizerError (exit 2) for files that do not load.
    """
    from ..data.tokenizer import build_tokenizer, load_tokenizer

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return build_model(recipe.model, seed=recipe.seed), build_tokenizer(recipe.tokenizer)
    tokenizer_dir = next((d for d in (run_dir / "final", run_dir / "data" / "tokenizer")
                          if (d / "tokenizer.json").is_file()), None)
    tokenizer = load_tokenizer(tokenizer_dir) if tokenizer_dir else build_tokenizer(recipe.tokenizer)
    if checkpoint is None and (run_dir / "final" / "config.json").is_file():
        return from_pretrained(run_dir / "final", dtype=recipe.model.dtype.compute), tokenizer
    ckpt_dir = run_dir / "checkpoints"
    if not ckpt_dir.is_dir():
        raise ModelMissing(f"{run_dir}: no final/ export and no checkpoints/ to evaluate")
    model = build_model(recipe.model, tokenizer=tokenizer, seed=recipe.seed)
    spec = recipe.train.checkpoint if recipe.train else None
    step = select_step(ckpt_dir, checkpoint or "latest", spec.keep_best_by if spec else None,
                       spec.mode if spec else "min")
    return restore_params(model, ckpt_dir, step), tokenizer
