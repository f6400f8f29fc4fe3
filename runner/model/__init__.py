"""GPT-Neo, GPT-2, Llama and Qwen2 in Flax NNX, Hugging Face checkpoints in and out, the recipe's model.

Public API (a contract): `from_pretrained`, `save_pretrained`, `set_remat` (activation checkpointing,
before `nnx.split`). Tokenizers are data:
`runner.data.tokenizer`.
"""

from .from_recipe import ModelError, build_model
from .gpt_neo import GPTConfig, GPTNeo, KVCache, load_params
from .hf import CheckpointError, from_pretrained, save_pretrained
from .llama import Llama, LlamaConfig
from .remat import REMAT_CHOICES, set_remat

__all__ = [
    "CheckpointError",
    "GPTConfig",
    "GPTNeo",
    "KVCache",
    "Llama",
    "LlamaConfig",
    "ModelError",
    "REMAT_CHOICES",
    "build_model",
    "from_pretrained",
    "load_params",
    "save_pretrained",
    "set_remat",
]
