"""Checkpoints in and out: transformers loads what we write; we load what it writes; errors name the misfit."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from runner.model import CheckpointError, from_pretrained, save_pretrained
from runner.model.hf import flat_params

from .hf_models import hf_gpt2, hf_gpt_neo, torch_logits, transformers

IDS = np.random.RandomState(3).randint(0, 97, size=(2, 15))


@pytest.mark.parametrize("make", [lambda: hf_gpt_neo(layers=("global", "local", "local")), hf_gpt2], ids=["gpt-neo", "gpt2"])
def test_export_loads_in_transformers_with_the_same_logits(make, save_hf, tmp_path):
    ours = from_pretrained(save_hf(make()))
    out = save_pretrained(ours, tmp_path / "export")
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors"}
    back, info = transformers.AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set() and info["mismatched_keys"] == set()
    got = np.asarray(ours(jnp.asarray(IDS, jnp.int32)))
    assert np.abs(torch_logits(back.eval(), IDS) - got).max() <= 1e-4


def test_load_export_load_is_exact(save_hf, tmp_path):
    first = from_pretrained(save_hf(hf_gpt2(n_layer=2)))
    again = from_pretrained(save_pretrained(first, tmp_path / "a"))
    a, b = flat_params(first), flat_params(again)
    assert a.keys() == b.keys()
    assert all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)
    # and the files themselves are identical after a second round
    save_pretrained(again, tmp_path / "b")
    fa, fb = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert fa.keys() == fb.keys() and all(np.array_equal(fa[k], fb[k]) for k in fa)


def test_scratch_model_exports_to_transformers(tmp_path):
    from flax import nnx

    from runner.model import GPTConfig, GPTNeo

    # the sizes of the other tests' models (the forward's compiled ops are reused), its own layers and window
    config = GPTConfig("gpt-neo", 97, 64, 32, 2, 4, 128, ("local", "global"), window_size=5, eos_token_id=0, bos_token_id=0)
    model = GPTNeo(config, rngs=nnx.Rngs(0))
    back = transformers.AutoModelForCausalLM.from_pretrained(save_pretrained(model, tmp_path / "s")).eval()
    assert np.abs(torch_logits(back, IDS) - np.asarray(model(jnp.asarray(IDS, jnp.int32)))).max() <= 1e-5


def test_sharded_checkpoints_load(save_hf):
    hf = hf_gpt_neo()
    directory = save_hf(hf, max_shard_size="20KB")
    assert (directory / "model.safetensors.index.json").is_file()
    ours = from_pretrained(directory)
    assert np.abs(torch_logits(hf, IDS) - np.asarray(ours(jnp.asarray(IDS, jnp.int32)))).max() <= 1e-4


def test_original_gpt2_names_without_prefix_and_buffers_load(save_hf, tmp_path):
    """The hub's gpt2 file names its tensors `h.0.attn...` and carries attn.bias buffers."""
    hf = hf_gpt2()
    directory = save_hf(hf)
    tensors = load_file(str(directory / "model.safetensors"))
    renamed = {k.removeprefix("transformer."): v for k, v in tensors.items() if k != "lm_head.weight"}
    renamed["h.0.attn.bias"] = np.tril(np.ones((1, 1, 64, 64), np.float32))
    save_file(renamed, str(directory / "model.safetensors"), metadata={"format": "pt"})
    ours = from_pretrained(directory)
    assert np.abs(torch_logits(hf, IDS) - np.asarray(ours(jnp.asarray(IDS, jnp.int32)))).max() <= 1e-4


def test_compute_dtype_and_param_dtype(save_hf):
    from flax import nnx

    model = from_pretrained(save_hf(hf_gpt_neo()), dtype="bfloat16")
    forward = nnx.jit(lambda m, ids: m(ids))  # one compilation, not every bf16 op one by one
    assert forward(model, jnp.asarray(IDS, jnp.int32)).dtype == jnp.float32  # logits stay fp32
    assert all(v.dtype == jnp.float32 for v in flat_params(model).values())  # parameters stay fp32


# --- errors ------------------------------------------------------------------------------------


def _edit_tensors(directory, edit):
    path = directory / "model.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})


def test_missing_and_unexpected_weights_are_named(save_hf):
    directory = save_hf(hf_gpt_neo())

    def edit(t):
        del t["transformer.h.1.mlp.c_fc.bias"]
        t["transformer.h.9.extra.weight"] = np.zeros(3, np.float32)

    _edit_tensors(directory, edit)
    with pytest.raises(CheckpointError) as err:
        from_pretrained(directory)
    assert str(err.value) == (
        "missing weights: transformer.h.1.mlp.c_fc.bias; unexpected weights: transformer.h.9.extra.weight"
    )


def test_wrong_shapes_are_named(save_hf):
    directory = save_hf(hf_gpt_neo())
    _edit_tensors(directory, lambda t: t.update({"transformer.ln_f.weight": np.ones(7, np.float32)}))
    with pytest.raises(CheckpointError, match=r"ln_f\.scale: \(7,\) != \(32,\)"):
        from_pretrained(directory)


def test_unsupported_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mistral"}))
    with pytest.raises(CheckpointError, match="unsupported model_type 'mistral'; ccrun supports gpt_neo, gpt2, llama, qwen2"):
        from_pretrained(tmp_path)


def test_no_weights_file(save_hf):
    directory = save_hf(hf_gpt2())
    (directory / "model.safetensors").rename(directory / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="no model.safetensors.*found pytorch_model.bin"):
        from_pretrained(directory)


def test_missing_local_directory(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        from_pretrained(str(tmp_path / "nope"))


def test_hub_id_without_network_names_the_id():
    # Tests run with HF_HUB_OFFLINE=1 (conftest); this id is in no cache.
    with pytest.raises(CheckpointError) as err:
        from_pretrained("ccrun-tests/no-such-model")
    assert "'ccrun-tests/no-such-model'" in str(err.value) and "local directory" in str(err.value)
