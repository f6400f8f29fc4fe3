"""The recipe's `model` and `tokenizer` sections → a tokenizer and a model."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from flax import nnx

from ..common.streams import stream_key
from ..recipe.schema_model import ModelSpec, TokenizerSpec
from .gpt_neo import GPTConfig, GPTNeo
from .hf import from_pretrained
from .tokenizer import TokenizerError, load_tokenizer, train_tokenizer


def build_tokenizer(spec: TokenizerSpec, *, texts: Iterable[str] | None = None,
                    out_dir: str | os.PathLike | None = None) -> Any:
    """Load `spec.name`, or train on `texts` per `spec.train` (saved to `out_dir` when given)."""
    if spec.name is not None:
        return load_tokenizer(spec.name, revision=spec.revision)
    if spec.train is None:
        raise TokenizerError("the recipe names no tokenizer and trains none")
    if texts is None:
        raise TokenizerError("tokenizer.train needs the training texts")
    if spec.train.max_documents is not None:
        texts = (t for i, t in zip(range(spec.train.max_documents), texts, strict=False))
    return train_tokenizer(
        texts,
        spec.train.vocab_size,
        min_frequency=spec.train.min_frequency,
        special_tokens=spec.train.special_tokens,
        out_dir=out_dir,
    )


def build_model(spec: ModelSpec, *, tokenizer: Any = None, seed: int = 0, attention: str = "auto") -> GPTNeo:
    """The recipe's model: its checkpoint, or fresh weights from `config` seeded by `seed`.

    The tokenizer sets the vocabulary of a scratch model without `config.vocab_size`, and its
    end-of-text token; a tokenizer larger than the model's vocabulary is an error.
    """
    dtypes = dict(dtype=spec.dtype.compute, param_dtype=spec.dtype.params, attention=attention)
    vocab = len(tokenizer) if tokenizer is not None else None
    if spec.init == "pretrained":
        model = from_pretrained(spec.checkpoint, revision=spec.revision, dropout=spec.dropout, **dtypes)
        if vocab is not None and vocab > model.config.vocab_size:
            raise ValueError(f"the tokenizer has {vocab} tokens, the model's embedding only {model.config.vocab_size}")
        return model
    c = spec.config
    vocab_size = c.vocab_size if c.vocab_size is not None else vocab
    if vocab_size is None:
        raise ValueError("model.config.vocab_size is unset and there is no tokenizer to take it from")
    if vocab is not None and vocab > vocab_size:
        raise ValueError(f"the tokenizer has {vocab} tokens, model.config.vocab_size only {vocab_size}")
    eos = getattr(tokenizer, "eos_token_id", None)
    dropout = spec.dropout or 0.0
    config = GPTConfig(
        arch=spec.arch,
        vocab_size=vocab_size,
        max_positions=c.max_positions,
        d_model=c.d_model,
        n_layer=c.n_layer,
        n_head=c.n_head,
        d_ff=c.d_ff or 4 * c.d_model,
        attention_layers=tuple(c.attention_layers),
        window_size=c.window_size,
        activation=c.activation,
        layer_norm_eps=c.layer_norm_eps,
        embd_dropout=dropout,
        attn_dropout=dropout,
        resid_dropout=dropout,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    return GPTNeo(config, rngs=nnx.Rngs(params=stream_key(seed, "init")), **dtypes)

