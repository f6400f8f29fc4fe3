"""Training: optax from the recipe, a jitted step with accumulation, mesh sharding, checkpoints,
exact resume. The stage's entry point is `train(recipe, model, tokens, run_dir)`; a run's model is
loaded back for evaluation and serving by `load_run_model(run_dir, recipe, checkpoint=...)`."""

from ..common.errors import Interrupted
from .checkpoint import ModelMissing, load_run_model
from .loop import TrainingError, train

__all__ = ["Interrupted", "ModelMissing", "TrainingError", "load_run_model", "train"]
