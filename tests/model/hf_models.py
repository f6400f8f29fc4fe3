"""Tiny GPT-Neo / GPT-2 models made by transformers (PyTorch), for parity tests."""

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


def torch_logits(model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(ids, dtype=torch.long)).logits.float().numpy()
