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

from ..common.errors import BadInput
from .gpt_neo import GPTConfig, GPTNeo, load_params

# Buffers that old checkpoints carry; they are recomputed, never loaded.
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", ".attn.attention.bias", ".attn.attention.masked_bias")
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
    """How one architecture's GPTConfig and its transformers config correspond, both ways.

    `fields` maps our field to the HF attribute of the same meaning, copied as is; the rest is
    computed: `d_ff` (HF may leave it unset: 4 * d_model) and the attention kinds per layer.
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
    )
}
# GPT-2 options that change the arithmetic in ways ours does not follow: (attribute, the value we follow).
GPT2_UNSUPPORTED = (("scale_attn_by_inverse_layer_idx", False), ("reorder_and_upcast_attn", False),
                    ("scale_attn_weights", True))


def read_config(directory: Path) -> tuple[GPTConfig, Any]:
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
    hf = arch.hf_class().from_dict(raw)
    return config_from_hf(hf), hf


def config_from_hf(hf: Any) -> GPTConfig:
    arch = ARCHS[hf.model_type]
    if arch.arch == "gpt2":
        for flag, ours in GPT2_UNSUPPORTED:
            if bool(getattr(hf, flag, ours)) != ours:
                raise CheckpointError(f"gpt2 config option {flag}={str(not ours).lower()} is not supported")
    fields = {ours: getattr(hf, theirs) for ours, theirs in arch.fields.items()}
    fields["d_ff"] = fields["d_ff"] or 4 * fields["d_model"]
    # GPT-Neo lists each layer's kind (expanded from attention_types); GPT-2's are all global.
    kinds = hf.attention_layers if arch.arch == "gpt-neo" else ("global",) * fields["n_layer"]
    return GPTConfig(arch=arch.arch, attention_layers=tuple(kinds), **fields)


def config_to_hf(config: GPTConfig) -> Any:
    arch = next(a for a in ARCHS.values() if a.arch == config.arch)
    fields = {theirs: getattr(config, ours) for ours, theirs in arch.fields.items()}
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


def hf_names(config: GPTConfig) -> dict[tuple, tuple[str, str]]:
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
    names = hf_names(config)
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
