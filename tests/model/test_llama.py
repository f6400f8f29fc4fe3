"""Llama and Qwen2: our Flax model against transformers' PyTorch LlamaForCausalLM / Qwen2ForCausalLM
(the reference), number for number in fp32; checkpoints in and out; the KV cache; remat; bf16.

transformers' models here are tiny and randomly initialised with std 0.1 (biases and RMSNorm
weights drawn too: tests/model/hf_models.py), so logits spread over several units and a misplaced
weight, bias or rotation shows far above the 1e-4 tolerance.
"""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from runner.model import CheckpointError, Llama, LlamaConfig, from_pretrained, save_pretrained, set_remat
from runner.model.hf import build_from_params, config_from_hf, config_to_hf, flat_params, hf_names
from runner.model.remat import compiler_options

from .hf_models import hf_llama, hf_qwen2, torch, torch_logits, transformers
from .rows import decode, left_padded, packed

TOLERANCE = 1e-4  # max |logit difference| in fp32
V = 97

# One jitted forward and one jitted extend for the file: a compilation per model and shape, none per
# test; None arguments are empty pytrees, so each combination of mask / segments / positions is its own trace.
FORWARD = nnx.jit(lambda m, ids, mask, segments, positions: m(ids, attention_mask=mask, segment_ids=segments,
                                                                positions=positions))
EXTEND = nnx.jit(lambda m, ids, cache, mask: m.extend(ids, cache, attention_mask=mask))


def forward(model, ids, *, mask=None, segments=None, positions=None) -> np.ndarray:
    as_jax = lambda x: None if x is None else jnp.asarray(x, jnp.int32)  # noqa: E731
    return np.asarray(FORWARD(model, as_jax(ids), as_jax(mask), as_jax(segments), as_jax(positions)))


def random_ids(batch, length, seed=0):
    return np.random.RandomState(seed).randint(0, V, size=(batch, length))


LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 32, "rope_theta": 50.0}  # theta 50: low, medium and high bands all occur
YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "rope_theta": 50.0}
CASES = {
    "llama-gqa": lambda: hf_llama(kv_heads=2),  # 4 query heads share 2 key/value heads; untied head
    "llama-mha-tied": lambda: hf_llama(kv_heads=4, tie=True),
    "llama-mqa-bias-untied": lambda: hf_llama(kv_heads=1, bias=True, mlp_bias=True),  # biases on q/k/v/o and the MLP
    "qwen2-tied": lambda: hf_qwen2(tie=True),
    "qwen2-untied": lambda: hf_qwen2(tie=False, kv_heads=1),
    "rope-theta-500": lambda: hf_llama(rope={"rope_theta": 500.0}),
    "rope-linear": lambda: hf_llama(rope={"rope_type": "linear", "factor": 2.0}),
    "rope-llama3-head-dim-16": lambda: hf_llama(rope=LLAMA3, head_dim=16),  # explicit head_dim != d / heads (8)
    "rope-yarn-qwen2-head-dim-12": lambda: hf_qwen2(rope=YARN, head_dim=12),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Each case's transformers model, its checkpoint directory and ours loaded from it, built once."""
    built = {}

    def get(case):
        if case not in built:
            hf = CASES[case]()
            out = tmp_path_factory.mktemp(case)
            hf.save_pretrained(out)
            built[case] = hf, out, from_pretrained(out)
        return built[case]

    return get


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_transformers(case, models):
    hf, _, ours = models(case)
    ids = random_ids(2, 40)  # positions up to 39: beyond yarn's and llama3's original lengths
    expected = torch_logits(hf, ids)
    got = forward(ours, ids)
    assert got.shape == expected.shape == (2, 40, V) and got.dtype == np.float32
    assert np.abs(expected).max() > 0.5, "weights big enough for the comparison to mean something"
    assert np.abs(got - expected).max() <= TOLERANCE


def test_config_read_from_the_checkpoint(models):
    """What each case's config.json says lands in our config (the parity above depends on it)."""
    c = models("rope-llama3-head-dim-16")[2].config
    assert (c.arch, c.head_dim, c.n_head, c.n_kv_head, c.rope_type, c.rope_theta) == ("llama", 16, 4, 2, "llama3", 50.0)
    assert dict(c.rope_scaling) == {k: v for k, v in LLAMA3.items() if k not in ("rope_type", "rope_theta")}
    q = models("qwen2-tied")[2].config
    assert (q.arch, q.qkv_bias, q.o_bias, q.mlp_bias, q.tie_embeddings) == ("qwen2", True, False, False, True)
    b = models("llama-mqa-bias-untied")[2].config
    assert (b.qkv_bias, b.o_bias, b.mlp_bias, b.tie_embeddings, b.n_kv_head) == (True, True, True, False, 1)
    assert "lm_head" not in vars(models("qwen2-tied")[2])  # tied: the embedding is the head


@pytest.mark.parametrize("case", ["llama-gqa", "qwen2-tied", "llama-mqa-bias-untied"])
def test_num_params_is_transformers_count(case, models):
    """transformers counts a tied head once; without embeddings, an untied input embedding is left out
    (its lookup multiplies nothing: 6N counts matmuls) and a tied one stays (it is the LM head)."""
    hf, _, ours = models(case)
    c = ours.config
    assert c.num_params() == hf.num_parameters() == sum(v.size for v in flat_params(ours).values())
    assert c.num_params(embeddings=False) == c.num_params() - (0 if c.tie_embeddings else V * c.d_model)


def test_left_padding_matches_transformers_given_the_same_positions(models):
    hf, _, ours = models("llama-gqa")
    ids = random_ids(2, 12)
    mask = np.ones_like(ids)
    mask[1, :5] = 0  # row 1 is left-padded by 5
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
    with torch.no_grad():
        expected = hf(torch.tensor(ids), attention_mask=torch.tensor(mask),
                      position_ids=torch.tensor(positions)).logits.numpy()
    got = forward(ours, ids, mask=mask)
    real = mask.astype(bool)
    assert np.abs(got[real] - expected[real]).max() <= TOLERANCE
    # ... and the padded row's real tokens score as they would unpadded (positions from 0).
    assert np.abs(got[1, 5:] - forward(ours, ids[1:, 5:])[0]).max() <= 1e-5


def test_packed_segments_match_transformers_run_on_each_example_alone(models):
    hf, _, ours = models("llama-gqa")
    lengths = [[7, 9, 5, 3], [24]]
    T = 24
    ids = random_ids(2, T, seed=1)
    segments, positions = packed(lengths, T)  # row 0's padding (slots 21..23) is segment 0
    got = forward(ours, ids, segments=segments)
    assert np.array_equal(got, forward(ours, ids, segments=segments, positions=positions))  # derived = given
    for row, parts in enumerate(lengths):
        for start, n in zip(np.cumsum([0] + parts), parts):
            expected = torch_logits(hf, ids[row : row + 1, start : start + n])[0]
            assert np.abs(got[row, start : start + n] - expected).max() <= TOLERANCE


def test_prefill_then_decode_matches_full_forward(models):
    """Left-padded prompts, then T=1 steps: each row's logits are the full forward's of that row
    unpadded (which matches transformers, above). The cache holds K key/value heads."""
    ours = models("llama-gqa")[2]
    rs = np.random.RandomState(0)
    prompt_len, new, lengths = 7, 6, [7, 4, 1]
    seqs = rs.randint(0, V, size=(3, prompt_len + new))
    prompt, mask = left_padded(seqs, lengths, prompt_len)
    cache = ours.init_cache(3, prompt_len + new)
    assert cache.keys[0].shape == (3, prompt_len + new, ours.config.n_kv_head, ours.config.head_dim)
    prefill, cache = EXTEND(ours, jnp.asarray(prompt), cache, jnp.asarray(mask))
    decoded, cache = decode(EXTEND, ours, cache, seqs, lengths, new - 1)
    full = forward(ours, seqs[:, : prompt_len + new - 1])
    for b, n in enumerate(lengths):
        assert np.abs(np.asarray(prefill[b, prompt_len - n :]) - full[b, :n]).max() <= TOLERANCE
        assert np.abs(np.stack([d[b] for d in decoded]) - full[b, n : n + new - 1]).max() <= TOLERANCE


@pytest.mark.parametrize("case", ["llama-mqa-bias-untied", "qwen2-tied", "rope-llama3-head-dim-16",
                                  "rope-yarn-qwen2-head-dim-12"])
def test_export_loads_in_transformers_with_the_same_logits(case, models, tmp_path):
    _, directory, ours = models(case)
    out = save_pretrained(ours, tmp_path / "export")
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors"}
    back, info = transformers.AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set() and info["mismatched_keys"] == set()
    assert type(back).__name__ == {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[ours.config.arch]
    ids = random_ids(2, 40, seed=4)
    assert np.abs(torch_logits(back.eval(), ids) - forward(ours, ids)).max() <= TOLERANCE
    assert ("lm_head.weight" in load_file(str(out / "model.safetensors"))) == (not ours.config.tie_embeddings)
    # the config round trip is exact, and so are the weights
    assert config_from_hf(config_to_hf(ours.config)) == ours.config
    again = from_pretrained(out)
    assert again.config == ours.config
    a, b = flat_params(ours), flat_params(again)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_scratch_model_exports_to_transformers(tmp_path):
    """A model built from our config alone (the recipe's scratch path): transformers reads the same network."""
    # llama-gqa's config (so the compiled forward is reused), built here rather than read
    config = LlamaConfig("llama", V, 64, 32, 2, 4, 2, 64, eos_token_id=2, bos_token_id=1)
    model = Llama(config, rngs=nnx.Rngs(0))
    params = {k: v * 5 for k, v in flat_params(model).items()}  # sharper than the 0.02 init
    model = build_from_params(config, params)
    back = transformers.AutoModelForCausalLM.from_pretrained(save_pretrained(model, tmp_path / "s")).eval()
    ids = random_ids(2, 40, seed=5)
    expected = torch_logits(back, ids)
    assert np.abs(expected).max() > 0.5 and np.abs(expected - forward(model, ids)).max() <= TOLERANCE


def test_hf_names_are_transformers_state_dict(models):
    """Every name hf_names gives is a tensor of transformers' model, with the shape the conversion says."""
    hf, _, ours = models("llama-mqa-bias-untied")
    state = hf.state_dict()
    params = flat_params(ours)
    names = hf_names(ours.config)
    assert names.keys() == params.keys()
    for path, (name, how) in names.items():
        shape = tuple(state[name].shape)
        assert (shape[::-1] if how == "T" else shape) == tuple(params[path].shape), name
    assert names[("layers", 1, "self_attn", "q_proj", "kernel")] == ("model.layers.1.self_attn.q_proj.weight", "T")


def test_dropout_path_matches_at_a_vanishing_rate(models):
    """With an attention dropout rate of 1e-9 (from_pretrained's `dropout`), the training path that
    applies it (grouped-query einsums, its own causal / segment masks) computes transformers' logits."""
    hf, directory, _ = models("llama-gqa")
    ours = from_pretrained(directory, dropout=1e-9)
    assert (ours.config.attn_dropout, ours.config.resid_dropout, ours.config.embd_dropout) == (1e-9, 0.0, 0.0)
    ids = random_ids(2, 16, seed=6)
    segments = np.repeat([[1] * 9 + [2] * 7], 2, axis=0)
    train = nnx.jit(lambda m, ids, seg: m(ids, segment_ids=seg, deterministic=False, rngs=nnx.Rngs(dropout=1)))
    packed = np.asarray(train(ours, jnp.asarray(ids), jnp.asarray(segments)))
    assert np.abs(packed[:, :9] - torch_logits(hf, ids[:, :9])).max() <= TOLERANCE
    assert np.abs(packed[:, 9:] - torch_logits(hf, ids[:, 9:])).max() <= TOLERANCE


def test_remat_gives_the_same_loss_and_gradients(models):
    """block / dots checkpointing recompute the forward in the backward pass: loss and gradients as
    without it, to fp32 rounding (the tolerance of tests/model/test_remat.py)."""
    base = models("qwen2-tied")[2]
    ids = jnp.asarray(random_ids(2, 16, seed=7), jnp.int32)
    split = {p: nnx.split(set_remat(nnx.merge(*nnx.split(base)), p)) for p in ("none", "block", "dots")}

    def loss(params, graphdef):
        logits = nnx.merge(graphdef, params)(ids[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, ids[:, 1:]).mean()

    # LLVM's optimisations off for speed (as tests/model/test_remat.py compiles its steps)
    fast = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
    run = jax.jit(lambda ps: {p: jax.value_and_grad(loss)(ps[p], split[p][0]) for p in split},
                  compiler_options={**(compiler_options() or {}), **fast})
    out = run({p: params for p, (_, params) in split.items()})
    loss0, grads0 = out["none"]
    assert float(loss0) > 0
    for policy in ("block", "dots"):
        assert float(out[policy][0]) == pytest.approx(float(loss0), rel=1e-6)
        for a, b in zip(jax.tree_util.tree_leaves(grads0), jax.tree_util.tree_leaves(out[policy][1]), strict=True):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=1e-6)


def test_bf16_compute_is_close_to_fp32(models):
    """bf16 matmuls (parameters stay fp32, logits come out fp32): within bf16's rounding of the fp32 logits."""
    _, directory, fp32 = models("llama-gqa")
    bf16 = from_pretrained(directory, dtype="bfloat16")
    ids = random_ids(2, 40, seed=8)
    got, want = forward(bf16, ids), forward(fp32, ids)
    assert got.dtype == np.float32 and all(v.dtype == jnp.float32 for v in flat_params(bf16).values())
    error = np.abs(got - want).max()
    assert 0 < error < 0.05 * np.abs(want).max()  # bf16 has 8 significant bits: ~0.4% per rounding


# --- misfits ---------------------------------------------------------------------------------


def _copy(models, tmp_path, case="llama-gqa"):
    """A writable copy of a case's checkpoint directory."""
    directory = models(case)[1]
    out = tmp_path / "copy"
    out.mkdir()
    for f in directory.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    return out


def _edit(directory, tensors=None, config=None):
    if tensors:
        path = directory / "model.safetensors"
        t = load_file(str(path))
        tensors(t)
        save_file(t, str(path), metadata={"format": "pt"})
    if config:
        raw = json.loads((directory / "config.json").read_text())
        config(raw)
        (directory / "config.json").write_text(json.dumps(raw))


def test_missing_and_unexpected_weights_are_named(models, tmp_path):
    directory = _copy(models, tmp_path)

    def edit(t):
        del t["model.layers.1.mlp.up_proj.weight"]
        t["model.layers.1.mlp.extra.weight"] = np.zeros(3, np.float32)
        t["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.ones(4, np.float32)  # an old buffer: ignored

    _edit(directory, edit)
    with pytest.raises(CheckpointError) as err:
        from_pretrained(directory)
    assert str(err.value) == (
        "missing weights: model.layers.1.mlp.up_proj.weight; unexpected weights: model.layers.1.mlp.extra.weight"
    )


def test_wrong_shape_is_named(models, tmp_path):
    directory = _copy(models, tmp_path)
    _edit(directory, lambda t: t.update({"model.layers.0.self_attn.k_proj.weight": np.ones((32, 32), np.float32)}))
    with pytest.raises(CheckpointError, match=r"layers\.0\.self_attn\.k_proj\.kernel: \(32, 32\) != \(32, 16\)"):
        from_pretrained(directory)


def test_untied_without_lm_head_and_tied_with_a_different_one(models, tmp_path):
    directory = _copy(models, tmp_path)  # untied
    _edit(directory, lambda t: t.pop("lm_head.weight"))
    with pytest.raises(CheckpointError, match=r"^missing weights: lm_head.weight \(tie_word_embeddings is false"):
        from_pretrained(directory)

    def tie(raw):
        raw["tie_word_embeddings"] = True

    # tied, with a head that is not the embedding
    _edit(directory, lambda t: t.update({"lm_head.weight": t["model.embed_tokens.weight"] + 1}), tie)
    with pytest.raises(CheckpointError, match="lm_head.weight differs from model.embed_tokens.weight"):
        from_pretrained(directory)
    # tied, with the embedding itself as the head (what transformers may write): loads
    _edit(directory, lambda t: t.update({"lm_head.weight": t["model.embed_tokens.weight"]}))
    assert from_pretrained(directory).config.tie_embeddings


@pytest.mark.parametrize("change,message", [
    (lambda raw: raw["rope_parameters"].update(rope_type="dynamic", factor=2.0),
     r"llama rope type 'dynamic' is not supported \(ccrun supports default, linear, llama3, yarn\): its frequencies"),
    (lambda raw: raw["rope_parameters"].update(rope_type="llama3", factor=2.0),
     r"config.json: transformers cannot read it \(KeyError: .*Missing required keys in `rope_parameters`"),
    (lambda raw: raw.update(hidden_act="gelu"), r"llama config option hidden_act='gelu' is not supported"),
    (lambda raw: raw.update(model_type="mistral"), r"unsupported model_type 'mistral'; ccrun supports gpt_neo, gpt2, llama, qwen2"),
])
def test_unsupported_config_options_are_named(models, tmp_path, change, message):
    directory = _copy(models, tmp_path)
    _edit(directory, config=change)
    with pytest.raises(CheckpointError, match=message):
        from_pretrained(directory)


def test_qwen2_sliding_window_is_refused(models, tmp_path):
    directory = _copy(models, tmp_path, "qwen2-tied")
    _edit(directory, config=lambda raw: raw.update(use_sliding_window=True, sliding_window=8, max_window_layers=0,
                                                   layer_types=None))
    with pytest.raises(CheckpointError, match="qwen2 config option use_sliding_window=true is not supported"):
        from_pretrained(directory)


def test_llama3_eos_list_keeps_the_first(models, tmp_path):
    directory = _copy(models, tmp_path)
    _edit(directory, config=lambda raw: raw.update(eos_token_id=[2, 5, 7]))
    assert from_pretrained(directory).config.eos_token_id == 2


def test_config_is_hashable_and_checked():
    c = LlamaConfig("qwen2", V, 64, 32, 2, 4, 2, 64, qkv_bias=True, rope_type="linear", rope_scaling=(("factor", 2.0),))
    assert hash(c) == hash(dataclasses.replace(c)) and c.head_dim == 8
    with pytest.raises(ValueError, match="n_kv_head \\(3\\) must divide n_head \\(4\\)"):
        dataclasses.replace(c, n_kv_head=3)
    with pytest.raises(ValueError, match="qwen2 has q/k/v biases"):
        dataclasses.replace(c, qkv_bias=False)
    with pytest.raises(ValueError, match="rope type 'dynamic' is not supported"):
        dataclasses.replace(c, rope_type="dynamic")
