"""Batched sampling with a KV cache: prefill once per prompt, then decode inside jit.

- Prompts are left-padded to a bucketed length (a multiple of `PROMPT_BUCKET`) and batches are
  padded to a fixed size, so a whole evaluation compiles a handful of shapes.
- The n samples of a prompt share one prefill: its cache rows are repeated n times.
- Decoding runs `lax.while_loop` chunks of `CHUNK` tokens inside jit; between chunks the host
  checks stop sequences on the decoded text and ends the batch early when every row is done.
- Greedy (temperature 0), temperature, top-k and top-p, passed as traced values per row: every
  sampling setting, and every mix of settings in one batch, runs the same compiled programs.
  Every random draw comes from (seed, batch, step), so the same call gives the same completions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..common.streams import stream_key

PROMPT_BUCKET = 64
CHUNK = 32


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 128


def _filter_logits(logits: jax.Array, top_k: Any, top_p: Any) -> jax.Array:
    """logits [B, V] with everything outside the top-k set (k = 0: no limit; ties with the k-th
    kept) and outside the nucleus (top_p = 1: no limit) set to -inf. k and p are traced values,
    one for every row or one per row ([B])."""
    V = logits.shape[-1]
    top_k = jnp.reshape(jnp.asarray(top_k), (-1, 1))  # [B or 1, 1]
    top_p = jnp.reshape(jnp.asarray(top_p, jnp.float32), (-1, 1))
    order = jnp.argsort(-logits, axis=-1)  # stable: equal logits keep their index order
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    index = jnp.broadcast_to(jnp.clip(top_k, 1, V) - 1, (logits.shape[0], 1))
    kth = jnp.take_along_axis(sorted_logits, index, axis=-1)
    in_k = (top_k <= 0) | (sorted_logits >= kth)
    sorted_logits = jnp.where(in_k, sorted_logits, -jnp.inf)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    # keep a token if the mass before it is < top_p (the first token is always kept)
    before = jnp.cumsum(probs, axis=-1) - probs
    keep_sorted = in_k & ((top_p >= 1.0) | (before < top_p))
    keep = jnp.zeros_like(keep_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
    return jnp.where(keep, logits, -jnp.inf)


def choose(logits: jax.Array, key: jax.Array, knobs: jax.Array) -> jax.Array:
    """Next token per row, int32 [B]. knobs [B, 3] = (temperature, top_p, top_k) per row, traced,
    so every mix of sampling settings runs the same compiled program (temperature 0: greedy)."""
    temperature, top_p, top_k = knobs[:, 0], knobs[:, 1], knobs[:, 2].astype(jnp.int32)
    greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def sample(logits):
        scaled = logits / jnp.where(temperature > 0, temperature, 1.0)[:, None]
        scaled = jax.lax.cond(jnp.any((top_k > 0) | (top_p < 1.0)), lambda x: _filter_logits(x, top_k, top_p),
                              lambda x: x, scaled)
        drawn = jax.random.categorical(key, scaled, axis=-1).astype(jnp.int32)
        return jnp.where(temperature > 0, drawn, greedy)

    return jax.lax.cond(jnp.all(temperature == 0.0), lambda x: greedy, sample, logits)


def _knobs(settings: Sequence[Sampling], repeat: int, rows: int) -> jax.Array:
    """[rows * repeat, 3]: each setting's knobs repeated for its n samples; padding rows greedy."""
    table = np.zeros((rows * repeat, 3), np.float32)
    table[:, 1] = 1.0
    for i, s in enumerate(settings):
        table[i * repeat : (i + 1) * repeat] = (s.temperature, s.top_p, float(s.top_k))
    return jnp.asarray(table)


@partial(jax.jit, static_argnames=("graphdef", "repeat", "max_len"))
def _prefill(graphdef, state, ids, mask, key, knobs, *, repeat: int, max_len: int):
    """Prefill [Bp, P] prompts, repeat each row's cache `repeat` times, choose the first tokens."""
    model = nnx.merge(graphdef, state)
    cache = model.init_cache(ids.shape[0], max_len)
    logits, cache = model.extend(ids, cache, attention_mask=mask)
    cache = jax.tree_util.tree_map(lambda x: jnp.repeat(x, repeat, axis=0) if x.ndim else x, cache)
    last = jnp.repeat(logits[:, -1], repeat, axis=0)  # [B, V]
    return choose(last, key, knobs), cache


@partial(jax.jit, static_argnames=("graphdef", "steps", "eos"), donate_argnames=("cache",))
def _decode(graphdef, state, cache, token, done, out, start, key, knobs, *, steps: int, eos: int):
    """Decode up to `steps` tokens: write them into out[:, start + i]; rows that emit EOS stop."""
    model = nnx.merge(graphdef, state)

    def cond(carry):
        i, _, _, done, _ = carry
        return (i < steps) & ~jnp.all(done)

    def body(carry):
        i, cache, token, done, out = carry
        out = jax.lax.dynamic_update_slice(out, jnp.where(done, eos, token)[:, None], (0, start + i))
        done = done | (token == eos)
        logits, cache = model.extend(token[:, None], cache)
        nxt = choose(logits[:, -1], jax.random.fold_in(key, start + i), knobs)
        return i + 1, cache, nxt, done, out

    i, cache, token, done, out = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), cache, token, done, out))
    return cache, token, done, out, i


