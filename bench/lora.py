"""A LoRA train step vs a full fine-tuning step: time and memory, on this machine's CPU.

    python bench/lora.py [--layers 4] [--d-model 256] [--seq 256] [--batch 4] [--vocab 8192]
                         [--rank 8] [--alpha 16] [--targets q_proj,k_proj,v_proj,out_proj,c_fc,c_proj]
                         [--dtype float32|bfloat16] [--runs 10] [--tiny]

One GPT-Neo-shaped model (alternating global/local layers), the recipe's default AdamW
(runner.train.optim), runner.train.step.make_train_step on one micro-batch, both ways:
- full: every parameter trains; the optimizer holds two fp32 moments per parameter;
- lora: runner.model.lora.apply_lora on `--targets`, only the adapters train
  (split_trainable: the optimizer state and the gradients hold them alone), the frozen base enters
  the step as a non-donated argument, cast to the compute dtype `--dtype` as the trainer does.
Per side: the median step time (the two steps interleaved run by run, so that a busy machine slows
both alike), XLA's accounting of the compiled step (memory_analysis: temporaries + arguments =
peak; the donated outputs alias their arguments), the optimizer state's bytes and the trainable
parameters. Prints one JSON object as its last line; `speedup` = full step time / LoRA step time,
`peak_ratio` = LoRA peak / full peak.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from common import machine  # bench/common.py (this script's directory is on sys.path)

MIB = 1 << 20
ALL_TARGETS = "q_proj,k_proj,v_proj,out_proj,c_fc,c_proj"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4, help="micro-batch (sequences per step)")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--targets", default=ALL_TARGETS, help="comma-separated linear layer names")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="compute dtype (the frozen base is cast to it; parameters that train stay fp32)")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run (2 layers, d 64, seq 32)")
    args = parser.parse_args()
    if args.tiny:
        args.layers, args.d_model, args.heads, args.seq, args.batch, args.vocab, args.runs = 2, 64, 4, 32, 2, 512, 2

    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from runner.model import GPTConfig, GPTNeo
    from runner.model.lora import apply_lora, count_lora_params
    from runner.recipe.schema_optim import AdamW, Constant
    from runner.train.optim import optimizer, schedule
    from runner.train.step import make_train_step, split_trainable

    kinds = tuple("global" if i % 2 == 0 else "local" for i in range(args.layers))
    config = GPTConfig("gpt-neo", args.vocab, args.seq, args.d_model, args.layers, args.heads, 4 * args.d_model,
                       kinds, window_size=args.seq // 2)
    tx = optimizer(AdamW(type="adamw"), schedule(Constant(type="constant", peak_lr=1e-4), 1))
    rs = np.random.RandomState(0)
    batch = {"input_ids": jnp.asarray(rs.randint(0, args.vocab, size=(1, args.batch, args.seq)), jnp.int32),
             "loss_weights": jnp.ones((1, args.batch, args.seq), jnp.uint8)}
    key = jax.random.key(0)
    targets = [t for t in args.targets.split(",") if t]

    def prepare(lora: bool) -> dict:
        model = GPTNeo(config, dtype=args.dtype, rngs=nnx.Rngs(0))
        if lora:
            apply_lora(model, rank=args.rank, alpha=args.alpha, dropout=0.0, targets=targets, rngs=nnx.Rngs(1))
        graphdef, params, frozen = split_trainable(model)
        if frozen is not None:  # the frozen base in the compute dtype (bf16 halves its bytes)
            frozen = jax.tree.map(lambda x: x.astype(args.dtype), frozen)
        opt_state = tx.init(params)
        extra = () if frozen is None else (frozen,)
        compiled = make_train_step(graphdef, tx, dropout=False).lower(params, opt_state, batch, key, *extra).compile()
        stats = compiled.memory_analysis()
        leaves = lambda tree: jax.tree.leaves(tree)  # noqa: E731
        return {
            "compiled": compiled, "params": params, "opt_state": opt_state, "extra": extra, "times": [],
            "report": {
                "trainable_params": sum(int(x.size) for x in leaves(params)),
                "frozen_params": sum(int(x.size) for x in leaves(frozen)) if frozen is not None else 0,
                "lora_params": count_lora_params(model),
                "optimizer_state_mib": round(sum(x.nbytes for x in leaves(opt_state)) / MIB, 3),
                "optimizer_state_bytes": sum(int(x.nbytes) for x in leaves(opt_state)),
                "frozen_mib": round(sum(x.nbytes for x in leaves(frozen)) / MIB, 3) if frozen is not None else 0.0,
                "temp_mib": round(stats.temp_size_in_bytes / MIB, 2),
                "argument_mib": round(stats.argument_size_in_bytes / MIB, 2),
                "peak_mib": round((stats.temp_size_in_bytes + stats.argument_size_in_bytes) / MIB, 2),
            },
        }

    sides = {"full": prepare(False), "lora": prepare(True)}

    def run(side: dict) -> float:
        start = time.perf_counter()
        side["params"], side["opt_state"], metrics = side["compiled"](side["params"], side["opt_state"], batch, key,
                                                                      *side["extra"])
        loss = float(metrics["loss"])  # waits for the step
        elapsed = time.perf_counter() - start
        side["report"]["last_loss"] = round(loss, 4)
        return elapsed

    for side in sides.values():
        run(side)  # warm-up
    for _ in range(args.runs):
        for side in sides.values():
            side["times"].append(run(side))
    tokens = args.batch * args.seq
    for name, side in sides.items():
        seconds = statistics.median(side["times"])
        side["report"]["step_s"] = round(seconds, 6)
        side["report"]["tokens_per_s"] = round(tokens / seconds)
        r = side["report"]
        print(f"{name:5s} step {seconds * 1e3:8.1f} ms  peak {r['peak_mib']:8.1f} MiB (temp {r['temp_mib']:.1f}, "
              f"arguments {r['argument_mib']:.1f})  optimizer {r['optimizer_state_mib']:.2f} MiB  "
              f"trainable {r['trainable_params']:,}", flush=True)
    full, lora = sides["full"]["report"], sides["lora"]["report"]
    result = {
        "bench": "lora",
        "tiny": args.tiny,
        "config": {"layers": args.layers, "d_model": args.d_model, "heads": args.heads, "d_ff": 4 * args.d_model,
                   "vocab": args.vocab, "seq": args.seq, "micro_batch": args.batch, "params": config.num_params(),
                   "dtype": args.dtype, "rank": args.rank, "alpha": args.alpha, "targets": targets,
                   "runs": args.runs},
        "full": full,
        "lora": lora,
        "speedup": round(full["step_s"] / lora["step_s"], 3),
        "peak_ratio": round(lora["peak_mib"] / full["peak_mib"], 3),
        "optimizer_state_ratio": round(lora["optimizer_state_bytes"] / full["optimizer_state_bytes"], 5),
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "machine": machine(),
        "versions": {"jax": jax.__version__},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
