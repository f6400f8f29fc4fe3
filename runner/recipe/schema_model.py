"""Recipe parts that say which network and tokenizer to use."""


from collections.abc import Iterator
from typing import Literal

from pydantic import Field

from .base import HubOrLocal, Path, Spec, at_most, deriving, each

Arch = Literal["gpt-neo", "gpt2", "llama", "qwen2"]
LLAMA_FAMILY = ("llama", "qwen2")  # rotary positions, RMSNorm, SwiGLU, grouped-query attention
# The linear layers of each family, by the attribute names the models (and Hugging Face, and PEFT's
# target_modules) give them: what `model.lora.targets` may name.
LINEAR_LAYERS = {
    "gpt-neo": ("q_proj", "k_proj", "v_proj", "out_proj", "c_fc", "c_proj"),
    "gpt2": ("q_proj", "k_proj", "v_proj", "out_proj", "c_fc", "c_proj"),
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "qwen2": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
}
# GPT-2 keeps q, k and v in one fused c_attn (Conv1D): PEFT's format cannot hold separate adapters.
GPT2_FUSED = ("q_proj", "k_proj", "v_proj")
DType = Literal["float32", "bfloat16"]
AttentionKind = Literal["global", "local"]

# Upper bounds of a scratch model's sizes: far above any model this runner trains (GPT-3 175B has
# 96 layers of 96 heads, d_model 12288, 2048 positions; large vocabularies have ~256k tokens), low
# enough that validating stays instant (attention_layers is derived per layer) and every size
# fits the int32 arrays that hold token ids and positions.
MAX_TOKENS = 1 << 20  # vocabulary sizes and positions (context lengths)
MAX_SIZES = {
    "n_layer": 1024,
    "n_head": 1024,
    "d_model": 1 << 16,
    "d_ff": 1 << 18,
    "vocab_size": MAX_TOKENS,
    "max_positions": MAX_TOKENS,
    "window_size": MAX_TOKENS,
    "n_kv_head": 1024,
}


class ModelConfig(Spec):
    """Sizes of a model built from scratch (init: scratch)."""

    n_layer: int = Field(ge=1, description="Number of transformer blocks.")
    d_model: int = Field(ge=1, description="Width of the residual stream (hidden size).")
    n_head: int = Field(ge=1, description="Attention heads per layer; must divide d_model.")
    n_kv_head: int | None = Field(
        default=None,
        ge=1,
        description="llama/qwen2: key/value heads (grouped-query attention); must divide n_head. Resolved to "
        "n_head when unset.",
    )
    d_ff: int | None = Field(
        default=None, ge=1, description="Width of the MLP hidden layer. Resolved to 4 * d_model when unset."
    )
    vocab_size: int | None = Field(
        default=None,
        ge=1,
        description="Embedding rows. Unset: the tokenizer's vocabulary size, known when the run builds the model.",
    )
    max_positions: int = Field(
        default=2048,
        ge=1,
        description="The context length: learned position embeddings (GPT-Neo, GPT-2) or the longest sequence "
        "(llama/qwen2, rotary).",
    )
    window_size: int | None = Field(
        default=None,
        ge=1,
        description="GPT-Neo local attention: positions a local layer sees, its own included. Resolved to 256 "
        "when unset (gpt-neo and gpt2).",
    )
    rope_theta: float | None = Field(
        default=None, gt=0, description="llama/qwen2: the rotary embeddings' base. Resolved to 10000 when unset."
    )
    tie_embeddings: bool | None = Field(
        default=None,
        description="The LM head is the token embedding. Resolved when unset: true for gpt-neo and gpt2 (always "
        "tied), false for llama and qwen2.",
    )
    qkv_bias: bool | None = Field(
        default=None,
        description="llama/qwen2: attention biases: qwen2's on q, k and v; llama's attention_bias on q, k, v and o. "
        "Resolved when unset: true for qwen2, false for llama.",
    )
    attention_layers: list[AttentionKind] | None = Field(
        default=None,
        description="Attention kind of each layer. Resolved when unset: GPT-Neo alternates global, local; "
        "GPT-2 is global everywhere.",
    )
    activation: Literal["gelu_new", "gelu", "relu", "silu"] | None = Field(
        default=None,
        description="MLP activation. Resolved when unset: gelu_new (the tanh approximation GPT-Neo and GPT-2 use), "
        "silu for llama and qwen2 (their SwiGLU MLP).",
    )
    layer_norm_eps: float = Field(default=1e-5, gt=0, description="LayerNorm (RMSNorm for llama/qwen2) epsilon.")

    def check(self) -> Iterator[tuple[Path, str]]:
        yield from each(lambda: at_most(self, MAX_SIZES), self._heads, self._kv_heads, self._layers)

    def _heads(self) -> Iterator[tuple[Path, str]]:
        if self.d_model % self.n_head:
            yield ("n_head",), f"must divide d_model ({self.d_model} % {self.n_head} = {self.d_model % self.n_head})"

    def _kv_heads(self) -> Iterator[tuple[Path, str]]:
        if self.n_kv_head is not None and self.n_head % self.n_kv_head:
            yield ("n_kv_head",), f"must divide n_head ({self.n_head} % {self.n_kv_head} = {self.n_head % self.n_kv_head})"

    def _layers(self) -> Iterator[tuple[Path, str]]:
        if self.attention_layers is not None and len(self.attention_layers) != self.n_layer:
            yield (
                ("attention_layers",),
                f"needs one entry per layer: {len(self.attention_layers)} given, n_layer is {self.n_layer}",
            )


