"""A launch's plan, known before anything runs: the model's size, tokens per step, steps, the
learning-rate schedule's shape, memory per device, the inputs, and what will be written.

`make_plan(recipe, ...)` is a pure function of the resolved recipe (plus the preflight's input
statuses and, for a pretrained model, its config.json when one is on disk): no jax, no
transformers, nothing that touches a device, so `ccrun run --dry-run` stays instant. Every launch
writes it as plan.json (runner.track.rundir.PLAN_FILE); `render` prints it.

Memory per device follows what the train step (runner/train/step.py) keeps: parameters in
`model.dtype.params`; the optimizer's state in the same dtype (AdamW: two moments; Adafactor:
row and column sums of the second moment for matrices whose two largest dimensions are at least
`min_dim_size_to_factor`, the full second moment otherwise, plus a momentum copy if set);
fp32 gradients (summed over micro-batches); the micro-batch's activations; the step's batch.
Parameters, optimizer state and gradients are split over `train.mesh.fsdp`, activations over
every device. The activation coefficients are XLA's own, measured with
`Compiled.memory_analysis()` on the compiled train step (tests/test_plan.py checks the estimate
stays within 25% of it): per layer and token 14·d_model + 3·d_ff activation values and 12 bytes
per attention score (fp32 scores, probabilities and their gradient: the XLA attention path
materialises [heads, T, T]); 8 bytes per logit (fp32 logits and their gradient). On CPU, XLA
computes bf16 in fp32, so activations take 4 bytes per value there whatever the compute dtype.

`train.remat` (runner.model.remat) changes what the blocks keep for the backward pass: none keeps
every layer's activations (above); block keeps each layer's input (d_model values per token); dots
keeps the input and the matmul outputs the backward pass needs (q, k, v and the attention output
projection: 4·d_model; the MLP's first matmul: d_ff), 5·d_model + d_ff values per token. Those are
XLA's exact growth per layer on the compiled step. On top, the backward pass recomputes one layer
at a time; XLA's peak then holds one layer's activations (as above) in place of two layers' kept
values: (n_layer - 2) · kept + one layer, fitted on six configurations (the estimate is 1.01-1.13
times XLA's total for both policies; tests/test_plan.py checks the 25%).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .recipe.base import looks_local
from .recipe.schema_model import LLAMA_FAMILY

GIB = 1 << 30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# XLA's bytes per activation, measured on the compiled train step (see the module docstring).
VALUES_PER_D, VALUES_PER_FF = 14, 3  # per layer and token, in the activation dtype
SCORE_BYTES = 12  # per attention score [heads, T, T] per layer (XLA path)
# values per token each layer keeps for the backward pass under train.remat: (per d_model, per d_ff)
REMAT_SAVED = {"block": (1, 0), "dots": (5, 1)}
LOGIT_BYTES = 8  # per logit [T, vocab]
GRAD_BYTES = 4  # gradients are summed in fp32
BATCH_BYTES = 8  # input_ids int32 + loss_weights fp32 per token (packed rows: + segment ids, positions)

# The seed's checkpoints as published on the hub (config.json), for a plan made before they are
# downloaded: GPT-Neo 125M / 1.3B / 2.7B and GPT-2 small (REFERENCE.md).
KNOWN_CONFIGS = {
    "EleutherAI/gpt-neo-125M": {"arch": "gpt-neo", "n_layer": 12, "d_model": 768, "n_head": 12, "vocab_size": 50257,
                                "max_positions": 2048},
    "EleutherAI/gpt-neo-1.3B": {"arch": "gpt-neo", "n_layer": 24, "d_model": 2048, "n_head": 16, "vocab_size": 50257,
                                "max_positions": 2048},
    "EleutherAI/gpt-neo-2.7B": {"arch": "gpt-neo", "n_layer": 32, "d_model": 2560, "n_head": 20, "vocab_size": 50257,
                                "max_positions": 2048},
    "openai-community/gpt2": {"arch": "gpt2", "n_layer": 12, "d_model": 768, "n_head": 12, "vocab_size": 50257,
                              "max_positions": 1024},
}
KNOWN_CONFIGS["gpt2"] = KNOWN_CONFIGS["openai-community/gpt2"]
# The LoRA recipe's base (Qwen/Qwen2.5-Coder-0.5B's config.json on the hub): grouped-query
# attention with 2 key/value heads, q/k/v biases, tied embeddings.
KNOWN_CONFIGS["Qwen/Qwen2.5-Coder-0.5B"] = {
    "arch": "qwen2", "n_layer": 24, "d_model": 896, "n_head": 14, "n_kv_head": 2, "d_ff": 4864,
    "vocab_size": 151936, "max_positions": 32768, "tie_embeddings": True, "qkv_bias": True,
}
# config.json's names for our sizes (runner.model.hf.ARCHS holds the full mapping; reading it imports jax)
HF_FIELDS = {
    "gpt_neo": ("gpt-neo", {"n_layer": "num_layers", "d_model": "hidden_size", "n_head": "num_heads",
                            "d_ff": "intermediate_size", "vocab_size": "vocab_size",
                            "max_positions": "max_position_embeddings"}),
    "gpt2": ("gpt2", {"n_layer": "n_layer", "d_model": "n_embd", "n_head": "n_head", "d_ff": "n_inner",
                      "vocab_size": "vocab_size", "max_positions": "n_positions"}),
    **{
        model_type: (model_type, {"n_layer": "num_hidden_layers", "d_model": "hidden_size",
                                  "n_head": "num_attention_heads", "n_kv_head": "num_key_value_heads",
                                  "d_ff": "intermediate_size", "vocab_size": "vocab_size",
                                  "max_positions": "max_position_embeddings"})
        for model_type in LLAMA_FAMILY
    },
}


# --- the model's sizes ---------------------------------------------------------------------------


def model_sizes(recipe: Any) -> tuple[dict | None, str]:
    """(sizes {arch, n_layer, d_model, n_head, d_ff, vocab_size, max_positions}, where they come
    from); (None, why) when they are unknown before the run."""
    spec = recipe.model
    if spec.init == "scratch":
        names = {"n_layer", "d_model", "n_head", "d_ff", "vocab_size", "max_positions"}
        if spec.arch in LLAMA_FAMILY:
            names |= {"n_kv_head", "tie_embeddings", "qkv_bias"}
        sizes = {"arch": spec.arch, **spec.config.model_dump(include=names)}
        source = "model.config"
        if sizes["vocab_size"] is None:
            train = recipe.tokenizer.train
            if train is None:
                return None, "unknown (the vocabulary is the tokenizer's, known when it loads)"
            sizes["vocab_size"], source = train.vocab_size, "model.config, vocabulary at most tokenizer.train.vocab_size"
        return sizes, source
    config = _config_file(spec.checkpoint, spec.revision)
    if config is not None:
        sizes = _from_hf_config(config)
        if sizes is not None:
            return sizes, str(config)
    if spec.checkpoint in KNOWN_CONFIGS:
        sizes = dict(KNOWN_CONFIGS[spec.checkpoint])
        sizes.setdefault("d_ff", 4 * sizes["d_model"])  # GPT-Neo and GPT-2: 4·d_model
        return sizes, f"{spec.checkpoint}'s published config (not cached here)"
    return None, "unknown (checkpoint not cached)"


def _config_file(checkpoint: str, revision: str | None) -> Path | None:
    local = Path(os.path.expanduser(checkpoint))
    if local.is_dir() or looks_local(checkpoint):
        return local / "config.json" if (local / "config.json").is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(checkpoint, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - a malformed id, no cache: not cached
        return None
    return Path(hit) if isinstance(hit, str) else None


def _from_hf_config(path: Path) -> dict | None:
    try:
        raw = json.loads(path.read_text())
        arch, fields = HF_FIELDS[raw.get("model_type")]
        sizes = {"arch": arch, **{ours: raw.get(theirs) for ours, theirs in fields.items()}}
        if arch in LLAMA_FAMILY:  # transformers' defaults where config.json leaves them out
            sizes["n_kv_head"] = sizes["n_kv_head"] or sizes["n_head"]
            sizes["tie_embeddings"] = bool(raw.get("tie_word_embeddings", False))
            sizes["qkv_bias"] = arch == "qwen2" or bool(raw.get("attention_bias", False))
    except (OSError, ValueError, KeyError, AttributeError):
        return None
    sizes["d_ff"] = sizes["d_ff"] or 4 * sizes["d_model"]
    return sizes if all(isinstance(v, int) for k, v in sizes.items() if k != "arch") else None


def param_shapes(sizes: dict) -> list[tuple[int, ...]]:
    """Every parameter's shape, as runner.model.gpt_neo builds the network (the LM head is wte), or
    runner.model.llama (RMSNorm scales, grouped-query q/k/v, SwiGLU, an untied LM head if so)."""
    D, F, V, P = sizes["d_model"], sizes["d_ff"], sizes["vocab_size"], sizes["max_positions"]
    if sizes["arch"] in LLAMA_FAMILY:
        H = D // sizes["n_head"]
        q, kv = sizes["n_head"] * H, sizes["n_kv_head"] * H
        block = [(D,), (D, q), (D, kv), (D, kv)] + ([(q,), (kv,), (kv,)] if sizes["qkv_bias"] else [])
        block += [(q, D), (D,), (D, F), (D, F), (F, D)]  # o_proj, post-attention norm, gate, up, down
        if sizes["qkv_bias"] and sizes["arch"] == "llama":  # Llama's attention_bias: o_proj too (Qwen2: q, k, v only)
            block.append((D,))
        head = [] if sizes["tie_embeddings"] else [(D, V)]
        return [(V, D), *block * sizes["n_layer"], (D,), *head]
    qkv_bias = sizes["arch"] == "gpt2"
    block = [(D,), (D,)]  # ln_1
    block += [(D, D)] * 3 + ([(D,)] * 3 if qkv_bias else [])  # q, k, v
    block += [(D, D), (D,), (D,), (D,), (D, F), (F,), (F, D), (D,)]  # out_proj, ln_2, c_fc, c_proj
    return [(V, D), (P, D), *block * sizes["n_layer"], (D,), (D,)]


def linear_shapes(sizes: dict) -> dict[str, tuple[int, int]]:
    """(in, out) of each linear layer of a block, by the name `model.lora.targets` gives it."""
    D, F = sizes["d_model"], sizes["d_ff"]
    if sizes["arch"] in LLAMA_FAMILY:
        H = D // sizes["n_head"]
        q, kv = sizes["n_head"] * H, sizes["n_kv_head"] * H
        return {"q_proj": (D, q), "k_proj": (D, kv), "v_proj": (D, kv), "o_proj": (q, D), "gate_proj": (D, F),
                "up_proj": (D, F), "down_proj": (F, D)}
    return {"q_proj": (D, D), "k_proj": (D, D), "v_proj": (D, D), "out_proj": (D, D), "c_fc": (D, F), "c_proj": (F, D)}


def lora_shapes(sizes: dict, lora: Any) -> list[tuple[int, int]]:
    """The LoRA adapters' shapes: A [in, rank] and B [rank, out] per targeted layer and block."""
    linears = linear_shapes(sizes)
    per_block = [shape for t in lora.targets for shape in ((linears[t][0], lora.rank), (lora.rank, linears[t][1]))]
    return per_block * sizes["n_layer"]


