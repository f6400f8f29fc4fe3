"""Today's open code models' tokenizer conventions through the data stage and the prompt encoders.

Families (tests/helpers_tokenizers.py, built offline): llama2 (SentencePiece-style Metaspace, "<s>"
put first by the post-processor, no pad), llama3 (byte-level, "<|begin_of_text|>" first, no pad),
qwen2 (byte-level, no BOS, pad = eos), and gpt2: ccrun's own byte-level BPE (train_tokenizer, GPT-2's
scheme), whose encodings must stay what they were. The reference for every expected id list is the
tokenizer itself applied to the whole text (`tokenizer(text, add_special_tokens=True)`), never
ccrun's encoders.
"""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from datasets import load_from_disk

from runner.common.errors import BadInput
from runner.data import apps_prompt, prepare_data
from runner.data.pack import _apps_tokens, clm_ids
from runner.data.tokenizer import (TokenizerError, encode_pairs, encode_prompt, fit_prompt, load_tokenizer, prefix_ids,
                                   train_tokenizer)
from runner.recipe.load import load_recipe

from ..helpers_tokenizers import FAMILIES, code_texts, write_tokenizer
from .conftest import apps_rows, write_jsonl

ALL = (*FAMILIES, "gpt2")
FIRST = {"llama2": "<s>", "llama3": "<|begin_of_text|>", "qwen2": None, "gpt2": None}  # the family's BOS, if put first

# Texts whose boundaries stress the tokenizers: a solution starting with a letter (SentencePiece
# would prepend "▁" to it alone), with indentation (byte-level merges it with the prompt's newline),
# with a newline, with non-ASCII text, an empty one, and a special token's text inside.
SOLUTIONS = ["n=int(input())\nprint(n+1)\n", "    return sum(xs)\n", "\n\nimport sys\nprint(1)\n",
             "größe = 'π'\nprint(größe)\n", "", "x = 1  # <|endoftext|> as text\n", " a=1\n\tb=2\n"]
PROMPTS = [apps_prompt("Read n and print n+1.", None, None),
           apps_prompt("Return the sum.", "class Solution:\n    def total(self, xs):\n", "total"),
           apps_prompt("Hard.", None, None, "code-clippy"), "no newline at the end:"]


@pytest.fixture(scope="module")
def toks(tmp_path_factory):
    out = {}
    for family in FAMILIES:
        out[family] = load_tokenizer(write_tokenizer(family, tmp_path_factory.mktemp(family)))
    gpt2 = tmp_path_factory.mktemp("gpt2")
    train_tokenizer(code_texts(), vocab_size=600, out_dir=gpt2)
    out["gpt2"] = load_tokenizer(gpt2)
    return out


def full(tok, text):
    """The reference: the tokenizer's own ids for the text, its special tokens included."""
    return tok(text, add_special_tokens=True)["input_ids"]


@pytest.mark.parametrize("family", ALL)
def test_the_prefix_is_what_the_tokenizer_puts_first(toks, family):
    tok = toks[family]
    expected = [] if FIRST[family] is None else [tok.convert_tokens_to_ids(FIRST[family])]
    assert prefix_ids(tok) == expected
    for text in PROMPTS:
        ids = full(tok, text)
        assert ids[: len(expected)] == expected  # the family's tokenizer does put it first
        assert encode_prompt(tok, text) == ids  # eval and serve prompts: exactly the tokenizer's own encoding


@pytest.mark.parametrize("family", ALL)
def test_clm_documents_are_the_tokenizers_encoding_then_eos(toks, family):
    tok = toks[family]
    texts = SOLUTIONS + PROMPTS
    expected = [full(tok, t) + [tok.eos_token_id] for t in texts]
    assert clm_ids(texts, tok, tok.eos_token_id) == expected
    if family == "gpt2":  # GPT-2's scheme adds no special token: today's ids, bit for bit
        assert expected == [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]


def test_a_tokenizer_that_also_appends_eos_gets_it_once(tmp_path):
    """Llama's add_eos_token: the post-processor puts </s> after every text too. Documents still end
    with exactly one EOS, and prompts end with their text (no EOS: the model would stop at once)."""
    from tokenizers import processors

    tok = load_tokenizer(write_tokenizer("llama2", tmp_path / "tok"))
    bos, eos = tok.bos_token_id, tok.eos_token_id
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", bos), ("</s>", eos)])
    texts = SOLUTIONS[:4]
    assert [full(tok, t)[-1] for t in texts] == [eos] * 4  # the tokenizer now appends EOS itself
    assert prefix_ids(tok) == [bos]
    assert clm_ids(texts, tok, eos) == [full(tok, t) for t in texts]
    assert [encode_prompt(tok, t) for t in texts] == [full(tok, t)[:-1] for t in texts]
    assert [ids for ids, _ in encode_pairs(tok, [(PROMPTS[0], s) for s in texts])] == [full(tok, PROMPTS[0] + s) for s in texts]


