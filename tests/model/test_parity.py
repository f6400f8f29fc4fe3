"""Our Flax model matches transformers' PyTorch GPT-Neo and GPT-2 number for number (fp32)."""

import numpy as np
import jax.numpy as jnp
import pytest
from flax import nnx

from runner.model import from_pretrained

from .hf_models import hf_gpt2, hf_gpt_neo, torch_logits
from .rows import packed

TOLERANCE = 1e-4  # max |logit difference| in fp32

# One jitted forward for every test (a compilation per model and shape, none per test); None
# arguments are empty pytrees, so each combination of mask / segments / positions is its own trace.
FORWARD = nnx.jit(lambda m, ids, mask, segments, positions: m(ids, attention_mask=mask, segment_ids=segments,
                                                                positions=positions))


def forward(model, ids, *, mask=None, segments=None, positions=None) -> np.ndarray:
    as_jax = lambda x, dtype=jnp.int32: None if x is None else jnp.asarray(x, dtype)  # noqa: E731
    return np.asarray(FORWARD(model, as_jax(ids), as_jax(mask), as_jax(segments), as_jax(positions)))


def random_ids(batch, length, vocab=97, seed=0):
    return np.random.RandomState(seed).randint(0, vocab, size=(batch, length))


CASES = {
    # window 4 < sequence 23: local layers really cut attention off
    "neo-window-smaller-than-sequence": (lambda: hf_gpt_neo(layers=("global", "local"), window=4), 2, 23),
    "neo-all-local": (lambda: hf_gpt_neo(layers=("local", "local"), window=5), 3, 17),
    "neo-all-global": (lambda: hf_gpt_neo(layers=("global", "global")), 2, 16),
    "neo-odd-length-batch-1": (lambda: hf_gpt_neo(window=3, d=48, heads=6), 1, 13),
    "neo-window-covers-sequence": (lambda: hf_gpt_neo(window=64), 4, 9),
    "gpt2": (lambda: hf_gpt2(n_layer=2), 3, 21),
    "gpt2-odd-length": (lambda: hf_gpt2(d=48, heads=3), 2, 7),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Each case's transformers model and ours loaded from its checkpoint, built once per file."""
    built = {}

    def get(case):
        if case not in built:
            hf = CASES[case][0]()
            out = tmp_path_factory.mktemp(case)
            hf.save_pretrained(out, safe_serialization=True)
            built[case] = hf, from_pretrained(out)
        return built[case]

    return get


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_logits_match_transformers(case, models):
    _, batch, length = CASES[case]
    hf, ours = models(case)
    ids = random_ids(batch, length)
    expected = torch_logits(hf, ids)
    got = forward(ours, ids)
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
    got = forward(ours, ids, mask=mask)
    real = mask.astype(bool)
    assert np.abs(got[real] - expected[real]).max() <= TOLERANCE
    # ... and the padded row's real tokens score exactly as they would unpadded.
    alone = forward(ours, ids[1:, 4:])
    assert np.abs(got[1, 4:] - alone[0]).max() <= 1e-5


@pytest.mark.parametrize("case", ["neo-window-smaller-than-sequence", "gpt2"])
def test_packed_segments_match_transformers_run_on_each_example_alone(case, models):
    """Packed rows (runner/data/pack.py): with segment_ids, every example of a row gets the logits
    transformers gives it run alone; positions restart at 0 per segment (derived or given)."""
    hf, ours = models(case)
    lengths = [[7, 9, 5, 3], [24]]  # window 4: local layers cut off within the longer examples
    T = 24
    ids = random_ids(2, T, seed=1)
    segments, positions = packed(lengths, T)  # the padding of row 0 (slots 21..23) is segment 0
    got = forward(ours, ids, segments=segments)
    given = forward(ours, ids, segments=segments, positions=positions)
    assert np.array_equal(got, given)
    for row, parts in enumerate(lengths):
        for start, n in zip(np.cumsum([0] + parts), parts):
            expected = torch_logits(hf, ids[row : row + 1, start : start + n])[0]
            assert np.abs(got[row, start : start + n] - expected).max() <= TOLERANCE
    assert np.isfinite(got).all()  # padding (its own segment) too
