"""GPT-Neo and GPT-2 in Flax NNX, Hugging Face checkpoints in and out, tokenizers.

Public API (a contract): `from_pretrained`, `save_pretrained`, `load_tokenizer`, `train_tokenizer`.
"""

from .from_recipe import build_model, build_tokenizer
from .gpt_neo import GPTConfig, GPTNeo, KVCache
from .hf import CheckpointError, from_pretrained, save_pretrained
from .tokenizer import TokenizerError, load_tokenizer, train_tokenizer

__all__ = [
    "CheckpointError",
    "GPTConfig",
    "GPTNeo",
    "KVCache",
    "TokenizerError",
    "build_model",
    "build_tokenizer",
    "from_pretrained",
    "load_tokenizer",
    "save_pretrained",
    "train_tokenizer",
]