def reference_prompt_tokens(tok, ids, prompt, n_prefix):
    """How many leading ids (prefix included) hold prompt text only, found by decoding (independent
    of the offsets ccrun uses): the most tokens after the prefix whose text is a prefix of the prompt."""
    k = 0
    for n in range(1, len(ids) - n_prefix + 1):
        text = tok.decode(ids[n_prefix : n_prefix + n])
        if not prompt.startswith(text):
            break
        k = n
    return n_prefix + k


@pytest.mark.parametrize("loss_on", ["solution", "all"])
@pytest.mark.parametrize("family", ALL)
def test_apps_ids_are_the_whole_texts_and_weights_mark_the_solution(toks, family, loss_on):
    tok = toks[family]
    eos, n_prefix = tok.eos_token_id, len(prefix_ids(tok))
    rows = [{"text": "Q?", "starter_code": None, "input_output": "", "solutions": json.dumps(SOLUTIONS)},
            {"text": "Sum.", "starter_code": "class Solution:\n    def total(self, xs):\n",
             "input_output": json.dumps({"fn_name": "total"}), "solutions": json.dumps(SOLUTIONS[:2])}]
    batch = {key: [row[key] for row in rows] for key in rows[0]}
    fmt = SimpleNamespace(max_solutions=None, prompt="apps", loss_on=loss_on, too_long="truncate")
    out = _apps_tokens(batch, tok, eos, fmt, seq_len=10_000)
    pairs = [(apps_prompt("Q?", None, None), s) for s in SOLUTIONS]
    pairs += [(apps_prompt("Sum.", rows[1]["starter_code"], "total"), s) for s in SOLUTIONS[:2]]
    assert len(out["ids"]) == len(pairs)
    for ids, weights, (prompt, solution) in zip(out["ids"], out["weights"], pairs, strict=True):
        assert ids == full(tok, prompt + solution) + [eos]
        k = reference_prompt_tokens(tok, ids, prompt, n_prefix)
        if loss_on == "solution":
            assert weights == [0] * k + [1] * (len(ids) - k)
        else:
            assert weights == [0] + [1] * (len(ids) - 1)  # the first token is never a target
        assert tok.decode(ids[n_prefix:-1]) == prompt + solution  # nothing lost or added (byte fallback, no <unk>)
        assert (k < len(ids) - 1) == bool(solution) and ids[-1] == eos


