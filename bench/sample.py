"""Generation speed: ccrun's KV-cache sampler (jit) vs transformers' PyTorch `generate`, same tiny model.

    python bench/sample.py [--batch 8] [--prompt 64] [--new 128] [--d-model 128] [--layers 4] [--vocab 2048] [--runs 3]

Greedy decoding of exactly `--new` tokens for `--batch` prompts of `--prompt` tokens on both sides
(no early stop), fp32, the same GPT-Neo weights (ours exported, loaded by transformers), this
machine's CPU. The generated tokens are checked to be identical. Prints one JSON object as its last
line; `speedup` = PyTorch time / ccrun time (medians after a warm-up that includes compilation).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from common import machine, median_seconds  # bench/common.py (this script's directory is on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    import jax
    import numpy as np
    import torch
    from flax import nnx
    from transformers import AutoModelForCausalLM

    from runner.evals.sample import Sampling, generate
    from runner.model import GPTConfig, GPTNeo, save_pretrained

    layers = tuple("global" if i % 2 == 0 else "local" for i in range(args.layers))
    config = GPTConfig("gpt-neo", args.vocab, args.prompt + args.new + 64, args.d_model, args.layers, 4,
                       4 * args.d_model, layers, window_size=64, bos_token_id=0, eos_token_id=0)
    ours = GPTNeo(config, rngs=nnx.Rngs(0))
    with tempfile.TemporaryDirectory() as d:
        save_pretrained(ours, d)
        theirs = AutoModelForCausalLM.from_pretrained(d).eval()

    prompts = np.random.RandomState(0).randint(1, args.vocab, size=(args.batch, args.prompt))
    never = args.vocab  # an id no argmax can produce: both sides decode exactly --new tokens

    def run_ours():
        return generate(ours, prompts.tolist(), n=1, sampling=Sampling(max_new_tokens=args.new), eos_id=never,
                        batch_size=args.batch)

    def run_theirs():
        with torch.no_grad():
            return theirs.generate(torch.tensor(prompts), attention_mask=torch.ones_like(torch.tensor(prompts)),
                                   max_new_tokens=args.new, min_new_tokens=args.new, do_sample=False,
                                   eos_token_id=None, pad_token_id=0)

    mine = [s[0] for s in run_ours()]
    ref = run_theirs()[:, args.prompt :].tolist()
    same = mine == ref

    t_ours, t_theirs = median_seconds(run_ours, args.runs), median_seconds(run_theirs, args.runs)
    tokens = args.batch * args.new
    result = {
        "bench": "sample",
        "config": {"d_model": args.d_model, "layers": args.layers, "vocab": args.vocab, "batch": args.batch,
                   "prompt": args.prompt, "new_tokens": args.new},
        "identical_tokens": same,
        "ccrun_s": round(t_ours, 4),
        "transformers_s": round(t_theirs, 4),
        "ccrun_tokens_per_s": round(tokens / t_ours),
        "transformers_tokens_per_s": round(tokens / t_theirs),
        "speedup": round(t_theirs / t_ours, 2),
        "target_speedup": 2.0,
        "device": jax.devices()[0].device_kind,
        "torch_threads": torch.get_num_threads(),
        "machine": machine(),
    }
    print(f"ccrun sampler        {t_ours * 1000:8.1f} ms  {tokens / t_ours:8.0f} tok/s")
    print(f"transformers generate {t_theirs * 1000:8.1f} ms  {tokens / t_theirs:8.0f} tok/s  identical: {same}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
