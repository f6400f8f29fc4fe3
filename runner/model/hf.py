"""Hugging Face checkpoints in and out: `config.json` + safetensors, GPT-Neo, GPT-2, Llama, Qwen2.

A contract other tools rely on:
- `from_pretrained(path_or_hub_id, dtype="float32")` returns a `GPTNeo` (model_type gpt_neo, gpt2)
  or a `Llama` (llama, qwen2); `model(input_ids)` with int32 [B, T] gives fp32 logits [B, T, V].
- `save_pretrained(model, out_dir)` writes what `transformers.AutoModelForCausalLM.from_pretrained`
  (PyTorch) loads with no missing or unexpected weights.
- `hf_names(config)`: our parameter path → (HF tensor name, conversion), for either family.

Weight layouts: HF GPT-Neo, Llama and Qwen2 use nn.Linear ([out, in]); GPT-2 uses Conv1D ([in, out])
and one fused c_attn for q, k and v. Ours is Flax's [in, out] with separate q/k/v, so nn.Linear
kernels are transposed and GPT-2's c_attn is split (and fused again on export).
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

from ..common.errors import BadInput
from ..recipe.schema_model import LLAMA_FAMILY
from .gpt_neo import GPTConfig, GPTNeo, load_params
from .llama import ROPE_OPTIONAL, ROPE_TYPES, Llama, LlamaConfig

Config = GPTConfig | LlamaConfig
Model = GPTNeo | Llama

# Buffers that old checkpoints carry; they are recomputed, never loaded.
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", ".attn.attention.bias", ".attn.attention.masked_bias",
                    ".rotary_emb.inv_freq")
HUB_FILES = ["config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer*", "vocab.json",
             "merges.txt", "special_tokens_map.json", "generation_config.json"]


class CheckpointError(BadInput):
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


@dataclasses.dataclass(frozen=True)
class HFArch:
    """How one architecture's config (GPTConfig, LlamaConfig) and its transformers config
    correspond, both ways.

    `fields` maps our field to the HF attribute of the same meaning, copied as is; the rest is
    computed: GPT's `d_ff` (HF may leave it unset: 4 * d_model) and attention kinds per layer,
    Llama's heads, biases and rotary embeddings (_llama_config_from_hf).
    """

    arch: str  # ours
    model_type: str  # config.json's
    config_class: str  # transformers' config class
    architecture: str  # the transformers model class that config.json's `architectures` names
    fields: dict[str, str]

    def hf_class(self) -> Any:
        import transformers

        return getattr(transformers, self.config_class)


_SHARED = {"vocab_size": "vocab_size", "activation": "activation_function", "layer_norm_eps": "layer_norm_epsilon",
           "bos_token_id": "bos_token_id", "eos_token_id": "eos_token_id"}
_LLAMA = {"vocab_size": "vocab_size", "max_positions": "max_position_embeddings", "d_model": "hidden_size",
          "n_layer": "num_hidden_layers", "n_head": "num_attention_heads", "d_ff": "intermediate_size",
          "rms_norm_eps": "rms_norm_eps", "tie_embeddings": "tie_word_embeddings", "attn_dropout": "attention_dropout",
          "bos_token_id": "bos_token_id"}
ARCHS = {
    arch.model_type: arch
    for arch in (
        HFArch("gpt-neo", "gpt_neo", "GPTNeoConfig", "GPTNeoForCausalLM", {
            **_SHARED, "max_positions": "max_position_embeddings", "d_model": "hidden_size", "n_layer": "num_layers",
            "n_head": "num_heads", "d_ff": "intermediate_size", "window_size": "window_size",
            "embd_dropout": "embed_dropout", "attn_dropout": "attention_dropout", "resid_dropout": "resid_dropout",
        }),
        HFArch("gpt2", "gpt2", "GPT2Config", "GPT2LMHeadModel", {
            **_SHARED, "max_positions": "n_positions", "d_model": "n_embd", "n_layer": "n_layer", "n_head": "n_head",
            "d_ff": "n_inner", "embd_dropout": "embd_pdrop", "attn_dropout": "attn_pdrop",
            "resid_dropout": "resid_pdrop",
        }),
        HFArch("llama", "llama", "LlamaConfig", "LlamaForCausalLM", _LLAMA),
        HFArch("qwen2", "qwen2", "Qwen2Config", "Qwen2ForCausalLM", _LLAMA),
    )
}
# GPT-2 options that change the arithmetic in ways ours does not follow: (attribute, the value we follow).
GPT2_UNSUPPORTED = (("scale_attn_by_inverse_layer_idx", False), ("reorder_and_upcast_attn", False),
                    ("scale_attn_weights", True))


def read_config(directory: Path) -> tuple[Config, Any]:
    """config.json → (our config, the transformers config object)."""
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory}: no config.json")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    arch = ARCHS.get(raw.get("model_type"))
    if arch is None:
        raise CheckpointError(
            f"{path}: unsupported model_type {raw.get('model_type')!r}; ccrun supports {', '.join(ARCHS)}"
        )
    try:
        hf = arch.hf_class().from_dict(raw)
    except (KeyError, TypeError, ValueError) as exc:  # transformers' own validation (e.g. rope_parameters)
        raise CheckpointError(f"{path}: transformers cannot read it ({type(exc).__name__}: {exc})") from None
    return config_from_hf(hf), hf


def config_from_hf(hf: Any) -> Config:
    arch = ARCHS[hf.model_type]
    if arch.arch in LLAMA_FAMILY:
        return _llama_config_from_hf(hf, arch)
    if arch.arch == "gpt2":
        for flag, ours in GPT2_UNSUPPORTED:
            if bool(getattr(hf, flag, ours)) != ours:
                raise CheckpointError(f"gpt2 config option {flag}={str(not ours).lower()} is not supported")
    fields = {ours: getattr(hf, theirs) for ours, theirs in arch.fields.items()}
    fields["d_ff"] = fields["d_ff"] or 4 * fields["d_model"]
    # GPT-Neo lists each layer's kind (expanded from attention_types); GPT-2's are all global.
    kinds = hf.attention_layers if arch.arch == "gpt-neo" else ("global",) * fields["n_layer"]
    return GPTConfig(arch=arch.arch, attention_layers=tuple(kinds), **fields)


def _llama_config_from_hf(hf: Any, arch: HFArch) -> LlamaConfig:
    """Llama / Qwen2: everything that changes the arithmetic is read, or refused by name."""
    fields = {ours: getattr(hf, theirs) for ours, theirs in arch.fields.items()}
    name = hf.model_type
    if hf.hidden_act not in ("silu", "swish"):  # transformers' ACT2FN: both are x * sigmoid(x)
        raise CheckpointError(f"{name} config option hidden_act={hf.hidden_act!r} is not supported (only silu)")
    if name == "qwen2" and (getattr(hf, "use_sliding_window", False)
                            or "sliding_attention" in (getattr(hf, "layer_types", None) or ())):
        raise CheckpointError("qwen2 config option use_sliding_window=true is not supported (full attention only)")
    rope = dict(getattr(hf, "rope_parameters", None) or {})
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ROPE_TYPES:
        # dynamic and longrope change their frequencies with each batch's longest position
        why = ": its frequencies change with the input's length" if rope_type in ("dynamic", "longrope") else ""
        raise CheckpointError(
            f"{name} rope type {rope_type!r} is not supported (ccrun supports {', '.join(ROPE_TYPES)}){why}"
        )
    if float(rope.get("partial_rotary_factor", 1.0)) != 1.0:
        raise CheckpointError(f"{name} rope partial_rotary_factor={rope['partial_rotary_factor']} is not supported")
    scaling = {k: rope[k] for k in (*ROPE_TYPES[rope_type], *ROPE_OPTIONAL.get(rope_type, ())) if k in rope}
    if missing := [k for k in ROPE_TYPES[rope_type] if k not in scaling]:
        raise CheckpointError(f"{name} rope type {rope_type!r} needs {', '.join(missing)} in rope_parameters")
    eos = hf.eos_token_id
    if isinstance(eos, (list, tuple)):
        # Llama 3 lists several end tokens; ccrun's configs hold one: the first (its end-of-text).
        eos = eos[0] if eos else None
    llama = name == "llama"
    return LlamaConfig(
        arch=arch.arch, **fields,
        n_kv_head=getattr(hf, "num_key_value_heads", None) or fields["n_head"],
        # transformers: an explicit head_dim wins, else d_model // n_head (Qwen2 has no default attribute)
        head_dim=getattr(hf, "head_dim", None) or fields["d_model"] // fields["n_head"],
        rope_theta=float(rope.get("rope_theta", getattr(hf, "rope_theta", None) or 10000.0)),
        rope_type=rope_type,
        rope_scaling=tuple(scaling.items()),
        qkv_bias=bool(getattr(hf, "attention_bias", False)) if llama else True,
        mlp_bias=bool(getattr(hf, "mlp_bias", False)) if llama else False,
        eos_token_id=eos,
    )


def config_to_hf(config: Config) -> Any:
    arch = next(a for a in ARCHS.values() if a.arch == config.arch)
    fields = {theirs: getattr(config, ours) for ours, theirs in arch.fields.items()}
    if arch.arch in LLAMA_FAMILY:
        extra = dict(attention_bias=config.qkv_bias, mlp_bias=config.mlp_bias) if arch.arch == "llama" else {}
        hf = arch.hf_class()(
            **fields, **extra,
            num_key_value_heads=config.n_kv_head,
            head_dim=config.head_dim,
            hidden_act=config.activation,
            rope_parameters={"rope_type": config.rope_type, "rope_theta": config.rope_theta, **dict(config.rope_scaling)},
            eos_token_id=config.eos_token_id,
        )
        hf.architectures = [arch.architecture]
        return hf
    if arch.arch == "gpt-neo":
        fields["attention_types"] = [[list(config.attention_layers), 1]]  # the pattern, repeated once
    hf = arch.hf_class()(tie_word_embeddings=True, **fields)
    hf.architectures = [arch.architecture]
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


def hf_names(config: Config) -> dict[tuple, tuple[str, str]]:
    """Our parameter path → (HF tensor name, how to convert). Conversions: 'copy', 'T' (transpose),
    or 'qkv:i' (slice i of GPT-2's fused c_attn)."""
    if isinstance(config, LlamaConfig):
        return _llama_names(config)
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


def _llama_names(config: LlamaConfig) -> dict[tuple, tuple[str, str]]:
    """Llama / Qwen2: transformers' module names are ours, under `model.`; nn.Linear kernels transposed."""
    names: dict[tuple, tuple[str, str]] = {
        ("embed_tokens", "embedding"): ("model.embed_tokens.weight", "copy"),
        ("norm", "scale"): ("model.norm.weight", "copy"),
    }
    if not config.tie_embeddings:
        names[("lm_head", "kernel")] = ("lm_head.weight", "T")
    biases = {"q_proj": config.qkv_bias, "k_proj": config.qkv_bias, "v_proj": config.qkv_bias,
              "o_proj": config.o_bias, "gate_proj": config.mlp_bias, "up_proj": config.mlp_bias,
              "down_proj": config.mlp_bias}
    for i in range(config.n_layer):
        h, ours = f"model.layers.{i}", ("layers", i)
        for norm in ("input_layernorm", "post_attention_layernorm"):
            names[(*ours, norm, "scale")] = (f"{h}.{norm}.weight", "copy")
        for part, proj in [("self_attn", p) for p in ("q_proj", "k_proj", "v_proj", "o_proj")] + [
            ("mlp", p) for p in ("gate_proj", "up_proj", "down_proj")
        ]:
            names[(*ours, part, proj, "kernel")] = (f"{h}.{part}.{proj}.weight", "T")
            if biases[proj]:
                names[(*ours, part, proj, "bias")] = (f"{h}.{part}.{proj}.bias", "copy")
    return names


def _normalise(tensors: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Give every name the model's prefix (`transformer.` or `model.`: original GPT-2 files and
    bare LlamaModel files lack it) and drop buffers."""
    out = {}
    for name, value in tensors.items():
        if name.endswith(IGNORED_SUFFIXES):
            continue
        if not name.startswith((prefix, "lm_head.")):
            name = prefix + name
        out[name] = value
    return out


def params_from_hf(config: Config, tensors: dict[str, Any]) -> dict[tuple, Any]:
    """HF tensors → our parameters by path. Raises CheckpointError naming every misfit."""
    llama = isinstance(config, LlamaConfig)
    tensors = _normalise(tensors, "model." if llama else "transformer.")
    names = hf_names(config)
    used = {hf for hf, _ in names.values()}
    embedding = "model.embed_tokens.weight" if llama else "transformer.wte.weight"
    tied = config.tie_embeddings if llama else True  # GPT-Neo and GPT-2 always tie
    if tied and (lm_head := tensors.pop("lm_head.weight", None)) is not None and embedding in tensors:
        # transformers writes a tied head (or not); if it is there, it must be the embedding
        if lm_head.shape != tensors[embedding].shape or not bool(jnp.array_equal(lm_head, tensors[embedding])):
            why = "config.json's tie_word_embeddings is true" if llama else "ccrun models tie them"
            raise CheckpointError(f"lm_head.weight differs from {embedding}; {why}")
    unexpected = sorted(set(tensors) - used)
    missing = sorted(used - set(tensors))
    problems = []
    if missing:
        untied_hint = " (tie_word_embeddings is false: the model needs its own LM head)" if (
            llama and "lm_head.weight" in missing) else ""
        problems.append(f"missing weights: {_few(missing)}{untied_hint}")
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


def params_to_hf(config: Config, params: dict[tuple, Any]) -> dict[str, np.ndarray]:
    """Our parameters → HF tensors (fp32 numpy, contiguous)."""
    fused: dict[str, list] = {}
    out: dict[str, np.ndarray] = {}
    for path, (hf_name, how) in hf_names(config).items():
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


def flat_params(model: Model) -> dict[tuple, Any]:
    return {tuple(path): var[...] for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def model_class(config: Config) -> type[Model]:
    return Llama if isinstance(config, LlamaConfig) else GPTNeo


def build_from_params(config: Config, params: dict[tuple, Any], *, dtype="float32", param_dtype="float32",
                      attention="auto") -> Model:
    """A model with exactly these parameters (shapes checked)."""
    cls = model_class(config)
    model = nnx.eval_shape(
        lambda: cls(config, dtype=dtype, param_dtype=param_dtype, attention=attention, rngs=nnx.Rngs(0))
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
    load_params(model, nnx.from_flat_state(leaves))
    return model


def from_pretrained(
    path_or_hub_id: str | os.PathLike,
    dtype: str = "float32",
    *,
    param_dtype: str = "float32",
    revision: str | None = None,
    attention: str = "auto",
    dropout: float | None = None,
) -> Model:
    """Load a GPT-Neo, GPT-2, Llama or Qwen2 checkpoint (local directory or hub id). `dtype` is the
    compute dtype; `dropout` replaces the checkpoint's dropout rates (Llama and Qwen2: the attention
    dropout, the only one transformers' models have)."""
    directory = checkpoint_dir(path_or_hub_id, revision=revision)
    config, _ = read_config(directory)
    if dropout is not None and isinstance(config, LlamaConfig):
        config = dataclasses.replace(config, attn_dropout=dropout)
    elif dropout is not None:
        config = dataclasses.replace(config, embd_dropout=dropout, attn_dropout=dropout, resid_dropout=dropout)
    params = params_from_hf(config, read_tensors(directory))
    return build_from_params(config, params, dtype=dtype, param_dtype=param_dtype, attention=attention)


def save_pretrained(model: Model, out_dir: str | os.PathLike, *, base_model: str | None = None) -> Path:
    """Write config.json and model.safetensors (fp32) that transformers loads (PyTorch).

    A model with LoRA adapters (runner.model.lora) is written merged (each adapted kernel W +
    alpha/r·AB: what it computes), and its adapters beside it in `out_dir/adapter/` in PEFT's
    format, naming `base_model` (the hub id or directory of the base) as theirs. The model itself
    is left as it is."""
    from safetensors.numpy import save_file

    from .lora import lora_layers, merged_kernel, save_peft_adapter

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf = config_to_hf(model.config)
    params = flat_params(model)
    adapted = lora_layers(model)
    for path, layer in adapted:  # never the base alone: it is not the model that trained
        params[(*path, "kernel")] = merged_kernel(layer)
    if adapted:
        save_peft_adapter(model, out / "adapter", base_model_name_or_path=base_model, hf_names=hf_names(model.config))
    tensors = params_to_hf(model.config, params)
    tmp = out / ".model.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out / "model.safetensors")
    hf.to_json_file(str(out / "config.json"), use_diff=False)
    return out
