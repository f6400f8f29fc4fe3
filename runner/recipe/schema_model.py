"""Recipe parts that say which network and tokenizer to use."""


from collections.abc import Iterator
from typing import Literal

from pydantic import Field

from .base import HubOrLocal, Path, Spec, at_most, deriving, each

Arch = Literal["gpt-neo", "gpt2"]
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
}


class ModelConfig(Spec):
    """Sizes of a model built from scratch (init: scratch)."""

    n_layer: int = Field(ge=1, description="Number of transformer blocks.")
    d_model: int = Field(ge=1, description="Width of the residual stream (hidden size).")
    n_head: int = Field(ge=1, description="Attention heads per layer; must divide d_model.")
    d_ff: int | None = Field(
        default=None, ge=1, description="Width of the MLP hidden layer. Resolved to 4 * d_model when unset."
    )
    vocab_size: int | None = Field(
        default=None,
        ge=1,
        description="Embedding rows. Unset: the tokenizer's vocabulary size, known when the run builds the model.",
    )
    max_positions: int = Field(default=2048, ge=1, description="Learned position embeddings (the context length).")
    window_size: int = Field(
        default=256, ge=1, description="GPT-Neo local attention: positions a local layer sees, its own included."
    )
    attention_layers: list[AttentionKind] | None = Field(
        default=None,
        description="Attention kind of each layer. Resolved when unset: GPT-Neo alternates global, local; "
        "GPT-2 is global everywhere.",
    )
    activation: Literal["gelu_new", "gelu", "relu"] = Field(
        default="gelu_new", description="MLP activation; gelu_new is the tanh approximation GPT-Neo and GPT-2 use."
    )
    layer_norm_eps: float = Field(default=1e-5, gt=0, description="LayerNorm epsilon.")

    def check(self) -> Iterator[tuple[Path, str]]:
        yield from each(lambda: at_most(self, MAX_SIZES), self._heads, self._layers)

    def _heads(self) -> Iterator[tuple[Path, str]]:
        if self.d_model % self.n_head:
            yield ("n_head",), f"must divide d_model ({self.d_model} % {self.n_head} = {self.d_model % self.n_head})"

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

    def complete(self) -> None:
        config = self.config
        if config is None:
            return
        with deriving(config, "d_ff"):
            if config.d_ff is None:
                config.derive(d_ff=4 * config.d_model)
        with deriving(config, "attention_layers"):
            if config.attention_layers is None:
                pattern = ("global", "local") if self.arch == "gpt-neo" else ("global",)
                config.derive(attention_layers=[pattern[i % len(pattern)] for i in range(config.n_layer)])

    def check(self) -> Iterator[tuple[Path, str]]:
        yield from each(self._init, self._local_layers)

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
        if self.arch == "gpt2" and self.config is not None and "local" in (self.config.attention_layers or []):
            yield ("config", "attention_layers"), "gpt2 has no local attention; use gpt-neo for local layers"


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
