"""LoRA (Hu et al. 2021, as PEFT implements it): a low-rank update beside a frozen linear layer.

A targeted `nnx.Linear` becomes a `LoRALinear`: the same layer (its `kernel` and `bias` keep their
paths, so a checkpoint's base weights load and export unchanged) plus two `nnx.LoRAParam`s,
`lora_a` [in, r] and `lora_b` [r, out]:

    y = x @ W + b + dropout(x) @ A @ B * (alpha / r)

PEFT's initialisation: A is Kaiming-uniform (bound 1/sqrt(in)), B is zero, so a fresh adapter
changes nothing. `nnx.LoRAParam` is an `nnx.Param` subclass: `nnx.split(model, nnx.LoRAParam, ...)`
separates the adapters (what trains) from the base (what stays frozen).

The models call every projection through `project(layer, x, deterministic=, rngs=)`: a plain
Linear as it is, a LoRALinear with its dropout (which draws from the Rngs of the call, as every
dropout in these models does; the model holds no RNG state).

The transformation is generic over the model (it walks the nnx module graph):
- `apply_lora(model, rank=, alpha=, dropout=, targets=, rngs=)` wraps every nnx.Linear whose
  attribute name is in `targets` ("q_proj", "c_fc", ...), in place;
- `split_lora(model)` → (graphdef, adapters, base): the optimizer sees only `adapters` (its state
  holds nothing for the base); the loss merges them back with `merge_split(graphdef, adapters, base)`;
- `merge_lora(model)` folds each adapter into its kernel (W + alpha/r · A @ B) and leaves plain
  Linears: the model then has exactly the parameters of one without LoRA, so hf.save_pretrained
  exports it;
- `save_peft_adapter` / `load_peft_adapter` write and read PEFT's adapter_config.json +
  adapter_model.safetensors, named by the model's `hf_names` (runner.model.hf).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


class LoRALinear(nnx.Linear):
    """An nnx.Linear with a trainable rank-`rank` update scaled by `alpha / rank`."""

    def __init__(self, base: nnx.Linear, *, rank: int, alpha: float, dropout: float, rngs: nnx.Rngs):
        # Build as an empty Linear of the same shape (the kernel is abstract: no memory, no
        # random draw), then take the base's own variables, so their paths and values stay.
        shape = dict(use_bias=base.use_bias, dtype=base.dtype, param_dtype=base.param_dtype, precision=base.precision)
        abstract = nnx.eval_shape(lambda: nnx.Linear(base.in_features, base.out_features, **shape, rngs=nnx.Rngs(0)))
        vars(self).update({k: v for k, v in vars(abstract).items() if k not in ("kernel", "bias")})
        self.kernel = base.kernel
        self.bias = base.bias if base.use_bias else nnx.data(None)
        bound = 1.0 / math.sqrt(base.in_features)  # kaiming_uniform(a=sqrt(5)), PEFT's and torch's default
        self.lora_a = nnx.LoRAParam(
            jax.random.uniform(rngs.params(), (base.in_features, rank), base.param_dtype, -bound, bound)
        )
        self.lora_b = nnx.LoRAParam(jnp.zeros((rank, base.out_features), base.param_dtype))
        self.rank, self.alpha = rank, alpha
        self.scale = alpha / rank
        self.lora_dropout = nnx.Dropout(dropout)

    def __call__(self, inputs, *, deterministic: bool = True, rngs: nnx.Rngs | None = None):
        y = super().__call__(inputs)
        x = self.lora_dropout(inputs, deterministic=deterministic, rngs=rngs)
        dtype = self.dtype or y.dtype
        a, b = self.lora_a[...].astype(dtype), self.lora_b[...].astype(dtype)
        return y + ((x.astype(dtype) @ a) @ b) * jnp.asarray(self.scale, dtype)


def project(layer: nnx.Linear, x: jax.Array, *, deterministic: bool = True, rngs: Any = None) -> jax.Array:
    """`layer(x)`, with the LoRA dropout's arguments when the layer carries an adapter."""
    if isinstance(layer, LoRALinear):
        return layer(x, deterministic=deterministic, rngs=rngs)
    return layer(x)


