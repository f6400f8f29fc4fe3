"""LoRA through the trainer: only the adapters train, the optimizer state and the checkpoints hold
them alone, the frozen base stays bit for bit, and a resumed LoRA run reaches the uninterrupted
run's adapters exactly."""

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from runner.model import build_model
from runner.recipe.load import load_recipe
from runner.train import train
from runner.train.step import split_trainable

from .train_probe import tokens

RECIPE = """\
name: lora
seed: 5
model:
  arch: {arch}
  init: scratch
  config: {config}
  lora: {{rank: 4, alpha: 8, dropout: 0.1}}
  dtype: {{compute: {compute}}}
tokenizer: {{name: gpt2}}
optimizer: {{type: adamw, weight_decay: 0.1}}
schedule: {{type: warmup_cosine, peak_lr: 5.0e-2, warmup_steps: 2, decay_steps: 20}}
train: {{batch_size: 8, micro_batch_size: 4, steps: 6, log_every: 1, eval_every: 3, checkpoint: {{every: 2}}}}
data: {{sources: [{{type: jsonl, paths: [unused.jsonl]}}], seq_len: 16, validation: {{fraction: 0.1}}}}
"""
LLAMA = "{n_layer: 2, d_model: 32, n_head: 4, n_kv_head: 2, vocab_size: 64, max_positions: 16}"
NEO = "{n_layer: 2, d_model: 32, n_head: 4, vocab_size: 64, max_positions: 16, window_size: 4}"


def recipe(tmp_path, arch="llama", compute="float32", **train):
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(arch=arch, config=LLAMA if arch == "llama" else NEO, compute=compute))
    overrides = [f"train.{k}={v}" for k, v in train.items()]
    return load_recipe(path, overrides).recipe


def leaves(state) -> dict[str, np.ndarray]:
    return {"/".join(map(str, path)): np.asarray(v[...]) for path, v in nnx.to_flat_state(state)}


def base_and_adapters(model):
    _, adapters, base = split_trainable(model)
    return leaves(base), leaves(adapters)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 6-step LoRA run on a tiny Llama: (recipe, run_dir, model before, model after, summary)."""
    tmp = tmp_path_factory.mktemp("lora")
    r = recipe(tmp)
    before = base_and_adapters(build_model(r.model, seed=r.seed))
    model = build_model(r.model, seed=r.seed)
    summary = train(r, model, tokens(), tmp / "run", log=lambda line: None)
    return r, tmp / "run", before, model, summary


def test_only_the_adapters_change(trained):
    _, _, (base0, adapters0), model, _ = trained
    base1, adapters1 = base_and_adapters(model)
    assert base1.keys() == base0.keys() and all(np.array_equal(base0[k], base1[k]) for k in base0)
    assert set(adapters1) == set(adapters0) and all(k.endswith(("lora_a", "lora_b")) for k in adapters1)
    # 2 layers × 7 linear layers × (A, B); B starts at zero and has moved (the update reached it)
    assert len(adapters1) == 2 * 7 * 2
    assert all(np.abs(adapters1[k]).max() > 0 for k in adapters1 if k.endswith("lora_b"))
    assert all(np.abs(adapters0[k]).max() == 0 for k in adapters0 if k.endswith("lora_b"))


def test_checkpoints_hold_the_adapters_and_their_optimizer_state_only(trained):
    _, run_dir, (base0, adapters0), _, summary = trained
    assert summary["latest_step"] == 6
    def stored(item):  # the checkpoint's own metadata: what orbax wrote, never restored onto our shapes
        meta = ocp.StandardCheckpointer().metadata(run_dir / "checkpoints" / "6" / item)
        tree = getattr(getattr(meta, "item_metadata", meta), "tree", meta)
        return jax.tree_util.tree_leaves_with_path(tree)

    params = stored("params")
    names = {"/".join(str(getattr(p, "key", p)) for p in path) for path, _ in params}
    assert names and all("lora_a" in n or "lora_b" in n for n in names), names
    adapter_values = sum(v.size for v in adapters0.values())
    assert sum(int(np.prod(m.shape)) for _, m in params) == adapter_values
    # AdamW: mu and nu, each the adapters' size (plus scalar counts)
    opt = [m for _, m in stored("opt_state") if hasattr(m, "shape") and len(m.shape)]
    assert sum(int(np.prod(m.shape)) for m in opt) == 2 * adapter_values
    assert adapter_values < sum(v.size for v in base0.values()) / 4


def test_a_resumed_lora_run_reaches_the_same_adapters(trained, tmp_path):
    """Stopped after 4 steps (its checkpoint holds the adapters and their optimizer state), rebuilt
    from the recipe (the frozen base comes from the seed) and run to 6: the uninterrupted run's
    adapters bit for bit. warmup_cosine's shape does not depend on train.steps."""
    r, _, _, model, _ = trained
    first = build_model(r.model, seed=r.seed)
    train(recipe(tmp_path, steps=4), first, tokens(), tmp_path / "run", log=lambda line: None)
    resumed = build_model(r.model, seed=r.seed)
    summary = train(r, resumed, tokens(), tmp_path / "run", log=lambda line: None)
    assert summary["resumed_from"] == 4
    _, expected = base_and_adapters(model)
    _, got = base_and_adapters(resumed)
    assert all(np.array_equal(expected[k], got[k]) for k in expected)


