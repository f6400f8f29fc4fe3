"""Train a tiny scratch model on a generated corpus; save the final parameters (for test_loop.py).

Usage: python -m tests.train.train_probe RUN_DIR [--set key=value ...]
Writes RUN_DIR/final.npz. Exit codes: 0 done, 3 interrupted (checkpoint saved), 4 training error.
"""

import os
import sys
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict, Features, List, Value

from runner.model import build_model
from runner.model.hf import flat_params
from runner.recipe.load import load_recipe
from runner.train import Interrupted, TrainingError, train
from tests.e2e.ccrun_slow import slow_training

RECIPE = """\
name: probe
seed: 3
model: {arch: gpt-neo, init: scratch, config: {n_layer: 2, d_model: 32, n_head: 4, vocab_size: 64, max_positions: 16, window_size: 4}}
tokenizer: {name: gpt2}
optimizer: {type: adamw, weight_decay: 0.1}
schedule: {type: warmup_cosine, peak_lr: 3.0e-3, warmup_steps: 2, decay_steps: 20}
train: {batch_size: 8, micro_batch_size: 4, steps: 12, log_every: 1, eval_every: 4, checkpoint: {every: 2, keep_best_by: val/loss}}
data: {sources: [{type: jsonl, paths: [unused.jsonl]}], seq_len: 16, validation: {fraction: 0.1}}
"""


def tokens(n=64, seed=0):
    rs = np.random.RandomState(seed)
    ids = ((rs.randint(0, 64, size=(n, 1)) + np.arange(16)) % 64).astype(np.int32)
    features = Features({"input_ids": List(Value("int32"), length=16), "loss_weights": List(Value("uint8"), length=16)})
    make = lambda a: Dataset.from_dict({"input_ids": a, "loss_weights": np.ones_like(a, np.uint8)}, features=features)  # noqa: E731
    return DatasetDict({"train": make(ids[:56]), "validation": make(ids[56:])})


def main() -> int:
    if os.environ.get("CCRUN_PROBE_SLEEP"):  # seconds per step, so a test can interrupt the run
        slow_training(float(os.environ["CCRUN_PROBE_SLEEP"]))
    run_dir = Path(sys.argv[1])
    run_dir.mkdir(parents=True, exist_ok=True)
    overrides = [a for a in sys.argv[2:] if a != "--set"]
    (run_dir / "r.yaml").write_text(RECIPE)
    recipe = load_recipe(run_dir / "r.yaml", overrides).recipe
    model = build_model(recipe.model, seed=recipe.seed)
    try:
        summary = train(recipe, model, tokens(), run_dir, log=lambda line: print(line, file=sys.stderr, flush=True))
    except Interrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return 3
    except TrainingError as exc:
        print(f"training error: {exc}", file=sys.stderr)
        return 4
    weights = {"/".join(map(str, path)): np.asarray(v) for path, v in flat_params(model).items()}
    np.savez(run_dir / "final.npz", **weights)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
