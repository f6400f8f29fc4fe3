"""The recipe's `model` section → a model (its checkpoint, or fresh weights from its sizes), with
LoRA adapters when the recipe asks for them."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ..common.errors import BadInput
from ..common.streams import stream_key
from ..recipe.schema_model import LLAMA_FAMILY, ModelSpec
from .gpt_neo import GPTConfig, GPTNeo
from .hf import from_pretrained
from .llama import Llama, LlamaConfig
from .lora import apply_lora


class ModelError(BadInput):
    """The recipe's model does not fit what it is given (a tokenizer larger than its vocabulary)."""


def build_model(spec: ModelSpec, *, tokenizer: Any = None, seed: int = 0, attention: str = "auto") -> GPTNeo | Llama:
    """The recipe's model: its checkpoint, or fresh weights from `config` seeded by `seed`; with
    `spec.lora`, adapters (seeded too) on the targeted layers and the frozen base in the compute dtype.

    The tokenizer (any object with len() and `eos_token_id`) sets the vocabulary of a scratch model
    without `config.vocab_size`, and its end-of-text token; a tokenizer larger than the model's
    vocabulary is an error.
    """
    model = _base_model(spec, tokenizer, seed, attention)
    if spec.lora is None:
        return model
    lora = spec.lora
    apply_lora(model, rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout, targets=lora.targets,
               rngs=nnx.Rngs(params=stream_key(seed, "lora")))
    compute = jnp.dtype(spec.dtype.compute)
    if compute != jnp.dtype(spec.dtype.params):
        # The base never trains: keep it in the dtype the matmuls read it in (half the memory in bf16).
        base = nnx.state(model, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam)))
        nnx.update(model, jax.tree.map(lambda x: x.astype(compute), base))
    return model


def _base_model(spec: ModelSpec, tokenizer: Any, seed: int, attention: str) -> GPTNeo | Llama:
    dtypes = dict(dtype=spec.dtype.compute, param_dtype=spec.dtype.params, attention=attention)
    vocab = len(tokenizer) if tokenizer is not None else None
    if spec.init == "pretrained":
        model = from_pretrained(spec.checkpoint, revision=spec.revision, dropout=spec.dropout, **dtypes)
        if model.config.arch != spec.arch:
            raise ModelError(f"{spec.checkpoint} is a {model.config.arch} checkpoint, model.arch says {spec.arch}")
        if vocab is not None and vocab > model.config.vocab_size:
            raise ModelError(f"the tokenizer has {vocab} tokens, the model's embedding only {model.config.vocab_size}")
        return model
    # model.config uses our configs' field names; the schema has resolved what depends on the arch.
    sizes = spec.config.model_dump()
    vocab_size = sizes.pop("vocab_size")
    if vocab_size is None:
        vocab_size = vocab
    if vocab_size is None:
        raise ModelError("model.config.vocab_size is unset and there is no tokenizer to take it from")
    if vocab is not None and vocab > vocab_size:
        raise ModelError(f"the tokenizer has {vocab} tokens, model.config.vocab_size only {vocab_size}")
    eos = getattr(tokenizer, "eos_token_id", None)
    dropout = spec.dropout or 0.0
    if spec.arch in LLAMA_FAMILY:
        # HF's Llama and Qwen2 have attention dropout only; model.dropout sets it.
        bos = getattr(tokenizer, "bos_token_id", None)
        config = LlamaConfig(
            arch=spec.arch, vocab_size=vocab_size, max_positions=sizes["max_positions"], d_model=sizes["d_model"],
            n_layer=sizes["n_layer"], n_head=sizes["n_head"], n_kv_head=sizes["n_kv_head"], d_ff=sizes["d_ff"],
            rope_theta=sizes["rope_theta"], rms_norm_eps=sizes["layer_norm_eps"], qkv_bias=sizes["qkv_bias"],
            tie_embeddings=sizes["tie_embeddings"], attn_dropout=dropout,
            bos_token_id=eos if bos is None else bos, eos_token_id=eos,
        )
        return Llama(config, rngs=nnx.Rngs(params=stream_key(seed, "init")), **dtypes)
    for name in ("n_kv_head", "rope_theta", "qkv_bias", "tie_embeddings"):  # llama/qwen2's (the schema checks)
        sizes.pop(name)
    sizes["attention_layers"] = tuple(sizes["attention_layers"])
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
