"""Activation checkpointing (train.remat): peak memory and step time per policy, and the dry-run's
estimate for the seed's real shapes.

    python bench/remat.py [--layers 4] [--d-model 256] [--heads 8] [--seq 512] [--batch 4] [--vocab 50257] [--runs 5]

On this machine's CPU, a GPT-Neo-shaped model (alternating global/local layers, fp32) and one
AdamW train step (runner.train.step.make_train_step, one micro-batch): per policy, XLA's own
accounting of the compiled step (memory_analysis: temporaries + arguments = peak) and the median
step time (the policies' steps interleaved, run by run, so that a busy machine slows them alike). Beside it, runner.plan's estimate for the same shapes on CPU, and its GPU estimate for
the shipped recipes at their micro-batches (GPT-Neo 125M seq 2048, code-clippy-125m; GPT-Neo 1.3B
seq 1024, apps-1.3b) per policy. Prints one JSON object as its last line; `time_ratio` = step time
/ the step time without checkpointing, `peak_ratio` likewise for memory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from common import machine  # bench/common.py (this script's directory is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20
REAL = {"gpt-neo-125m seq 2048 (code-clippy-125m)": "code-clippy-125m.yaml",
        "gpt-neo-1.3b seq 1024 (apps-1.3b)": "apps-1.3b.yaml"}


def bench_recipe(args, remat: str, folder: Path):
    """The benchmarked shapes as a recipe, for runner.plan's estimate."""
    from runner.recipe.load import load_recipe

    path = folder / f"bench-{remat}.yaml"
    path.write_text(f"""
name: bench
model:
  arch: gpt-neo
  init: scratch
  config: {{n_layer: {args.layers}, d_model: {args.d_model}, n_head: {args.heads}, vocab_size: {args.vocab},
           max_positions: {args.seq}, window_size: {args.seq // 2}}}
tokenizer: {{train: {{vocab_size: {args.vocab}}}}}
data: {{sources: [{{type: files, stdlib: true}}], seq_len: {args.seq}}}
optimizer: {{type: adamw, grad_clip: null}}
schedule: {{type: constant, peak_lr: 1.0e-4}}
train: {{batch_size: {args.batch}, micro_batch_size: {args.batch}, steps: 1, remat: {remat}}}
""")
    return load_recipe(path).recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from runner import plan as planning
    from runner.model import REMAT_CHOICES, GPTConfig, GPTNeo, set_remat
    from runner.recipe.load import load_recipe
    from runner.recipe.schema_optim import AdamW, Constant
    from runner.train.optim import optimizer, schedule
    from runner.train.step import make_train_step

    layers = tuple("global" if i % 2 == 0 else "local" for i in range(args.layers))
    config = GPTConfig("gpt-neo", args.vocab, args.seq, args.d_model, args.layers, args.heads, 4 * args.d_model,
                       layers, window_size=args.seq // 2)
    tx = optimizer(AdamW(type="adamw", grad_clip=None), schedule(Constant(type="constant", peak_lr=1e-4), 1))
    rs = np.random.RandomState(0)
    ids = rs.randint(0, args.vocab, size=(1, args.batch, args.seq)).astype(np.int32)
    batch = {"input_ids": jnp.asarray(ids), "loss_weights": jnp.ones(ids.shape, jnp.float32)}

    measured, estimated, steps = {}, {}, {}
    for policy in REMAT_CHOICES:
        graphdef, params = nnx.split(set_remat(GPTNeo(config, rngs=nnx.Rngs(0)), policy))
        opt_state = tx.init(params)
        compiled = make_train_step(graphdef, tx, dropout=False).lower(params, opt_state, batch, jax.random.key(0)).compile()
        stats = compiled.memory_analysis()
        measured[policy] = {"temp_mib": round(stats.temp_size_in_bytes / MIB, 1),
                            "argument_mib": round(stats.argument_size_in_bytes / MIB, 1),
                            "peak_mib": round((stats.temp_size_in_bytes + stats.argument_size_in_bytes) / MIB, 1)}
        steps[policy] = (compiled, {"params": params, "opt_state": opt_state})

    def step(policy: str) -> float:
        compiled, state = steps[policy]
        start = time.perf_counter()
        state["params"], state["opt_state"], metrics = compiled(state["params"], state["opt_state"], batch,
                                                                jax.random.key(0))
        metrics["loss"].block_until_ready()
        return time.perf_counter() - start

    times = {policy: [] for policy in REMAT_CHOICES}
    for run in range(args.runs + 1):  # the first round warms up
        for policy in REMAT_CHOICES:
            seconds = step(policy)
            if run:
                times[policy].append(seconds)
    with tempfile.TemporaryDirectory() as folder:
        for policy in REMAT_CHOICES:
            seconds = statistics.median(times[policy])
            measured[policy]["step_s"] = round(seconds, 3)
            recipe = bench_recipe(args, policy, Path(folder))
            estimate = planning.memory_estimate(recipe, planning.model_sizes(recipe)[0], platform="cpu")
            # the estimate's total counts what memory_analysis calls arguments + temporaries (donated outputs alias)
            measured[policy]["plan_estimate_mib"] = round(estimate["total"] / MIB, 1)
            print(f"{policy:5s} peak {measured[policy]['peak_mib']:8.1f} MiB (temp {measured[policy]['temp_mib']:.1f}, "
                  f"arguments {measured[policy]['argument_mib']:.1f}; plan {measured[policy]['plan_estimate_mib']:.1f}) "
                  f"step {seconds * 1e3:.0f} ms", flush=True)
    for policy in REMAT_CHOICES:
        measured[policy]["peak_ratio"] = round(measured[policy]["peak_mib"] / measured["none"]["peak_mib"], 3)
        measured[policy]["time_ratio"] = round(measured[policy]["step_s"] / measured["none"]["step_s"], 3)

    for label, name in REAL.items():
        recipe = load_recipe(ROOT / "recipes" / name).recipe
        sizes, _ = planning.model_sizes(recipe)
        estimated[label] = {"micro_batch": recipe.train.micro_batch_size, "recipe_remat": recipe.train.remat}
        for policy in REMAT_CHOICES:
            spec = recipe.model_copy(update={"train": recipe.train.model_copy(update={"remat": policy})})
            memory = planning.memory_estimate(spec, sizes, platform="gpu")
            estimated[label][policy] = {"total_gib": round(memory["total"] / planning.GIB, 2),
                                        "activations_gib": round(memory["activations"] / planning.GIB, 2)}
            print(f"{label} micro-batch {recipe.train.micro_batch_size}, remat {policy}: "
                  f"~{memory['total'] / planning.GIB:.2f} GiB per GPU (activations "
                  f"{memory['activations'] / planning.GIB:.2f})", flush=True)

    print(json.dumps({"bench": "remat", "machine": machine(), "backend": jax.default_backend(),
                      "shape": {"layers": args.layers, "d_model": args.d_model, "heads": args.heads, "seq": args.seq,
                                "micro_batch": args.batch, "vocab": args.vocab, "dtype": "float32"},
                      "cpu": measured, "gpu_estimate": estimated}))


if __name__ == "__main__":
    main()
