"""Training: optax from the recipe, a jitted step with accumulation, mesh sharding, checkpoints,
exact resume. The stage's entry point is `train(recipe, model, tokens, run_dir)`."""

from .loop import Interrupted, TrainingError, train

__all__ = ["Interrupted", "TrainingError", "train"]
