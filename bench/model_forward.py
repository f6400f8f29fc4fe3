"""Forward pass of GPT-Neo 125M (random weights): ccrun's Flax model (jit) vs transformers PyTorch.

    python bench/model_forward.py [--batch 2] [--seq 512] [--runs 5] [--arch gpt-neo|gpt2]

Both run on this machine's CPU in fp32 with the same weights (ours exported, then loaded by
transformers). Also checks the logits agree. Prints one JSON object as its last line;
`speedup` = PyTorch time / ccrun time (median of `--runs`, after a warm-up).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from common import machine, median_seconds  # bench/common.py (this script's directory is on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--arch", choices=["gpt-neo", "gpt2"], default="gpt-neo")
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from flax import nnx
    from transformers import AutoModelForCausalLM

    from runner.model import GPTConfig, GPTNeo, save_pretrained

    layers = ("global", "local") * 6 if args.arch == "gpt-neo" else ("global",) * 12
    # GPT-Neo 125M / GPT-2 124M sizes.
    config = GPTConfig(args.arch, 50257, 2048 if args.arch == "gpt-neo" else 1024, 768, 12, 12, 3072, layers,
                       window_size=256, eos_token_id=50256, bos_token_id=50256)
    ours = GPTNeo(config, rngs=nnx.Rngs(0))
    with tempfile.TemporaryDirectory() as d:
        save_pretrained(ours, d)
        theirs = AutoModelForCausalLM.from_pretrained(d).eval()

    ids = np.random.RandomState(0).randint(0, 50257, size=(args.batch, args.seq))
    forward = nnx.jit(lambda m, x: m(x))
    x_jax, x_torch = jnp.asarray(ids, jnp.int32), torch.tensor(ids)

    def run_ours():
        return forward(ours, x_jax).block_until_ready()

    def run_theirs():
        with torch.no_grad():
            return theirs(x_torch).logits


    diff = float(np.abs(np.asarray(run_ours()) - run_theirs().numpy()).max())
    t_ours, t_theirs = (median_seconds(f, args.runs, warmup=1) for f in (run_ours, run_theirs))
    tokens = args.batch * args.seq
    result = {
        "bench": "model_forward",
        "arch": args.arch,
        "batch": args.batch,
        "seq": args.seq,
        "ccrun_s": round(t_ours, 4),
        "transformers_torch_s": round(t_theirs, 4),
        "speedup": round(t_theirs / t_ours, 2),
        "ccrun_tokens_per_s": round(tokens / t_ours),
        "max_abs_logit_diff": diff,
        "device": jax.devices()[0].device_kind,
        "torch_threads": torch.get_num_threads(),
        "machine": machine(),
        "versions": {"jax": jax.__version__, "torch": torch.__version__},
    }
    print(f"ccrun (Flax, jit)      {t_ours * 1000:8.1f} ms  {tokens / t_ours:8.0f} tok/s")
    print(f"transformers (PyTorch) {t_theirs * 1000:8.1f} ms  {tokens / t_theirs:8.0f} tok/s")
    print(f"max |logit diff| {diff:.2e}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
