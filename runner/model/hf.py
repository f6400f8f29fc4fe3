"""Hugging Face checkpoints in and out: `config.json` + safetensors, GPT-Neo and GPT-2.

A contract other tools rely on:
- `from_pretrained(path_or_hub_id, dtype="float32")` returns a `GPTNeo`; `model(input_ids)` with
  int32 [B, T] gives fp32 logits [B, T, V].
- `save_pretrained(model, out_dir)` writes what `transformers.AutoModelForCausalLM.from_pretrained`
  (PyTorch) loads with no missing or unexpected weights.

Weight layouts: HF GPT-Neo uses nn.Linear ([out, in]); GPT-2 uses Conv1D ([in, out]) and one
fused c_attn for q, k and v. Ours is Flax's [in, out] with separate q/k/v, so GPT-Neo kernels
are transposed and GPT-2's c_attn is split (and fused again on export).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from .gpt_neo import GPTConfig, GPTNeo

SUPPORTED = {"gpt_neo": "gpt-neo", "gpt2": "gpt2"}
# Buffers that old checkpoints carry; they are recomputed, never loaded.
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", ".attn.attention.bias", ".attn.attention.masked_bias")
HUB_FILES = ["config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer*", "vocab.json",
             "merges.txt", "special_tokens_map.json", "generation_config.json"]


class CheckpointError(Exception):
    """A checkpoint that cannot be loaded: missing, unsupported, or with weights that do not fit."""


# --- where the files are -------------------------------------------------------------------


def checkpoint_dir(path_or_hub_id: str | os.PathLike, *, revision: str | None = None) -> Path:
    """A local directory as is; anything else is a hub id, fetched (or found in the HF cache)."""
    local = Path(os.path.expanduser(os.fspath(path_or_hub_id)))
    if local.is_dir():
        return local
    text = os.fspath(path_or_hub_id)
    if text.startswith(("./", "../", "/", "~")) or local.exists() or text.count("/") > 1:
        raise CheckpointError(f"{text}: no such checkpoint directory")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(text, revision=revision, allow_patterns=HUB_FILES))
    except Exception as exc:  # offline, unknown repo, no permission: all mean "not available here"
        raise CheckpointError(
            f"cannot fetch {text!r} from the Hugging Face Hub ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
            "with no network, download it elsewhere and give a local directory (./path/to/checkpoint)"
        ) from None


# --- config ----------------------------------------------------------------------------------


def read_config(directory: Path) -> tuple[GPTConfig, Any]:
    """config.json → (our config, the transformers config object)."""
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory}: no config.json")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    model_type = raw.get("model_type")
    if model_type not in SUPPORTED:
        raise CheckpointError(
            f"{path}: unsupported model_type {model_type!r}; ccrun supports {', '.join(SUPPORTED)}"
        )
    from transformers import GPT2Config, GPTNeoConfig

    hf = (GPTNeoConfig if model_type == "gpt_neo" else GPT2Config).from_dict(raw)
    return config_from_hf(hf), hf


def config_from_hf(hf: Any) -> GPTConfig:
    if hf.model_type == "gpt_neo":
        return GPTConfig(
            arch="gpt-neo",
            vocab_size=hf.vocab_size,
            max_positions=hf.max_position_embeddings,
            d_model=hf.hidden_size,
            n_layer=hf.num_layers,
            n_head=hf.num_heads,
            d_ff=hf.intermediate_size or 4 * hf.hidden_size,
            attention_layers=tuple(hf.attention_layers),
            window_size=hf.window_size,
            activation=hf.activation_function,
            layer_norm_eps=hf.layer_norm_epsilon,
            embd_dropout=hf.embed_dropout,
            attn_dropout=hf.attention_dropout,
            resid_dropout=hf.resid_dropout,
            bos_token_id=hf.bos_token_id,
            eos_token_id=hf.eos_token_id,
        )
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if getattr(hf, flag, False):
            raise CheckpointError(f"gpt2 config option {flag}=true is not supported")
    if not getattr(hf, "scale_attn_weights", True):
        raise CheckpointError("gpt2 config option scale_attn_weights=false is not supported")
    return GPTConfig(
        arch="gpt2",
        vocab_size=hf.vocab_size,
        max_positions=hf.n_positions,
        d_model=hf.n_embd,
        n_layer=hf.n_layer,
        n_head=hf.n_head,
        d_ff=hf.n_inner or 4 * hf.n_embd,
        attention_layers=("global",) * hf.n_layer,
        activation=hf.activation_function,
        layer_norm_eps=hf.layer_norm_epsilon,
        embd_dropout=hf.embd_pdrop,
        attn_dropout=hf.attn_pdrop,
        resid_dropout=hf.resid_pdrop,
        bos_token_id=hf.bos_token_id,
        eos_token_id=hf.eos_token_id,
    )


def config_to_hf(config: GPTConfig) -> Any:
    from transformers import GPT2Config, GPTNeoConfig

    common = dict(vocab_size=config.vocab_size, bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                  activation_function=config.activation, layer_norm_epsilon=config.layer_norm_eps,
                  tie_word_embeddings=True)
    if config.arch == "gpt-neo":
        hf = GPTNeoConfig(
            max_position_embeddings=config.max_positions,
            hidden_size=config.d_model,
            num_layers=config.n_layer,
            num_heads=config.n_head,
            intermediate_size=config.d_ff,
            attention_types=[[list(config.attention_layers), 1]],
            window_size=config.window_size,
            embed_dropout=config.embd_dropout,
            attention_dropout=config.attn_dropout,
            resid_dropout=config.resid_dropout,
            **common,
        )
        hf.architectures = ["GPTNeoForCausalLM"]
    else:
        hf = GPT2Config(
            n_positions=config.max_positions,
            n_embd=config.d_model,
            n_layer=config.n_layer,
            n_head=config.n_head,
            n_inner=config.d_ff,
            embd_pdrop=config.embd_dropout,
            attn_pdrop=config.attn_dropout,
            resid_pdrop=config.resid_dropout,
            **common,
        )
        hf.architectures = ["GPT2LMHeadModel"]
    return hf


# --- weights ---------------------------------------------------------------------------------


def read_tensors(directory: Path) -> dict[str, Any]:
    """All tensors of model.safetensors, or of the shards a model.safetensors.index.json lists."""
    from safetensors.flax import load_file

    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = [directory / name for name in dict.fromkeys(weight_map.values())]
        if missing := [f.name for f in files if not f.is_file()]:
            raise CheckpointError(f"{directory}: shards listed in the index are missing: {', '.join(missing)}")
    else:
        others = sorted(p.name for p in directory.glob("*.bin")) + sorted(p.name for p in directory.glob("*.msgpack"))
        hint = f" (found {', '.join(others)}: convert to safetensors first)" if others else ""
        raise CheckpointError(f"{directory}: no model.safetensors or model.safetensors.index.json{hint}")
    tensors: dict[str, Any] = {}
    for f in files:
        tensors.update(load_file(str(f)))
    return tensors


def _hf_names(config: GPTConfig) -> dict[tuple, tuple[str, str]]:
    """Our parameter path → (HF tensor name, how to convert). Conversions: 'copy', 'T' (transpose),
    or 'qkv:i' (slice i of GPT-2's fused c_attn)."""
    names: dict[tuple, tuple[str, str]] = {
        ("wte", "embedding"): ("transformer.wte.weight", "copy"),
        ("wpe", "embedding"): ("transformer.wpe.weight", "copy"),
        ("ln_f", "scale"): ("transformer.ln_f.weight", "copy"),
        ("ln_f", "bias"): ("transformer.ln_f.bias", "copy"),
    }
    neo = config.arch == "gpt-neo"
    linear = "T" if neo else "copy"  # nn.Linear is [out, in]; Conv1D is already [in, out]
    for i in range(config.n_layer):
        h, ours = f"transformer.h.{i}", ("blocks", i)
        for ln in ("ln_1", "ln_2"):
            names[(*ours, ln, "scale")] = (f"{h}.{ln}.weight", "copy")
            names[(*ours, ln, "bias")] = (f"{h}.{ln}.bias", "copy")
        for part in ("c_fc", "c_proj"):
            names[(*ours, "mlp", part, "kernel")] = (f"{h}.mlp.{part}.weight", linear)
            names[(*ours, "mlp", part, "bias")] = (f"{h}.mlp.{part}.bias", "copy")
        attn = (*ours, "attn")
        if neo:
            for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                names[(*attn, proj, "kernel")] = (f"{h}.attn.attention.{proj}.weight", "T")
            names[(*attn, "out_proj", "bias")] = (f"{h}.attn.attention.out_proj.bias", "copy")
        else:
            for j, proj in enumerate(("q_proj", "k_proj", "v_proj")):
                names[(*attn, proj, "kernel")] = (f"{h}.attn.c_attn.weight", f"qkv:{j}")
                names[(*attn, proj, "bias")] = (f"{h}.attn.c_attn.bias", f"qkv:{j}")
            names[(*attn, "out_proj", "kernel")] = (f"{h}.attn.c_proj.weight", "copy")
            names[(*attn, "out_proj", "bias")] = (f"{h}.attn.c_proj.bias", "copy")
    return names


def _normalise(tensors: dict[str, Any]) -> dict[str, Any]:
    """Give every name the `transformer.` prefix (original GPT-2 files lack it) and drop buffers."""
    out = {}
    for name, value in tensors.items():
        if name.endswith(IGNORED_SUFFIXES):
            continue
        if not name.startswith(("transformer.", "lm_head.")):
            name = "transformer." + name
        out[name] = value
    return out


def params_from_hf(config: GPTConfig, tensors: dict[str, Any]) -> dict[tuple, Any]:
    """HF tensors → our parameters by path. Raises CheckpointError naming every misfit."""
    tensors = _normalise(tensors)
    names = _hf_names(config)
    used = {hf for hf, _ in names.values()}
    lm_head = tensors.pop("lm_head.weight", None)
    if lm_head is not None and "transformer.wte.weight" in tensors:
        if lm_head.shape != tensors["transformer.wte.weight"].shape or not bool(
            jnp.array_equal(lm_head, tensors["transformer.wte.weight"])
        ):
            raise CheckpointError("lm_head.weight differs from transformer.wte.weight; ccrun models tie them")
    unexpected = sorted(set(tensors) - used)
    missing = sorted(used - set(tensors))
    problems = []
    if missing:
        problems.append(f"missing weights: {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected weights: {_few(unexpected)}")
    if problems:
        raise CheckpointError("; ".join(problems))
    D = config.d_model
    params = {}
    for path, (hf_name, how) in names.items():
        value = tensors[hf_name]
        if how == "T":
            value = value.T
        elif how.startswith("qkv:"):
            j = int(how.split(":")[1])
            if value.shape[-1] != 3 * D:
                raise CheckpointError(f"{hf_name}: shape {tuple(value.shape)}, expected last dimension {3 * D}")
            value = value[..., j * D : (j + 1) * D]
        params[path] = value
    return params


def _few(names: list[str], n: int = 8) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def params_to_hf(config: GPTConfig, params: dict[tuple, Any]) -> dict[str, np.ndarray]:
    """Our parameters → HF tensors (fp32 numpy, contiguous)."""
    fused: dict[str, list] = {}
    out: dict[str, np.ndarray] = {}
    for path, (hf_name, how) in _hf_names(config).items():
        value = np.asarray(jnp.asarray(params[path], jnp.float32))
        if how == "T":
            out[hf_name] = value.T
        elif how.startswith("qkv:"):
            fused.setdefault(hf_name, [None] * 3)[int(how.split(":")[1])] = value
        else:
            out[hf_name] = value
    for hf_name, parts in fused.items():
        out[hf_name] = np.concatenate(parts, axis=-1)
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


# --- models ------------------------------------------------------------------------------------


def flat_params(model: GPTNeo) -> dict[tuple, Any]:
    return {tuple(path): var[...] for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def build_from_params(config: GPTConfig, params: dict[tuple, Any], *, dtype="float32", param_dtype="float32",
                      attention="auto") -> GPTNeo:
    """A model with exactly these parameters (shapes checked)."""
    model = nnx.eval_shape(
        lambda: GPTNeo(config, dtype=dtype, param_dtype=param_dtype, attention=attention, rngs=nnx.Rngs(0))
    )
    leaves = []
    wrong = []
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        value = params[tuple(path)]
        if tuple(value.shape) != tuple(var.shape):
            wrong.append(f"{'.'.join(map(str, path))}: {tuple(value.shape)} != {tuple(var.shape)}")
        leaves.append((path, jnp.asarray(value, dtype=param_dtype)))
    if wrong:
        raise CheckpointError(f"weights with the wrong shape for the config: {_few(wrong)}")
    nnx.update(model, nnx.from_flat_state(leaves))  # parameters are the model's only state
    return model


def from_pretrained(
    path_or_hub_id: str | os.PathLike,
    dtype: str = "float32",
    *,
    param_dtype: str = "float32",
    revision: str | None = None,
    attention: str = "auto",
    dropout: float | None = None,
) -> GPTNeo:
    """Load a GPT-Neo or GPT-2 checkpoint (local directory or hub id). `dtype` is the compute dtype;
    `dropout` replaces the checkpoint's dropout rates."""
    directory = checkpoint_dir(path_or_hub_id, revision=revision)
    config, _ = read_config(directory)
    if dropout is not None:
        config = dataclasses.replace(config, embd_dropout=dropout, attn_dropout=dropout, resid_dropout=dropout)
    params = params_from_hf(config, read_tensors(directory))
    return build_from_params(config, params, dtype=dtype, param_dtype=param_dtype, attention=attention)


def save_pretrained(model: GPTNeo, out_dir: str | os.PathLike) -> Path:
    """Write config.json and model.safetensors (fp32) that transformers loads (PyTorch)."""
    from safetensors.numpy import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf = config_to_hf(model.config)
    tensors = params_to_hf(model.config, flat_params(model))
    tmp = out / ".model.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out / "model.safetensors")
    hf.to_json_file(str(out / "config.json"), use_diff=False)
    return out
