"""Tiny GPT-Neo / GPT-2 / Llama / Qwen2 models made by transformers (PyTorch), for parity tests."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def hf_gpt_neo(*, layers=("global", "local"), window=4, d=32, heads=4, vocab=97, positions=64, std=0.1, seed=0):
    torch.manual_seed(seed)
    config = transformers.GPTNeoConfig(
        vocab_size=vocab,
        max_position_embeddings=positions,
        hidden_size=d,
        num_layers=len(layers),
        attention_types=[[list(layers), 1]],
        num_heads=heads,
        window_size=window,
        intermediate_size=4 * d,
        initializer_range=std,  # larger than GPT's 0.02, so attention is far from uniform
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.GPTNeoForCausalLM(config).eval()


def hf_gpt2(*, n_layer=2, d=32, heads=4, vocab=97, positions=64, std=0.1, seed=0):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        vocab_size=vocab, n_positions=positions, n_embd=d, n_layer=n_layer, n_head=heads,
        initializer_range=std, bos_token_id=0, eos_token_id=0,
    )
    return transformers.GPT2LMHeadModel(config).eval()


def _llama_config(cls, *, n_layer, d, heads, kv_heads, vocab, positions, std, d_ff, head_dim, rope, **extra):
    return cls(
        vocab_size=vocab, hidden_size=d, intermediate_size=d_ff or 2 * d, num_hidden_layers=n_layer,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=positions,
        initializer_range=std, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, **(rope or {})},
        bos_token_id=1, eos_token_id=2, **({"head_dim": head_dim} if head_dim else {}), **extra,
    )


def _random_biases(model, std):
    """transformers initialises biases (and RMSNorm weights) to constants: draw them, so they count."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.normal_(0, std)
            elif name.endswith("norm.weight"):
                param.normal_(1, std)
    return model


def hf_llama(*, n_layer=2, d=32, heads=4, kv_heads=2, vocab=97, positions=64, std=0.1, d_ff=None, head_dim=None,
             rope=None, tie=False, bias=False, mlp_bias=False, seed=0):
    """transformers' LlamaForCausalLM, randomly initialised with std `std` (larger than Llama's
    0.02, so attention is far from uniform); `rope` updates rope_parameters; `bias`: attention_bias."""
    torch.manual_seed(seed)
    config = _llama_config(transformers.LlamaConfig, n_layer=n_layer, d=d, heads=heads, kv_heads=kv_heads, vocab=vocab,
                           positions=positions, std=std, d_ff=d_ff, head_dim=head_dim, rope=rope,
                           tie_word_embeddings=tie, attention_bias=bias, mlp_bias=mlp_bias)
    return _random_biases(transformers.LlamaForCausalLM(config).eval(), std)


def hf_qwen2(*, n_layer=2, d=32, heads=4, kv_heads=2, vocab=97, positions=64, std=0.1, d_ff=None, head_dim=None,
             rope=None, tie=True, seed=0):
    """transformers' Qwen2ForCausalLM (q/k/v biases), randomly initialised as hf_llama."""
    torch.manual_seed(seed)
    config = _llama_config(transformers.Qwen2Config, n_layer=n_layer, d=d, heads=heads, kv_heads=kv_heads, vocab=vocab,
                           positions=positions, std=std, d_ff=d_ff, head_dim=head_dim, rope=rope,
                           tie_word_embeddings=tie)
    return _random_biases(transformers.Qwen2ForCausalLM(config).eval(), std)


def torch_logits(model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(ids, dtype=torch.long)).logits.float().numpy()
