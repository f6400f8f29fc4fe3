"""Tokenizers: load a Hugging Face one, or train a byte-level BPE on the recipe's text.

Tokenizers are data: the data stage trains or loads one and writes it beside the tokens; the model
only needs its length and end-of-text token.

Conventions differ between families, and every encoder in ccrun follows the tokenizer's own:
- BOS: Llama-family tokenizers put a BOS token before every text (their post-processor; what
  `tokenizer(text)` does with add_special_tokens=True) and their models were pretrained with it at
  the start of each document; GPT-2/GPT-Neo and Qwen2 tokenizers put nothing. `prefix_ids` finds
  out by asking the tokenizer (attributes such as add_bos_token are not reliable: transformers 5's
  LlamaTokenizer reports add_bos_token False while its post-processor adds "<s>"). Training
  documents, APPS examples, eval prompts and served prompts start with exactly that prefix.
- EOS: none of them appends EOS to a text; ccrun ends every training document and APPS solution
  with `eos_id` (the tokenizer's eos_token), the same id generation stops on (evals/sample.py,
  serve). A tokenizer without one is a TokenizerError.
- Padding: nothing here needs a pad token (blocks and prompt batches are padded with the EOS id,
  masked out); Llama's is None, Qwen2's is its EOS, both are fine.
- An APPS example is tokenized as ONE text, prompt + solution (`encode_pairs`), so its ids are
  what the tokenizer gives that text: tokenizing the two halves apart gives the solution a spurious
  leading "▁" with SentencePiece-style tokenizers (Metaspace / add_dummy_prefix) and can split a
  byte-level BPE pre-token that straddles the boundary.

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


def eos_id(tokenizer: Any) -> int:
    """The end-of-text id: what ends every training document and solution, and what generation
    stops on."""
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise TokenizerError("the tokenizer has no end-of-text token (eos_token): ccrun ends every training "
                             "document with it and stops generating at it; set eos_token in its tokenizer_config.json")
    return int(eos)


PROBE = "x"  # any text: what the tokenizer adds around it is what it adds around every text


def prefix_ids(tokenizer: Any) -> list[int]:
    """The ids the tokenizer itself puts before every text (add_special_tokens=True): [BOS] for
    Llama-family tokenizers, [] for GPT-2/GPT-Neo/Qwen2 and the ones `train_tokenizer` makes. What
    it puts after a text (an EOS with Llama's add_eos_token) is not taken: ccrun appends EOS to
    training documents itself and never to a prompt."""
    bare = tokenizer(PROBE, add_special_tokens=False)["input_ids"]
    full = tokenizer(PROBE, add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return list(full[:start])
    raise TokenizerError(f"cannot tell which special tokens the tokenizer adds to a text: {PROBE!r} is {bare} "
                         f"alone and {full} with its special tokens")


def encode_prompt(tokenizer: Any, text: str, prefix: list[int] | None = None) -> list[int]:
    """A prompt as the model reads it: the tokenizer's prefix (BOS or nothing; `prefix_ids`, given
    or asked for) + the text's ids."""
    prefix = prefix_ids(tokenizer) if prefix is None else prefix
    return prefix + list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_documents(tokenizer: Any, texts: list[str], eos: int | None = None) -> list[list[int]]:
    """Training documents: prefix (BOS or nothing) + the text's ids + EOS, i.e.
    `tokenizer(text, add_special_tokens=True)` without any suffix, then EOS."""
    eos = eos_id(tokenizer) if eos is None else eos
    if not texts:
        return []
    prefix = prefix_ids(tokenizer)
    return [prefix + list(ids) + [eos] for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def encode_pairs(tokenizer: Any, pairs: list[tuple[str, str]], eos: int | None = None) -> list[tuple[list[int], int]]:
    """(prompt, solution) pairs → (ids, prompt_tokens) each: ids = prefix + the ids of the text
    prompt + solution (tokenized as one text, as the tokenizer gives it) + EOS; the first
    `prompt_tokens` ids (the prefix included) hold prompt text only, the rest is the solution
    and EOS.

    The boundary comes from the character offsets of the fast tokenizer: the solution starts at the
    first token whose text ends after the prompt (end offset > len(prompt)), so a token that
    straddles the boundary (a byte-level "\\n   " made of the prompt's last newline and the
    solution's indentation) belongs to the solution, whose training target it is. End offsets are
    used, not start offsets: a post-processor that trims offsets (ByteLevel trim_offsets=True)
    collapses a space token's span to its end, which still says how far the token reaches."""
    eos = eos_id(tokenizer) if eos is None else eos
    if not pairs:
        return []
    prefix = prefix_ids(tokenizer)
    enc = tokenizer([p + s for p, s in pairs], add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for (prompt, _), ids, offsets in zip(pairs, enc["input_ids"], enc["offset_mapping"], strict=True):
        cut = len(prompt)
        k = next((i for i, (_, end) in enumerate(offsets) if end > cut), len(ids))
        out.append((prefix + list(ids) + [eos], len(prefix) + k))
    return out


def fit_prompt(ids: list[int], room: int, keep: int = 0) -> list[int]:
    """A prompt cut from the left to `room` tokens (the cursor is at its end), its first `keep`
    ids (the BOS prefix) kept in front. room <= 0: unchanged (the caller reports it)."""
    if room <= 0 or len(ids) <= room:
        return ids
    if 0 < keep < room:
        return ids[:keep] + ids[len(ids) - (room - keep) :]
    return ids[len(ids) - room :]
