"""Sampling: greedy is the full forward's argmax, left padding changes nothing, stops cut, seeds repeat."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from runner.evals.sample import Sampling, _filter_logits, complete, cut_at_stop, generate
from runner.model import GPTConfig, GPTNeo
from runner.model.hf import build_from_params, flat_params

EOS = 0


@pytest.fixture(scope="module")
def model():
    config = GPTConfig("gpt-neo", 61, 128, 32, 2, 4, 64, ("global", "local"), window_size=8)
    m = GPTNeo(config, rngs=nnx.Rngs(0))
    return build_from_params(config, {k: v * 3 for k, v in flat_params(m).items()})  # less uniform than at init


# One jitted forward for the file: one fixed-size buffer, one compilation.
FORWARD = nnx.jit(lambda m, ids, mask: m(ids, attention_mask=mask))

# The tests below share max_new_tokens and (prompts per batch, samples per prompt) where their
# behaviour does not depend on them, so that `generate` compiles few prefill/decode programs.
NEW = 10


def greedy_by_full_forward(model, prompt, steps):
    """Recompute the whole sequence for every new token."""
    forward = FORWARD
    size = 32
    seq = np.zeros((1, size), np.int32)
    seq[0, : len(prompt)] = prompt
    n = len(prompt)
    for _ in range(steps):
        mask = (np.arange(size) < n)[None].astype(np.int32)
        nxt = int(np.asarray(forward(model, jnp.asarray(seq), jnp.asarray(mask)))[0, n - 1].argmax())
        if nxt == EOS:
            break
        seq[0, n] = nxt
        n += 1
    return seq[0, len(prompt) : n].tolist()


PROMPTS = [[1, 2, 3, 4, 5], [7, 8], [9, 10, 11, 12, 13, 14, 15, 16, 17], [42]]


def test_greedy_equals_argmax_of_the_full_forward_with_left_padding(model):
    out = generate(model, PROMPTS, n=1, sampling=Sampling(max_new_tokens=NEW), eos_id=EOS, batch_size=4)
    assert [o[0] for o in out] == [greedy_by_full_forward(model, p, NEW) for p in PROMPTS]
    # one at a time (alone in its batch: the other rows are empty padding rows) gives the same
    alone = [generate(model, [p], n=1, sampling=Sampling(max_new_tokens=NEW), eos_id=EOS, batch_size=4)[0] for p in PROMPTS]
    assert alone == out


def test_samples_repeat_with_the_seed_and_differ_across_samples(model):
    s = Sampling(temperature=1.0, top_p=0.95, max_new_tokens=NEW)
    a = generate(model, PROMPTS, n=2, sampling=s, eos_id=EOS, seed=7, batch_size=8)
    b = generate(model, PROMPTS, n=2, sampling=s, eos_id=EOS, seed=7, batch_size=8)
    c = generate(model, PROMPTS, n=2, sampling=s, eos_id=EOS, seed=8, batch_size=8)
    assert a == b and a != c
    assert all(len(samples) == 2 for samples in a)
    assert len({tuple(x) for x in a[0]}) > 1, "the n samples of a prompt are not copies"


# k and p are traced values (as the decoder passes them): one compilation per logits shape, not the
# op-by-op dispatch of every call.
filter_logits = jax.jit(_filter_logits)


def test_top_k_and_top_p_filters():
    logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
    assert np.isfinite(np.asarray(filter_logits(logits, 2, 1.0))).tolist() == [[True, True, False, False]]
    # nucleus 0.7: 0.5 alone is below 0.7, so 0.3 joins; 0.15 would start at 0.8 > 0.7
    assert np.isfinite(np.asarray(filter_logits(logits, 0, 0.7))).tolist() == [[True, True, False, False]]
    assert np.isfinite(np.asarray(filter_logits(logits, 0, 0.05))).tolist() == [[True, False, False, False]]


def test_ties_with_the_kth_logit_are_kept_and_both_filters_combine():
    logits = jnp.log(jnp.asarray([[0.4, 0.2, 0.2, 0.1, 0.1], [0.1, 0.2, 0.3, 0.15, 0.25]]))
    assert np.isfinite(np.asarray(filter_logits(logits, 2, 1.0))).tolist() == [
        [True, True, True, False, False], [False, False, True, False, True]]
    # top-k 3, then the nucleus 0.5 of what is left (renormalised): row 1 is 0.5/0.25/0.25, so the
    # second token starts at 0.5 and goes; row 2 is 0.4/0.33/0.27, so 0.3 and 0.25 stay
    assert np.isfinite(np.asarray(filter_logits(logits, 3, 0.5))).tolist() == [
        [True, False, False, False, False], [False, False, True, False, True]]


def test_every_sampling_setting_runs_one_compiled_decoder(model):
    """temperature, top_p and top_k are traced values: changing them compiles nothing new."""
    from runner.evals.sample import _decode, _prefill

    generate(model, PROMPTS, n=2, sampling=Sampling(max_new_tokens=NEW), eos_id=EOS, batch_size=8)
    sizes = (_decode._cache_size(), _prefill._cache_size())
    outs = [generate(model, PROMPTS, n=2, sampling=Sampling(t, p, k, NEW), eos_id=EOS, batch_size=8)
            for t, p, k in [(0.8, 0.95, 0), (1.0, 1.0, 5), (0.3, 0.5, 2)]]
    assert (_decode._cache_size(), _prefill._cache_size()) == sizes
    assert len({str(o) for o in outs}) == 3


def test_one_setting_per_prompt_in_one_batch(model):
    greedy, hot = Sampling(max_new_tokens=NEW), Sampling(temperature=1.0, top_k=4, max_new_tokens=NEW)
    mixed = generate(model, PROMPTS, n=2, sampling=[greedy, hot, greedy, hot], eos_id=EOS, seed=3, batch_size=8)
    alone = generate(model, PROMPTS, n=1, sampling=greedy, eos_id=EOS, batch_size=4)
    for i in (0, 2):  # greedy rows decoded beside sampled ones: exactly their greedy completion
        assert mixed[i] == [alone[i][0]] * 2
    assert mixed[1][0] != mixed[1][1] or mixed[3][0] != mixed[3][1]
    with pytest.raises(ValueError, match="share max_new_tokens"):
        generate(model, PROMPTS[:2], n=1, sampling=[greedy, Sampling(max_new_tokens=5)], eos_id=EOS)
    with pytest.raises(ValueError, match="3 sampling settings for 4 prompts"):
        generate(model, PROMPTS, n=1, sampling=[greedy] * 3, eos_id=EOS)


def test_max_new_tokens_and_stop_cut():
    assert cut_at_stop("    return x\ndef g():\n", ["\ndef", "\nclass"]) == "    return x"
    assert cut_at_stop("no stop here", ["\ndef"]) == "no stop here"
    assert cut_at_stop("a\nclass B\ndef c", ["\ndef", "\nclass"]) == "a"


class CharTokenizer:
    """A stand-in with the transformers surface `complete` uses: one token per character."""

    eos_token_id = EOS

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [1 + (ord(c) % 60) for c in text]}

    def decode(self, ids):
        return "".join(chr(ord("a") + (i % 26)) if i % 7 else "\n" for i in ids)


def test_complete_cuts_at_stop_sequences(model):
    tok = CharTokenizer()
    prompts, hot = ["def f(x):", "x = 1"], Sampling(temperature=1.0, max_new_tokens=NEW)
    full = complete(model, tok, prompts, n=2, sampling=hot, batch_size=8)
    stopped = complete(model, tok, prompts, n=2, sampling=hot, stop=["\n"], batch_size=8)
    assert any("\n" in f for samples in full for f in samples), "the stop sequence occurs, so there is a cut"
    for samples_full, samples_stopped in zip(full, stopped, strict=True):
        for f, s in zip(samples_full, samples_stopped, strict=True):
            assert "\n" not in s and f.startswith(s)
            assert s == f.split("\n")[0]
