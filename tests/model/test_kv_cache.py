"""Decoding with the KV cache gives the full forward's logits at every position, left padding included."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from runner.model import GPTConfig, GPTNeo
from runner.model.hf import build_from_params, flat_params

V = 61


def model(arch="gpt-neo", layers=("global", "local", "local", "global"), window=3, dtype="float32"):
    config = GPTConfig(arch, V, 40, 32, len(layers), 4, 64, layers, window_size=window)
    m = GPTNeo(config, rngs=nnx.Rngs(0))
    params = {k: v * 3 for k, v in flat_params(m).items()}  # sharper attention than at init
    return build_from_params(config, params, dtype=dtype)


@pytest.mark.parametrize("arch,layers", [("gpt-neo", ("global", "local", "local", "global")), ("gpt2", ("global",) * 2)])
def test_prefill_then_decode_matches_full_forward(arch, layers):
    m = model(arch, layers)
    rs = np.random.RandomState(0)
    prompt_len, new = 7, 6
    lengths = [7, 4, 1]  # rows are left-padded to the longest prompt
    seqs = rs.randint(0, V, size=(3, prompt_len + new))
    prompt = np.zeros((3, prompt_len), np.int32)
    mask = np.zeros((3, prompt_len), np.int32)
    for b, n in enumerate(lengths):
        prompt[b, prompt_len - n :] = seqs[b, :n]
        mask[b, prompt_len - n :] = 1

    extend = nnx.jit(lambda m, ids, cache, mask=None: m.extend(ids, cache, attention_mask=mask))
    cache = m.init_cache(3, prompt_len + new)
    prefill, cache = extend(m, jnp.asarray(prompt), cache, jnp.asarray(mask))
    decoded = []
    for t in range(new - 1):
        token = jnp.asarray([[seqs[b, lengths[b] + t]] for b in range(3)], jnp.int32)
        logits, cache = extend(m, token, cache)
        decoded.append(np.asarray(logits[:, 0]))
    assert int(cache.length) == prompt_len + new - 1

    for b, n in enumerate(lengths):
        full = np.asarray(m(jnp.asarray(seqs[b : b + 1, : n + new - 1], jnp.int32)))[0]  # unpadded, alone
        np.testing.assert_allclose(np.asarray(prefill[b, prompt_len - n :]), full[:n], atol=2e-5, rtol=0)
        np.testing.assert_allclose(np.stack([d[b] for d in decoded]), full[n:], atol=2e-5, rtol=0)


def test_local_window_counts_positions_not_padding():
    """A left-padded row's local layers see exactly `window` real positions, as an unpadded row does."""
    m = model(layers=("local", "local"), window=2)
    ids = np.random.RandomState(1).randint(0, V, size=(1, 6))
    padded = np.concatenate([np.zeros((1, 5), int), ids], axis=1)
    mask = np.concatenate([np.zeros((1, 5), int), np.ones((1, 6), int)], axis=1)
    got = np.asarray(m(jnp.asarray(padded, jnp.int32), attention_mask=jnp.asarray(mask)))[0, 5:]
    want = np.asarray(m(jnp.asarray(ids, jnp.int32)))[0]
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
    forward = nnx.jit(lambda m, ids, mask: m(ids, attention_mask=mask))
    seq = np.zeros((2, 12), np.int32)
    seq[:, :5] = np.asarray(prompt)
    for n in range(5, 12):
        mask = (np.arange(12) < n)[None].repeat(2, 0).astype(np.int32)
        seq[:, n] = np.asarray(forward(m, jnp.asarray(seq), jnp.asarray(mask)))[:, n - 1].argmax(-1)
    np.testing.assert_array_equal(tokens, seq[:, 5:])
