"""GPT-Neo and GPT-2 in Flax NNX: one family, readable like a reference implementation.

Shapes: B batch, T query length, S key length (cache slots), D d_model, N heads, H head dim,
V vocabulary, F MLP width, L layers.

The two architectures differ in three places, all read from `GPTConfig`:
- GPT-Neo does NOT scale attention scores by 1/sqrt(H); GPT-2 does.
- GPT-Neo has no bias on q/k/v; GPT-2 has (its fused c_attn is split at load time, see hf.py).
- GPT-Neo alternates global and local (sliding window) attention layers; GPT-2 is global only.
Both: learned positions, pre-LayerNorm blocks, gelu_new MLP, LM head tied to the token embedding.

Numerics: parameters are stored in `param_dtype` (fp32), matmuls run in `dtype` (fp32 or bf16);
LayerNorm, attention logits, softmax and the output logits are fp32 whatever `dtype` is.

Memory: `remat` ("none" | "block" | "dots", set by runner.model.remat.set_remat) checkpoints each
block of the training forward (`__call__`); `extend` (the KV-cache path, never differentiated)
runs the blocks plainly.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from .lora import project
from .remat import checkpointed

Attention = Literal["auto", "xla", "cudnn"]

ACTIVATIONS = {
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),  # tanh approximation (GPT-2, GPT-Neo)
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """Everything that decides the network's shape and arithmetic."""

    arch: Literal["gpt-neo", "gpt2"]
    vocab_size: int
    max_positions: int
    d_model: int
    n_layer: int
    n_head: int
    d_ff: int
    attention_layers: tuple[str, ...]  # "global" | "local", one per layer
    window_size: int = 256  # local layers see this many positions, their own included
    activation: str = "gelu_new"
    layer_norm_eps: float = 1e-5
    embd_dropout: float = 0.0
    attn_dropout: float = 0.0
    resid_dropout: float = 0.0
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    def __post_init__(self):
        if self.arch not in ("gpt-neo", "gpt2"):
            raise ValueError(f"arch must be gpt-neo or gpt2 (got {self.arch!r})")
        if self.d_model % self.n_head:
            raise ValueError(f"n_head ({self.n_head}) must divide d_model ({self.d_model})")
        if len(self.attention_layers) != self.n_layer:
            raise ValueError(f"attention_layers has {len(self.attention_layers)} entries for {self.n_layer} layers")
        if bad := set(self.attention_layers) - {"global", "local"}:
            raise ValueError(f"attention_layers: unknown kinds {sorted(bad)}")
        if self.arch == "gpt2" and "local" in self.attention_layers:
            raise ValueError("gpt2 has no local attention layers")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} is not supported (one of {', '.join(ACTIVATIONS)})")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def attention_scale(self) -> float:
        return 1.0 / math.sqrt(self.head_dim) if self.arch == "gpt2" else 1.0  # GPT-Neo: unscaled

    @property
    def qkv_bias(self) -> bool:
        return self.arch == "gpt2"

    def num_params(self, *, embeddings: bool = True) -> int:
        """Parameter count (tied LM head counted once); without position embeddings if not `embeddings`."""
        D, F, L = self.d_model, self.d_ff, self.n_layer
        qkv = 3 * D * D + (3 * D if self.qkv_bias else 0)
        block = 2 * 2 * D + qkv + D * D + D + D * F + F + F * D + D
        total = self.vocab_size * D + L * block + 2 * D
        return total + (self.max_positions * D if embeddings else 0)


@flax.struct.dataclass
class KVCache:
    """Pre-allocated keys and values for decoding. Every row fills the same slots; rows differ in
    which slots hold real tokens (left padding) and in the positions of those tokens."""

    keys: tuple[jax.Array, ...]  # per layer [B, S, N, H]
    values: tuple[jax.Array, ...]  # per layer [B, S, N, H]
    valid: jax.Array  # [B, S] bool: the slot holds a real token
    positions: jax.Array  # [B, S] int32: position of that token in its row
    length: jax.Array  # [] int32: slots written so far


