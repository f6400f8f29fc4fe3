"""Our Flax model matches transformers' PyTorch GPT-Neo and GPT-2 number for number (fp32)."""

import numpy as np
import jax.numpy as jnp
import pytest

from runner.model import from_pretrained

from .hf_models import hf_gpt2, hf_gpt_neo, torch_logits

TOLERANCE = 1e-4  # max |logit difference| in fp32


def random_ids(batch, length, vocab=97, seed=0):
    return np.random.RandomState(seed).randint(0, vocab, size=(batch, length))


CASES = {
    # window 4 < sequence 23: local layers really cut attention off
    "neo-window-smaller-than-sequence": (lambda: hf_gpt_neo(layers=("global", "local", "global", "local"), window=4), 2, 23),
    "neo-all-local": (lambda: hf_gpt_neo(layers=("local", "local", "local"), window=5), 3, 17),
    "neo-all-global": (lambda: hf_gpt_neo(layers=("global", "global")), 2, 16),
    "neo-odd-length-batch-1": (lambda: hf_gpt_neo(window=3, d=48, heads=6), 1, 13),
    "neo-window-covers-sequence": (lambda: hf_gpt_neo(window=64), 4, 9),
    "gpt2": (lambda: hf_gpt2(n_layer=3), 3, 21),
    "gpt2-odd-length": (lambda: hf_gpt2(d=48, heads=3), 2, 7),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_logits_match_transformers(case, save_hf):
    make, batch, length = CASES[case]
    hf = make()
    ours = from_pretrained(save_hf(hf))
    ids = random_ids(batch, length)
    expected = torch_logits(hf, ids)
    got = np.asarray(ours(jnp.asarray(ids, jnp.int32)))
    assert got.shape == expected.shape == (batch, length, 97)
    assert got.dtype == np.float32
    assert np.abs(expected).max() > 0.5, "weights big enough for the comparison to mean something"
    assert np.abs(got - expected).max() <= TOLERANCE


def test_left_padding_matches_transformers_given_the_same_positions(save_hf):
    """With an attention mask, padded slots are invisible and positions count real tokens only."""
    torch = pytest.importorskip("torch")
    hf = hf_gpt_neo(layers=("local", "global"), window=3)
    ours = from_pretrained(save_hf(hf))
    ids = random_ids(2, 10)
    mask = np.ones_like(ids)
    mask[1, :4] = 0  # row 1 is left-padded by 4
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
    with torch.no_grad():
        expected = hf(
            torch.tensor(ids), attention_mask=torch.tensor(mask), position_ids=torch.tensor(positions)
        ).logits.numpy()
    got = np.asarray(ours(jnp.asarray(ids, jnp.int32), attention_mask=jnp.asarray(mask)))
    real = mask.astype(bool)
    assert np.abs(got[real] - expected[real]).max() <= TOLERANCE
    # ... and the padded row's real tokens score exactly as they would unpadded.
    alone = np.asarray(ours(jnp.asarray(ids[1:, 4:], jnp.int32)))
    assert np.abs(got[1, 4:] - alone[0]).max() <= 1e-5
