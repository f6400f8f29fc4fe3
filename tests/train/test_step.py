"""The train step: the loss falls; 4 micro-batches of 8 make the same update as one batch of 32.

Speed: one tiny model, built once; one optimizer and one step (one batch shape, [1, 32, T]) shared
by the tests that need no other, so each distinct step (accumulated, dropout, packed rows) is
compiled once; and compiled as jax_disable_most_optimizations compiles (LLVM's optimizations off:
half the time), for these executables only.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from runner.model import GPTConfig, GPTNeo
from runner.recipe.schema_optim import AdamW, Constant
from runner.train.optim import optimizer, schedule
from runner.train.step import make_eval_step, make_train_step, weighted_ce

V, T = 64, 16
ROWS = 32  # the shared step's batch: one micro-batch of 32 rows


# What jax_disable_most_optimizations sets (jax/_src/compiler.py), given to each compilation here
# rather than set for the whole process (other test files share it).
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


class Fast:
    """A function of make_train_step or make_eval_step (jitted: donation, shardings) compiled with
    FAST, once per shapes of its arguments."""

    def __init__(self, jitted):
        self.jitted, self.compiled = jitted, {}

    def __call__(self, *args):
        leaves, tree = jax.tree_util.tree_flatten(args)
        key = tree, tuple((x.shape, str(x.dtype)) for x in leaves)
        if key not in self.compiled:
            self.compiled[key] = self.jitted.lower(*args).compile(FAST)
        return self.compiled[key](*args)


def config(dropout=0.0):
    return GPTConfig("gpt-neo", V, T, 32, 2, 4, 64, ("global", "local"), window_size=4,
                     embd_dropout=dropout, attn_dropout=dropout, resid_dropout=dropout)


@pytest.fixture(scope="module")
def tiny():
    """(graphdef, params) of the tiny model; a test copies params before a step (steps donate them)."""
    return nnx.split(GPTNeo(config(), rngs=nnx.Rngs(0)))


@pytest.fixture(scope="module")
def tx():
    return optimizer(AdamW(type="adamw", weight_decay=0.1), schedule(Constant(type="constant", peak_lr=1e-3), 10))


@pytest.fixture(scope="module")
def step(tiny, tx):
    return Fast(make_train_step(tiny[0], tx, dropout=False))


@pytest.fixture(scope="module")
def evaluate(tiny):
    return Fast(make_eval_step(tiny[0]))


def fresh(params):
    return jax.tree_util.tree_map(jnp.copy, params)


def batch(n, seed=0):
    rs = np.random.RandomState(seed)
    # a learnable pattern: each row counts up from a random start
    start = rs.randint(0, V, size=(n, 1))
    ids = ((start + np.arange(T)) % V).astype(np.int32)
    weights = np.ones((n, T), np.uint8)
    weights[:, :3] = 0  # e.g. a prompt
    return ids, weights


def micro(ids, weights, accum):
    return {"input_ids": jnp.asarray(ids.reshape(accum, -1, T)), "loss_weights": jnp.asarray(weights.reshape(accum, -1, T))}


def pad_rows(a, rows):
    """`a` [n, T] and rows of zeros up to `rows`: rows of weight 0 add nothing to a loss or a gradient."""
    return np.concatenate([a, np.zeros((rows - len(a), *a.shape[1:]), a.dtype)])


def test_weighted_ce_counts_only_weighted_targets():
    logits = jnp.zeros((1, 4, 8))
    ids = jnp.asarray([[1, 2, 3, 4]])
    s, n = weighted_ce(logits, ids, jnp.asarray([[1, 0, 1, 1]]))
    assert float(n) == 2.0 and np.isclose(float(s), 2 * np.log(8))  # targets 3 and 4; the first token never is one


def test_loss_falls(tiny, tx, step, evaluate):
    params = fresh(tiny[1])
    opt_state = tx.init(params)
    losses = []
    for i in range(100):
        ids, w = batch(ROWS, seed=i)
        params, opt_state, m = step(params, opt_state, micro(ids, w, 1), jax.random.key(i))
        losses.append(float(m["loss"]))
    assert losses[-1] < 0.5 * losses[0], losses
    ids, w = batch(8, seed=999)
    s, n = evaluate(params, jnp.asarray(ids), jnp.asarray(w))
    assert float(s / n) < 0.6 * losses[0]


def test_accumulation_equals_one_big_batch(tiny):
    # Plain SGD with lr 1: the update is minus the gradient itself, so the parameters compare the
    # accumulated gradient with the one-batch gradient directly. (Adam's first step, lr*g/(|g|+eps),
    # turns a float32 rounding of a near-zero gradient into a visible share of a step: 1.7e-6 of a
    # 1e-3 step once the summation order changed with a jax release.)
    import optax

    sgd = optax.sgd(1.0)
    ids, w = batch(32, seed=3)
    w[5, 8:] = 0  # uneven weights across micro-batches: the token-weighted mean must still agree
    results = []
    for accum in (1, 4):
        run = Fast(make_train_step(tiny[0], sgd, dropout=False))
        params = fresh(tiny[1])
        before = [np.asarray(x) for x in jax.tree_util.tree_leaves(params)]
        params, _, m = run(params, sgd.init(params), micro(ids, w, accum), jax.random.key(0))
        grads = [b - np.asarray(a) for a, b in zip(jax.tree_util.tree_leaves(params), before, strict=True)]
        results.append((grads, m))
    (g1, m1), (g4, m4) = results
    np.testing.assert_allclose(float(m1["loss"]), float(m4["loss"]), rtol=1e-6)
    np.testing.assert_allclose(float(m1["grad_norm"]), float(m4["grad_norm"]), rtol=1e-5)
    assert float(m1["tokens"]) == float(m4["tokens"]) == float(w[:, 1:].sum())
    scale = max(float(np.abs(g).max()) for g in g1)
    assert scale > 1e-3  # a real gradient, not an untrained no-op
    for a, b in zip(g1, g4, strict=True):  # float32 sums in another order: ~1e-7 of the largest gradient
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * scale)


def test_dropout_uses_the_step_key(tiny, tx):
    # the same parameters in a model whose config has dropout (the model holds no RNG state)
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: GPTNeo(config(dropout=0.1), rngs=nnx.Rngs(0))))
    params = tiny[1]
    step = Fast(make_train_step(graphdef, tx, dropout=True))
    ids, w = batch(8)
    out = []
    for key in (0, 0, 1):
        _, _, m = step(fresh(params), tx.init(params), micro(ids, w, 1), jax.random.key(key))
        out.append(float(m["loss"]))
    assert out[0] == out[1] != out[2]


def test_a_packed_row_scores_as_its_examples_one_per_row(tiny, tx, step, evaluate):
    """Segments (packed APPS rows): the loss sum and the gradient of a packed row equal the sums
    over its examples, each padded in a row of its own; the first token of each example has weight
    0, as runner/data/pack.py writes it."""
    ids, w = batch(3, seed=7)
    lengths = [6, 5, 4]  # + 1 slot of padding
    rows_ids = np.zeros((3, T), np.int32)
    rows_w = np.zeros((3, T), np.uint8)
    packed = {"input_ids": np.zeros((1, T), np.int32), "loss_weights": np.zeros((1, T), np.uint8),
              "segment_ids": np.zeros((1, T), np.int32), "positions": np.zeros((1, T), np.int32)}
    start = 0
    for i, n in enumerate(lengths):
        rows_ids[i, :n], rows_w[i, 1:n] = ids[i, :n], w[i, 1:n]
        packed["input_ids"][0, start : start + n] = ids[i, :n]
        packed["loss_weights"][0, start + 1 : start + n] = w[i, 1:n]
        packed["segment_ids"][0, start : start + n] = i + 1
        packed["positions"][0, start : start + n] = np.arange(n)
        start += n
    params = tiny[1]
    # the rows and the unsegmented row padded to 8 rows of which the others weigh 0: the shapes
    # test_loss_falls evaluates, so compiled once
    s_rows, n_rows = evaluate(params, jnp.asarray(pad_rows(rows_ids, 8)), jnp.asarray(pad_rows(rows_w, 8)))
    s_packed, n_packed = evaluate(params, *(jnp.asarray(packed[k]) for k in packed))
    assert float(n_rows) == float(n_packed) == sum(float(w[i, 1:n].sum()) for i, n in enumerate(lengths))
    np.testing.assert_allclose(float(s_packed), float(s_rows), rtol=1e-6)
    s_mixed, _ = evaluate(params, jnp.asarray(pad_rows(packed["input_ids"], 8)),
                          jnp.asarray(pad_rows(packed["loss_weights"], 8)))
    assert abs(float(s_mixed) - float(s_rows)) > 1e-3  # without segments the examples see each other

    out = []
    for run, b in ((step, {"input_ids": pad_rows(rows_ids, ROWS), "loss_weights": pad_rows(rows_w, ROWS)}),
                   (Fast(make_train_step(tiny[0], tx, dropout=False)), packed)):
        p = fresh(params)
        _, _, m = run(p, tx.init(p), {k: jnp.asarray(v)[None] for k, v in b.items()}, jax.random.key(0))
        out.append(m)
    np.testing.assert_allclose(float(out[0]["loss"]), float(out[1]["loss"]), rtol=1e-6)
    np.testing.assert_allclose(float(out[0]["grad_norm"]), float(out[1]["grad_norm"]), rtol=1e-5)
