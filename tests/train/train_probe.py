"""Train a tiny scratch model on a generated corpus; save the final parameters (for test_loop.py).

Usage: python -m tests.train.train_probe RUN_DIR [--set key=value ...] [--then RUN_DIR [--set key=value ...]] ...
Each run writes RUN_DIR/final.npz (when it completes), RUN_DIR/probe.log (this process's log lines
of it and how it ended, as on stderr) and RUN_DIR/probe.code (its exit code). Several runs (--then) share one process:
the imports and the compiled steps. Exit code (the last run's): 0 done, 3 interrupted (checkpoint
saved), 4 training error.
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

# One layer (the loop does not care how many), 8 steps: a checkpoint every 2, validated (keep_best_by),
# so a run interrupted at step 3 or later has checkpoints before and after it.
RECIPE = """\
name: probe
seed: 3
model: {arch: gpt-neo, init: scratch, config: {n_layer: 1, d_model: 32, n_head: 4, vocab_size: 64, max_positions: 16, window_size: 4}}
tokenizer: {name: gpt2}
optimizer: {type: adamw, weight_decay: 0.1}
schedule: {type: warmup_cosine, peak_lr: 2.0e-2, warmup_steps: 2, decay_steps: 20}
train: {batch_size: 8, micro_batch_size: 4, steps: 8, log_every: 1, eval_every: 4, checkpoint: {every: 2, keep_best_by: val/loss}}
data: {sources: [{type: jsonl, paths: [unused.jsonl]}], seq_len: 16, validation: {fraction: 0.1}}
"""


def tokens(n=64, seed=0):
    rs = np.random.RandomState(seed)
    ids = ((rs.randint(0, 64, size=(n, 1)) + np.arange(16)) % 64).astype(np.int32)
    features = Features({"input_ids": List(Value("int32"), length=16), "loss_weights": List(Value("uint8"), length=16)})
    make = lambda a: Dataset.from_dict({"input_ids": a, "loss_weights": np.ones_like(a, np.uint8)}, features=features)  # noqa: E731
    return DatasetDict({"train": make(ids[:56]), "validation": make(ids[56:])})


def runs(argv: list[str]) -> list[tuple[Path, list[str]]]:
    """RUN_DIR --set k=v ... --then RUN_DIR ... → [(run_dir, overrides), ...]"""
    out, i = [], 0
    while i < len(argv):
        run_dir, overrides, i = Path(argv[i]), [], i + 1
        while i < len(argv) and argv[i] != "--then":
            if argv[i] != "--set":
                overrides.append(argv[i])
            i += 1
        out.append((run_dir, overrides))
        i += 1  # past --then
    return out


def run(run_dir: Path, overrides: list[str]) -> int:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "probe.log", "w") as log_file:  # this process's run only

        def say(line: str) -> None:
            print(line, file=sys.stderr, flush=True)
            print(line, file=log_file, flush=True)

        (run_dir / "r.yaml").write_text(RECIPE)
        recipe = load_recipe(run_dir / "r.yaml", overrides).recipe
        model = build_model(recipe.model, seed=recipe.seed)
        try:
            summary = train(recipe, model, tokens(), run_dir, log=say)
        except Interrupted as exc:
            say(f"interrupted: {exc}")
            return 3
        except TrainingError as exc:
            say(f"training error: {exc}")
            return 4
    weights = {"/".join(map(str, path)): np.asarray(v) for path, v in flat_params(model).items()}
    np.savez(run_dir / "final.npz", **weights)
    print(summary)
    return 0


def main() -> int:
    if os.environ.get("CCRUN_PROBE_SLEEP"):  # seconds per step, so a test can interrupt the run
        slow_training(float(os.environ["CCRUN_PROBE_SLEEP"]))
    code = 0
    for run_dir, overrides in runs(sys.argv[1:]):
        code = run(run_dir, overrides)
        (run_dir / "probe.code").write_text(str(code))
    return code


if __name__ == "__main__":
    sys.exit(main())
