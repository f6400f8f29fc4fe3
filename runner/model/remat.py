"""Activation checkpointing (rematerialisation) per transformer block: the recipe's `train.remat`.

Under `jax.grad` the backward pass needs the forward's activations. Per block, `policy`:
- none: keep them all (XLA's own choice; the most memory, no recompute);
- block: keep each block's input [B, T, D] only and recompute the block's forward in the backward
  pass (`jax.checkpoint` with no policy: about one more forward, a third more compute);
- dots: keep the outputs of the matmuls without batch dimensions — the q/k/v/out projections and
  the MLP's two matmuls, which the model runs on flattened [B*T, D] rows — and recompute the rest
  (LayerNorms, gelu, attention scores and softmax, whose einsums carry batch dimensions):
  `jax.checkpoint_policies.dots_with_no_batch_dims_saveable`, the matmuls are not redone.

XLA:CPU expands optimization barriers (jax.checkpoint's guard against common-subexpression
elimination) before its own CSE pass, which then merges the backward pass's recomputation back
into the forward and keeps every activation, as if there were no checkpoint. A jitted function
that differentiates a checkpointed model therefore compiles with `compiler_options()`, which skips
that one pass on CPU (measured in tests/model/test_remat.py: without it, block and dots take the
same memory as none). GPUs and TPUs keep the barriers through CSE and need nothing.

The choice is a static attribute of the model (`GPTNeo.remat`), so `nnx.split(model)` puts it in
the graphdef and a train step built from that graphdef uses it. Without differentiation (eval, the
KV-cache sampler) a checkpointed block computes exactly what a plain one does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

# policy name → jax.checkpoint's `policy` (what the forward pass may keep); "none": no checkpoint.
POLICIES: dict[str, Callable[..., bool] | None] = {
    "block": None,  # save nothing inside the block: only its arguments survive to the backward pass
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
REMAT_CHOICES = ("none", *POLICIES)


def set_remat(model: Any, policy: str) -> Any:
    """Set the activation checkpointing of `model` (a runner.model.GPTNeo), in place, and return it:
    "none", "block" or "dots" (see the module docstring). Call it before `nnx.split(model)`: the
    graphdef carries the choice."""
    if policy not in REMAT_CHOICES:
        raise ValueError(f"remat must be one of {', '.join(REMAT_CHOICES)} (got {policy!r})")
    model.remat = policy
    return model


def checkpointed(run_block: Callable, policy: str) -> Callable:
    """`run_block(block, x, mask, rngs) → x` as it is (none) or under `nnx.remat` with the policy.
    nnx.remat carries the block's parameters and the dropout Rngs through jax.checkpoint; the
    recomputation draws the same dropout keys (they come from the Rngs state given as input)."""
    if policy == "none":
        return run_block
    return nnx.remat(run_block, policy=POLICIES[policy])


# The XLA:CPU pass that removes optimization barriers before CSE (see the module docstring).
CPU_BARRIER_EXPANDER = "cse_barrier_expander"


def compiler_options(backend: str | None = None) -> dict[str, str] | None:
    """`jax.jit(..., compiler_options=...)` for a differentiated step, so that checkpointing saves
    memory on `backend` (default: jax's default backend): on CPU, keep the barriers through CSE.
    The pass only removes barriers, so a step without checkpoints compiles to the same program."""
    if (backend or jax.default_backend()) == "cpu":
        return {"xla_disable_hlo_passes": CPU_BARRIER_EXPANDER}
    return None
