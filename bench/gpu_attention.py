"""GPU check for the model: GPT-Neo 125M in bf16 through cuDNN attention vs the fp32 XLA path.

    python bench/gpu_attention.py [--batch 8] [--seq 2048] [--runs 10]

Same random weights (GPT-2 init) in both; reports the max |logit difference| and |log-prob
difference| of bf16+cuDNN against fp32+XLA, argmax agreement, and the forward time of each.
On a machine without a GPU it runs both paths with XLA (cuDNN is GPU-only) and says so.
Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--small", action="store_true", help="A 2-layer model, for trying the script on a CPU.")
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from runner.model import GPTConfig, GPTNeo
    from runner.model.hf import build_from_params, flat_params

    n_layer = 2 if args.small else 12
    config = GPTConfig("gpt-neo", 50257, 2048, 768, n_layer, 12, 3072, ("global", "local") * (n_layer // 2),
                       window_size=256)
    params = flat_params(GPTNeo(config, rngs=nnx.Rngs(0)))
    gpu = jax.default_backend() == "gpu"
    fast = build_from_params(config, params, dtype="bfloat16", attention="cudnn" if gpu else "xla")
    ref = build_from_params(config, params, dtype="float32", attention="xla")
    forward = nnx.jit(lambda m, x: m(x))
    ids = jnp.asarray(np.random.RandomState(0).randint(0, 50257, (args.batch, args.seq)), jnp.int32)

    def timed(model):
        forward(model, ids).block_until_ready()
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            forward(model, ids).block_until_ready()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    a, b = forward(ref, ids), forward(fast, ids)
    result = {
        "bench": "gpu_attention",
        "device": jax.devices()[0].device_kind,
        "cudnn": gpu,
        "batch": args.batch,
        "seq": args.seq,
        "n_layer": n_layer,
        "max_abs_logit_diff": float(jnp.abs(a - b).max()),
        "max_abs_logprob_diff": float(jnp.abs(jax.nn.log_softmax(a) - jax.nn.log_softmax(b)).max()),
        "argmax_agreement": float((a.argmax(-1) == b.argmax(-1)).mean()),
        "fp32_xla_s": round(timed(ref), 5),
        "bf16_fast_s": round(timed(fast), 5),
    }
    result["speedup"] = round(result["fp32_xla_s"] / result["bf16_fast_s"], 2)
    tokens = args.batch * args.seq
    result["bf16_tokens_per_s"] = round(tokens / result["bf16_fast_s"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
