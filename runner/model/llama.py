"""Llama and Qwen2 in Flax NNX: rotary positions, RMSNorm, SwiGLU MLP, grouped-query attention.

Shapes: B batch, T query length, S key length (cache slots), D d_model, N query heads, K key/value
heads (N = K·G: G query heads share each key/value head), H head dim, V vocabulary, F MLP width.

The two architectures differ only in their biases, all read from `LlamaConfig`:
- Llama: q/k/v/o projections carry a bias if `attention_bias` (qkv_bias here), the MLP if `mlp_bias`;
- Qwen2: q/k/v always carry a bias, o_proj and the MLP never.
Both: pre-RMSNorm blocks, rotary embeddings on q and k (HF's rotate_half layout: the two halves of
each head's H dims form the rotation pairs), gate/up/down SwiGLU MLP, an LM head tied to the token
embedding or not (`tie_embeddings`).

Module names are transformers' (`embed_tokens`, `layers.i.self_attn.q_proj`, `mlp.gate_proj`,
`input_layernorm`, `norm`, `lm_head`), so LoRA targets and PEFT adapter names read the same as in
PyTorch. Every projection runs through `lora.project`, so an adapter (and its dropout) applies.

Numerics as in GPT-Neo (gpt_neo.py): parameters in `param_dtype`, matmuls in `dtype`; RMSNorm, the
rotary cos/sin and rotation, attention logits, softmax and the output logits are fp32.

Interface: exactly GPTNeo's (`__call__`, `init_cache`, `extend`, `remat`, `attention`), and the KV
cache is gpt_neo.KVCache with K heads; keys are cached after the rotation, at their positions.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .gpt_neo import (Attention, KVCache, attention_implementation, empty_cache, next_positions, real_positions,
                      segment_positions)
from .lora import project
from .remat import checkpointed

# HF rope types whose frequencies are fixed at load time (so ours equal theirs at every position),
# and the scaling parameters each one needs. "dynamic" (NTK) and "longrope" recompute frequencies
# from the longest position of each batch: not supported.
ROPE_TYPES: dict[str, tuple[str, ...]] = {
    "default": (),
    "linear": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
    "yarn": ("factor", "original_max_position_embeddings"),
}
# Parameters a rope type reads when present (transformers' defaults otherwise).
ROPE_OPTIONAL: dict[str, tuple[str, ...]] = {
    "yarn": ("attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim", "truncate"),
}
ACTIVATIONS = {"silu": jax.nn.silu}


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Everything that decides the network's shape and arithmetic. Hashable (the nnx graphdef holds
    it): rope scaling parameters are a sorted tuple of (name, value) pairs, not a dict."""

    arch: Literal["llama", "qwen2"]
    vocab_size: int
    max_positions: int
    d_model: int
    n_layer: int
    n_head: int
    n_kv_head: int
    d_ff: int
    head_dim: int | None = None  # None: d_model // n_head (HF's default); a checkpoint's explicit value wins
    rope_theta: float = 10000.0
    rope_type: str = "default"  # one of ROPE_TYPES
    rope_scaling: tuple[tuple[str, Any], ...] = ()  # the rope type's parameters, e.g. (("factor", 8.0), ...)
    rms_norm_eps: float = 1e-6
    qkv_bias: bool = False  # Qwen2: always; Llama: config.json's attention_bias (which biases o_proj too)
    mlp_bias: bool = False  # Llama's mlp_bias (gate/up/down); Qwen2 never
    tie_embeddings: bool = False  # LM head = token embedding (config.json's tie_word_embeddings)
    activation: str = "silu"
    attn_dropout: float = 0.0  # on the attention probabilities (HF's attention_dropout)
    resid_dropout: float = 0.0  # on each block's attention and MLP outputs (HF Llama has none: 0 when loaded)
    embd_dropout: float = 0.0  # on the token embeddings (HF Llama has none: 0 when loaded)
    bos_token_id: int | None = None
    eos_token_id: int | None = None  # HF allows a list; hf.py keeps its first (the one generation stops on)

    def __post_init__(self):
        if self.arch not in ("llama", "qwen2"):
            raise ValueError(f"arch must be llama or qwen2 (got {self.arch!r})")
        if self.head_dim is None:
            if self.d_model % self.n_head:
                raise ValueError(f"n_head ({self.n_head}) must divide d_model ({self.d_model}) unless head_dim is given")
            object.__setattr__(self, "head_dim", self.d_model // self.n_head)
        if self.head_dim % 2:
            raise ValueError(f"head_dim ({self.head_dim}) must be even: rotary embeddings rotate pairs of dimensions")
        if self.n_kv_head < 1 or self.n_head % self.n_kv_head:
            raise ValueError(f"n_kv_head ({self.n_kv_head}) must divide n_head ({self.n_head})")
        if self.arch == "qwen2" and (not self.qkv_bias or self.mlp_bias):
            raise ValueError("qwen2 has q/k/v biases and no MLP bias (qkv_bias true, mlp_bias false); "
                             "other combinations are arch llama")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} is not supported (one of {', '.join(ACTIVATIONS)})")
        if self.rope_type not in ROPE_TYPES:
            raise ValueError(f"rope type {self.rope_type!r} is not supported (one of {', '.join(ROPE_TYPES)})")
        scaling = dict(self.rope_scaling)
        if missing := [k for k in ROPE_TYPES[self.rope_type] if k not in scaling]:
            raise ValueError(f"rope type {self.rope_type!r} needs {', '.join(missing)}")
        object.__setattr__(self, "rope_scaling", tuple(sorted(scaling.items())))

    @property
    def o_bias(self) -> bool:
        """o_proj's bias: Llama's attention_bias covers it, Qwen2's o_proj has none."""
        return self.qkv_bias and self.arch == "llama"

    @property
    def attention_scale(self) -> float:
        return 1.0 / math.sqrt(self.head_dim)

    def num_params(self, *, embeddings: bool = True) -> int:
        """Parameter count. Without `embeddings`: less the input embedding of an untied model, whose
        lookup multiplies nothing, so that 6·N counts every matmul (PaLM's convention, as
        runner.train.loop.flops_per_token uses it); a tied embedding is the LM head, counted once."""
        D, F, L, V = self.d_model, self.d_ff, self.n_layer, self.vocab_size
        q, kv = self.n_head * self.head_dim, self.n_kv_head * self.head_dim
        attn = D * q + 2 * D * kv + q * D + (q + 2 * kv if self.qkv_bias else 0) + (D if self.o_bias else 0)
        mlp = 3 * D * F + (2 * F + D if self.mlp_bias else 0)
        block = attn + mlp + 2 * D  # + the two RMSNorm scales
        total = V * D + L * block + D + (0 if self.tie_embeddings else V * D)
        return total - (V * D if not embeddings and not self.tie_embeddings else 0)