class DTypeSpec(Spec):
    """Numeric precision: parameters are stored in `params`, matmuls run in `compute`."""

    params: DType = Field(default="float32", description="dtype of the stored parameters and optimizer state.")
    compute: DType = Field(default="float32", description="dtype of activations and matmuls (softmax and loss stay fp32).")


class LoRASpec(Spec):
    """Low-rank adapters (LoRA, as PEFT defines it) on the named linear layers; only they train.

    Each targeted layer y = xW + b gains dropout(x)·A·B·(alpha/rank), A [in, rank], B [rank, out]
    (B starts at zero). The base weights stay frozen, stored in the compute dtype; the optimizer
    and the checkpoints hold the adapters only. final/ holds the merged model (it loads in
    transformers) and final/adapter/ the adapters in PEFT's format.
    """

    rank: int = Field(default=8, ge=1, le=1 << 16, description="The adapters' rank r (PEFT's r).")
    alpha: float = Field(default=8.0, gt=0, description="Scaling numerator: updates are scaled by alpha / rank (PEFT's lora_alpha).")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout on the adapters' input while training (PEFT's lora_dropout).")
    targets: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Names of the linear layers to adapt (PEFT's target_modules). Resolved when unset: every "
        "linear layer of the blocks (llama/qwen2: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj; "
        "gpt-neo: q_proj k_proj v_proj out_proj c_fc c_proj; gpt2: out_proj c_fc c_proj).",
    )


