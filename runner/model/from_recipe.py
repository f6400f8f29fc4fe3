"""The recipe's `model` section → a model (its checkpoint, or fresh weights from its sizes)."""

from __future__ import annotations

from typing import Any

from flax import nnx

from ..common.errors import BadInput
from ..common.streams import stream_key
from ..recipe.schema_model import ModelSpec
from .gpt_neo import GPTConfig, GPTNeo
from .hf import from_pretrained


class ModelError(BadInput):
    """The recipe's model does not fit what it is given (a tokenizer larger than its vocabulary)."""


def build_model(spec: ModelSpec, *, tokenizer: Any = None, seed: int = 0, attention: str = "auto") -> GPTNeo:
    """The recipe's model: its checkpoint, or fresh weights from `config` seeded by `seed`.

    The tokenizer (any object with len() and `eos_token_id`) sets the vocabulary of a scratch model
    without `config.vocab_size`, and its end-of-text token; a tokenizer larger than the model's
    vocabulary is an error.
    """
    dtypes = dict(dtype=spec.dtype.compute, param_dtype=spec.dtype.params, attention=attention)
    vocab = len(tokenizer) if tokenizer is not None else None
    if spec.init == "pretrained":
        model = from_pretrained(spec.checkpoint, revision=spec.revision, dropout=spec.dropout, **dtypes)
        if vocab is not None and vocab > model.config.vocab_size:
            raise ModelError(f"the tokenizer has {vocab} tokens, the model's embedding only {model.config.vocab_size}")
        return model
    # model.config uses GPTConfig's field names; the schema has resolved d_ff and attention_layers.
    sizes = spec.config.model_dump()
    sizes["attention_layers"] = tuple(sizes["attention_layers"])
    vocab_size = sizes.pop("vocab_size")
    if vocab_size is None:
        vocab_size = vocab
    if vocab_size is None:
        raise ModelError("model.config.vocab_size is unset and there is no tokenizer to take it from")
    if vocab is not None and vocab > vocab_size:
        raise ModelError(f"the tokenizer has {vocab} tokens, model.config.vocab_size only {vocab_size}")
    eos = getattr(tokenizer, "eos_token_id", None)
    dropout = spec.dropout or 0.0
    config = GPTConfig(
        arch=spec.arch,
        vocab_size=vocab_size,
        **sizes,
        embd_dropout=dropout,
        attn_dropout=dropout,
        resid_dropout=dropout,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    return GPTNeo(config, rngs=nnx.Rngs(params=stream_key(seed, "init")), **dtypes)