def rope_frequencies(config: LlamaConfig) -> tuple[np.ndarray, float]:
    """(inverse frequencies float32 [H/2], factor on cos and sin) for the config's rope type, as
    transformers' modeling_rope_utils computes them (fp32 where it is fp32)."""
    H, base = config.head_dim, config.rope_theta
    p = dict(config.rope_scaling)
    exponents = np.arange(0, H, 2).astype(np.float32) / np.float32(H)  # [H/2]
    inv_freq = (1.0 / np.power(np.float32(base), exponents)).astype(np.float32)
    if config.rope_type == "default":
        return inv_freq, 1.0
    if config.rope_type == "linear":
        return (inv_freq / np.float32(p["factor"])).astype(np.float32), 1.0
    if config.rope_type == "llama3":
        factor, low, high = p["factor"], p["low_freq_factor"], p["high_freq_factor"]
        old = p["original_max_position_embeddings"]
        wavelen = (2 * math.pi / inv_freq).astype(np.float32)
        scaled = np.where(wavelen > old / low, inv_freq / np.float32(factor), inv_freq).astype(np.float32)
        smooth = ((old / wavelen - low) / (high - low)).astype(np.float32)
        smoothed = ((1 - smooth) * scaled / np.float32(factor) + smooth * scaled).astype(np.float32)
        medium = ~(wavelen < old / high) & ~(wavelen > old / low)
        return np.where(medium, smoothed, scaled).astype(np.float32), 1.0
    # yarn: interpolate low frequencies, keep high ones, ramp between; cos/sin scaled by attention_factor
    factor = p["factor"]
    old = p["original_max_position_embeddings"]
    if factor is None:
        factor = config.max_positions / old

    def mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention_factor = p.get("attention_factor")
    if attention_factor is None:
        if p.get("mscale") and p.get("mscale_all_dim"):
            attention_factor = float(mscale(factor, p["mscale"]) / mscale(factor, p["mscale_all_dim"]))
        else:
            attention_factor = mscale(factor)
    beta_fast, beta_slow = p.get("beta_fast") or 32, p.get("beta_slow") or 1

    def correction_dim(rotations):
        return (H * math.log(old / (rotations * 2 * math.pi))) / (2 * math.log(base))

    lo, hi = correction_dim(beta_fast), correction_dim(beta_slow)
    if p.get("truncate", True):
        lo, hi = math.floor(lo), math.ceil(hi)
    lo, hi = max(lo, 0), min(hi, H - 1)
    if lo == hi:
        hi += 0.001  # transformers' guard against a zero-width ramp
    ramp = np.clip((np.arange(H // 2, dtype=np.float32) - np.float32(lo)) / np.float32(hi - lo), 0, 1)
    extrapolation = (1 - ramp).astype(np.float32)  # 1: keep the original frequency
    pos_freqs = np.power(np.float32(base), exponents).astype(np.float32)
    interpolated = (1.0 / (np.float32(factor) * pos_freqs)).astype(np.float32)
    original = (1.0 / pos_freqs).astype(np.float32)
    inv_freq = interpolated * (1 - extrapolation) + original * extrapolation
    return inv_freq.astype(np.float32), float(attention_factor)


def rotary(positions: jax.Array, config: LlamaConfig) -> tuple[jax.Array, jax.Array]:
    """positions int [B, T] → (cos, sin) float32 [B, T, 1, H], HF's layout: the H/2 frequencies twice."""
    inv_freq, factor = rope_frequencies(config)
    angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)  # [B, T, H/2]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]  # [B, T, 1, H]
    return jnp.cos(angles) * factor, jnp.sin(angles) * factor


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [B, T, heads, H] rotated in fp32 (x·cos + rotate_half(x)·sin), back in x's dtype."""
    x32 = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
    return (x32 * cos + rotated * sin).astype(x.dtype)


def _normal(std: float):
    return jax.nn.initializers.normal(stddev=std)


class RMSNorm(nnx.Module):
    """transformers' LlamaRMSNorm: normalise in fp32, back to the input dtype, then scale."""

    def __init__(self, dim: int, *, eps: float, param_dtype):
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype))  # HF's `weight`
        self.eps = eps

    def __call__(self, x):
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.scale[...].astype(x.dtype) * y.astype(x.dtype)