def test_sentencepiece_style_solutions_get_no_spurious_leading_space(toks):
    tok = toks["llama2"]
    prompt, solution = PROMPTS[0], SOLUTIONS[0]
    apart = tok(solution, add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(apart)[0].startswith("▁")  # what tokenizing the solution alone did
    (ids, k), = encode_pairs(tok, [(prompt, solution)])
    assert not tok.convert_ids_to_tokens(ids[k]).startswith("▁")
    assert ids[k:-1] != apart and tok.decode(ids[k:-1]) == solution  # no space the model would learn to emit


def test_byte_level_boundary_merge_is_the_solutions(toks):
    """GPT-2's scheme: a solution starting with spaces merges them with the prompt's last newline
    ("\\n   " is one pre-token), so today's separate tokenization differed from the text's own: a real
    fix. The fixtures' solutions start with code, where nothing changes."""
    tok = toks["gpt2"]
    prompt, solution = PROMPTS[0], SOLUTIONS[1]
    apart = tok(prompt, add_special_tokens=False)["input_ids"] + tok(solution, add_special_tokens=False)["input_ids"]
    (ids, k), = encode_pairs(tok, [(prompt, solution)])
    assert ids[:-1] == full(tok, prompt + solution) != apart
    assert tok.decode(ids[k]).startswith("\n ")  # the straddling token: the prompt's newline + indentation
    assert k == reference_prompt_tokens(tok, ids, prompt, 0)
    for row in apps_rows():  # the stage tests' fixtures: ids as before
        p = apps_prompt(row["question"], row["starter_code"], json.loads(row["input_output"] or "{}").get("fn_name"))
        for s in json.loads(row["solutions"]):
            (ids, k), = encode_pairs(tok, [(p, s)])
            assert ids[:-1] == tok(p, add_special_tokens=False)["input_ids"] + tok(s, add_special_tokens=False)["input_ids"]
            assert k == len(tok(p, add_special_tokens=False)["input_ids"])


def test_a_tokenizer_without_eos_is_a_one_line_bad_input(toks, tmp_path):
    from transformers import PreTrainedTokenizerFast

    bare = PreTrainedTokenizerFast(tokenizer_object=toks["llama3"].backend_tokenizer, bos_token="<|begin_of_text|>")
    assert bare.eos_token_id is None and bare.pad_token_id is None
    for call in (lambda: clm_ids(["x"], bare, bare.eos_token_id), lambda: encode_pairs(bare, [("p", "s")])):
        with pytest.raises(TokenizerError) as err:
            call()
        assert isinstance(err.value, BadInput) and "eos_token" in str(err.value) and "\n" not in str(err.value)


def test_prompts_cut_to_fit_keep_the_bos():
    ids = [7, 1, 2, 3, 4, 5]  # 7: the BOS
    assert fit_prompt(ids, 4, keep=1) == [7, 3, 4, 5]
    assert fit_prompt(ids, 4, keep=0) == ids[-4:]  # GPT-2: as before (ids[-room:])
    assert fit_prompt(ids, 6, keep=1) == ids and fit_prompt(ids, 0, keep=1) == ids


@pytest.mark.parametrize("family", ["llama2", "qwen2"])
def test_complete_encodes_prompts_as_the_tokenizer_and_stops_at_its_eos(toks, family, monkeypatch):
    import runner.evals.sample as sample

    tok = toks[family]
    seen = {}

    def fake_generate(model, prompts, *, eos_id, **_):
        seen.update(prompts=prompts, eos=eos_id)
        return [[[]] for _ in prompts]

    monkeypatch.setattr(sample, "generate", fake_generate)
    room = len(full(tok, PROMPTS[0]))  # the first prompt just fits
    model = SimpleNamespace(config=SimpleNamespace(max_positions=room + 8))
    long = PROMPTS[1] * 4
    sample.complete(model, tok, [PROMPTS[0], long], n=1, sampling=sample.Sampling(max_new_tokens=8))
    assert seen["eos"] == tok.eos_token_id
    short, cut = seen["prompts"]
    assert short == full(tok, PROMPTS[0])
    reference, n = full(tok, long), len(prefix_ids(tok))
    assert len(reference) > room and len(cut) == room
    assert cut == reference[:n] + reference[len(reference) - (room - n) :]  # the BOS kept, the start of the text cut


def recipe(tmp_path, tokenizer_dir, data):
    f = tmp_path / "r.yaml"
    f.write_text(
        "name: d\nmodel: {arch: gpt-neo, init: scratch, config: {n_layer: 1, d_model: 16, n_head: 2, max_positions: 256}}\n"
        f"tokenizer: {{name: {tokenizer_dir}}}\ndata:\n" + "".join(f"  {line}\n" for line in data.strip().splitlines())
    )
    return load_recipe(f).recipe


@pytest.mark.parametrize("family", ["llama2", "qwen2"])
def test_the_data_stage_packs_bos_documents_and_apps_examples_exactly(tmp_path, family):
    """Through prepare_data (the tokenizer as a recipe names it): clm blocks hold every document's
    own encoding + EOS once, in order; packed APPS blocks hold each example whole in its segment, the
    BOS (if any) first, the loss exactly on the solution. No pad token is needed (Llama has none)."""
    d = write_tokenizer(family, tmp_path / "tok")
    tok = load_tokenizer(d)
    texts = SOLUTIONS[:4] * 2
    write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts])
    prepare_data(recipe(tmp_path, d, "sources: [{type: jsonl, paths: [c.jsonl]}]\nseq_len: 16"),
                 tmp_path / "clm", num_proc=1, cache_dir=tmp_path / "cache")
    blocks = load_from_disk(str(tmp_path / "clm" / "tokens"))["train"].with_format("numpy")
    ids, weights = np.concatenate(blocks["input_ids"]), np.concatenate(blocks["loss_weights"])
    expected = [i for t in texts for i in full(tok, t) + [tok.eos_token_id]]
    assert ids[weights == 1].tolist() == expected and weights[len(expected):].sum() == 0
    manifest = json.loads((tmp_path / "clm" / "manifest.json").read_text())["tokenizer"]
    bos = tok("x", add_special_tokens=True)["input_ids"][:1] if family == "llama2" else []  # the tokenizer's own
    assert (manifest["prefix_ids"], manifest["eos_token_id"]) == (bos, tok.eos_token_id)

    write_jsonl(tmp_path / "apps" / "train.jsonl", apps_rows())
    data = ("sources: [{type: apps, path: apps/train.jsonl}]\nformat: {type: apps, loss_on: solution, layout: packed}\n"
            "seq_len: 256")
    prepare_data(recipe(tmp_path, d, data), tmp_path / "apps-out", num_proc=1, cache_dir=tmp_path / "cache")
    blocks = load_from_disk(str(tmp_path / "apps-out" / "tokens"))["train"].with_format("numpy")
    examples = {}
    for row in apps_rows():
        fn = json.loads(row["input_output"]).get("fn_name") if row["input_output"] else None
        prompt = apps_prompt(row["question"], row["starter_code"], fn)
        for s in json.loads(row["solutions"]):
            examples[tuple(full(tok, prompt + s) + [tok.eos_token_id])] = reference_prompt_tokens(
                tok, full(tok, prompt + s), prompt, len(prefix_ids(tok)))
    found = []
    for block in blocks:
        for segment in range(1, block["segment_ids"].max() + 1):
            where = block["segment_ids"] == segment
            seg_ids, seg_w = tuple(block["input_ids"][where].tolist()), block["loss_weights"][where].tolist()
            k = examples[seg_ids]  # a KeyError: an example that is not the tokenizer's own encoding
            assert seg_w == [0] * k + [1] * (len(seg_ids) - k)
            found.append(seg_ids)
    assert sorted(found) == sorted(examples)
