"""LoRA (runner/model/lora.py) against its references: the parameter-count formula from the config,
W + alpha/r · A @ B computed in numpy, and PEFT itself (PyTorch) reading the adapters we write."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from runner.model import GPTConfig, GPTNeo, from_pretrained, save_pretrained
from runner.model.hf import hf_names
from runner.model.lora import (
    LoRALinear,
    apply_lora,
    count_lora_params,
    load_peft_adapter,
    lora_layers,
    lora_param_count,
    merge_lora,
    merge_split,
    save_peft_adapter,
    split_lora,
)

from .hf_models import hf_gpt2, hf_gpt_neo, hf_llama, hf_qwen2, torch_logits

ALL = ("q_proj", "k_proj", "v_proj", "out_proj", "c_fc", "c_proj")
LLAMA_ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
D, F, L, V = 32, 80, 2, 97  # F != 4·D, so c_fc's and c_proj's shapes are not the attention's


def tiny(seed=0) -> GPTNeo:
    config = GPTConfig("gpt-neo", V, 64, D, L, 4, F, ("global", "local"), window_size=4)
    return GPTNeo(config, rngs=nnx.Rngs(seed))


def ids(batch=2, length=11, seed=0):
    return jnp.asarray(np.random.RandomState(seed).randint(0, V, size=(batch, length)), jnp.int32)


def randomize(model, seed=1, b_std=0.05):
    """Random A and B (a fresh adapter's B is zero, which would hide every mistake in B's use)."""
    rs = np.random.RandomState(seed)  # numpy: eager jax.random compiles per shape, seconds per model
    for _, layer in lora_layers(model):
        layer.lora_a[...] = jnp.asarray(rs.normal(0, 0.3, layer.lora_a[...].shape), jnp.float32)
        layer.lora_b[...] = jnp.asarray(rs.normal(0, b_std, layer.lora_b[...].shape), jnp.float32)
    return model


def flat(state) -> dict:
    return {tuple(p): np.asarray(v[...]) for p, v in nnx.to_flat_state(state)}


# --- the transformation -------------------------------------------------------------------


# rank 64 > min(in, out) = 32: PEFT allows it, so do we.
@pytest.mark.parametrize("rank, targets", [(1, ("q_proj", "v_proj")), (4, ALL), (64, ("c_proj",)),
                                           (3, ("c_fc", "out_proj"))])
def test_trainable_count_is_the_formula_and_a_fresh_adapter_changes_nothing(rank, targets):
    model = tiny()
    before = model(ids())
    apply_lora(model, rank=rank, alpha=2 * rank, dropout=0.0, targets=targets, rngs=nnx.Rngs(1))
    # Per layer, from the config: attention projections are D×D, c_fc D×F, c_proj F×D; an adapter
    # on an in×out layer holds A [in, r] and B [r, out].
    fan = {"q_proj": (D, D), "k_proj": (D, D), "v_proj": (D, D), "out_proj": (D, D), "c_fc": (D, F), "c_proj": (F, D)}
    expected = L * sum(rank * (fan[t][0] + fan[t][1]) for t in targets)
    assert count_lora_params(model) == expected
    assert lora_param_count([fan[t] for t in targets] * L, rank) == expected
    assert len(lora_layers(model)) == L * len(targets)
    # PEFT's init: B = 0, so the adapted model's logits are the base's bit for bit.
    np.testing.assert_array_equal(np.asarray(model(ids())), np.asarray(before))


def test_llama_count_is_the_formula_with_grouped_kv():
    from runner.model.llama import Llama, LlamaConfig

    # 8 query heads, 2 key/value heads of 6 dims, d 40, MLP 56, untied head (a Linear, targetable).
    d, q, kv, f, layers, vocab, rank = 40, 8 * 6, 2 * 6, 56, 3, 97, 4
    config = LlamaConfig("llama", vocab, 64, d, layers, 8, 2, f, head_dim=6)
    model = nnx.eval_shape(lambda: apply_lora(Llama(config, rngs=nnx.Rngs(0)), rank=rank, alpha=8, dropout=0.0,
                                              targets=(*LLAMA_ALL, "lm_head"), rngs=nnx.Rngs(1)))  # shapes only
    per_layer = (d + q) + 2 * (d + kv) + (q + d) + 2 * (d + f) + (f + d)  # in + out of each projection
    assert count_lora_params(model) == rank * (layers * per_layer + (d + vocab))


def test_the_base_keeps_its_parameter_paths():
    plain = flat(nnx.state(tiny(), nnx.Param))
    model = apply_lora(tiny(), rank=2, alpha=4, dropout=0.0, targets=ALL, rngs=nnx.Rngs(1))
    base = flat(nnx.state(model, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam))))
    assert base.keys() == plain.keys()
    assert all(np.array_equal(base[k], plain[k]) for k in plain)


def test_bad_arguments_raise():
    model = tiny()
    with pytest.raises(ValueError, match=r"nope name no linear layer.*c_fc, c_proj, k_proj, out_proj, q_proj, v_proj"):
        apply_lora(model, rank=2, alpha=4, dropout=0.0, targets=["q_proj", "nope"], rngs=nnx.Rngs(0))
    for rank in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="rank must be a positive integer"):
            apply_lora(model, rank=rank, alpha=4, dropout=0.0, targets=["q_proj"], rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="alpha"):
        apply_lora(model, rank=2, alpha=0, dropout=0.0, targets=["q_proj"], rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="dropout"):
        apply_lora(model, rank=2, alpha=4, dropout=1.0, targets=["q_proj"], rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="list of layer names"):
        apply_lora(model, rank=2, alpha=4, dropout=0.0, targets="q_proj", rngs=nnx.Rngs(0))
    assert not lora_layers(model)  # nothing was half applied
    with pytest.raises(ValueError, match="no LoRA adapters"):
        split_lora(model)
    apply_lora(model, rank=2, alpha=4, dropout=0.0, targets=["q_proj"], rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="already has a LoRA adapter"):
        apply_lora(model, rank=2, alpha=4, dropout=0.0, targets=["q_proj"], rngs=nnx.Rngs(0))


def test_merge_is_base_plus_scaled_ba_and_gives_the_same_logits():
    rank, alpha = 4, 12.0
    model = randomize(apply_lora(tiny(), rank=rank, alpha=alpha, dropout=0.1, targets=ALL, rngs=nnx.Rngs(1)))
    adapted = np.asarray(model(ids()))
    assert np.abs(adapted - np.asarray(tiny()(ids()))).max() > 1e-2  # the adapters do change the logits
    # Expected kernels in float64 numpy from the layers before merging.
    expected = {path: np.asarray(layer.kernel[...], np.float64)
                + alpha / rank * np.asarray(layer.lora_a[...], np.float64) @ np.asarray(layer.lora_b[...], np.float64)
                for path, layer in lora_layers(model)}
    merge_lora(model)
    assert not lora_layers(model) and count_lora_params(model) == 0
    for path, kernel in expected.items():
        layer = model
        for key in path:
            layer = layer[key] if isinstance(key, int) else getattr(layer, key)
        assert type(layer) is nnx.Linear and layer.kernel[...].dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(layer.kernel[...]), kernel, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(model(ids())), adapted, rtol=0, atol=1e-5)
    # Exactly a plain model's parameters: same paths, shapes and dtypes.
    plain = flat(nnx.state(tiny(), nnx.Param))
    merged = flat(nnx.state(model, nnx.Param))
    assert {k: (v.shape, v.dtype) for k, v in merged.items()} == {k: (v.shape, v.dtype) for k, v in plain.items()}


def test_only_the_adapters_train():
    model = apply_lora(tiny(), rank=4, alpha=8, dropout=0.0, targets=ALL, rngs=nnx.Rngs(1))
    graphdef, adapters, base = split_lora(model)
    assert flat(adapters).keys() == {(*p, w) for p, _ in lora_layers(model) for w in ("lora_a", "lora_b")}
    x = ids()

    def loss(adapters, base):
        logits = merge_split(graphdef, adapters, base)(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], x[:, 1:]).mean()

    grad = jax.jit(jax.grad(loss))
    grads = flat(grad(adapters, base))
    # With B = 0, dL/dA = x^T (dL/dy) B^T · scale is exactly zero and dL/dB is not.
    assert all(np.all(g == 0) for k, g in grads.items() if k[-1] == "lora_a")
    assert all(np.abs(g).max() > 0 for k, g in grads.items() if k[-1] == "lora_b")
    tx = optax.adamw(1e-2)
    opt_state = tx.init(adapters)
    assert sum(x.size for x in jax.tree.leaves(opt_state)) == 1 + 2 * count_lora_params(model)  # count + mu, nu
    updates, _ = tx.update(grad(adapters, base), opt_state, adapters)
    stepped = optax.apply_updates(adapters, updates)
    frozen = flat(base)
    model = merge_split(graphdef, stepped, base)
    assert any(np.abs(v - flat(adapters)[k]).max() > 0 for k, v in flat(stepped).items())
    after = flat(nnx.state(model, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam))))
    assert after.keys() == frozen.keys() and all(np.array_equal(after[k], frozen[k]) for k in frozen)
    # Once B moved, A's gradient is nonzero too.
    grads = flat(grad(nnx.state(model, nnx.LoRAParam), base))
    assert all(np.abs(g).max() > 0 for g in grads.values())


def test_dropout_only_when_not_deterministic():
    model = randomize(apply_lora(tiny(), rank=4, alpha=8, dropout=0.5, targets=ALL, rngs=nnx.Rngs(1)))
    assert model.config.attn_dropout == model.config.resid_dropout == model.config.embd_dropout == 0.0
    x = ids()
    a = np.asarray(model(x, deterministic=True))
    np.testing.assert_array_equal(np.asarray(model(x, deterministic=True)), a)
    noisy = np.asarray(model(x, deterministic=False, rngs=nnx.Rngs(dropout=0)))
    assert np.abs(noisy - a).max() > 1e-3  # only the adapters drop out: the model's own rates are 0
    np.testing.assert_array_equal(np.asarray(model(x, deterministic=False, rngs=nnx.Rngs(dropout=0))), noisy)
    assert np.abs(np.asarray(model(x, deterministic=False, rngs=nnx.Rngs(dropout=1))) - noisy).max() > 1e-3


def test_kv_cache_decoding_of_an_adapted_model_equals_its_forward():
    """The sampler, evals and server decode through `extend`: with adapters as without (Llama here;
    GPT-Neo's extend calls the same project() per layer)."""
    from runner.model.llama import Llama, LlamaConfig

    model = Llama(LlamaConfig("llama", V, 64, D, L, 4, 2, F), rngs=nnx.Rngs(0))
    randomize(apply_lora(model, rank=4, alpha=8, dropout=0.3, targets=LLAMA_ALL, rngs=nnx.Rngs(1)))
    x = ids(2, 9)
    full = np.asarray(nnx.jit(lambda m, x: m(x))(model, x))
    extend = nnx.jit(lambda m, x, cache: m.extend(x, cache))  # compiled: eager decoding is slow
    prefill, cache = extend(model, x[:, :6], model.init_cache(2, 12))
    decoded = [prefill]
    for t in range(6, 9):
        logits, cache = extend(model, x[:, t : t + 1], cache)
        decoded.append(logits)
    np.testing.assert_allclose(np.concatenate([np.asarray(d) for d in decoded], axis=1), full, rtol=0, atol=1e-5)


# --- PEFT's format, read by PEFT --------------------------------------------------------------


def peft_model(hf_base, adapter_dir):
    peft = pytest.importorskip("peft")
    return peft.PeftModel.from_pretrained(hf_base, str(adapter_dir)).eval()


@pytest.mark.parametrize("make_hf, targets", [
    (lambda: hf_gpt_neo(), ALL),
    (lambda: hf_gpt_neo(layers=("local", "global")), ("q_proj", "v_proj")),
    # GPT-2: Conv1D layers (fan_in_fan_out); "out_proj" is transformers' attn.c_proj, so "c_proj" in
    # target_modules would also pick mlp.c_proj: the export must name modules in full.
    (lambda: hf_gpt2(), ("out_proj", "c_fc")),
    (lambda: hf_llama(), LLAMA_ALL),
    (lambda: hf_llama(bias=True), ("q_proj", "v_proj", "lm_head")),  # untied head, attention biases
    (lambda: hf_qwen2(), ("k_proj", "o_proj", "down_proj")),  # q/k/v biases, tied head
], ids=["neo-all", "neo-qv", "gpt2-out-fc", "llama-all", "llama-bias-qv-head", "qwen2-k-o-down"])
def test_peft_loads_our_adapters_with_our_logits(make_hf, targets, save_hf, tmp_path):
    hf = make_hf()
    base_dir = save_hf(hf)
    x = np.random.RandomState(0).randint(0, V, size=(2, 13))
    base_logits = torch_logits(hf, x)
    ours = randomize(apply_lora(from_pretrained(base_dir), rank=4, alpha=16, dropout=0.1, targets=targets,
                                rngs=nnx.Rngs(1)))
    logits = np.asarray(ours(jnp.asarray(x, jnp.int32)))
    assert np.abs(logits - base_logits).max() > 1e-2  # the adapters do change the logits
    names = hf_names(ours.config)
    adapter_dir = save_peft_adapter(ours, tmp_path / "adapter", base_model_name_or_path=str(base_dir), hf_names=names)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (4, 16, 0.1)
    assert config["fan_in_fan_out"] is (ours.config.arch == "gpt2")
    theirs = peft_model(hf, adapter_dir)
    np.testing.assert_allclose(torch_logits(theirs, x), logits, rtol=0, atol=1e-4)
    # PEFT put an adapter on exactly our layers: its trainable count is ours.
    assert sum(p.numel() for n, p in theirs.named_parameters() if "lora_" in n) == count_lora_params(ours)

    # PEFT's own save of those adapters loads into a fresh model of ours with the same logits.
    theirs.save_pretrained(tmp_path / "peft-saved")
    again = load_peft_adapter(from_pretrained(base_dir), tmp_path / "peft-saved", names)
    np.testing.assert_allclose(np.asarray(again(jnp.asarray(x, jnp.int32))), logits, rtol=0, atol=1e-6)

    # Merged on both sides: PEFT's merge_and_unload, and ours exported and read by transformers.
    merged_theirs = theirs.merge_and_unload()
    np.testing.assert_allclose(torch_logits(merged_theirs, x), logits, rtol=0, atol=1e-4)
    save_pretrained(merge_lora(ours), tmp_path / "merged")
    transformers = pytest.importorskip("transformers")
    exported = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    np.testing.assert_allclose(torch_logits(exported, x), logits, rtol=0, atol=1e-4)


def test_gpt2_fused_qkv_has_no_peft_export_but_merges(save_hf, tmp_path):
    hf = hf_gpt2()
    base_dir = save_hf(hf)
    ours = randomize(apply_lora(from_pretrained(base_dir), rank=2, alpha=4, dropout=0.0, targets=["q_proj"],
                                rngs=nnx.Rngs(1)))
    with pytest.raises(ValueError, match="GPT-2 fuses q, k and v.*c_attn"):
        save_peft_adapter(ours, tmp_path / "adapter", base_model_name_or_path="x", hf_names=hf_names(ours.config))
    assert not (tmp_path / "adapter").exists()
    x = np.random.RandomState(1).randint(0, V, size=(2, 9))
    logits = np.asarray(ours(jnp.asarray(x, jnp.int32)))
    save_pretrained(merge_lora(ours), tmp_path / "merged")
    transformers = pytest.importorskip("transformers")
    exported = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    np.testing.assert_allclose(torch_logits(exported, x), logits, rtol=0, atol=1e-4)


def test_saving_keeps_other_files_and_bad_adapters_are_refused(tmp_path):
    model = randomize(apply_lora(tiny(), rank=2, alpha=4, dropout=0.0, targets=["c_fc"], rngs=nnx.Rngs(1)))
    names = hf_names(model.config)
    out = tmp_path / "final"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"the merged model")
    (out / "notes.txt").write_text("mine")
    save_peft_adapter(model, out, base_model_name_or_path="base", hf_names=names)
    save_peft_adapter(model, out, base_model_name_or_path="base", hf_names=names)  # again: overwrites its own
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                      "model.safetensors", "notes.txt"]
    assert (out / "model.safetensors").read_bytes() == b"the merged model" and (out / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="no LoRA adapters"):
        save_peft_adapter(tiny(), tmp_path / "none", base_model_name_or_path="base", hf_names=names)

    # Options LoRALinear does not implement, and tensors that do not fit, leave the model untouched.
    config = json.loads((out / "adapter_config.json").read_text())
    (out / "adapter_config.json").write_text(json.dumps({**config, "use_rslora": True}))
    fresh = tiny()
    with pytest.raises(ValueError, match="use_rslora=True is not supported"):
        load_peft_adapter(fresh, out, names)
    (out / "adapter_config.json").write_text(json.dumps({**config, "r": 3}))
    with pytest.raises(ValueError, match=r"lora_A.weight: shape \(2, 32\), expected \(3, 32\)"):
        load_peft_adapter(fresh, out, names)
    (out / "adapter_config.json").write_text(json.dumps({**config, "target_modules": ["c_fc", "q_proj"]}))
    with pytest.raises(ValueError, match="missing base_model.model.transformer.h.0.attn.attention.q_proj.lora_A"):
        load_peft_adapter(fresh, out, names)
    (out / "adapter_config.json").write_text(json.dumps(config))
    # PEFT's save_embedding_layers stores base weights too: refused when they are not this base's.
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(out / "adapter_model.safetensors"))
    c_fc = "base_model.model.transformer.h.0.mlp.c_fc"
    save_file({**tensors, f"{c_fc}.base_layer.weight": np.zeros((F, D), np.float32), "stray.weight": np.zeros(1)},
              str(out / "adapter_model.safetensors"))
    with pytest.raises(ValueError, match=rf"{c_fc}.base_layer.weight differs .*; unexpected tensors: stray.weight"):
        load_peft_adapter(fresh, out, names)
    assert not lora_layers(fresh)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    load_peft_adapter(fresh, out, names)
    assert isinstance(fresh.blocks[1].mlp.c_fc, LoRALinear) and [p[-1] for p, _ in lora_layers(fresh)] == ["c_fc"] * L
    np.testing.assert_array_equal(np.asarray(fresh(ids())), np.asarray(model(ids())))  # same base (seed 0)