# --- the transformation ----------------------------------------------------------------------

Path_ = tuple  # a module's path in the model: attribute names and list indices, ("blocks", 0, "attn", "q_proj")


def linear_layers(model: nnx.Module) -> list[tuple[Path_, nnx.Linear]]:
    """Every nnx.Linear of the model (LoRALinears included) with its path, in graph order."""
    return [(tuple(path), m) for path, m in nnx.iter_modules(model) if isinstance(m, nnx.Linear)]


def lora_layers(model: nnx.Module) -> list[tuple[Path_, LoRALinear]]:
    """Every LoRALinear of the model with its path, in graph order."""
    return [(path, m) for path, m in linear_layers(model) if isinstance(m, LoRALinear)]


def _check_hyper(rank: Any, alpha: Any, dropout: Any) -> None:
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise ValueError(f"LoRA rank must be a positive integer (got {rank!r})")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.number)) or not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"LoRA alpha must be a positive number (got {alpha!r})")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.number)) or not 0 <= dropout < 1:
        raise ValueError(f"LoRA dropout must be in [0, 1) (got {dropout!r})")


def _replace(model: nnx.Module, path: Path_, new: nnx.Module) -> None:
    """Put `new` where the module at `path` is (an attribute, or an item of an nnx.List)."""
    parent = model
    for key in path[:-1]:
        parent = parent[key] if isinstance(key, int) else getattr(parent, key)
    if isinstance(path[-1], int):
        parent[path[-1]] = new
    else:
        setattr(parent, path[-1], new)


def _wrap(model, paths: Iterable[Path_], *, rank: int, alpha: float, dropout: float, rngs: nnx.Rngs):
    layers = dict(linear_layers(model))
    for path in paths:
        layer = layers[path]
        if isinstance(layer, LoRALinear):
            raise ValueError(f"{'.'.join(map(str, path))} already has a LoRA adapter")
        _replace(model, path, LoRALinear(layer, rank=rank, alpha=alpha, dropout=dropout, rngs=rngs))
    return model


def apply_lora(model, *, rank: int, alpha: float, dropout: float, targets: Sequence[str], rngs: nnx.Rngs):
    """Wrap, in place, every nnx.Linear whose attribute name is in `targets` (at any depth) in a
    LoRALinear of this rank; returns the model. Adapters draw A from `rngs.params()`.

    Raises ValueError for a rank < 1, alpha <= 0, dropout outside [0, 1), no targets, a target that
    names no Linear (the message lists the model's Linear names), or a layer already adapted.
    """
    _check_hyper(rank, alpha, dropout)
    if isinstance(targets, str) or not targets or not all(isinstance(t, str) for t in targets):
        raise ValueError(f"LoRA targets must be a non-empty list of layer names (got {targets!r})")
    layers = linear_layers(model)
    names = {path[-1] for path, _ in layers if isinstance(path[-1], str)}
    if unknown := sorted(set(targets) - names):
        raise ValueError(
            f"LoRA targets {', '.join(unknown)} name no linear layer of this model; its linear layers are: "
            f"{', '.join(sorted(names))}"
        )
    chosen = [path for path, _ in layers if path[-1] in set(targets)]
    return _wrap(model, chosen, rank=int(rank), alpha=float(alpha), dropout=float(dropout), rngs=rngs)


def lora_param_count(shapes: Iterable[tuple[int, int]], rank: int) -> int:
    """Trainable parameters of rank-`rank` adapters on linear layers of these (in, out) shapes:
    A is [in, r] and B is [r, out], so r·(in + out) each."""
    return sum(rank * (fan_in + fan_out) for fan_in, fan_out in shapes)