class SelfAttention(nnx.Module):
    def __init__(self, config: LlamaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        D, N, K, H = config.d_model, config.n_head, config.n_kv_head, config.head_dim
        dense = dict(dtype=dtype, param_dtype=param_dtype, kernel_init=_normal(0.02), rngs=rngs)  # HF's init
        self.q_proj = nnx.Linear(D, N * H, use_bias=config.qkv_bias, **dense)
        self.k_proj = nnx.Linear(D, K * H, use_bias=config.qkv_bias, **dense)
        self.v_proj = nnx.Linear(D, K * H, use_bias=config.qkv_bias, **dense)
        self.o_proj = nnx.Linear(N * H, D, use_bias=config.o_bias, **dense)
        # Dropout draws from the rngs passed to each call, so the model itself holds no RNG state.
        self.attn_dropout = nnx.Dropout(config.attn_dropout)
        self.n_head, self.n_kv_head, self.head_dim = N, K, H
        self.scale = config.attention_scale

    def __call__(self, x, *, mask, rope, implementation, deterministic, rngs=None, cache=None):
        """x [B, T, D] → [B, T, D]. `mask` [B, 1, T, S] bool or None (causal, every slot real);
        `rope` the (cos, sin) of the T new tokens' positions. With `cache` = (keys, values, start),
        the new (rotated) keys and values are written at slot `start`."""
        B, T, D = x.shape
        N, K, H = self.n_head, self.n_kv_head, self.head_dim
        # Projections on [B*T, D]: XLA's CPU backward computes weight gradients over one flat
        # contraction dimension about twice as fast as over (B, T) (as in gpt_neo.py).
        flat = x.reshape(B * T, D)
        proj = dict(deterministic=deterministic, rngs=rngs)
        q = project(self.q_proj, flat, **proj).reshape(B, T, N, H)
        k = project(self.k_proj, flat, **proj).reshape(B, T, K, H)
        v = project(self.v_proj, flat, **proj).reshape(B, T, K, H)
        q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        new_cache = None
        if cache is not None:
            keys, values, start = cache
            keys = jax.lax.dynamic_update_slice(keys, k.astype(keys.dtype), (0, start, 0, 0))  # [B, S, K, H]
            values = jax.lax.dynamic_update_slice(values, v.astype(values.dtype), (0, start, 0, 0))
            k, v, new_cache = keys, values, (keys, values)
        # Grouped-query attention: dot_product_attention takes K < N key/value heads and gives query
        # head n the key/value head n // G, as transformers' repeat_kv does. Scores accumulate in fp32.
        if self.attn_dropout.rate > 0 and not deterministic:
            y = self._attend_with_dropout(q, k, v, mask, rngs)
        elif mask is None:
            y = jax.nn.dot_product_attention(q, k, v, scale=self.scale, is_causal=True, implementation=implementation)
        else:
            y = jax.nn.dot_product_attention(q, k, v, mask=mask, scale=self.scale, implementation="xla")
        y = project(self.o_proj, y.reshape(B * T, N * H), **proj).reshape(B, T, D)
        return y, new_cache

    def _attend_with_dropout(self, q, k, v, mask, rngs):
        """Attention with dropout on the probabilities (no fused kernel offers it); q [B, T, N, H]
        grouped as [B, T, K, G, H] against k, v [B, S, K, H]."""
        B, T, N, H = q.shape
        S, K = k.shape[1], k.shape[2]
        g = q.reshape(B, T, K, N // K, H)
        logits = jnp.einsum("btkgh,bskh->bkgts", g, k, preferred_element_type=jnp.float32) * self.scale
        if mask is None:
            mask = (jnp.arange(S)[None, :] <= jnp.arange(T)[:, None] + (S - T))[None, None]  # [1, 1, T, S]
        logits = jnp.where(mask[:, :, None], logits, jnp.finfo(jnp.float32).min)  # [B, K, G, T, S]
        probs = self.attn_dropout(jax.nn.softmax(logits, axis=-1), deterministic=False, rngs=rngs).astype(v.dtype)
        return jnp.einsum("bkgts,bskh->btkgh", probs, v).reshape(B, T, N, H)


class MLP(nnx.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: LlamaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        D, F = config.d_model, config.d_ff
        dense = dict(use_bias=config.mlp_bias, dtype=dtype, param_dtype=param_dtype, kernel_init=_normal(0.02), rngs=rngs)
        self.gate_proj = nnx.Linear(D, F, **dense)
        self.up_proj = nnx.Linear(D, F, **dense)
        self.down_proj = nnx.Linear(F, D, **dense)
        self.activation = config.activation

    def __call__(self, x, *, deterministic, rngs=None):
        B, T, D = x.shape
        flat = x.reshape(B * T, D)
        proj = dict(deterministic=deterministic, rngs=rngs)
        h = ACTIVATIONS[self.activation](project(self.gate_proj, flat, **proj)) * project(self.up_proj, flat, **proj)
        return project(self.down_proj, h, **proj).reshape(B, T, D)  # [B, T, D]


class DecoderLayer(nnx.Module):
    def __init__(self, config: LlamaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.input_layernorm = RMSNorm(config.d_model, eps=config.rms_norm_eps, param_dtype=param_dtype)
        self.self_attn = SelfAttention(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.post_attention_layernorm = RMSNorm(config.d_model, eps=config.rms_norm_eps, param_dtype=param_dtype)
        self.mlp = MLP(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.resid_dropout = nnx.Dropout(config.resid_dropout)

    def __call__(self, x, *, mask, rope, implementation, deterministic, rngs=None, cache=None):
        drop = dict(deterministic=deterministic, rngs=rngs)
        h, new_cache = self.self_attn(
            self.input_layernorm(x), mask=mask, rope=rope, implementation=implementation, cache=cache, **drop
        )
        x = x + self.resid_dropout(h, **drop)
        x = x + self.resid_dropout(self.mlp(self.post_attention_layernorm(x), **drop), **drop)
        return x, new_cache


class Llama(nnx.Module):
    """Llama / Qwen2 language model. `model(input_ids)` → fp32 logits [B, T, V]."""

    def __init__(
        self,
        config: LlamaConfig,
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
        self.embed_tokens = nnx.Embed(  # [V, D]; the LM head too when tied
            config.vocab_size, config.d_model, dtype=self.dtype, param_dtype=self.param_dtype,
            embedding_init=_normal(0.02), rngs=rngs,
        )
        self.embd_dropout = nnx.Dropout(config.embd_dropout)
        self.layers = nnx.List(
            [DecoderLayer(config, dtype=self.dtype, param_dtype=self.param_dtype, rngs=rngs)
             for _ in range(config.n_layer)]
        )
        self.norm = RMSNorm(config.d_model, eps=config.rms_norm_eps, param_dtype=self.param_dtype)
        if not config.tie_embeddings:
            # [D, V]; logits accumulate in fp32 whatever the compute dtype
            self.lm_head = nnx.Linear(
                config.d_model, config.vocab_size, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                preferred_element_type=jnp.float32, kernel_init=_normal(0.02), rngs=rngs,
            )

    # --- forward -------------------------------------------------------------------------

    def __call__(self, input_ids, *, attention_mask=None, positions=None, segment_ids=None,
                 deterministic: bool = True, rngs=None):
        """input_ids int32 [B, T] → logits float32 [B, T, V]; the arguments mean what they mean
        for GPTNeo.__call__ (gpt_neo.py): `attention_mask` [B, T] (1 = real token; positions
        count real tokens only, so left padding works), `segment_ids` [B, T] (packed rows: a token
        attends within its segment, positions restart at 0 per segment), `positions` [B, T]
        overriding the derived ones; training passes `deterministic=False` and `rngs`."""
        mask = None
        slots = jnp.arange(input_ids.shape[1])
        if segment_ids is not None:
            if attention_mask is not None:
                raise ValueError("give segment_ids or attention_mask, not both")
            if positions is None:
                positions = segment_positions(segment_ids)  # [B, T]
            same = segment_ids[:, :, None] == segment_ids[:, None, :]  # [B, T, S]
            mask = self._mask(jnp.ones(input_ids.shape, bool), slots) & same[:, None]
        elif attention_mask is not None:
            valid = attention_mask.astype(bool)
            if positions is None:
                positions = real_positions(valid)
            mask = self._mask(valid, slots)
        elif positions is None:
            positions = jnp.broadcast_to(slots, input_ids.shape)
        x = self._embed(input_ids, deterministic, rngs)
        rope = rotary(positions, self.config)
        implementation = self._implementation()

        # (mask, rope) travel as run_block's `mask` argument: remat.checkpointed's signature.
        def run_block(block, x, mask_rope, rngs):
            mask, rope = mask_rope
            return block(x, mask=mask, rope=rope, implementation=implementation, deterministic=deterministic,
                         rngs=rngs)[0]

        run_block = checkpointed(run_block, self.remat)
        for block in self.layers:
            x = run_block(block, x, (mask, rope), rngs)  # [B, T, D]
        return self._logits(x)

    def init_cache(self, batch_size: int, max_length: int) -> KVCache:
        """An empty cache with room for `max_length` tokens per row: K heads per layer."""
        c = self.config
        return empty_cache(batch_size, max_length, c.n_layer, c.n_kv_head, c.head_dim, self.dtype)

    def extend(self, input_ids, cache: KVCache, *, attention_mask=None) -> tuple[jax.Array, KVCache]:
        """Run T new tokens per row through the model on top of `cache` (prefill: the padded
        prompt; decode: T = 1). Returns fp32 logits [B, T, V] and the cache with them written."""
        B, T = input_ids.shape
        start = cache.length
        new_valid = jnp.ones((B, T), bool) if attention_mask is None else attention_mask.astype(bool)
        new_positions = next_positions(cache.valid, new_valid)  # [B, T]
        valid = jax.lax.dynamic_update_slice(cache.valid, new_valid, (0, start))  # [B, S]
        positions = jax.lax.dynamic_update_slice(cache.positions, new_positions, (0, start))
        mask = self._mask(valid, start + jnp.arange(T))
        rope = rotary(new_positions, self.config)
        x = self._embed(input_ids, True, None)
        keys, values = [], []
        for i, block in enumerate(self.layers):
            x, (k, v) = block(x, mask=mask, rope=rope, implementation="xla", deterministic=True,
                              cache=(cache.keys[i], cache.values[i], start))
            keys.append(k)
            values.append(v)
        return self._logits(x), KVCache(tuple(keys), tuple(values), valid, positions, start + T)

    # --- pieces ----------------------------------------------------------------------------

    def _embed(self, input_ids, deterministic, rngs):
        return self.embd_dropout(self.embed_tokens(input_ids), deterministic=deterministic, rngs=rngs)  # [B, T, D]

    def _logits(self, x):
        B, T, D = x.shape
        h = self.norm(x).reshape(B * T, D)
        if self.config.tie_embeddings:
            embedding = self.embed_tokens.embedding[...].astype(self.dtype)  # [V, D]
            logits = jnp.einsum("nd,vd->nv", h, embedding, preferred_element_type=jnp.float32)
        else:
            logits = project(self.lm_head, h)  # LoRA on the head: never with dropout
        return logits.astype(jnp.float32).reshape(B, T, -1)  # [B, T, V]

    def _mask(self, valid, query_slots) -> jax.Array:
        """[B, 1, T, S] bool: a key is seen if it is real and not in the future."""
        S = valid.shape[1]
        causal = jnp.arange(S)[None, :] <= query_slots[:, None]  # [T, S]
        return (valid[:, None, :] & causal[None])[:, None]

    def _implementation(self) -> str:
        return attention_implementation(self.attention, self.dtype, self.config.head_dim)