def param_count(sizes: dict) -> int:
    total = 0
    for shape in param_shapes(sizes):
        n = 1
        for d in shape:
            n *= d
        total += n
    return total


# --- memory per device ---------------------------------------------------------------------------


def guess_platform() -> str:
    """cpu, gpu or tpu, without starting jax: JAX_PLATFORMS when set, else the devices present."""
    first = os.environ.get("JAX_PLATFORMS", "").split(",")[0].strip().lower()
    if first:
        return {"cuda": "gpu", "rocm": "gpu"}.get(first, first)
    if Path("/dev/nvidiactl").exists() or Path("/dev/kfd").exists():
        return "gpu"
    if Path("/dev/accel0").exists():
        return "tpu"
    return "cpu"


def _size(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def optimizer_values(spec: Any, shapes: Sequence[tuple[int, ...]]) -> int:
    """Values of optimizer state the recipe's optimizer keeps (runner.train.optim, optax's layouts)."""
    n = sum(_size(s) for s in shapes)
    if spec.type == "adamw":
        return 2 * n  # mu, nu
    total = 0
    for shape in shapes:  # optax.scale_by_factored_rms: row and column sums when factored
        dims = sorted(shape)
        if spec.factored and len(shape) >= 2 and dims[-2] >= spec.min_dim_size_to_factor:
            total += _size(shape) // dims[-1] + _size(shape) // dims[-2] + 1  # v_row, v_col, a (1,) v
        else:
            total += _size(shape) + 2  # v, (1,) v_row and v_col
    return total + (n if spec.momentum is not None else 0)


def mesh_devices(mesh: Any) -> tuple[int, int, str]:
    """(data, fsdp, note): the mesh's sizes, an axis of -1 (all devices left over) counted as 1."""
    data, fsdp = max(mesh.data, 1), max(mesh.fsdp, 1)
    note = f"mesh data {mesh.data} × fsdp {mesh.fsdp}: {data * fsdp} device(s)"
    if -1 in (mesh.data, mesh.fsdp):
        note += " (-1 counted as 1; more devices divide the activations)"
    return data, fsdp, note


def memory_estimate(recipe: Any, sizes: dict, *, platform: str = "cpu") -> dict:
    """Bytes per device of one training step: parameters, optimizer, gradients, activations,
    batch and their total, with the assumptions they rest on."""
    train, spec = recipe.train, recipe.model
    data, fsdp, devices = mesh_devices(train.mesh)
    shapes = param_shapes(sizes)
    n = sum(_size(s) for s in shapes)
    p_bytes = DTYPE_BYTES[spec.dtype.params]
    compute = spec.dtype.compute
    act_bytes = 4 if platform == "cpu" else DTYPE_BYTES[compute]
    rows = max(1, train.micro_batch_size // (data * fsdp))  # micro-batch rows on one device
    T, D, F, L = recipe.data.seq_len, sizes["d_model"], sizes["d_ff"], sizes["n_layer"]
    H, V = sizes["n_head"], sizes["vocab_size"]
    packed = recipe.data.format.type == "apps" and getattr(recipe.data.format, "layout", "row") == "packed"
    # cuDNN's fused attention (no [T, T] scores) runs on GPU for bf16 with head_dim % 8 == 0, on the
    # causal path only (runner.model.gpt_neo: no dropout, no packed segments)
    fused = (platform == "gpu" and compute != "float32" and (D // H) % 8 == 0 and not packed
             and not (spec.dropout or 0) > 0)
    scores = 8 * H if fused else SCORE_BYTES * H * T  # bytes per token per layer
    layer = (VALUES_PER_D * D + VALUES_PER_FF * F) * act_bytes + scores  # one layer's activations, per token
    if train.remat == "none":
        kept = L * layer
    else:  # what every layer keeps, and one layer recomputed at a time (module docstring)
        per_d, per_ff = REMAT_SAVED[train.remat]
        kept = max(L - 2, 0) * (per_d * D + per_ff * F) * act_bytes + layer
    activations = rows * T * (kept + LOGIT_BYTES * V)
    trainable, frozen_bytes = n, 0
    if spec.lora is not None:  # the optimizer and gradients hold the adapters; the base sits in the compute dtype
        shapes = lora_shapes(sizes, spec.lora)
        trainable, frozen_bytes = sum(_size(s) for s in shapes), n * DTYPE_BYTES[compute]
    out = {
        "devices": devices,
        "platform": platform,
        "attention": "fused (cuDNN)" if fused else "XLA ([heads, T, T] scores)",
        "micro_batch_per_device": rows,
        "remat": train.remat,
        "parameters": (frozen_bytes or n * p_bytes) // fsdp + (trainable * p_bytes // fsdp if frozen_bytes else 0),
        "optimizer": optimizer_values(recipe.optimizer, shapes) * p_bytes // fsdp,
        "gradients": trainable * GRAD_BYTES // fsdp,
        "activations": activations,
        "batch": train.batch_size // (data * fsdp) * T * (BATCH_BYTES + (8 if packed else 0)),
    }
    out["total"] = sum(out[k] for k in ("parameters", "optimizer", "gradients", "activations", "batch"))
    return out


# --- steps and schedule --------------------------------------------------------------------------


def _lr(x: float) -> str:
    return f"{x:g}"


def schedule_shape(spec: Any, steps: int | None) -> str:
    """e.g. 'warmup 0→3e-05 over 800 steps, linear to 0 at step 5000'."""
    if spec.type == "constant":
        return f"constant {_lr(spec.peak_lr)}"
    head = (f"warmup {_lr(spec.init_lr)}→{_lr(spec.peak_lr)} over {spec.warmup_steps} steps, "
            if spec.warmup_steps else f"from {_lr(spec.peak_lr)}, ")
    if spec.type == "warmup_linear":
        return head + f"linear to {_lr(spec.end_lr)} at " + (f"step {steps}" if steps else "the last step")
    end = spec.warmup_steps + spec.decay_steps
    text = head + f"cosine to {_lr(spec.end_lr)} at step {end}"
    if steps is not None and end < steps:
        text += f", then flat to step {steps}"
    elif steps is not None and end > steps:
        text += f" (the run stops at step {steps}, before the decay ends)"
    return text


# --- the plan ------------------------------------------------------------------------------------


def make_plan(recipe: Any, *, inputs: Sequence[Any] = (), point: dict | None = None, run_dir: str | None = None,
              platform: str | None = None) -> dict:
    """The plan of one run (a JSON-able dict). `inputs`: runner.preflight statuses; `point`: the
    sweep point's values; `run_dir`: where it is (or a pattern of where it will be)."""
    platform = platform or guess_platform()
    sizes, source = model_sizes(recipe)
    plan: dict[str, Any] = {"name": recipe.name, "point": point or {}, "run_dir": run_dir}
    model = {"arch": recipe.model.arch, "init": recipe.model.init, "checkpoint": recipe.model.checkpoint,
             "sizes_from": source, "dtype": recipe.model.dtype.model_dump()}
    if sizes is not None:
        model.update(sizes=sizes, parameters=param_count(sizes))
        lora = recipe.model.lora
        if lora is not None:
            model["lora"] = {"rank": lora.rank, "alpha": lora.alpha, "targets": list(lora.targets),
                             "trainable": sum(a * b for a, b in lora_shapes(sizes, lora))}
    plan["model"] = model
    train = recipe.train
    if train is not None and recipe.data is not None:
        T = recipe.data.seq_len
        plan["tokens_per_step"] = train.batch_size * T
        plan["batch"] = {"batch_size": train.batch_size, "seq_len": T, "micro_batch_size": train.micro_batch_size,
                         "grad_accum_steps": train.grad_accum_steps}
        plan["steps"] = train.steps
        if train.steps is None:
            plan["steps_note"] = f"from epochs ({train.epochs:g}): known after the data stage"
        plan["schedule"] = schedule_shape(recipe.schedule, train.steps)
        if recipe.data.streaming:  # the shuffle buffer's blocks (int32 ids + uint8 weights) in host memory
            plan["stream"] = {"shuffle_buffer": recipe.data.shuffle_buffer,
                              "buffer_bytes": recipe.data.shuffle_buffer * T * 5, "dedup": recipe.data.dedup.type}
        if sizes is not None:
            plan["memory"] = memory_estimate(recipe, sizes, platform=platform)
            if platform != "gpu":  # planned here, maybe run on a GPU (bf16 activations, fused attention)
                on_gpu = memory_estimate(recipe, sizes, platform="gpu")["total"]
                if on_gpu != plan["memory"]["total"]:
                    plan["memory"]["total_on_gpu"] = on_gpu
    plan["inputs"] = [{"name": s.input.name, "kind": s.input.kind, "uses": list(s.input.uses), "state": s.state,
                       "detail": s.detail, **({"fix": s.input.fix} if s.missing else {})} for s in inputs]
    plan["writes"] = _writes(recipe, point)
    return plan


def _writes(recipe: Any, point: dict | None) -> list[str]:
    files = (["sweep.json"] if point else []) + ["plan.json", "provenance.json", "recipe.yaml", "overrides.yaml",
                                                 "resolved.yaml"]
    if recipe.data is not None:
        files.append("data/")
    if recipe.train is not None:
        files += ["metrics.jsonl", "checkpoints/", "plots/"]
    files += ["final/"] + [f"eval/{e.name}/" for e in recipe.evals] + ["summary.json"]
    return files


def run_dir_pattern(runs_root: str | os.PathLike, recipe: Any, digest: str, label: str | None = None) -> str:
    """Where a launch's run directory goes (runner.track.rundir.RunDir.create names it)."""
    return str(Path(runs_root) / recipe.name / f"<utc-time>-{digest[:8]}{'-' + label if label else ''}")


# --- printing ------------------------------------------------------------------------------------


def _gib(n: int) -> str:
    if n >= GIB:
        return f"{n / GIB:.2f} GiB"
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n / 1024:.0f} KiB"


def groups(plan: dict) -> list[tuple[str, list[str]]]:
    """(label, lines) of one plan, in print order."""
    out: list[tuple[str, list[str]]] = []
    m = plan["model"]
    what = f"{m['arch']} {m['init']}" + (f" {m['checkpoint']}" if m.get("checkpoint") else "")
    if "parameters" in m:
        s = m["sizes"]
        out.append(("model", [f"{what}: {m['parameters'] / 1e6:.2f}M parameters ({s['n_layer']} layers, d_model "
                              f"{s['d_model']}, {s['n_head']} heads, vocab {s['vocab_size']})",
                              f"sizes from {m['sizes_from']}"]
                    + ([f"LoRA rank {m['lora']['rank']} on {', '.join(m['lora']['targets'])}: "
                        f"{m['lora']['trainable'] / 1e6:.3f}M trainable parameters, the base frozen"]
                       if "lora" in m else [])))
    else:
        out.append(("model", [f"{what}: parameters {m['sizes_from']}"]))
    if "tokens_per_step" in plan:
        b = plan["batch"]
        out.append(("tokens/step", [f"{plan['tokens_per_step']:,} (batch {b['batch_size']} × seq_len {b['seq_len']}; "
                                    f"micro-batch {b['micro_batch_size']} × {b['grad_accum_steps']} accumulated)"]))
        out.append(("steps", [str(plan["steps"]) if plan["steps"] is not None else plan["steps_note"]]))
        out.append(("schedule", [plan["schedule"]]))
        if "stream" in plan:
            st = plan["stream"]
            out.append(("data", [f"streamed while training: shuffle buffer {st['shuffle_buffer']:,} blocks "
                                 f"({st['buffer_bytes'] / 2**20:,.1f} MiB of host memory), {st['dedup']} dedup per pass; "
                                 "the data stage writes the tokenizer and validation blocks only"]))
        mem = plan.get("memory")
        if mem is None:
            out.append(("memory", ["unknown until the model's sizes are (see model)"]))
        else:
            dtype = m["dtype"]
            out.append(("memory", [
                f"~{_gib(mem['total'])} per device: parameters {_gib(mem['parameters'])}, optimizer "
                f"{_gib(mem['optimizer'])}, gradients {_gib(mem['gradients'])}, activations {_gib(mem['activations'])} "
                f"(micro-batch {mem['micro_batch_per_device']} per device, remat {mem.get('remat', 'none')}), "
                f"batch {_gib(mem['batch'])}",
                f"{mem['devices']}; {mem['platform']}; params {dtype['params']}, compute {dtype['compute']}; "
                f"attention {mem['attention']}"
                + (f"; on a GPU: ~{_gib(mem['total_on_gpu'])}" if "total_on_gpu" in mem else "")]))
    items = []
    for item in plan["inputs"]:
        text = f"{item['name']} ({', '.join(item['uses'])}): {item['state']}"
        if item["detail"]:
            text += f", {item['detail']}"
        if item.get("fix"):
            text += f"; {item['fix']}"
        items.append(text)
    out.append(("inputs", items or ["none outside the recipe"]))
    out.append(("writes", [f"{plan['run_dir']}/", ", ".join(plan["writes"])]))
    return out


def render(plans: Sequence[dict]) -> str:
    """The plans as printed: the first in full; each further sweep point where it differs, and
    its directory."""
    text: list[str] = []
    if len(plans) > 1:
        text.append(f"plan: {plans[0]['name']}, {len(plans)} runs (a sweep over {', '.join(plans[0]['point'])})")
    previous: list[tuple[str, list[str]]] | None = None
    for i, plan in enumerate(plans):
        rows = groups(plan)
        if plan["point"]:
            text.append(f"point {i}: " + ", ".join(f"{k}={v}" for k, v in plan["point"].items()))
        else:
            text.append(f"plan: {plan['name']}")
        for label, values in rows:
            if previous is not None and (label, values) in previous:
                continue
            if previous is not None and label == "writes":
                values = values[:1]
            for j, value in enumerate(values):
                text.append(f"  {label if j == 0 else '':<12} {value}")
        previous = rows
    return "\n".join(text)