def _bucket(n: int, size: int) -> int:
    return max(size, math.ceil(n / size) * size)


def generate(
    model: Any,
    prompts: Sequence[Sequence[int]],
    *,
    n: int,
    sampling: Sampling | Sequence[Sampling],
    eos_id: int,
    seed: int = 0,
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
    row_done: Callable[[int, int, list[int]], bool] | None = None,
    chunk: int = CHUNK,
) -> list[list[list[int]]]:
    """Token completions [prompt][sample] (without the prompt; up to and excluding EOS).

    `batch_size` counts sequences decoded together (prompts x n); `progress(k)` is told when k
    prompts are finished. `row_done(prompt_index, sample_index, tokens)` lets the caller end a row
    early (stop sequences; each request of a served batch has its own stops and deadline); it is
    asked every `chunk` tokens.
    `sampling` is one setting for every prompt, or one per prompt (with one max_new_tokens).
    """
    config = model.config
    graphdef, state = nnx.split(model)
    per_batch = max(1, batch_size // n)  # prompts per batch
    key = stream_key(seed, "sample")
    settings = [sampling] * len(prompts) if isinstance(sampling, Sampling) else list(sampling)
    if len(settings) != len(prompts):
        raise ValueError(f"{len(settings)} sampling settings for {len(prompts)} prompts")
    if len({s.max_new_tokens for s in settings}) > 1:
        raise ValueError("the prompts of one call share max_new_tokens")
    sampling = settings[0] if settings else Sampling()
    results: list[list[list[int]]] = []
    room = config.max_positions - sampling.max_new_tokens
    if room < 1:
        raise ValueError(f"max_new_tokens {sampling.max_new_tokens} leaves no room for a prompt "
                         f"in {config.max_positions} positions")
    for b, first in enumerate(range(0, len(prompts), per_batch)):
        group = [list(p)[-room:] for p in prompts[first : first + per_batch]]  # cut from the left to fit
        rows = len(group)
        P = min(_bucket(max(len(p) for p in group), PROMPT_BUCKET), room)
        ids = np.full((per_batch, P), eos_id, np.int32)
        mask = np.zeros((per_batch, P), np.int32)
        for r, p in enumerate(group):
            if p:
                ids[r, P - len(p) :] = p
                mask[r, P - len(p) :] = 1
        mask[rows:, -1] = 1  # padding rows: one dummy token so attention has something to see
        batch_key = jax.random.fold_in(key, b)
        knobs = _knobs(settings[first : first + per_batch], n, per_batch)
        token, cache = _prefill(graphdef, state, jnp.asarray(ids), jnp.asarray(mask), batch_key, knobs, repeat=n,
                                max_len=P + sampling.max_new_tokens)
        B = per_batch * n
        done = jnp.asarray(np.arange(B) >= rows * n)  # padding rows start done
        out = jnp.full((B, sampling.max_new_tokens), eos_id, jnp.int32)
        start = 0
        while start < sampling.max_new_tokens:
            steps = min(chunk, sampling.max_new_tokens - start)
            cache, token, done, out, taken = _decode(graphdef, state, cache, token, done, out, jnp.int32(start),
                                                     batch_key, knobs, steps=steps, eos=eos_id)
            start += int(taken)
            host_done = np.array(done)  # a writable copy
            if row_done is not None:
                tokens = np.asarray(out[:, :start])
                for r in np.flatnonzero(~host_done):
                    row = tokens[r]
                    cut = np.flatnonzero(row == eos_id)
                    row = row[: cut[0]].tolist() if len(cut) else row.tolist()
                    if row_done(first + r // n, r % n, row):
                        host_done[r] = True
                done = jnp.asarray(host_done)
            if host_done.all():
                break
        final = np.asarray(out)
        for r in range(rows):
            samples = []
            for s in range(n):
                row = final[r * n + s]
                cut = np.flatnonzero(row == eos_id)
                samples.append(row[: cut[0]].tolist() if len(cut) else row.tolist())
            results.append(samples)
        if progress is not None:
            progress(len(results))
    return results


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """The text before the first occurrence of any stop sequence."""
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


def complete(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    n: int,
    sampling: Sampling,
    stop: Sequence[str] = (),
    seed: int = 0,
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
) -> list[list[str]]:
    """Text completions [prompt][sample], each without the prompt and cut at the first stop sequence.

    A prompt starts with the tokenizer's own prefix (BOS for Llama-family tokenizers, nothing for
    GPT-2's: data.tokenizer.prefix_ids), as the training documents do; one too long for the model
    loses its start, never that prefix. Generation stops at the EOS the training data ends with."""
    from ..data.tokenizer import encode_prompt, eos_id, fit_prompt, prefix_ids

    eos = eos_id(tokenizer)
    prefix = prefix_ids(tokenizer)
    room = model.config.max_positions - sampling.max_new_tokens  # generate() reports room < 1
    encoded = [fit_prompt(encode_prompt(tokenizer, p, prefix), room, len(prefix)) for p in prompts]

    def stopped(_prompt: int, _sample: int, tokens: list[int]) -> bool:
        text = tokenizer.decode(tokens)
        return any(s in text for s in stop)

    tokens = generate(model, encoded, n=n, sampling=sampling, eos_id=eos, seed=seed,
                      batch_size=batch_size, row_done=stopped if stop else None, progress=progress)
    return [[cut_at_stop(tokenizer.decode(t), stop) for t in samples] for samples in tokens]
