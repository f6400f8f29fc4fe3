"""Tokenizers: load a Hugging Face one, or train a byte-level BPE on the recipe's text.

Tokenizers are data: the data stage trains or loads one and writes it beside the tokens; the model
only needs its length and end-of-text token.

Whitespace must survive a round trip exactly. GPT-Code-Clippy added runs of spaces and tabs as
special tokens and decoded with skip_special_tokens, which deleted indentation; here whitespace
is ordinary text to a byte-level BPE (which learns merges of common runs), and decoding never
"cleans up" spaces.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..common.errors import BadInput
from ..recipe.schema_model import TokenizerSpec

EOS = "<|endoftext|>"


class TokenizerError(BadInput):
    """A tokenizer that cannot be loaded or trained."""


def build_tokenizer(spec: TokenizerSpec, *, texts: Iterable[str] | None = None,
                    out_dir: str | os.PathLike | None = None) -> Any:
    """The recipe's tokenizer: load `spec.name`, or train on `texts` per `spec.train` (saved to
    `out_dir` when given)."""
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


def load_tokenizer(name_or_dir: str | os.PathLike, *, revision: str | None = None) -> Any:
    """A fast tokenizer from a local directory or a hub id (transformers AutoTokenizer)."""
    from transformers import AutoTokenizer

    text = os.fspath(name_or_dir)
    local = Path(os.path.expanduser(text))
    if text.startswith(("./", "../", "/", "~")) and not local.is_dir():
        raise TokenizerError(f"{text}: no such tokenizer directory")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(local) if local.is_dir() else text, revision=revision, use_fast=True)
    except Exception as exc:  # offline, unknown repo, broken files
        where = "" if local.is_dir() else " (with no network, give a local directory: ./path/to/tokenizer)"
        raise TokenizerError(
            f"cannot load tokenizer {text!r}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}{where}"
        ) from None
    if not tokenizer.is_fast:
        raise TokenizerError(f"{text}: only fast (Rust) tokenizers are supported")
    tokenizer.clean_up_tokenization_spaces = False  # " ." → "." would corrupt code
    return tokenizer


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    *,
    min_frequency: int = 2,
    special_tokens: list[str] | tuple[str, ...] = (EOS,),
    out_dir: str | os.PathLike | None = None,
) -> Any:
    """Train a byte-level BPE (GPT-2's scheme) and wrap it as a transformers fast tokenizer.

    The first special token is the end-of-text token (also used as BOS and padding). With
    `out_dir`, the tokenizer is saved there so `AutoTokenizer.from_pretrained(out_dir)` loads it.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(special_tokens)
    if not specials:
        raise TokenizerError("train_tokenizer needs at least one special token (the end-of-text token)")
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + len(specials):
        raise TokenizerError(f"vocab_size {vocab_size} is below the {len(alphabet)} bytes + {len(specials)} special tokens")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    eos = specials[0]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=eos,
        bos_token=eos,
        unk_token=eos,
        pad_token=eos,
        clean_up_tokenization_spaces=False,
        model_max_length=int(1e30),
    )
    if out_dir is not None:
        tokenizer.save_pretrained(str(out_dir))
    return tokenizer
