"""Schedules pinned at chosen steps; weight decay masks and Adafactor's decay really applied."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from runner.recipe.load import load_recipe
from runner.recipe.schema_optim import Adafactor, AdamW, Constant, WarmupCosine, WarmupLinear
from runner.train.optim import decay_mask, optimizer, schedule

ROOT = Path(__file__).resolve().parents[2]


def test_code_clippy_schedule():
    """4k warmup 0 → 5e-5, cosine over 50k steps to 5e-6, then flat (seed README)."""
    spec = load_recipe(ROOT / "recipes" / "code-clippy-125m.yaml").recipe.schedule
    lr = schedule(spec, 54000)
    assert float(lr(0)) == 0.0
    assert float(lr(2000)) == pytest.approx(2.5e-5, rel=1e-6)
    assert float(lr(4000)) == pytest.approx(5e-5, rel=1e-6)
    assert float(lr(4000 + 25000)) == pytest.approx(5e-6 + (5e-5 - 5e-6) * 0.5, rel=1e-5)  # half-way: mid value
    assert float(lr(54000)) == pytest.approx(5e-6, rel=1e-5)
    assert float(lr(80000)) == pytest.approx(5e-6, rel=1e-5)  # flat after the decay


def test_apps_linear_schedule_ends_at_zero_on_the_last_step():
    spec = WarmupLinear(type="warmup_linear", peak_lr=2e-5, warmup_steps=5000, end_lr=0.0)
    lr = schedule(spec, 25000)
    assert float(lr(0)) == 0.0
    assert float(lr(5000)) == pytest.approx(2e-5, rel=1e-6)
    assert float(lr(15000)) == pytest.approx(1e-5, rel=1e-5)
    assert float(lr(25000)) == pytest.approx(0.0, abs=1e-12)


def test_constant():
    lr = schedule(Constant(type="constant", peak_lr=3e-4), 10)
    assert [float(lr(s)) for s in (0, 5, 100)] == pytest.approx([3e-4] * 3)


def test_cosine_without_warmup():
    lr = schedule(WarmupCosine(type="warmup_cosine", peak_lr=1.0, decay_steps=100, end_lr=0.0), 100)
    assert float(lr(0)) == 1.0 and float(lr(50)) == pytest.approx(0.5, abs=1e-6)


def first_update(tx, grads, params):
    """tx's first update, jitted: one compilation instead of one per operation (the same arithmetic)."""
    return jax.jit(lambda g, p: tx.update(g, tx.init(p), p))(grads, params)


PARAMS = {
    "wte": {"embedding": jnp.ones((4, 2))},
    "blocks": {0: {"ln_1": {"scale": jnp.ones(2), "bias": jnp.ones(2)},
                   "mlp": {"c_fc": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}}},
}


def test_decay_mask_default_and_configurable():
    m = decay_mask(PARAMS, ["bias", "norm", "embedding"])
    assert m["blocks"][0]["mlp"]["c_fc"] == {"kernel": True, "bias": False}
    assert m["blocks"][0]["ln_1"] == {"scale": False, "bias": False} and m["wte"]["embedding"] is False
    m = decay_mask(PARAMS, [])
    assert all(jax.tree_util.tree_leaves(m))


@pytest.mark.parametrize("spec", [
    AdamW(type="adamw", weight_decay=0.1, grad_clip=None),
    Adafactor(type="adafactor", weight_decay=0.1, grad_clip=None),
], ids=["adamw", "adafactor"])
def test_weight_decay_really_applies_and_scales_with_lr(spec):
    """Zero gradients: the only change is decay, lr * wd * param, and only where the mask allows."""
    lr = 0.5
    tx = optimizer(spec, schedule(Constant(type="constant", peak_lr=lr), 1))
    params = PARAMS
    grads = jax.tree_util.tree_map(jnp.zeros_like, params)
    updates, _ = first_update(tx, grads, params)
    kernel = np.asarray(updates["blocks"][0]["mlp"]["c_fc"]["kernel"])
    np.testing.assert_allclose(kernel, -lr * 0.1 * np.ones((2, 2)), rtol=1e-6)
    assert float(jnp.abs(updates["blocks"][0]["mlp"]["c_fc"]["bias"]).max()) == 0.0
    assert float(jnp.abs(updates["wte"]["embedding"]).max()) == 0.0


