"""`model` for the Llama family and LoRA: what the schema resolves, and every mistake located.

The defaults are transformers' own (LlamaConfig: attention_bias false, tie_word_embeddings false,
num_key_value_heads = num_attention_heads, hidden_act silu; Qwen2Config: q/k/v bias) and PEFT's
(LoraConfig: r 8, lora_alpha 8, lora_dropout 0)."""

import pytest

from runner.recipe.errors import RecipeError
from runner.recipe.load import load_recipe

from ..helpers import ccrun_here

HEAD = "name: m\ntokenizer: {name: gpt2}\n"


def load(tmp_path, model: str):
    path = tmp_path / "r.yaml"
    path.write_text(HEAD + "model: " + model + "\n")
    return load_recipe(path).recipe.model


def refused(tmp_path, model: str) -> str:
    with pytest.raises(RecipeError) as info:
        load(tmp_path, model)
    return str(info.value)


def test_llama_and_qwen2_scratch_configs_resolve_as_transformers_defaults(tmp_path):
    llama = load(tmp_path, "{arch: llama, init: scratch, config: {n_layer: 2, d_model: 64, n_head: 4}}")
    c = llama.config
    assert (c.n_kv_head, c.activation, c.tie_embeddings, c.qkv_bias, c.d_ff) == (4, "silu", False, False, 256)
    assert c.attention_layers == ["global", "global"]
    qwen = load(tmp_path, "{arch: qwen2, init: scratch, config: {n_layer: 1, d_model: 64, n_head: 8, n_kv_head: 2}}")
    assert (qwen.config.n_kv_head, qwen.config.qkv_bias) == (2, True)
    neo = load(tmp_path, "{arch: gpt-neo, init: scratch, config: {n_layer: 2, d_model: 64, n_head: 4}}")
    assert (neo.config.activation, neo.config.tie_embeddings, neo.config.n_kv_head) == ("gelu_new", True, None)


def test_lora_resolves_peft_defaults_and_every_linear_layer(tmp_path):
    m = load(tmp_path, "{arch: qwen2, checkpoint: Qwen/Qwen2.5-Coder-0.5B, lora: {}}")
    assert (m.lora.rank, m.lora.alpha, m.lora.dropout) == (8, 8.0, 0.0)
    assert m.lora.targets == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    neo = load(tmp_path, "{arch: gpt-neo, checkpoint: EleutherAI/gpt-neo-125M, lora: {rank: 2}}")
    assert neo.lora.targets == ["q_proj", "k_proj", "v_proj", "out_proj", "c_fc", "c_proj"]
    gpt2 = load(tmp_path, "{arch: gpt2, checkpoint: gpt2, lora: {rank: 2}}")
    assert gpt2.lora.targets == ["out_proj", "c_fc", "c_proj"]  # not the fused c_attn's q, k, v


@pytest.mark.parametrize("model, message", [
    ("{arch: llama, init: scratch, config: {n_layer: 1, d_model: 64, n_head: 4, n_kv_head: 3}}",
     "model.config.n_kv_head: must divide n_head (4 % 3 = 1)"),
    ("{arch: gpt-neo, init: scratch, config: {n_layer: 1, d_model: 64, n_head: 4, n_kv_head: 2}}",
     "model.config.n_kv_head: only for llama and qwen2; gpt-neo does not have it"),
    ("{arch: gpt2, init: scratch, config: {n_layer: 1, d_model: 64, n_head: 4, rope_theta: 5.0}}",
     "model.config.rope_theta: only for llama and qwen2"),
    ("{arch: gpt2, init: scratch, config: {n_layer: 1, d_model: 64, n_head: 4, tie_embeddings: false}}",
     "model.config.tie_embeddings: gpt2 always ties"),
    ("{arch: llama, init: scratch, config: {n_layer: 1, d_model: 64, n_head: 4, activation: gelu}}",
     "model.config.activation: llama's SwiGLU MLP uses silu"),
    ("{arch: qwen2, init: scratch, config: {n_layer: 2, d_model: 64, n_head: 4, attention_layers: [global, local]}}",
     "qwen2 has no local attention"),
    ("{arch: llama, init: scratch, config: {n_layer: 1, d_model: 64, n_head: 4, window_size: 8}}",
     "model.config.window_size: llama has no local attention"),
    ("{arch: llama, checkpoint: x/y, lora: {targets: [c_fc]}}",
     "model.lora.targets[0]: llama has no linear layer 'c_fc'"),
    ("{arch: gpt2, checkpoint: gpt2, lora: {targets: [c_proj, q_proj]}}",
     "model.lora.targets[1]: gpt2 fuses q, k and v into one c_attn"),
    ("{arch: llama, checkpoint: x/y, lora: {targets: [q_proj, q_proj]}}", "model.lora.targets: names a layer twice"),
    ("{arch: llama, checkpoint: x/y, lora: {rank: 0}}", "model.lora.rank"),
    ("{arch: llama, checkpoint: x/y, lora: {dropout: 1.0}}", "model.lora.dropout"),
    ("{arch: llama, checkpoint: x/y, lora: {targets: []}}", "model.lora.targets"),
    ("{arch: llama, checkpoint: x/y, lora: {rank: 4, bias: all}}", "model.lora.bias"),
    ("{arch: mistral, checkpoint: x/y}", "model.arch"),
    ("{arch: qwen2, init: scratch, config: {n_layer: 1, d_model: 64, n_head: 4, qkv_bias: false}}",
     "model.config.qkv_bias: qwen2 always has q, k and v biases"),
])
def test_mistakes_are_located(tmp_path, model, message):
    assert message in refused(tmp_path, model)


def test_validate_points_at_the_line_and_exits_2(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: m\nmodel:\n  arch: llama\n  checkpoint: x/y\n  lora:\n    targets: [q_proj, c_attn]\n")
    out = ccrun_here("validate", path)
    assert out.returncode == 2, out.stderr
    assert f"{path}:6:" in out.stderr and "model.lora.targets[1]: llama has no linear layer 'c_attn'" in out.stderr
    assert "Traceback" not in out.stderr
