"""LoRA (Hu et al. 2021, as PEFT implements it): a low-rank update beside a frozen linear layer.

A targeted `nnx.Linear` becomes a `LoRALinear`: the same layer (its `kernel` and `bias` keep their
paths, so a checkpoint's base weights load and export unchanged) plus two `nnx.LoRAParam`s,
`lora_a` [in, r] and `lora_b` [r, out]:

    y = x @ W + b + dropout(x) @ A @ B * (alpha / r)

PEFT's initialisation: A is Kaiming-uniform (bound 1/sqrt(in)), B is zero, so a fresh adapter
changes nothing. `nnx.LoRAParam` is an `nnx.Param` subclass: `nnx.split(model, nnx.LoRAParam, ...)`
separates the adapters (what trains) from the base (what stays frozen).

The models call every projection through `project(layer, x, deterministic=, rngs=)`: a plain
Linear as it is, a LoRALinear with its dropout (which draws from the Rngs of the call, as every
dropout in these models does; the model holds no RNG state).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx


class LoRALinear(nnx.Linear):
    """An nnx.Linear with a trainable rank-`rank` update scaled by `alpha / rank`."""

    def __init__(self, base: nnx.Linear, *, rank: int, alpha: float, dropout: float, rngs: nnx.Rngs):
        # Build as an empty Linear of the same shape (the kernel is abstract: no memory, no
        # random draw), then take the base's own variables, so their paths and values stay.
        shape = dict(use_bias=base.use_bias, dtype=base.dtype, param_dtype=base.param_dtype, precision=base.precision)
        abstract = nnx.eval_shape(lambda: nnx.Linear(base.in_features, base.out_features, **shape, rngs=nnx.Rngs(0)))
        vars(self).update({k: v for k, v in vars(abstract).items() if k not in ("kernel", "bias")})
        self.kernel = base.kernel
        self.bias = base.bias if base.use_bias else nnx.data(None)
        bound = 1.0 / math.sqrt(base.in_features)  # kaiming_uniform(a=sqrt(5)), PEFT's and torch's default
        self.lora_a = nnx.LoRAParam(
            jax.random.uniform(rngs.params(), (base.in_features, rank), base.param_dtype, -bound, bound)
        )
        self.lora_b = nnx.LoRAParam(jnp.zeros((rank, base.out_features), base.param_dtype))
        self.rank, self.alpha = rank, alpha
        self.scale = alpha / rank
        self.lora_dropout = nnx.Dropout(dropout)

    def __call__(self, inputs, *, deterministic: bool = True, rngs: nnx.Rngs | None = None):
        y = super().__call__(inputs)
        x = self.lora_dropout(inputs, deterministic=deterministic, rngs=rngs)
        dtype = self.dtype or y.dtype
        a, b = self.lora_a[...].astype(dtype), self.lora_b[...].astype(dtype)
        return y + ((x.astype(dtype) @ a) @ b) * jnp.asarray(self.scale, dtype)


def project(layer: nnx.Linear, x: jax.Array, *, deterministic: bool = True, rngs: Any = None) -> jax.Array:
    """`layer(x)`, with the LoRA dropout's arguments when the layer carries an adapter."""
    if isinstance(layer, LoRALinear):
        return layer(x, deterministic=deterministic, rngs=rngs)
    return layer(x)
