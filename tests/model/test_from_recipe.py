"""The recipe's model and tokenizer sections build what they say."""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from runner.data.tokenizer import build_tokenizer
from runner.model import build_model, save_pretrained
from runner.model.hf import flat_params
from runner.recipe.load import load_recipe

from .hf_models import hf_gpt_neo, torch_logits

ROOT = Path(__file__).resolve().parents[2]

# One compilation per model instead of every op compiled one by one (eager).
FORWARD = nnx.jit(lambda m, ids: m(ids))


def test_smoke_recipe_builds_a_scratch_model_on_a_trained_tokenizer(tmp_path):
    recipe = load_recipe(ROOT / "recipes" / "smoke.yaml").recipe
    texts = [p.read_text() for p in sorted((ROOT / "runner").rglob("*.py"))]
    tok = build_tokenizer(recipe.tokenizer, texts=texts, out_dir=tmp_path / "tok")
    assert len(tok) == recipe.tokenizer.train.vocab_size
    model = build_model(recipe.model, tokenizer=tok, seed=recipe.seed)
    c = model.config
    assert (c.n_layer, c.d_model, c.n_head, c.vocab_size) == (2, 64, 4, 512)
    assert c.attention_layers == ("global", "local") and c.eos_token_id == tok.eos_token_id
    logits = FORWARD(model, jnp.asarray([tok.encode("def f():\n    return 1\n")], jnp.int32))
    assert logits.shape[-1] == 512
    # the seed decides the weights
    again = build_model(recipe.model, tokenizer=tok, seed=recipe.seed)
    other = build_model(recipe.model, tokenizer=tok, seed=recipe.seed + 1)
    a, b, o = flat_params(model), flat_params(again), flat_params(other)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a[("wte", "embedding")], o[("wte", "embedding")])


def test_scratch_init_is_gpt2_style():
    recipe = load_recipe(ROOT / "recipes" / "smoke.yaml", ["model.config.n_layer=8", "model.config.vocab_size=4096"]).recipe
    params = flat_params(build_model(recipe.model, seed=0))
    assert abs(float(np.std(params[("wte", "embedding")])) - 0.02) < 0.002
    assert abs(float(np.std(params[("blocks", 0, "mlp", "c_fc", "kernel")])) - 0.02) < 0.002
    residual = float(np.std(params[("blocks", 0, "mlp", "c_proj", "kernel")]))
    assert abs(residual - 0.02 / np.sqrt(2 * 8)) < 0.001  # residual projections scaled by depth
    assert float(np.abs(params[("blocks", 0, "attn", "out_proj", "bias")]).max()) == 0.0


def test_pretrained_recipe_loads_a_local_checkpoint_with_its_dtype_and_dropout(tmp_path):
    hf = hf_gpt_neo()
    hf.save_pretrained(tmp_path / "ckpt", safe_serialization=True)
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(
        "name: r\nmodel: {arch: gpt-neo, checkpoint: ./ckpt, dropout: 0.1, dtype: {compute: bfloat16}}\n"
        "tokenizer: {name: gpt2}\n"
    )
    spec = load_recipe(recipe_file).recipe.model
    model = build_model(spec)
    assert model.config.resid_dropout == model.config.attn_dropout == 0.1
    assert model.dtype == jnp.bfloat16
    ids = np.random.RandomState(0).randint(0, 97, (1, 9))
    ref = torch_logits(hf, ids)
    assert np.abs(np.asarray(FORWARD(model, jnp.asarray(ids, jnp.int32))) - ref).max() < 0.05  # bf16 compute
    # and round-trips through an export
    save_pretrained(model, tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").is_file()