def count_lora_params(model) -> int:
    """The model's adapter parameters (its nnx.LoRAParam elements)."""
    return sum(int(x.size) for x in jax.tree.leaves(nnx.state(model, nnx.LoRAParam)))


def merged_kernel(layer: LoRALinear) -> jax.Array:
    """W + (alpha / r) · A @ B [in, out], computed in fp32 (full precision matmul), stored in the
    layer's param dtype (the model's, even where a frozen base was cast to the compute dtype)."""
    f32 = jnp.float32
    delta = jnp.matmul(layer.lora_a[...].astype(f32), layer.lora_b[...].astype(f32),
                       precision=jax.lax.Precision.HIGHEST)
    return (layer.kernel[...].astype(f32) + delta * f32(layer.scale)).astype(layer.param_dtype)


def merge_lora(model):
    """Replace, in place, each LoRALinear by a plain nnx.Linear holding its merged kernel (and its
    bias); returns the model, which then has exactly the paths and parameters of one without LoRA."""
    for path, layer in lora_layers(model):
        shape = dict(use_bias=layer.use_bias, dtype=layer.dtype, param_dtype=layer.param_dtype,
                     precision=layer.precision)
        plain = nnx.eval_shape(lambda: nnx.Linear(layer.in_features, layer.out_features, **shape, rngs=nnx.Rngs(0)))
        plain.kernel = layer.kernel.replace(merged_kernel(layer))  # keeps the kernel's metadata (sharding)
        if layer.use_bias:
            plain.bias = layer.bias
        _replace(model, path, plain)
    return model


def split_lora(model) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """(graphdef, adapters, base): `adapters` holds the nnx.LoRAParams (what trains: give the
    optimizer only these, so its state holds nothing for the base), `base` everything else (frozen;
    the trainer may cast it to the compute dtype). Inverse: merge_split."""
    if not lora_layers(model):
        raise ValueError("the model has no LoRA adapters (apply_lora first)")
    return nnx.split(model, nnx.LoRAParam, ...)


def merge_split(graphdef: nnx.GraphDef, adapters: nnx.State, base: nnx.State):
    """The model again from split_lora's parts (inside a traced loss, too)."""
    return nnx.merge(graphdef, adapters, base)


# --- PEFT's format -----------------------------------------------------------------------------

ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # PeftModelForCausalLM's prefix to the transformers model's names


def _hf_module(path: Path_, hf_names: dict) -> tuple[str, bool]:
    """(transformers module name, whether its weight is [in, out], i.e. a GPT-2 Conv1D)."""
    where = ".".join(map(str, path))
    entry = hf_names.get((*path, "kernel"))
    if entry is None:
        raise ValueError(f"{where}: no Hugging Face name for its kernel")
    name, how = entry
    if how.startswith("qkv:"):
        raise ValueError(
            f"{where}: GPT-2 fuses q, k and v in one Conv1D ({name}), so PEFT cannot hold separate q/k/v "
            "adapters; target out_proj, c_fc or c_proj for a PEFT export, or export the merged model"
        )
    if not name.endswith(".weight") or how not in ("T", "copy"):
        raise ValueError(f"{where}: {name} ({how}) is not a linear layer's weight")
    return name[: -len(".weight")], how == "copy"


def _target_modules(chosen: set[str], kernels: set[str]) -> list[str]:
    """PEFT's target_modules for exactly the `chosen` modules among all linear `kernels`: their
    last names when those select nothing else (PEFT matches a listed name as a suffix after a dot),
    else the full module names."""
    short = {m.rsplit(".", 1)[-1] for m in chosen}
    if {m for m in kernels if m.rsplit(".", 1)[-1] in short} == chosen:
        return sorted(short)
    return sorted(chosen)


