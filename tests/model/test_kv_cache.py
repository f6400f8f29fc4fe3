"""Decoding with the KV cache gives the full forward's logits at every position, left padding included."""

from functools import cache

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from runner.model import GPTConfig, GPTNeo
from runner.model.hf import build_from_params, flat_params

from .rows import decode, left_padded

V = 61

# One jitted forward and one jitted extend for the file: a compilation per model and shape, none per test.
FORWARD = nnx.jit(lambda m, ids, mask: m(ids, attention_mask=mask))
EXTEND = nnx.jit(lambda m, ids, cache, mask: m.extend(ids, cache, attention_mask=mask))


def forward(m, ids, mask=None) -> np.ndarray:
    return np.asarray(FORWARD(m, jnp.asarray(ids, jnp.int32), None if mask is None else jnp.asarray(mask)))


@cache
def model(arch="gpt-neo", layers=("global", "local", "local"), window=3, dtype="float32"):
    config = GPTConfig(arch, V, 40, 32, len(layers), 4, 64, layers, window_size=window)
    m = GPTNeo(config, rngs=nnx.Rngs(0))
    params = {k: v * 3 for k, v in flat_params(m).items()}  # sharper attention than at init
    return build_from_params(config, params, dtype=dtype)


@pytest.mark.parametrize("arch,layers", [("gpt-neo", ("global", "local", "local")), ("gpt2", ("global",) * 2)])
def test_prefill_then_decode_matches_full_forward(arch, layers):
    m = model(arch, layers)
    rs = np.random.RandomState(0)
    prompt_len, new = 7, 6
    lengths = [7, 4, 1]  # rows are left-padded to the longest prompt
    seqs = rs.randint(0, V, size=(3, prompt_len + new))
    prompt, mask = left_padded(seqs, lengths, prompt_len)

    cache = m.init_cache(3, prompt_len + new)
    prefill, cache = EXTEND(m, jnp.asarray(prompt), cache, jnp.asarray(mask))
    decoded, cache = decode(EXTEND, m, cache, seqs, lengths, new - 1)
    assert int(cache.length) == prompt_len + new - 1

    # Each row unpadded, run through the full forward: causal, so the logits of its first
    # n + new - 1 tokens are those of that prefix run alone (one forward for all rows).
    full = forward(m, seqs[:, : prompt_len + new - 1])
    for b, n in enumerate(lengths):
        np.testing.assert_allclose(np.asarray(prefill[b, prompt_len - n :]), full[b, :n], atol=2e-5, rtol=0)
        np.testing.assert_allclose(np.stack([d[b] for d in decoded]), full[b, n : n + new - 1], atol=2e-5, rtol=0)


def test_local_window_counts_positions_not_padding():
    """A left-padded row's local layers see exactly `window` real positions, as an unpadded row does."""
    m = model(layers=("local", "local"), window=2)
    ids = np.random.RandomState(1).randint(0, V, size=(1, 6))
    padded = np.concatenate([np.zeros((1, 5), int), ids], axis=1)
    mask = np.concatenate([np.zeros((1, 5), int), np.ones((1, 6), int)], axis=1)
    got = forward(m, padded, mask)[0, 5:]
    want = forward(m, ids)[0]
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)


def test_decoding_is_jittable_in_a_loop():
    """The cache is a pytree of fixed shapes: a whole greedy decode runs inside one jit."""
    m = model()

    @nnx.jit
    def greedy(m, prompt):
        cache = m.init_cache(prompt.shape[0], 12)
        logits, cache = m.extend(prompt, cache)

        def step(carry, _):
            token, cache = carry
            logits, cache = m.extend(token, cache)
            nxt = jnp.argmax(logits[:, -1], -1)[:, None].astype(jnp.int32)
            return (nxt, cache), nxt[:, 0]

        first = jnp.argmax(logits[:, -1], -1)[:, None].astype(jnp.int32)
        _, out = jax.lax.scan(step, (first, cache), None, length=6)
        return jnp.concatenate([first, out.T], axis=1)

    prompt = jnp.asarray(np.random.RandomState(2).randint(0, V, size=(2, 5)), jnp.int32)
    tokens = np.asarray(greedy(m, prompt))
    # The same tokens by recomputing the whole sequence each step (one fixed-shape buffer, the
    # unwritten tail masked out and causally invisible anyway).
    seq = np.zeros((2, 12), np.int32)
    seq[:, :5] = np.asarray(prompt)
    for n in range(5, 12):
        mask = (np.arange(12) < n)[None].repeat(2, 0).astype(np.int32)
        seq[:, n] = forward(m, seq, mask)[:, n - 1].argmax(-1)
    np.testing.assert_array_equal(tokens, seq[:, 5:])
