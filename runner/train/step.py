"""One jitted train step (gradient accumulation inside, via lax.scan) and an eval step.

The loss is token-weighted cross-entropy: logits[:, :-1] scored against input_ids[:, 1:] with
loss_weights[:, 1:] (the data stage's weights: 1 on the tokens to learn). Micro-batch losses and
gradients are summed and divided by the batch's total weight once, so accumulating 4 micro-batches
of 8 is the same update as one batch of 32.

A batch may also carry `segment_ids` and `positions` (packed APPS rows, see runner/data/pack.py):
the model then attends within each example only. Without them the model runs its causal path.

The model travels split, as NNX means it: `graphdef, params, frozen = split_trainable(model)`;
the steps take the nnx.State of the parameters that train and merge it with the graphdef (and the
frozen rest) inside the trace. `runner.model.load_params(model, params)` puts the result back into
a model. Without LoRA every parameter trains and `frozen` is None; with LoRA (`nnx.LoRAParam`
adapters, runner/model/lora.py) only the adapters train: the optimizer state and the gradients
hold them alone, and the frozen base enters the step as a plain (never donated) argument.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from ..model.lora import lora_layers, merge_split, split_lora
from ..model.remat import compiler_options as remat_compiler_options

BATCH_COLUMNS = ("input_ids", "loss_weights", "segment_ids", "positions")  # the last two optional


def _segments(batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    return {name: batch[name] for name in ("segment_ids", "positions") if name in batch}


def split_trainable(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State | None]:
    """(graphdef, what trains, what stays frozen or None): a model with LoRA adapters trains them
    alone (runner.model.lora.split_lora); any other model trains every parameter (its only state)."""
    if lora_layers(model):
        return split_lora(model)
    graphdef, params = nnx.split(model)
    return graphdef, params, None


def trainable_state(model: nnx.Module) -> nnx.State:
    """The parameters that train (and that checkpoints hold): the adapters of a LoRA model, else all."""
    return split_trainable(model)[1]


def uses_dropout(model: nnx.Module) -> bool:
    """Any dropout with a rate above 0 (the model's own, or the LoRA adapters')."""
    return any(isinstance(m, nnx.Dropout) and m.rate > 0 for _, m in nnx.iter_modules(model))


def _merge(graphdef: nnx.GraphDef, params: nnx.State, frozen: nnx.State | None) -> nnx.Module:
    return nnx.merge(graphdef, params) if frozen is None else merge_split(graphdef, params, frozen)


def weighted_ce(logits: jax.Array, ids: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sum of weighted token losses, sum of weights). logits [B, T, V] fp32, ids/weights [B, T]."""
    w = weights[:, 1:].astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1].astype(jnp.float32), ids[:, 1:])
    return jnp.sum(ce * w), jnp.sum(w)


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, *, dropout: bool,
                    out_shardings: Any = None):
    """step(params, opt_state, batch, key, frozen=None) → (params, opt_state, metrics); params is
    the nnx.State that trains, `frozen` the rest of the model (split_trainable) or None.

    batch: input_ids int32 [A, mb, T] and loss_weights [A, mb, T], A micro-batches of mb sequences;
    optionally segment_ids and positions int32 [A, mb, T]. params and opt_state are donated: the
    caller must use the returned ones.
    """

    def step(params, opt_state, batch, key, frozen=None):
        def micro(carry, xs):
            grad_sum, loss_sum, weight_sum = carry
            mb, k = xs
            ids, weights = mb["input_ids"], mb["loss_weights"]

            def loss_of(p):
                # The frozen base's Variables are made anew here, inside the differentiated function
                # (stop_gradient rebuilds the tree): the blocks' checkpointing (nnx.remat) puts state
                # back into every Variable of a block, and refuses one made at an outer trace.
                model = _merge(graphdef, p, None if frozen is None else jax.lax.stop_gradient(frozen))
                rngs = nnx.Rngs(dropout=k) if dropout else None
                logits = model(ids, **_segments(mb), deterministic=not dropout, rngs=rngs)
                return weighted_ce(logits, ids, weights)

            (s, n), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
            grad_sum = jax.tree_util.tree_map(jnp.add, grad_sum, grads)
            return (grad_sum, loss_sum + s, weight_sum + n), None

        micro_batches = batch["input_ids"].shape[0]
        keys = jax.random.split(key, micro_batches)
        zeros = jax.tree_util.tree_map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
        init = (zeros, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))
        columns = {name: batch[name] for name in BATCH_COLUMNS if name in batch}
        (grad_sum, loss_sum, weight_sum), _ = jax.lax.scan(micro, init, (columns, keys))
        denom = jnp.maximum(weight_sum, 1.0)
        grads = jax.tree_util.tree_map(lambda g: g / denom, grad_sum)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics = {"loss": loss_sum / denom, "grad_norm": grad_norm, "tokens": weight_sum}
        return params, opt_state, metrics

    kwargs = {"out_shardings": out_shardings} if out_shardings is not None else {}
    # The model's activation checkpointing (graphdef's `remat`) needs this on CPU (runner.model.remat).
    return jax.jit(step, donate_argnums=(0, 1), compiler_options=remat_compiler_options(), **kwargs)


def make_eval_step(graphdef: nnx.GraphDef):
    """eval(params, input_ids [B, T], loss_weights [B, T], segment_ids=None, positions=None,
    frozen=None) → (loss sum, weight sum); params (and frozen) as make_train_step's."""

    def evaluate(params, ids, weights, segment_ids=None, positions=None, frozen=None):
        segments = {"segment_ids": segment_ids, "positions": positions}
        logits = _merge(graphdef, params, frozen)(ids, **{k: v for k, v in segments.items() if v is not None})
        return weighted_ce(logits, ids, weights)

    return jax.jit(evaluate)