def empty_cache(batch_size: int, max_length: int, n_layer: int, heads: int, head_dim: int, dtype) -> KVCache:
    """A cache with room for `max_length` tokens per row: `heads` key/value heads per layer."""
    shape = (batch_size, max_length, heads, head_dim)
    return KVCache(
        keys=tuple(jnp.zeros(shape, dtype) for _ in range(n_layer)),
        values=tuple(jnp.zeros(shape, dtype) for _ in range(n_layer)),
        valid=jnp.zeros((batch_size, max_length), bool),
        positions=jnp.zeros((batch_size, max_length), jnp.int32),
        length=jnp.zeros((), jnp.int32),
    )


# Positions of the tokens of a row, shared by every model family (GPT-Neo's learned positions and
# Llama's rotary ones mean the same thing by them).


def segment_positions(segment_ids: jax.Array) -> jax.Array:
    """[B, T] → [B, T]: packed rows, positions restarting at 0 where the segment id changes."""
    slots = jnp.arange(segment_ids.shape[1])
    starts = jnp.concatenate(
        [jnp.ones_like(segment_ids[:, :1], bool), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1
    )
    return slots - jax.lax.cummax(jnp.where(starts, slots, 0), axis=1)


def real_positions(valid: jax.Array) -> jax.Array:
    """[B, T] bool → [B, T]: padded rows, positions counting real tokens only (left padding works)."""
    return jnp.maximum(jnp.cumsum(valid, axis=1) - 1, 0)


def next_positions(cache_valid: jax.Array, new_valid: jax.Array) -> jax.Array:
    """Positions [B, T] int32 of T new slots after the real tokens a cache already holds."""
    seen = jnp.sum(cache_valid, axis=1, keepdims=True)  # [B, 1] real tokens so far
    return jnp.maximum(seen + jnp.cumsum(new_valid, axis=1) - 1, 0).astype(jnp.int32)


def attention_implementation(attention: str, dtype, head_dim: int) -> str:
    """The recipe's choice, or for "auto": cuDNN's fused kernel on a GPU in bf16/fp16 (head_dim a
    multiple of 8), XLA otherwise."""
    if attention != "auto":
        return attention
    fast = dtype in (jnp.bfloat16, jnp.float16) and head_dim % 8 == 0
    return "cudnn" if fast and jax.default_backend() == "gpu" else "xla"


def _normal(std: float):
    return jax.nn.initializers.normal(stddev=std)


class SelfAttention(nnx.Module):
    def __init__(self, config: GPTConfig, layer: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        D = config.d_model
        dense = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        init = _normal(0.02)
        # GPT-2 scratch init: residual projections scaled down by the depth.
        out_init = _normal(0.02 / math.sqrt(2 * config.n_layer))
        self.q_proj = nnx.Linear(D, D, use_bias=config.qkv_bias, kernel_init=init, **dense)
        self.k_proj = nnx.Linear(D, D, use_bias=config.qkv_bias, kernel_init=init, **dense)
        self.v_proj = nnx.Linear(D, D, use_bias=config.qkv_bias, kernel_init=init, **dense)
        self.out_proj = nnx.Linear(D, D, use_bias=True, kernel_init=out_init, **dense)
        # Dropout draws from the rngs passed to each call, so the model itself holds no RNG state.
        self.attn_dropout = nnx.Dropout(config.attn_dropout)
        self.resid_dropout = nnx.Dropout(config.resid_dropout)
        self.local = config.attention_layers[layer] == "local"
        self.n_head, self.head_dim = config.n_head, config.head_dim
        self.scale = config.attention_scale
        self.window = config.window_size

    def __call__(self, x, *, mask, implementation, deterministic, rngs=None, cache=None):
        """x [B, T, D] → [B, T, D]. `mask` [B, 1, T, S] bool or None (causal, every slot real).
        With `cache` = (keys, values, start), the new keys/values are written at slot `start`."""
        B, T, D = x.shape
        # Projections on [B*T, D]: XLA's CPU backward computes weight gradients over one flat
        # contraction dimension about twice as fast as over (B, T).
        flat = x.reshape(B * T, D)
        # project(): a LoRA adapter's dropout takes the call's deterministic and rngs (lora.py).
        lin = dict(deterministic=deterministic, rngs=rngs)
        q = project(self.q_proj, flat, **lin).reshape(B, T, self.n_head, self.head_dim)  # [B, T, N, H]
        k = project(self.k_proj, flat, **lin).reshape(B, T, self.n_head, self.head_dim)
        v = project(self.v_proj, flat, **lin).reshape(B, T, self.n_head, self.head_dim)
        new_cache = None
        if cache is not None:
            keys, values, start = cache
            keys = jax.lax.dynamic_update_slice(keys, k.astype(keys.dtype), (0, start, 0, 0))  # [B, S, N, H]
            values = jax.lax.dynamic_update_slice(values, v.astype(values.dtype), (0, start, 0, 0))
            k, v, new_cache = keys, values, (keys, values)
        # bf16 q and k go into the score product as they are: every path multiplies them with fp32
        # accumulation (XLA: BF16_BF16_F32; cuDNN: fp32 accumulators; dropout: preferred fp32), and a
        # bf16 x bf16 product is exact in fp32, so the scores are transformers' GPT-Neo's (which
        # casts q and k to fp32 first) up to summation order. Casting here would only take bf16
        # GPT-Neo off the fused cuDNN kernel. Measured in tests/model/test_bf16.py.
        dropout = self.attn_dropout.rate > 0 and not deterministic
        if dropout:
            y = self._attend_with_dropout(q, k, v, mask, rngs)
        elif mask is None:
            # Training shape: causal, and a sliding window on local layers; fused kernels apply both.
            window = (self.window - 1, 0) if self.local else None
            y = jax.nn.dot_product_attention(
                q, k, v, scale=self.scale, is_causal=True, local_window_size=window, implementation=implementation
            )
        else:
            y = jax.nn.dot_product_attention(q, k, v, mask=mask, scale=self.scale, implementation="xla")
        y = project(self.out_proj, y.reshape(B * T, -1), **lin).reshape(B, T, -1)
        return self.resid_dropout(y, deterministic=deterministic, rngs=rngs), new_cache

    def _attend_with_dropout(self, q, k, v, mask, rngs):
        """Attention with dropout on the probabilities (no fused kernel offers it)."""
        T, S = q.shape[1], k.shape[1]
        logits = jnp.einsum("btnh,bsnh->bnts", q, k, preferred_element_type=jnp.float32) * self.scale  # [B, N, T, S]
        if mask is None:
            mask = _causal_mask(T, S, self.window if self.local else None)[None, None]
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
        probs = self.attn_dropout(jax.nn.softmax(logits, axis=-1), deterministic=False, rngs=rngs).astype(v.dtype)
        return jnp.einsum("bnts,bsnh->btnh", probs, v)


def _causal_mask(T: int, S: int, window: int | None) -> jax.Array:
    """[T, S] bool for queries at the last T of S positions."""
    q = jnp.arange(T)[:, None] + (S - T)
    k = jnp.arange(S)[None, :]
    allowed = k <= q
    if window is not None:
        allowed &= q - k < window
    return allowed


class MLP(nnx.Module):
    def __init__(self, config: GPTConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        dense = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.c_fc = nnx.Linear(config.d_model, config.d_ff, kernel_init=_normal(0.02), **dense)
        out_init = _normal(0.02 / math.sqrt(2 * config.n_layer))
        self.c_proj = nnx.Linear(config.d_ff, config.d_model, kernel_init=out_init, **dense)
        self.dropout = nnx.Dropout(config.resid_dropout)
        self.activation = config.activation

    def __call__(self, x, *, deterministic, rngs=None):
        B, T, D = x.shape
        lin = dict(deterministic=deterministic, rngs=rngs)  # for a LoRA adapter's dropout (lora.py)
        h = ACTIVATIONS[self.activation](project(self.c_fc, x.reshape(B * T, D), **lin))  # [B*T, F]
        y = project(self.c_proj, h, **lin).reshape(B, T, D)
        return self.dropout(y, deterministic=deterministic, rngs=rngs)  # [B, T, D]


class Block(nnx.Module):
    def __init__(self, config: GPTConfig, layer: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        norm = dict(epsilon=config.layer_norm_eps, dtype=jnp.float32, param_dtype=param_dtype, rngs=rngs)
        self.ln_1 = nnx.LayerNorm(config.d_model, **norm)
        self.attn = SelfAttention(config, layer, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.ln_2 = nnx.LayerNorm(config.d_model, **norm)
        self.mlp = MLP(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dtype = dtype

    def __call__(self, x, *, mask, implementation, deterministic, rngs=None, cache=None):
        # LayerNorm in fp32 for stability, then back to the compute dtype.
        h, new_cache = self.attn(
            self.ln_1(x).astype(self.dtype),
            mask=mask,
            implementation=implementation,
            deterministic=deterministic,
            rngs=rngs,
            cache=cache,
        )
        x = x + h
        x = x + self.mlp(self.ln_2(x).astype(self.dtype), deterministic=deterministic, rngs=rngs)
        return x, new_cache


class GPTNeo(nnx.Module):
    """GPT-Neo / GPT-2 language model. `model(input_ids)` → fp32 logits [B, T, V]."""

    def __init__(
        self,
        config: GPTConfig,
        *,
        dtype: str | jnp.dtype = "float32",
        param_dtype: str | jnp.dtype = "float32",
        attention: Attention = "auto",
        rngs: nnx.Rngs,
    ):
        self.config = config
        self.dtype = jnp.dtype(dtype)
        self.param_dtype = jnp.dtype(param_dtype)
        self.attention = attention
        self.remat = "none"  # activation checkpointing per block (remat.py); static: the graphdef holds it
        embed = dict(dtype=self.dtype, param_dtype=self.param_dtype, embedding_init=_normal(0.02), rngs=rngs)
        self.wte = nnx.Embed(config.vocab_size, config.d_model, **embed)  # [V, D], also the LM head
        self.wpe = nnx.Embed(config.max_positions, config.d_model, **embed)  # [P, D]
        self.drop = nnx.Dropout(config.embd_dropout)
        self.blocks = nnx.List(
            [Block(config, i, dtype=self.dtype, param_dtype=self.param_dtype, rngs=rngs) for i in range(config.n_layer)]
        )
        self.ln_f = nnx.LayerNorm(
            config.d_model, epsilon=config.layer_norm_eps, dtype=jnp.float32, param_dtype=self.param_dtype, rngs=rngs
        )

    # --- forward -------------------------------------------------------------------------

    def __call__(self, input_ids, *, attention_mask=None, positions=None, segment_ids=None,
                 deterministic: bool = True, rngs=None):
        """input_ids int32 [B, T] → logits float32 [B, T, V].

        Training passes `deterministic=False` and `rngs` (an nnx.Rngs with a `dropout` stream).

        `attention_mask` [B, T] (1 = real token) allows padded batches: padded slots are never
        attended to, and positions count real tokens only (so left padding works) unless
        `positions` [B, T] is given.

        `segment_ids` [B, T] int (packed rows): a token attends only to earlier tokens of its own
        segment, and `positions` [B, T] (default: restarting at 0 where the segment id changes)
        place it within its segment; local layers' windows count those positions. Without
        segment_ids or attention_mask the causal path runs unchanged.
        """
        mask = None
        if segment_ids is not None:
            if attention_mask is not None:
                raise ValueError("give segment_ids or attention_mask, not both")
            slots = jnp.arange(input_ids.shape[1])
            if positions is None:
                positions = segment_positions(segment_ids)  # [B, T]
            same = segment_ids[:, :, None] == segment_ids[:, None, :]  # [B, T, S]
            masks = self._masks(jnp.ones(input_ids.shape, bool), positions, positions, slots)
            masks = {kind: m & same[:, None] for kind, m in masks.items()}
        elif attention_mask is not None:
            valid = attention_mask.astype(bool)
            if positions is None:
                positions = real_positions(valid)
            masks = self._masks(valid, positions, positions, jnp.arange(input_ids.shape[1]))
        elif positions is None:
            positions = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
        x = self._embed(input_ids, positions, deterministic, rngs)
        implementation = self._implementation()

        def run_block(block, x, mask, rngs):
            return block(x, mask=mask, implementation=implementation, deterministic=deterministic, rngs=rngs)[0]

        run_block = checkpointed(run_block, self.remat)
        for block in self.blocks:
            if attention_mask is not None or segment_ids is not None:
                mask = masks["local" if block.attn.local else "global"]
            x = run_block(block, x, mask, rngs)  # [B, T, D]
        return self._logits(x)

    def init_cache(self, batch_size: int, max_length: int) -> KVCache:
        """An empty cache with room for `max_length` tokens per row."""
        c = self.config
        return empty_cache(batch_size, max_length, c.n_layer, c.n_head, c.head_dim, self.dtype)

    def extend(self, input_ids, cache: KVCache, *, attention_mask=None) -> tuple[jax.Array, KVCache]:
        """Run T new tokens per row through the model on top of `cache` (prefill: the padded
        prompt; decode: T = 1). Returns fp32 logits [B, T, V] and the cache with them written."""
        B, T = input_ids.shape
        start = cache.length
        new_valid = jnp.ones((B, T), bool) if attention_mask is None else attention_mask.astype(bool)
        new_positions = next_positions(cache.valid, new_valid)  # [B, T]
        valid = jax.lax.dynamic_update_slice(cache.valid, new_valid, (0, start))  # [B, S]
        positions = jax.lax.dynamic_update_slice(cache.positions, new_positions, (0, start))
        query_slots = start + jnp.arange(T)
        masks = self._masks(valid, positions, new_positions, query_slots)
        x = self._embed(input_ids, new_positions, True, None)
        keys, values = [], []
        for i, block in enumerate(self.blocks):
            x, (k, v) = block(
                x,
                mask=masks["local" if block.attn.local else "global"],
                implementation="xla",
                deterministic=True,
                cache=(cache.keys[i], cache.values[i], start),
            )
            keys.append(k)
            values.append(v)
        new_cache = KVCache(tuple(keys), tuple(values), valid, positions, start + T)
        return self._logits(x), new_cache

    # --- pieces ----------------------------------------------------------------------------

    def _embed(self, input_ids, positions, deterministic, rngs):
        x = self.wte(input_ids) + self.wpe(positions)  # [B, T, D]
        return self.drop(x, deterministic=deterministic, rngs=rngs)

    def _logits(self, x):
        B, T, D = x.shape
        h = self.ln_f(x).astype(self.dtype).reshape(B * T, D)
        wte = self.wte.embedding[...].astype(self.dtype)  # tied LM head, [V, D]
        logits = jnp.einsum("nd,vd->nv", h, wte, preferred_element_type=jnp.float32)  # [B*T, V]
        return logits.reshape(B, T, -1)  # [B, T, V]

    def _masks(self, valid, key_positions, query_positions, query_slots) -> dict[str, jax.Array]:
        """Attention masks [B, 1, T, S]: a key is seen if it is real, not in the future, and (local
        layers) within the window of positions. Windows count positions, so padding does not eat them."""
        S = valid.shape[1]
        causal = jnp.arange(S)[None, :] <= query_slots[:, None]  # [T, S]
        seen = valid[:, None, :] & causal[None]  # [B, T, S]
        distance = query_positions[:, :, None] - key_positions[:, None, :]  # [B, T, S]
        local = seen & (distance < self.config.window_size)
        return {"global": seen[:, None], "local": local[:, None]}

    def _implementation(self) -> str:
        return attention_implementation(self.attention, self.dtype, self.config.head_dim)


def load_params(model: GPTNeo, params: nnx.State) -> GPTNeo:
    """Put `params` into `model`, in place, and return it. `params` is an nnx.State of the model's
    parameters (its only state), as `nnx.split`, a train step or a checkpoint restore gives it;
    arrays may live on any device (numpy too)."""
    nnx.update(model, params)
    return model
