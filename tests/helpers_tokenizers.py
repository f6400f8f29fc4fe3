"""Offline stand-ins for today's open code models' tokenizers, trained in a second on Python text.

Each builder writes a tokenizer directory (`save_pretrained`: tokenizer.json + tokenizer_config.json,
loadable by `runner.data.tokenizer.load_tokenizer` / AutoTokenizer) with the conventions of its
family, as the hub's tokenizer.json files of those families are built:

- llama2: SentencePiece-BPE style (LlamaConverter of transformers): Metaspace pre-tokenizer
  ("▁" for spaces, one "▁" prepended to the first piece: prepend_scheme "first", split False),
  a TemplateProcessing post-processor that puts "<s>" before every text, specials <unk> <s> </s>,
  no pad token, byte fallback (<0xNN> pieces). Like SentencePiece's add_dummy_prefix, a text
  tokenized alone starts with "▁" (unless it starts with a space).
- llama3: byte-level BPE with a Llama-3-like split regex, "<|begin_of_text|>" put first by the
  post-processor, eos "<|end_of_text|>", no pad token.
- qwen2: byte-level BPE (Qwen2's split regex, NFC), no BOS at all (bos_token None), eos = pad =
  "<|endoftext|>" (Qwen2 base models), and the chat specials <|im_start|> <|im_end|>.

The vocabularies are tiny (a few hundred tokens) and learned from `texts` (default: ccrun's own
sources), so merges across spaces, newlines and indentation exist as they do in the real ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Llama-3's pre-tokenizer split (tokenizer.json of meta-llama/Meta-Llama-3-8B), Qwen2's is the same
# but for single digits (\p{N} instead of \p{N}{1,3}).
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")

FAMILIES = ("llama2", "llama3", "qwen2")


def code_texts(limit: int = 60) -> list[str]:
    """Python text to train on: ccrun's own sources (the first `limit` files, sorted)."""
    return [p.read_text() for p in sorted((ROOT / "runner").rglob("*.py"))[:limit]]


def write_tokenizer(family: str, out_dir: str | Path, texts: Iterable[str] | None = None,
                    vocab_size: int = 600) -> Path:
    """Train a `family` tokenizer (llama2, llama3, qwen2) on `texts` (default: `code_texts()`) and
    save it to `out_dir` (returned); it holds at most `vocab_size` tokens, specials included (fewer
    when the texts give fewer merges: size a model's vocabulary by len(load_tokenizer(out_dir)))."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = list(texts) if texts is not None else code_texts()
    out = Path(out_dir)
    if family == "llama2":
        specials = ["<unk>", "<s>", "</s>"]
        tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(content=" ", left=1, right=0)])
        # With split False a whole text is one "word": train on lines (as SentencePiece's sentences).
        lines = [line for t in texts for line in t.splitlines(keepends=True)]
        if vocab_size < 512:
            raise ValueError("a llama2-style vocabulary holds the 256 byte pieces: vocab_size >= 512")
        tok.train_from_iterator(lines, trainer=trainers.BpeTrainer(vocab_size=vocab_size - 256, special_tokens=specials,
                                                                   show_progress=False))
        # SentencePiece's byte pieces <0x00>..<0xFF> (ordinary vocabulary, as in Llama's): characters the
        # training text lacked encode as their UTF-8 bytes (byte_fallback), never as <unk>.
        state = json.loads(tok.to_str())
        vocab = state["model"]["vocab"]
        for byte in range(256):
            vocab.setdefault(f"<0x{byte:02X}>", len(vocab))
        tok = Tokenizer.from_str(json.dumps(state))
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", tok.token_to_id("<s>"))])
        names = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    elif family in ("llama3", "qwen2"):
        bos = "<|begin_of_text|>" if family == "llama3" else None
        eos = "<|end_of_text|>" if family == "llama3" else "<|endoftext|>"
        specials = [bos, eos] if bos else [eos, "<|im_start|>", "<|im_end|>"]
        tok = Tokenizer(models.BPE())
        if family == "qwen2":
            tok.normalizer = normalizers.NFC()
        split = LLAMA3_SPLIT if family == "llama3" else QWEN2_SPLIT
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(texts, trainer=trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False))
        level = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
        if bos:
            tok.post_processor = processors.Sequence([level, processors.TemplateProcessing(
                single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))])])
            names = {"bos_token": bos, "eos_token": eos}
        else:
            tok.post_processor = level
            names = {"eos_token": eos, "pad_token": eos}
    else:
        raise ValueError(f"unknown tokenizer family {family!r}; one of {FAMILIES}")
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False,
                                      model_max_length=int(1e30), **names)
    wrapped.save_pretrained(str(out))
    return out