def save_peft_adapter(model, out_dir: str | os.PathLike, *, base_model_name_or_path: str, hf_names: dict) -> Path:
    """Write the model's adapters as PEFT does: adapter_config.json and adapter_model.safetensors
    (fp32), loadable with `peft.PeftModel.from_pretrained(transformers_model, out_dir)`.

    `hf_names` maps our parameter paths to (transformers tensor name, conversion), as
    runner.model.hf.hf_names(config) gives it. A layer whose weight is `X.weight` gets
    `base_model.model.X.lora_A.weight` = A.T [r, in] and `...lora_B.weight` = B.T [out, r] (PEFT
    keeps torch's [out, in] for its adapters, a GPT-2 Conv1D base included). Only these two files
    are written (atomically); other files in `out_dir` stay.
    """
    from safetensors.numpy import save_file

    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA adapters to save")
    hyper = {(layer.rank, layer.alpha, layer.lora_dropout.rate) for _, layer in layers}
    if len(hyper) > 1:
        raise ValueError(f"adapters with different (rank, alpha, dropout) {sorted(hyper)}: PEFT's export here needs one")
    (rank, alpha, dropout), = hyper
    tensors, chosen, conv1d = {}, set(), set()
    for path, layer in layers:
        module, fan_in_fan_out = _hf_module(path, hf_names)
        chosen.add(module)
        conv1d.add(fan_in_fan_out)
        a = np.asarray(jnp.asarray(layer.lora_a[...], jnp.float32)).T  # [r, in]
        b = np.asarray(jnp.asarray(layer.lora_b[...], jnp.float32)).T  # [out, r]
        tensors[f"{PEFT_PREFIX}{module}.lora_A.weight"] = np.ascontiguousarray(a)
        tensors[f"{PEFT_PREFIX}{module}.lora_B.weight"] = np.ascontiguousarray(b)
    if len(conv1d) > 1:
        raise ValueError("adapters on both Linear and Conv1D layers: PEFT's fan_in_fan_out is one setting")
    kernels = {name[: -len(".weight")] for path, (name, how) in hf_names.items()
               if path[-1] == "kernel" and how in ("T", "copy")}
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "revision": None,
        "inference_mode": True,
        "r": int(rank),
        "lora_alpha": int(alpha) if float(alpha).is_integer() else float(alpha),
        "lora_dropout": float(dropout),
        "target_modules": _target_modules(chosen, kernels),
        "bias": "none",
        "fan_in_fan_out": conv1d.pop(),  # GPT-2's Conv1D stores [in, out]; PEFT sets it for Conv1D
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{ADAPTER_WEIGHTS}.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out / ADAPTER_WEIGHTS)
    tmp = out / f".{ADAPTER_CONFIG}.tmp"
    tmp.write_text(json.dumps(config, indent=2) + "\n")
    os.replace(tmp, out / ADAPTER_CONFIG)
    return out


# PEFT options that change the arithmetic in ways LoRALinear does not follow: (key, the value we follow).
PEFT_UNSUPPORTED = (("use_rslora", False), ("use_dora", False), ("bias", "none"), ("lora_bias", False),
                    ("rank_pattern", {}), ("alpha_pattern", {}), ("modules_to_save", None),
                    ("layers_to_transform", None), ("target_parameters", None), ("exclude_modules", None))


def _peft_matches(target_modules: Any, module: str) -> bool:
    """PEFT's rule: a string is a regex the whole name must match; a list names modules exactly or
    as a suffix after a dot."""
    if isinstance(target_modules, str):
        return target_modules == "all-linear" or re.fullmatch(target_modules, module) is not None
    return any(module == t or module.endswith("." + t) for t in target_modules)


def _empty(value: Any) -> bool:
    return value is None or value is False or value == {} or value == []