class ModelSpec(Spec):
    """The network: a pretrained checkpoint to fine-tune or evaluate, or a fresh one from a config."""

    arch: Arch = Field(description="Model family: gpt-neo (local/global attention, unscaled scores) or gpt2.")
    init: Literal["pretrained", "scratch"] = Field(
        default="pretrained", description="Start from `checkpoint` (pretrained) or from random weights sized by `config`."
    )
    checkpoint: HubOrLocal | None = Field(
        default=None,
        description="Hugging Face hub id (EleutherAI/gpt-neo-125M) or a local directory (starting with ./ ../ / or ~, "
        "relative to this file). Required for init: pretrained.",
    )
    revision: str | None = Field(
        default=None, description="Hub revision (branch, tag or commit) of the checkpoint; pin a commit to reproduce."
    )
    config: ModelConfig | None = Field(default=None, description="Sizes for init: scratch.")
    dropout: float | None = Field(
        default=None,
        ge=0,
        lt=1,
        description="Dropout on embeddings, attention and residuals while training. Unset: the checkpoint's "
        "(0 for GPT-Neo) or 0 for scratch models.",
    )
    dtype: DTypeSpec = Field(default={}, validate_default=True, description="Parameter and compute precision.")
    lora: LoRASpec | None = Field(
        default=None, description="Train low-rank adapters (LoRA) instead of every weight; unset: full fine-tuning."
    )

    @property
    def adapter_base(self) -> str | None:
        """What LoRA adapters go onto (PEFT's base_model_name_or_path): the pretrained checkpoint;
        None for a scratch base (its weights follow from the recipe's seed)."""
        return self.checkpoint if self.init == "pretrained" else None

    def complete(self) -> None:
        lora = self.lora
        if lora is not None:
            with deriving(lora, "targets"):
                if lora.targets is None:
                    names = LINEAR_LAYERS[self.arch]
                    lora.derive(targets=[n for n in names if not (self.arch == "gpt2" and n in GPT2_FUSED)])
        config = self.config
        if config is None:
            return
        llama = self.arch in LLAMA_FAMILY
        # Each family's own sizes are resolved for it alone: the other family's stay unset, so a check
        # can tell that a recipe wrote them.
        with deriving(config, "n_kv_head", "qkv_bias", "rope_theta", "window_size"):
            if llama and config.n_kv_head is None:
                config.derive(n_kv_head=config.n_head)
            if llama and config.qkv_bias is None:
                config.derive(qkv_bias=self.arch == "qwen2")
            if llama and config.rope_theta is None:
                config.derive(rope_theta=10000.0)  # transformers' LlamaConfig / Qwen2Config default
            if not llama and config.window_size is None:
                config.derive(window_size=256)
        with deriving(config, "activation"):
            if config.activation is None:
                config.derive(activation="silu" if llama else "gelu_new")
        with deriving(config, "tie_embeddings"):
            if config.tie_embeddings is None:
                config.derive(tie_embeddings=not llama)
        with deriving(config, "d_ff"):
            if config.d_ff is None:
                config.derive(d_ff=4 * config.d_model)
        with deriving(config, "attention_layers"):
            if config.attention_layers is None:
                pattern = ("global", "local") if self.arch == "gpt-neo" else ("global",)  # llama: global
                config.derive(attention_layers=[pattern[i % len(pattern)] for i in range(config.n_layer)])

    def check(self) -> Iterator[tuple[Path, str]]:
        yield from each(self._init, self._local_layers, self._family, self._lora)

    def _init(self) -> Iterator[tuple[Path, str]]:
        if self.init == "pretrained":
            if self.checkpoint is None:
                yield ("checkpoint",), (
                    "required for init: pretrained (a hub id like EleutherAI/gpt-neo-125M, or a local directory)"
                )
            if self.config is not None:
                yield ("config",), "only for init: scratch; a pretrained model takes its sizes from its checkpoint"
        else:
            if self.config is None:
                yield ("config",), "required for init: scratch (n_layer, d_model, n_head, ...)"
            if self.checkpoint is not None:
                yield ("checkpoint",), "not used by init: scratch; remove it, or set init: pretrained"
            if self.revision is not None:
                yield ("revision",), "not used by init: scratch; remove it"

    def _local_layers(self) -> Iterator[tuple[Path, str]]:
        if self.arch in ("gpt2", *LLAMA_FAMILY) and self.config is not None and "local" in (
            self.config.attention_layers or []
        ):
            yield ("config", "attention_layers"), f"{self.arch} has no local attention; use gpt-neo for local layers"

    def _family(self) -> Iterator[tuple[Path, str]]:
        """Sizes one family has and the other does not: a clear error, never silently ignored."""
        config = self.config
        if config is None:
            return
        if self.arch in LLAMA_FAMILY:
            if self.arch == "qwen2" and config.qkv_bias is False:
                yield ("config", "qkv_bias"), "qwen2 always has q, k and v biases (transformers' Qwen2 cannot drop them)"
            if config.activation not in (None, "silu"):
                yield ("config", "activation"), f"{self.arch}'s SwiGLU MLP uses silu (got {config.activation})"
            if config.window_size is not None:
                yield ("config", "window_size"), f"{self.arch} has no local attention; remove window_size"
            return
        for name in ("n_kv_head", "rope_theta", "qkv_bias"):  # never derived for gpt-neo and gpt2
            if getattr(config, name) is not None:
                yield ("config", name), f"only for llama and qwen2; {self.arch} does not have it"
        if config.activation == "silu":
            yield ("config", "activation"), f"silu is the llama/qwen2 MLP's; {self.arch} uses gelu_new, gelu or relu"
        if config.tie_embeddings is False:
            yield ("config", "tie_embeddings"), f"{self.arch} always ties its LM head to the token embedding"

    def _lora(self) -> Iterator[tuple[Path, str]]:
        if self.lora is None or self.lora.targets is None:
            return
        names = LINEAR_LAYERS[self.arch]
        for i, target in enumerate(self.lora.targets):
            if target not in names:
                yield ("lora", "targets", i), f"{self.arch} has no linear layer {target!r} (one of {', '.join(names)})"
            elif self.arch == "gpt2" and target in GPT2_FUSED:
                yield ("lora", "targets", i), (
                    "gpt2 fuses q, k and v into one c_attn, which PEFT's adapter format cannot split; "
                    "target out_proj, c_fc or c_proj"
                )
        if len(set(self.lora.targets)) != len(self.lora.targets):
            yield ("lora", "targets"), "names a layer twice"


class TokenizerTrainSpec(Spec):
    """Train a byte-level BPE tokenizer on the recipe's training text before anything else."""

    vocab_size: int = Field(ge=260, description="Vocabulary size, the 256 byte tokens and special tokens included.")
    min_frequency: int = Field(default=2, ge=1, description="Merges seen fewer times than this are not learned.")
    max_documents: int | None = Field(
        default=None, ge=1, description="Train on at most this many documents (in data order); unset: all of them."
    )
    special_tokens: list[str] = Field(
        default=["<|endoftext|>"],
        min_length=1,
        description="Special tokens; the first one is the end-of-text (EOS) token that separates documents.",
    )

    def check(self) -> Iterator[tuple[Path, str]]:
        yield from at_most(self, {"vocab_size": MAX_TOKENS})


class TokenizerSpec(Spec):
    """Which tokenizer to use: an existing one (`name`) or one trained on the data (`train`)."""

    name: HubOrLocal | None = Field(
        default=None,
        description="Hub id or local directory of a tokenizer. Resolved to model.checkpoint when neither name "
        "nor train is given and the model is pretrained.",
    )
    revision: str | None = Field(default=None, description="Hub revision of the tokenizer.")
    train: TokenizerTrainSpec | None = Field(default=None, description="Train a new tokenizer on the data instead.")

    def check(self) -> Iterator[tuple[Path, str]]:
        if self.name is not None and self.train is not None:
            yield ("train",), "give either tokenizer.name or tokenizer.train, not both"
