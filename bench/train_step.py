"""One AdamW train step: ccrun (Flax NNX, jit) vs transformers PyTorch GPTNeoForCausalLM + torch.optim.AdamW.

    python bench/train_step.py [--batch 8] [--seq 256] [--d-model 256] [--layers 4] [--vocab 8192] [--runs 10]

Same GPT-Neo config (alternating global/local attention) and the same initial weights (ours
exported, loaded by transformers), fp32, on this machine's CPU. A step is forward + backward +
optimizer update on one batch. Prints one JSON object as its last line; `speedup` = PyTorch step
time / ccrun step time (medians after warm-up).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from common import machine, median_seconds  # bench/common.py (this script's directory is on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from flax import nnx
    from transformers import AutoModelForCausalLM

    from runner.model import GPTConfig, GPTNeo, save_pretrained
    from runner.recipe.schema_optim import AdamW, Constant
    from runner.train.optim import optimizer, schedule
    from runner.train.step import make_train_step

    layers = tuple("global" if i % 2 == 0 else "local" for i in range(args.layers))
    config = GPTConfig("gpt-neo", args.vocab, args.seq, args.d_model, args.layers, args.heads, 4 * args.d_model,
                       layers, window_size=args.seq // 2)
    model = GPTNeo(config, rngs=nnx.Rngs(0))
    with tempfile.TemporaryDirectory() as d:
        save_pretrained(model, d)
        theirs = AutoModelForCausalLM.from_pretrained(d)
    theirs.train()

    # Same optimizer settings on both sides: lr 1e-4, betas (0.9, 0.999), eps 1e-8, wd 0 (no masking
    # differences), no clipping.
    tx = optimizer(AdamW(type="adamw", grad_clip=None), schedule(Constant(type="constant", peak_lr=1e-4), 1))
    graphdef, params = nnx.split(model)
    step = make_train_step(graphdef, tx, dropout=False)
    opt_state = tx.init(params)
    torch_opt = torch.optim.AdamW(theirs.parameters(), lr=1e-4, weight_decay=0.0)

    rs = np.random.RandomState(0)
    ids = rs.randint(0, args.vocab, size=(args.batch, args.seq)).astype(np.int32)
    batch = {"input_ids": jnp.asarray(ids[None]), "loss_weights": jnp.ones((1, args.batch, args.seq), jnp.uint8)}
    ids_t = torch.tensor(ids, dtype=torch.long)

    state = {"params": params, "opt": opt_state}

    def ours():
        state["params"], state["opt"], m = step(state["params"], state["opt"], batch, jax.random.key(0))
        return float(m["loss"])

    def reference():
        torch_opt.zero_grad(set_to_none=True)
        loss = theirs(ids_t, labels=ids_t).loss
        loss.backward()
        torch_opt.step()
        return float(loss)

    first_ours, first_theirs = ours(), reference()  # warm-up (and compile); the first losses agree

    t_ours, t_theirs = median_seconds(ours, args.runs), median_seconds(reference, args.runs)
    tokens = args.batch * args.seq
    result = {
        "bench": "train_step",
        "config": {"d_model": args.d_model, "layers": args.layers, "heads": args.heads, "vocab": args.vocab,
                   "batch": args.batch, "seq": args.seq, "params": config.num_params()},
        "first_loss": {"ccrun": first_ours, "torch": first_theirs},
        "ccrun_step_s": round(t_ours, 4),
        "torch_step_s": round(t_theirs, 4),
        "ccrun_tokens_per_s": round(tokens / t_ours),
        "torch_tokens_per_s": round(tokens / t_theirs),
        "speedup": round(t_theirs / t_ours, 2),
        "target_speedup": 1.5,
        "device": jax.devices()[0].device_kind,
        "torch_threads": torch.get_num_threads(),
        "machine": machine(),
        "versions": {"jax": jax.__version__, "torch": torch.__version__},
    }
    print(f"ccrun (jit step)         {t_ours * 1000:8.1f} ms  {tokens / t_ours:8.0f} tok/s  first loss {first_ours:.4f}")
    print(f"transformers + AdamW     {t_theirs * 1000:8.1f} ms  {tokens / t_theirs:8.0f} tok/s  first loss {first_theirs:.4f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