def load_peft_adapter(model, directory: str | os.PathLike, hf_names: dict, *, rngs: nnx.Rngs | None = None):
    """The inverse of save_peft_adapter: apply_lora as the directory's adapter_config.json says,
    then put its adapter_model.safetensors into the adapters; in place, returns the model.
    Raises ValueError (the model untouched) for PEFT options LoRALinear does not implement and for
    missing, unexpected or misshapen tensors."""
    from safetensors.numpy import load_file

    directory = Path(directory)
    try:
        config = json.loads((directory / ADAPTER_CONFIG).read_text())
        tensors = load_file(str(directory / ADAPTER_WEIGHTS))
    except (OSError, ValueError) as exc:  # ValueError: JSON's and safetensors' decode errors
        raise ValueError(f"{directory}: not a PEFT adapter ({type(exc).__name__}: {exc})") from None
    if config.get("peft_type") != "LORA":
        raise ValueError(f"{directory}: peft_type {config.get('peft_type')!r}, only LORA adapters load")
    for key, ours in PEFT_UNSUPPORTED:
        value = config.get(key, ours)
        if value != ours and not (_empty(value) and _empty(ours)):
            raise ValueError(f"{directory}: PEFT option {key}={value!r} is not supported")
    rank, alpha, dropout = config.get("r"), config.get("lora_alpha"), config.get("lora_dropout", 0.0)
    _check_hyper(rank, alpha, dropout)
    targets = config.get("target_modules") or []
    chosen = {}  # our path → (transformers module name, the plain layer)
    for path, layer in linear_layers(model):
        entry = hf_names.get((*path, "kernel"))
        if entry is not None and _peft_matches(targets, entry[0][: -len(".weight")]):
            chosen[path] = (_hf_module(path, hf_names)[0], layer)  # raises for a fused GPT-2 c_attn
    if not chosen:
        raise ValueError(f"{directory}: target_modules {targets!r} match no linear layer of this model")
    values, problems = {}, []
    for path, (module, layer) in chosen.items():
        for part, shape in (("A", (rank, layer.in_features)), ("B", (layer.out_features, rank))):
            name = f"{PEFT_PREFIX}{module}.lora_{part}.weight"
            if name not in tensors:
                problems.append(f"missing {name}")
            elif tuple(tensors[name].shape) != shape:
                problems.append(f"{name}: shape {tuple(tensors[name].shape)}, expected {shape}")
            else:
                values[path, part] = tensors[name].T  # ours: A [in, r], B [r, out]
    used = {f"{PEFT_PREFIX}{module}.lora_{part}.weight" for module, _ in chosen.values() for part in "AB"}
    # PEFT's save_embedding_layers (on when lm_head or embed_tokens is a target) also stores the
    # base layer's own weights: accepted when they are the base's we hold, since the adapters apply
    # to that base.
    for path, (module, layer) in chosen.items():
        for part in ("weight", "bias"):
            name = f"{PEFT_PREFIX}{module}.base_layer.{part}"
            if name in tensors:
                ours = layer.kernel[...] if part == "weight" else layer.bias[...] if layer.use_bias else None
                theirs = tensors[name].T if part == "weight" and hf_names[(*path, "kernel")][1] == "T" else tensors[name]
                if ours is None or not np.array_equal(np.asarray(ours, np.float32), np.asarray(theirs, np.float32)):
                    problems.append(f"{name} differs from the base model's {module}.{part}")
                used.add(name)
    if unexpected := sorted(set(tensors) - used):
        problems.append(f"unexpected tensors: {', '.join(unexpected[:8])}")
    if problems:
        raise ValueError(f"{directory}: {'; '.join(problems)}")
    _wrap(model, chosen, rank=int(rank), alpha=float(alpha), dropout=float(dropout), rngs=rngs or nnx.Rngs(0))
    for path, layer in lora_layers(model):
        if path in chosen:
            layer.lora_a[...] = jnp.asarray(values[path, "A"], layer.lora_a[...].dtype)
            layer.lora_b[...] = jnp.asarray(values[path, "B"], layer.lora_b[...].dtype)
    return model
