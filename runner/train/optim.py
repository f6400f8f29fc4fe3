"""The recipe's optimizer and learning-rate schedule as optax objects.

Steps are optimizer updates (never micro-batches: the original's gradient accumulation advanced
its schedule per micro-step). Weight decay is decoupled and multiplied by the learning rate, for
AdamW and Adafactor alike (the original passed weight decay to an Adafactor that ignored it), and
is masked off biases, LayerNorm parameters and embeddings unless the recipe says otherwise.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from ..recipe.schema_optim import Adafactor, AdamW, Constant, WarmupCosine, WarmupLinear


def schedule(spec: Any, total_steps: int) -> optax.Schedule:
    """Learning rate as a function of the optimizer step (0-based)."""
    if isinstance(spec, WarmupCosine):
        # optax's decay_steps counts the warmup too; the recipe's counts the decay only.
        return optax.warmup_cosine_decay_schedule(
            init_value=spec.init_lr,
            peak_value=spec.peak_lr,
            warmup_steps=spec.warmup_steps,
            decay_steps=spec.warmup_steps + spec.decay_steps,
            end_value=spec.end_lr,
        )
    if isinstance(spec, WarmupLinear):
        decay = max(total_steps - spec.warmup_steps, 1)
        return optax.join_schedules(
            [
                optax.linear_schedule(spec.init_lr, spec.peak_lr, max(spec.warmup_steps, 1)),
                optax.linear_schedule(spec.peak_lr, spec.end_lr, decay),  # end_lr at the last step
            ],
            boundaries=[spec.warmup_steps],
        )
    if isinstance(spec, Constant):
        return optax.constant_schedule(spec.peak_lr)
    raise TypeError(f"unknown schedule {spec!r}")  # pragma: no cover - the schema admits no other


def _group(path: tuple) -> str:
    """'bias' | 'norm' | 'embedding' | 'weight' for a parameter path like ('blocks', 0, 'ln_1', 'scale')
    or ('layers', 0, 'input_layernorm', 'scale'). LoRA adapters are weights; an untied LM head too."""
    names = [str(getattr(p, "key", getattr(p, "name", p))) for p in path]
    if names and names[-1] == "value":  # an nnx Variable's payload
        names = names[:-1]
    if any(n in ("wte", "wpe", "embed_tokens") for n in names):  # GPT-Neo/GPT-2's, Llama's
        return "embedding"
    if any(n.startswith("ln_") or n.endswith("layernorm") or n == "norm" for n in names):  # LayerNorm, RMSNorm
        return "norm"
    if names and names[-1] == "bias":
        return "bias"
    return "weight"


def decay_mask(params: Any, exclude: list[str]) -> Any:
    """True where weight decay applies."""
    return jax.tree_util.tree_map_with_path(lambda path, _: _group(path) not in exclude, params)


def optimizer(spec: Any, lr: optax.Schedule) -> optax.GradientTransformation:
    """The recipe's optimizer, gradient clipping first."""
    mask = lambda params: decay_mask(params, list(spec.weight_decay_exclude))  # noqa: E731
    parts = []
    if spec.grad_clip is not None:
        parts.append(optax.clip_by_global_norm(spec.grad_clip))
    if isinstance(spec, AdamW):
        parts.append(optax.adamw(lr, b1=spec.b1, b2=spec.b2, eps=spec.eps, weight_decay=spec.weight_decay, mask=mask))
    elif isinstance(spec, Adafactor):
        parts.append(optax.scale_by_factored_rms(spec.factored, spec.decay_rate, 0, spec.min_dim_size_to_factor, spec.eps))
        if spec.clipping_threshold is not None:
            parts.append(optax.clip_by_block_rms(spec.clipping_threshold))
        if spec.multiply_by_parameter_scale:
            parts.append(optax.scale_by_param_block_rms())
        if spec.momentum is not None:
            parts.append(optax.ema(spec.momentum, debias=False))
        if spec.weight_decay:
            parts.append(optax.add_decayed_weights(spec.weight_decay, mask=mask))
        parts.append(optax.scale_by_learning_rate(lr))  # decay included: lr * (update + wd * param)
    else:  # pragma: no cover
        raise TypeError(f"unknown optimizer {spec!r}")
    return optax.chain(*parts)