def test_gradient_clipping_by_global_norm():
    """Adam with a large eps is not scale-invariant, so clipping shows: a gradient of norm 200
    clipped to 1 steps exactly like the same direction given at norm 1."""
    lr = schedule(Constant(type="constant", peak_lr=1.0), 1)
    params = {"w": jnp.zeros(4)}

    def step(grad_clip, g):
        tx = optimizer(AdamW(type="adamw", grad_clip=grad_clip, eps=1.0), lr)
        return np.asarray(first_update(tx, {"w": g}, params)[0]["w"])

    big = jnp.full(4, 100.0)  # global norm 200
    unit = big / 200.0
    np.testing.assert_allclose(step(1.0, big), step(None, unit), rtol=1e-6)
    assert not np.allclose(step(None, big), step(None, unit))


def _seed_decay_mask(path) -> bool:
    """GPT-Code-Clippy's decay_mask_fn (training/run_clm_apps.py, run_clm_streaming_flax.py): decay
    everything but biases and the LayerNorm scales ln_1, ln_2, ln_f, on Flax GPT-2/GPT-Neo names."""
    names = [str(getattr(p, "key", getattr(p, "name", p))) for p in path]
    if names and names[-1] == "value":  # an nnx Variable's payload
        names = names[:-1]
    return names[-1] != "bias" and tuple(names[-2:]) not in [("ln_1", "scale"), ("ln_2", "scale"), ("ln_f", "scale")]


@pytest.mark.parametrize("arch", ["gpt-neo", "gpt2"])
def test_bias_and_norm_is_the_seeds_mask_on_the_real_parameter_tree(arch):
    """`weight_decay_exclude: [bias, norm]` (the reproduction recipes') decays exactly what the seed
    decayed, embeddings included; ccrun's default differs from it only on the embeddings."""
    from flax import nnx

    from runner.model.from_recipe import build_model

    from runner.recipe.schema_model import ModelSpec

    spec = ModelSpec.model_validate({"arch": arch, "init": "scratch", "config": {
        "n_layer": 2, "d_model": 16, "n_head": 2, "vocab_size": 32, "max_positions": 8, "window_size": 4}})
    _, params = nnx.split(nnx.eval_shape(lambda: build_model(spec)))  # the tree only: no weights computed
    ours = decay_mask(params, ["bias", "norm"])
    seed = jax.tree_util.tree_map_with_path(lambda path, _: _seed_decay_mask(path), params)
    assert jax.tree_util.tree_leaves(ours) == jax.tree_util.tree_leaves(seed)
    default = decay_mask(params, ["bias", "norm", "embedding"])
    differ = [jax.tree_util.keystr(p) for (p, a), b in zip(jax.tree_util.tree_leaves_with_path(seed),
                                                            jax.tree_util.tree_leaves(default), strict=True) if a != b]
    assert differ and all("wte" in d or "wpe" in d for d in differ), differ


@pytest.mark.parametrize("name", ["code-clippy-125m.yaml", "code-clippy-gpt2.yaml", "apps-125m.yaml", "apps-1.3b.yaml"])
def test_the_reproduction_recipes_use_the_seeds_mask_and_clipping(name):
    o = load_recipe(ROOT / "recipes" / name).recipe.optimizer
    assert o.weight_decay_exclude == ["bias", "norm"]
    # AdamW runs: clip_by_global_norm(1) in the seed's scripts; its Adafactor: optax.adafactor, no clipping
    assert o.grad_clip == (None if o.type == "adafactor" else 1.0)