def test_the_frozen_base_sits_in_the_compute_dtype(tmp_path):
    """bf16 compute: the base is stored in bf16 (half the memory), the adapters in float32, and a
    step trains them."""
    r = recipe(tmp_path, arch="gpt-neo", compute="bfloat16", steps=2)
    model = build_model(r.model, seed=r.seed)
    base, adapters = base_and_adapters(model)
    assert {v.dtype for v in base.values()} == {np.dtype("bfloat16")} or all(
        str(v.dtype) == "bfloat16" for v in base.values())
    assert {str(v.dtype) for v in adapters.values()} == {"float32"}
    assert len(adapters) == 2 * 6 * 2  # gpt-neo: q k v out_proj c_fc c_proj
    train(r, model, tokens(), tmp_path / "run", log=lambda line: None)
    base1, adapters1 = base_and_adapters(model)
    assert all(np.array_equal(base[k], base1[k]) for k in base)
    assert any(not np.array_equal(adapters[k], adapters1[k]) for k in adapters)
    assert isinstance(nnx.state(model, nnx.LoRAParam), nnx.State)


def test_lora_trains_under_activation_checkpointing():
    """train.remat with LoRA: the blocks' checkpointing (nnx.remat) runs with the frozen base merged
    in the step (it once refused the base's Variables, made outside the differentiated function), and
    gives the same loss and adapter update as no checkpointing (float32 reassociation at most)."""
    import jax.numpy as jnp
    import optax

    from runner.model import Llama, LlamaConfig, set_remat
    from runner.model.lora import apply_lora
    from runner.train.step import make_train_step

    ids = jnp.asarray(np.random.RandomState(0).randint(0, 64, (2, 2, 16)), jnp.int32)
    batch = {"input_ids": ids, "loss_weights": jnp.ones_like(ids)}
    # One model: the step's handling of the frozen base is the same for every family.
    builds = {"qwen2": lambda: Llama(LlamaConfig("qwen2", 64, 32, 32, 2, 4, 2, 64, qkv_bias=True), rngs=nnx.Rngs(0))}
    for arch, build in builds.items():
        results = {}
        for policy in ("none", "block", "dots"):
            model = build()
            apply_lora(model, rank=4, alpha=8, dropout=0.1, targets=["q_proj", "v_proj"], rngs=nnx.Rngs(1))
            graphdef, adapters, base = split_trainable(set_remat(model, policy))
            tx = optax.sgd(1.0)
            new, _, metrics = make_train_step(graphdef, tx, dropout=True)(adapters, tx.init(adapters), batch,
                                                                          jax.random.key(3), base)
            results[policy] = float(metrics["loss"]), leaves(new)
        loss, want = results["none"]
        assert any(np.abs(v).max() > 0 for k, v in want.items() if "lora_b" in k)
        for policy in ("block", "dots"):
            got_loss, got = results[policy]
            assert abs(got_loss - loss) <= 1e-6, (arch, policy)
            assert all(np.abs(got[k] - want[k]).max() <= 1e-6 for k in want), (arch, policy)
